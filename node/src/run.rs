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
use spdu_dnsfront::{
    AnswerPublisher, DnsMetrics, DnsServer, NameAnswers, PoolAnswers, SiteAddrs, ZoneConfig,
};
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
        protocol: protocol_with_rules(&config),
        service_check: config.health.advertise.clone(),
    };
    let bound = Membership::bind(settings).context("node.gossip")?;
    let membership = bound.membership();

    let answers = membership.answers();
    let initial = pool_answers(&answers.borrow(), &config.node.addresses, &config.zone, initial_serial());
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
    tasks.spawn(publish_answers(
        answers,
        pool,
        config.node.addresses.clone(),
        config.zone.clone(),
        shutdown.clone(),
    ));
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

/// The protocol settings with a rule for every zone name: the configured ones, else policy `all`
/// for each name with the zone's TTL.
fn protocol_with_rules(config: &crate::config::Config) -> spdu_gossip::proto::Config {
    let mut protocol = config.protocol.clone();
    if protocol.policy.rules.is_empty() {
        protocol.policy.rules = config
            .zone
            .names
            .iter()
            .map(|name| spdu_gossip::proto::Rule::all(name.clone(), config.zone.ttl))
            .collect();
    }
    protocol
}

/// What DNS serves for an answer set: per zone name (the policy rules are in zone order) its
/// chosen sites' addresses and weights, its pick and its TTL. Before the first answer (no names
/// yet) every name fails open to the node's own addresses with the zone's TTL.
fn pool_answers(answer: &AnswerSet, own: &[IpAddr], zone: &ZoneConfig, serial: u32) -> PoolAnswers {
    if answer.names.is_empty() {
        return PoolAnswers::same_for_all(serial, zone.names.len(), zone.ttl, own.to_vec());
    }
    let names = answer
        .names
        .iter()
        .map(|name| NameAnswers {
            ttl: name.ttl,
            sites: name
                .sites
                .iter()
                .map(|site| SiteAddrs { addrs: site.addresses.clone(), weight: site.weight })
                .collect(),
            pick: name.pick,
        })
        .collect();
    PoolAnswers { serial, names }
}

/// Forwards membership's answer set to DNS; the serial grows by one whenever what a name serves
/// changes (its sites, TTL or pick).
async fn publish_answers(
    mut answers: watch::Receiver<AnswerSet>,
    pool: AnswerPublisher,
    own: Vec<IpAddr>,
    zone: ZoneConfig,
    shutdown: CancellationToken,
) {
    let mut current = pool.current();
    tracing::info!("answer: {:?}", current.names);
    loop {
        tokio::select! {
            changed = answers.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
        let next = pool_answers(&answers.borrow_and_update(), &own, &zone, current.serial.wrapping_add(1));
        if next.names != current.names {
            tracing::info!("answer changed: {:?}", next.names);
            pool.publish(next);
            current = pool.current();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serial_grows_only_when_a_name_changes() {
        use spdu_gossip::proto::{AnswerSite, NameAnswer, Pick};
        let own: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        let (answers_tx, answers_rx) = watch::channel(AnswerSet::default());
        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["ns.example.test".into()],
        };
        let pool_tx = AnswerPublisher::new(
            &zone,
            PoolAnswers::same_for_all(100, 1, zone.ttl, own.clone()),
            DnsMetrics::default(),
        )
        .unwrap();
        let mut pool_rx = pool_tx.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(publish_answers(answers_rx, pool_tx, own.clone(), zone, shutdown.clone()));

        let site = |addr: IpAddr| AnswerSite {
            key: spdu_keys::SecretKey::generate().public(),
            name: addr.to_string(),
            addresses: vec![addr],
            weight: 100,
        };
        let (me, other) = (site(own[0]), site(peer));
        let set = |version, sites: Vec<AnswerSite>, ttl| AnswerSet {
            version,
            members: sites.iter().map(|s| s.key).collect(),
            addresses: sites.iter().flat_map(|s| s.addresses.clone()).collect(),
            names: vec![NameAnswer {
                name: "api".into(),
                sites,
                pick: Pick::All,
                ttl,
                degraded: false,
                fail_open: false,
            }],
        };
        // The same addresses and TTL as served: no new serial.
        answers_tx.send_replace(set(1, vec![me.clone()], 5));
        answers_tx.send_replace(set(2, vec![me.clone(), other.clone()], 5));
        pool_rx.changed().await.unwrap();
        let answers = pool_rx.borrow_and_update().clone();
        let addrs =
            |a: &PoolAnswers| a.names[0].sites.iter().flat_map(|s| s.addrs.clone()).collect::<Vec<_>>();
        assert_eq!(addrs(&answers), vec![own[0], peer]);
        assert_eq!(answers.serial, 101);

        // Only the TTL changes (degraded): that is served, so a new serial.
        answers_tx.send_replace(set(3, vec![me.clone(), other], 2));
        pool_rx.changed().await.unwrap();
        let answers = pool_rx.borrow_and_update().clone();
        assert_eq!((answers.serial, answers.names[0].ttl), (102, 2));

        // No names (before the first answer): every name fails open to this node.
        answers_tx.send_replace(AnswerSet { version: 4, ..AnswerSet::default() });
        pool_rx.changed().await.unwrap();
        let answers = pool_rx.borrow_and_update().clone();
        assert_eq!((answers.serial, addrs(&answers)), (103, own.clone()));

        shutdown.cancel();
        task.await.unwrap();
    }
}
