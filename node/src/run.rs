//! `spdu run`: wires config, key, membership, DNS and the control endpoint together.
//!
//! Order matters: the config and the key are checked, the incarnation persisted, then every
//! socket is bound (QUIC, DNS, control) before anything runs, so a mistake such as an address
//! in use fails the start with an error naming the field. Then every task runs under one
//! [`CancellationToken`], cancelled by SIGINT/SIGTERM or by the first task that fails, and the
//! node waits for all of them before exiting. SIGHUP reloads the config ([`crate::reload`]):
//! the accepted config goes out on one watch channel that the DNS zone, the health checks and
//! the control endpoint follow.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use spdu_dnsfront::{AnswerPublisher, DnsMetrics, NameAnswers, PoolAnswers, SiteAddrs};
use spdu_gossip::net::{Membership, Settings};
use spdu_gossip::proto::{AnswerSet, NameAnswer, Pick, PolicyConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control;
use crate::incarnation::next_incarnation;

/// Runs the node described by the config file at `config_path` until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let key = config.load_key()?;
    let signer = config.dnssec.as_ref().map(|dnssec| dnssec.signer(config_path)).transpose()?;
    let public_key = key.public();
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
        observed_address: config.node.observed_address,
    };
    let bound = Membership::bind(settings).context("node.gossip")?;
    let membership = bound.membership();

    let answers = membership.answers();
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let fail_open = fail_open_names(&config.protocol.policy, &config.node.name, &config.node.addresses);
    let initial = pool_answers(&answers.borrow(), &config.zone.names, &fail_open, initial_serial());
    let dns_metrics = DnsMetrics::default();
    let pool = AnswerPublisher::new(&config.zone, initial, dns_metrics.clone()).context("zone")?;
    let signing = signer.is_some();
    pool.set_signer(signer);
    // DNS runs on a runtime of its own: a flood must not delay the membership.
    let dns_runtime = crate::dns_runtime::DnsRuntime::new()?;
    let dns = dns_runtime.bind(&pool, &config.node.dns).await.context("node.dns")?;
    let dns = dns.with_rrl(config.dns.rrl()).with_cookies(config.dns.cookies);

    let control_listener = tokio::net::TcpListener::bind(config.node.control)
        .await
        .with_context(|| format!("node.control: cannot bind {}", config.node.control))?;

    let acme_listen = config.acme.as_ref().map_or(&[][..], |a| &a.listen[..]);
    let acme_listeners = crate::acme::bind(acme_listen).await?;

    tracing::info!(
        gossip = %bound.local_addr(),
        dns = ?dns.local_addrs(),
        control = %config.node.control,
        "listening"
    );

    let dns_listening: Vec<String> = dns.local_addrs().iter().map(ToString::to_string).collect();
    let ready_status = format!("serving {} on {}", config.zone.origin, dns_listening.join(" "));
    let shutdown = CancellationToken::new();
    let reloads = crate::reload::Reloads::default();
    let reload = crate::reload::Reloader {
        config_path: config_path.to_owned(),
        config: config_tx,
        key: public_key,
        membership: membership.clone(),
        reloads: reloads.clone(),
    }
    .on_sighup(shutdown.clone())?;
    let tasks = tokio_util::task::TaskTracker::new();
    let events = crate::events::EventLog::new(config.node.name.clone(), config.cluster.clone())
        .with_quorum(config.protocol.quorum);
    // Hooks follow reloads of the config, and subscribe before the producer runs.
    let notify_metrics = crate::notify::NotifyMetrics::default();
    let acme_metrics = crate::acme::AcmeMetrics::default();
    if !acme_listeners.is_empty() {
        tracing::info!(acme = ?acme_listen, "answering ACME http-01 challenges");
        let acme =
            crate::acme::serve(acme_listeners, config_rx.clone(), acme_metrics.clone(), shutdown.clone());
        tasks.spawn(cancel_on_exit(shutdown.clone(), acme));
    }
    let hooks =
        crate::notify::run(events.subscribe(), config_rx.clone(), notify_metrics.clone(), shutdown.clone());
    tasks.spawn(hooks);
    tasks.spawn(crate::events::watch(membership.clone(), events.clone(), shutdown.clone()));
    tasks.spawn(bound.run(shutdown.clone()));
    let dns_task = tasks.spawn(cancel_on_exit(shutdown.clone(), dns_runtime.run(dns, shutdown.clone())));
    let control_task = tasks.spawn(cancel_on_exit(
        shutdown.clone(),
        control::serve(
            control_listener,
            control::router(
                membership.clone(),
                control::Sources {
                    dns_metrics,
                    names: control::PoolNames::following(config_rx.clone()),
                    zone: pool.clone(),
                    events: events.clone(),
                    notify: notify_metrics,
                    reloads,
                    acme: acme_metrics,
                },
            ),
            control::Limits::new(config.node.control_allow.clone()),
            shutdown.clone(),
        ),
    ));
    tasks.spawn(crate::reload::follow_health(membership.clone(), config_rx.clone(), shutdown.clone()));
    tasks.spawn(reload);
    tasks.spawn(crate::incarnation::persist_changes(
        membership.incarnation(),
        config.node.key.clone(),
        incarnation,
        shutdown.clone(),
    ));
    if signing {
        tasks.spawn(crate::dnssec_keys::refresh_signatures(pool.clone(), shutdown.clone()));
    }
    tasks.spawn(publish_answers(answers, pool, config_rx, shutdown.clone()));
    // Every socket is bound and every task spawned: DNS answers from here on.
    crate::systemd::ready(&ready_status);
    tasks.spawn(crate::systemd::watchdog(membership.clone(), shutdown.clone()));
    tasks.close();

    tokio::select! {
        signal = shutdown_signal() => {
            let signal = signal?;
            tracing::info!("{signal}: shutting down");
            shutdown.cancel();
        }
        () = shutdown.cancelled() => {}
    }
    crate::systemd::stopping("shutting down");
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

