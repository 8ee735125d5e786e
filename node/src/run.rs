//! `spdu run`: wires config, key, membership, DNS and the control endpoint together.
//!
//! Order matters: the config and the key are checked, the incarnation persisted, then every
//! socket is bound (QUIC, DNS, control) before anything runs, so a mistake such as an address
//! in use fails the start with an error naming the field. Then every task runs under one
//! [`CancellationToken`], cancelled by SIGINT/SIGTERM or by the first task that fails, and the
//! node waits for all of them before exiting.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use spdu_dnsfront::{AnswerPublisher, DnsMetrics, DnsServer, PoolAnswers};
use spdu_gossip::net::{Membership, Settings};
use spdu_gossip::proto::AnswerSet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control;
use crate::incarnation::next_incarnation;

/// Runs the node described by the config file at `config_path` until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let key = config.load_key()?;
    let incarnation = next_incarnation(&config.node.key);
    tracing::info!(
        name = %config.node.name,
        key = %key.public(),
        cluster = %config.cluster,
        incarnation,
        peers = config.peers.len(),
        "starting"
    );

    let settings = Settings {
        key,
        name: config.node.name.clone(),
        cluster: config.cluster.clone(),
        incarnation,
        listen: config.node.gossip,
        addresses: config.node.addresses.clone(),
        peers: config.peers.clone(),
        protocol: config.protocol.clone(),
        service_check: config.health.advertise.clone(),
    };
    let bound = Membership::bind(settings).context("node.gossip")?;
    let membership = bound.membership();

    let answers = membership.answers();
    let initial = pool_answers(&answers.borrow(), &config.node.addresses, initial_serial());
    let dns_metrics = DnsMetrics::default();
    let pool = AnswerPublisher::new(&config.zone, initial, dns_metrics.clone()).context("zone")?;
    let dns = DnsServer::bind(&pool, &config.node.dns).await.context("node.dns")?;

    let control_listener = tokio::net::TcpListener::bind(config.node.control)
        .await
        .with_context(|| format!("node.control: cannot bind {}", config.node.control))?;

    tracing::info!(
        gossip = %bound.local_addr(),
        dns = ?dns.local_addrs(),
        control = %config.node.control,
        "listening"
    );

    let shutdown = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(bound.run(shutdown.clone()));
    let dns_task = tasks.spawn(cancel_on_exit(shutdown.clone(), dns.run(shutdown.clone())));
    let control_task = tasks.spawn(cancel_on_exit(
        shutdown.clone(),
        control::serve(
            control_listener,
            control::router(membership.clone(), dns_metrics),
            control::Limits::new(config.node.control_allow.clone()),
            shutdown.clone(),
        ),
    ));
    tasks.spawn(crate::health::run(membership.clone(), config.health.clone(), shutdown.clone()));
    tasks.spawn(crate::incarnation::persist_changes(
        membership.incarnation(),
        config.node.key.clone(),
        incarnation,
        shutdown.clone(),
    ));
    tasks.spawn(publish_answers(answers, pool, config.node.addresses.clone(), shutdown.clone()));
    tasks.close();

    tokio::select! {
        signal = shutdown_signal() => {
            let signal = signal?;
            tracing::info!("{signal}: shutting down");
            shutdown.cancel();
        }
        () = shutdown.cancelled() => {}
    }
    tasks.wait().await;

    dns_task.await.context("DNS task panicked")?.context("node.dns")?;
    control_task.await.context("control task panicked")?.context("node.control")?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `task`; when it ends (error or not) before shutdown, stops everything else.
async fn cancel_on_exit<T, E: std::fmt::Display>(
    shutdown: CancellationToken,
    task: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = task.await;
    if !shutdown.is_cancelled() {
        match &result {
            Err(e) => tracing::error!("{e}; shutting down"),
            Ok(_) => tracing::error!("a listener stopped on its own; shutting down"),
        }
        shutdown.cancel();
    }
    result
}

/// Resolves with the signal's name on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// The first SOA serial: the Unix time in seconds, so that serials keep growing across restarts.
fn initial_serial() -> u32 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_secs() as u32
}

/// What DNS serves for an answer set. An empty set never reaches DNS: the answer rule fails
/// open to the node's own addresses, and so does this bridge (e.g. before the first answer).
fn pool_answers(answer: &AnswerSet, own: &[IpAddr], serial: u32) -> PoolAnswers {
    let addrs = if answer.addresses.is_empty() { own.to_vec() } else { answer.addresses.clone() };
    PoolAnswers { serial, addrs }
}

/// Forwards membership's answer set to DNS; the serial grows by one whenever the addresses change.
async fn publish_answers(
    mut answers: watch::Receiver<AnswerSet>,
    pool: AnswerPublisher,
    own: Vec<IpAddr>,
    shutdown: CancellationToken,
) {
    let mut current = pool.current();
    tracing::info!("answer: {:?}", current.addrs);
    loop {
        tokio::select! {
            changed = answers.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
        let next = pool_answers(&answers.borrow_and_update(), &own, current.serial.wrapping_add(1));
        if next.addrs != current.addrs {
            tracing::info!("answer changed: {:?}", next.addrs);
            pool.publish(next);
            current = pool.current();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serial_grows_only_when_addresses_change() {
        let own: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        let (answers_tx, answers_rx) = watch::channel(AnswerSet::default());
        let zone = spdu_dnsfront::ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["ns.example.test".into()],
        };
        let pool_tx = AnswerPublisher::new(
            &zone,
            PoolAnswers { serial: 100, addrs: own.clone() },
            DnsMetrics::default(),
        )
        .unwrap();
        let mut pool_rx = pool_tx.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(publish_answers(answers_rx, pool_tx, own.clone(), shutdown.clone()));

        let set = |version, addresses: Vec<IpAddr>| AnswerSet {
            version,
            members: vec![],
            addresses,
            names: vec![],
        };
        answers_tx.send_replace(set(1, own.clone()));
        answers_tx.send_replace(set(2, vec![own[0], peer]));
        pool_rx.changed().await.unwrap();
        let answers = pool_rx.borrow_and_update().clone();
        assert_eq!(answers.addrs, vec![own[0], peer]);
        assert_eq!(answers.serial, 101);

        answers_tx.send_replace(set(3, vec![]));
        pool_rx.changed().await.unwrap();
        let answers = pool_rx.borrow_and_update().clone();
        assert_eq!((answers.serial, answers.addrs.clone()), (102, own.clone()));

        shutdown.cancel();
        task.await.unwrap();
    }
}