/// What DNS serves before membership has chosen anything (an answer set without names, e.g.
/// before the first answer): per rule, in zone order, this node's own addresses if the rule lets
/// this node appear (fail open, with the rule's degraded TTL), else no address (NODATA): a name
/// kept to other sites never answers with this one.
fn fail_open_names(policy: &PolicyConfig, name: &str, addresses: &[IpAddr]) -> Vec<NameAnswers> {
    let own = SiteAddrs { addrs: addresses.to_vec(), weight: policy.attrs(name).weight };
    (policy.rules.iter())
        .map(|rule| NameAnswers {
            ttl: rule.ttl_degraded,
            sites: if rule.allows(name) { vec![own.clone()] } else { Vec::new() },
            pick: Pick::All,
        })
        .collect()
}

/// What DNS serves for an answer set: for each of the zone's `names`, in zone order, the
/// chosen sites, pick and TTL of the answer set's name of that name (the rules are named like
/// the zone's names), or its `fail_open` entry (same order as `names`) while the set has no
/// such name (before the first answer, or for a moment after a reload added it).
fn pool_answers(answer: &AnswerSet, names: &[String], fail_open: &[NameAnswers], serial: u32) -> PoolAnswers {
    let names = (names.iter().zip(fail_open))
        .map(|(name, fail_open)| {
            let chosen = answer.names.iter().find(|n| n.name.eq_ignore_ascii_case(name));
            chosen.map_or_else(|| fail_open.clone(), name_answers)
        })
        .collect();
    PoolAnswers { serial, names }
}

fn name_answers(name: &NameAnswer) -> NameAnswers {
    NameAnswers {
        ttl: name.ttl,
        sites: (name.sites.iter())
            .map(|site| SiteAddrs { addrs: site.addresses.clone(), weight: site.weight })
            .collect(),
        pick: name.pick,
    }
}

/// One line for the log: per name its addresses, site by site, and TTL.
fn describe(answers: &PoolAnswers, rules: &[String]) -> String {
    let names = answers.names.iter().enumerate().map(|(i, name)| {
        let sites: Vec<String> = (name.sites.iter())
            .map(|s| s.addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(","))
            .collect();
        let label = rules.get(i).map_or("?", String::as_str);
        format!("{label}: [{}] ttl {}", sites.join(" "), name.ttl)
    });
    names.collect::<Vec<_>>().join("; ")
}

/// Forwards membership's answer set to DNS; the serial grows by one whenever anything served
/// changes (any name's sites, addresses, weights, pick or TTL). Follows the config watch: a
/// reloaded zone is served from then on (same sockets), with this node's new fail-open answers.
async fn publish_answers(
    mut answers: watch::Receiver<AnswerSet>,
    pool: AnswerPublisher,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let fail_open_of = |c: &Config| fail_open_names(&c.protocol.policy, &c.node.name, &c.node.addresses);
    let mut zone = config.borrow_and_update().clone();
    let mut fail_open = fail_open_of(&zone);
    let mut current = pool.current();
    tracing::info!("answer: {}", describe(&current, &zone.zone.names));
    // Reloads end when the config watch's sender is gone (at shutdown); answers go on.
    let mut reloads = true;
    loop {
        let mut reloaded = None;
        tokio::select! {
            changed = answers.changed() => if changed.is_err() { break },
            changed = config.changed(), if reloads => match changed {
                Ok(()) => reloaded = Some(config.borrow_and_update().clone()),
                Err(_) => reloads = false,
            },
            () = shutdown.cancelled() => break,
        }
        let new_zone = reloaded.as_ref().is_some_and(|new| new.zone != zone.zone);
        if let Some(new) = reloaded {
            fail_open = fail_open_of(&new);
            zone = new;
        }
        let next = pool_answers(
            &answers.borrow_and_update(),
            &zone.zone.names,
            &fail_open,
            current.serial.wrapping_add(1),
        );
        if new_zone {
            tracing::info!("zone reloaded; answer: {}", describe(&next, &zone.zone.names));
            if let Err(e) = pool.replace_zone(&zone.zone, next) {
                // Checked when the config was loaded: not expected.
                tracing::error!("zone: {e}; still serving the previous zone");
            }
            current = pool.current();
        } else if next.names != current.names {
            tracing::info!("answer changed: {}", describe(&next, &zone.zone.names));
            pool.publish(next);
            current = pool.current();
        }
    }
}

#[cfg(test)]
mod tests {
    use spdu_gossip::proto::{AnswerSite, Policy, Rule};
    use spdu_keys::SecretKey;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// `api` on every site (TTL 5, degraded 1); `admin` only at beta (priority, TTL 30).
    fn policy() -> PolicyConfig {
        let mut api = Rule::all("api", 5);
        api.ttl_degraded = 1;
        let mut admin = Rule::all("admin", 30);
        admin.policy = Policy::Priority;
        admin.sites = Some(vec!["beta".into()]);
        PolicyConfig { rules: vec![api, admin], sites: Default::default() }
    }

    fn site(seed: u8, name: &str, addresses: &[&str], weight: u32) -> AnswerSite {
        AnswerSite {
            key: SecretKey::from_bytes(&[seed; 32]).public(),
            name: name.into(),
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            weight,
        }
    }

    fn name(name: &str, sites: Vec<AnswerSite>, pick: Pick, ttl: u32) -> NameAnswer {
        NameAnswer { name: name.into(), sites, pick, ttl, degraded: false, fail_open: false }
    }

    #[test]
    fn before_any_answer_each_name_fails_open_to_this_node_if_it_may() {
        let own = [ip("192.0.2.1"), ip("2001:db8::1")];
        let fail_open = fail_open_names(&policy(), "alpha", &own);
        let names = ["api".to_owned(), "admin".to_owned()];
        let served = pool_answers(&AnswerSet::default(), &names, &fail_open, 7);
        assert_eq!(served.serial, 7);
        let api = NameAnswers {
            ttl: 1,
            sites: vec![SiteAddrs { addrs: own.to_vec(), weight: 100 }],
            pick: Pick::All,
        };
        let admin = NameAnswers { ttl: 30, sites: vec![], pick: Pick::All };
        assert_eq!(served.names, vec![api, admin]);
        // At beta, admin may hold it.
        let at_beta = fail_open_names(&policy(), "beta", &own);
        assert_eq!(at_beta[1].sites.len(), 1);
    }

    #[tokio::test]
    async fn each_name_is_served_as_chosen_and_the_serial_grows_only_on_a_change() {
        let own = [ip("192.0.2.1")];
        let fail_open = fail_open_names(&policy(), "alpha", &own);
        let (answers_tx, answers_rx) = watch::channel(AnswerSet::default());
        let zone = spdu_dnsfront::ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "admin".into()],
            ttl: 5,
            nameservers: vec!["ns.example.test".into()],
        };
        let initial = pool_answers(&answers_rx.borrow(), &zone.names, &fail_open, 100);
        let pool_tx = AnswerPublisher::new(&zone, initial, DnsMetrics::default()).unwrap();
        let mut pool_rx = pool_tx.subscribe();
        let shutdown = CancellationToken::new();
        let mut config = crate::config::Config::parse(
            Path::new("/etc/spdu/spdu.toml"),
            "[node]\nname = \"alpha\"\nkey = \"k\"\ngossip = \"127.0.0.1:1\"\ndns = [\"127.0.0.1:2\"]\n\
             control = \"127.0.0.1:3\"\naddresses = [\"192.0.2.1\"]\n\
             [zone]\norigin = \"pool.example.test\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"ns.example.test\"]\n",
        )
        .unwrap();
        config.zone = zone.clone();
        config.protocol.policy = policy();
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let task = tokio::spawn(publish_answers(answers_rx, pool_tx, config_rx, shutdown.clone()));

        let alpha = site(1, "alpha", &["192.0.2.1"], 100);
        let beta = site(2, "beta", &["192.0.2.2", "2001:db8::2"], 50);
        let set = |version, names: Vec<NameAnswer>| AnswerSet {
            version,
            members: vec![],
            addresses: vec![ip("192.0.2.1")],
            names,
        };
        let chosen = vec![
            name("api", vec![alpha.clone(), beta.clone()], Pick::Rotate { max: 1 }, 5),
            name("admin", vec![beta.clone()], Pick::All, 30),
        ];
        answers_tx.send_replace(set(1, chosen.clone()));
        pool_rx.changed().await.unwrap();
        let served = pool_rx.borrow_and_update().clone();
        assert_eq!(served.serial, 101);
        let api = &served.names[0];
        assert_eq!((api.ttl, api.pick), (5, Pick::Rotate { max: 1 }));
        assert_eq!(api.sites[1], SiteAddrs { addrs: vec![ip("192.0.2.2"), ip("2001:db8::2")], weight: 50 });
        assert_eq!(served.names[1].sites, vec![api.sites[1].clone()]);

        // A new version that serves the same (only the qualifying set moved) publishes nothing;
        // a TTL change (degraded) does, with the next serial.
        let mut same = set(2, chosen.clone());
        same.addresses.push(ip("192.0.2.2"));
        answers_tx.send_replace(same);
        tokio::task::yield_now().await;
        let mut degraded = chosen.clone();
        degraded[0].ttl = 1;
        degraded[0].sites.remove(0);
        answers_tx.send_replace(set(3, degraded));
        pool_rx.changed().await.unwrap();
        let served = pool_rx.borrow_and_update().clone();
        assert_eq!((served.serial, served.names[0].ttl, served.names[0].sites.len()), (102, 1, 1));

        // No names (membership restarting its answer): fail open again.
        answers_tx.send_replace(set(4, vec![]));
        pool_rx.changed().await.unwrap();
        let served = pool_rx.borrow_and_update().clone();
        assert_eq!(served.serial, 103);
        assert_eq!(served.names, fail_open);

        // A reload adds `www` (served at once, failing open to this node until membership
        // chooses for it) and drops `admin`; DNS takes the new zone.
        answers_tx.send_replace(set(5, chosen.clone()));
        pool_rx.changed().await.unwrap();
        pool_rx.borrow_and_update();
        let mut reloaded = config.clone();
        reloaded.zone.names = vec!["www".into(), "api".into()];
        reloaded.protocol.policy.rules = vec![Rule::all("www", 60), policy().rules[0].clone()];
        config_tx.send_replace(Arc::new(reloaded));
        pool_rx.changed().await.unwrap();
        let served = pool_rx.borrow_and_update().clone();
        assert_eq!(served.serial, 105);
        let own = SiteAddrs { addrs: vec![ip("192.0.2.1")], weight: 100 };
        assert_eq!(served.names[0], NameAnswers { ttl: 60, sites: vec![own], pick: Pick::All });
        assert_eq!(served.names[1].pick, Pick::Rotate { max: 1 }, "api as chosen");
        assert_eq!(served.names.len(), 2);

        shutdown.cancel();
        task.await.unwrap();
    }
}
