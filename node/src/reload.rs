//! Reloading the config without a restart: SIGHUP (`systemctl reload spdu`).
//!
//! On SIGHUP the config file is read and checked again, as at start ([`Config::load`] and
//! [`Config::load_key`]); a config with any error is refused as a whole (logged with its
//! file:line:field, counted as `reloads_total{result="refused"}`) and the node keeps running the
//! one it has. So is a config that changes what only a restart can change ([`restart_needed`]):
//! the node's identity (`node.name`, `node.key` path or key, `cluster.id`), the sockets it
//! bound (`node.gossip`, `node.dns`, `node.control`, `node.control_allow`, `acme.listen`, and
//! adding or removing `[acme]`) and how the DNS server limits them (`[dns]`).
//!
//! An accepted config is applied, in this order: membership ([`Membership::reconfigure`]: the
//! roster, timing, quorum, policies and TTLs, this site's addresses and advertised check: kept
//! peers keep their connections and state), then the config watch is sent the new config, which
//! the DNS front (zone: names, TTL, nameservers; on the same sockets), the health checks
//! ([`follow_health`]) and the control endpoint's pool names follow. DNS answers all along.
//!
//! Invariants: one reload at a time (one task reads the signals); the config watch only ever
//! holds a config that was accepted and applied to membership.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use spdu_gossip::net::{Membership, Reconfiguration};
use spdu_gossip::proto::Reconfigured;
use spdu_keys::PublicKey;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How many reloads were applied and refused since start (`reloads_total{result}`). Cheap to
/// clone: clones count together.
#[derive(Clone, Debug, Default)]
pub struct Reloads(Arc<[AtomicU64; 2]>);

impl Reloads {
    /// Reloads applied.
    pub fn ok(&self) -> u64 {
        self.0[0].load(Ordering::Relaxed)
    }

    /// Reloads refused (the previous config kept running).
    pub fn refused(&self) -> u64 {
        self.0[1].load(Ordering::Relaxed)
    }

    fn count(&self, applied: bool) {
        self.0[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }
}

/// What a reload needs: the config file, the config watch (holding the running config), this
/// node's key, membership, and the counters.
#[derive(Debug)]
pub struct Reloader {
    /// The config file (`spdu run --config`).
    pub config_path: PathBuf,
    /// Holds the running config; an accepted reload sends the new one.
    pub config: watch::Sender<Arc<Config>>,
    /// This node's public key (a reload may not change it).
    pub key: PublicKey,
    /// The running membership.
    pub membership: Membership,
    /// Reloads applied and refused.
    pub reloads: Reloads,
}

impl Reloader {
    /// Installs the SIGHUP handler (from now on SIGHUP no longer ends the process) and returns
    /// the task that reloads the config file on each one until `shutdown`.
    pub fn on_sighup(self, shutdown: CancellationToken) -> anyhow::Result<impl Future<Output = ()>> {
        let hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        Ok(self.run(hangups, shutdown))
    }

    async fn run(self, mut hangups: Signal, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() {
                    // The signal driver is gone: keep the config watch open until shutdown.
                    shutdown.cancelled().await;
                    return;
                },
            }
            self.reload_once().await;
        }
    }

    /// One reload: applied or refused, logged and counted.
    async fn reload_once(&self) {
        tracing::info!("SIGHUP: reloading {}", self.config_path.display());
        crate::systemd::reloading();
        let status = match reload(&self.config_path, &self.config, self.key, &self.membership).await {
            Ok(summary) => {
                self.reloads.count(true);
                tracing::info!("reload applied: {summary}");
                "reload applied"
            }
            Err(e) => {
                self.reloads.count(false);
                tracing::error!(
                    "reload refused: {}; still running the previous config",
                    crate::text::error_chain(&e)
                );
                "reload refused: still running the previous config (see the log)"
            }
        };
        crate::systemd::ready(status);
    }
}

/// Reads `path`, checks it against the running config (held in `config`) and this node's
/// `key`, applies it to `membership` and sends it on `config`. Refused, changing nothing: any
/// error in the file or the key, or a change only a restart can apply. Returns a one-line
/// summary of what changed.
pub async fn reload(
    path: &std::path::Path,
    config: &watch::Sender<Arc<Config>>,
    key: PublicKey,
    membership: &Membership,
) -> anyhow::Result<String> {
    let new = Config::load(path)?;
    let new_key = new.load_key()?;
    let old = config.borrow().clone();
    restart_needed(&old, &new, key, new_key.public())?;
    let reconfiguration = Reconfiguration {
        peers: new.peers.clone(),
        protocol: new.protocol.clone(),
        addresses: new.node.addresses.clone(),
        service_check: new.health.advertise.clone(),
        self_check: new.health.check.is_some(),
        observed_address: new.node.observed_address,
    };
    let Some(roster) = membership.reconfigure(reconfiguration).await else {
        bail!("membership has stopped");
    };
    let summary = describe(&old, &new, &roster);
    config.send_replace(Arc::new(new));
    Ok(summary)
}

/// Refuses a new config that changes what only a restart can change, naming the field.
pub fn restart_needed(old: &Config, new: &Config, key: PublicKey, new_key: PublicKey) -> anyhow::Result<()> {
    let fixed = |field: &str, before: String, after: String| -> anyhow::Result<()> {
        if before != after {
            bail!(
                "{}: {field}: changed from {before} to {after}, which needs a restart \
                 (`systemctl restart spdu`); nothing of this config was applied",
                new.path.display()
            );
        }
        Ok(())
    };
    fixed("node.name", format!("{:?}", old.node.name), format!("{:?}", new.node.name))?;
    fixed("cluster.id", format!("{:?}", old.cluster), format!("{:?}", new.cluster))?;
    fixed("node.key", old.node.key.display().to_string(), new.node.key.display().to_string())?;
    fixed("node.key", format!("key {key}"), format!("key {new_key}"))?;
    fixed("node.gossip", old.node.gossip.to_string(), new.node.gossip.to_string())?;
    fixed("node.dns", format!("{:?}", old.node.dns), format!("{:?}", new.node.dns))?;
    fixed("node.control", old.node.control.to_string(), new.node.control.to_string())?;
    fixed("dns", format!("{:?}", old.dns), format!("{:?}", new.dns))?;
    let acme_listen = |c: &Config| format!("{:?}", c.acme.as_ref().map(|a| &a.listen));
    fixed("acme.listen", acme_listen(old), acme_listen(new))?;
    fixed(
        "dnssec",
        crate::config::DnssecConfig::summary(&old.dnssec),
        crate::config::DnssecConfig::summary(&new.dnssec),
    )?;
    let allow = |c: &Config| {
        format!("{:?}", c.node.control_allow.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    fixed("node.control_allow", allow(old), allow(new))
}

/// One line: the roster's changes by name and which other sections changed.
fn describe(old: &Config, new: &Config, roster: &Reconfigured) -> String {
    let name = |key: &PublicKey| {
        (old.peers.iter().chain(&new.peers))
            .find(|p| p.key == *key)
            .map_or_else(|| key.fingerprint().to_string(), |p| p.name.clone())
    };
    let list = |keys: &[PublicKey]| keys.iter().map(name).collect::<Vec<_>>().join(", ");
    let mut parts = vec![format!("{} peers", new.peers.len())];
    for (what, keys) in [("added", &roster.added), ("removed", &roster.removed), ("changed", &roster.changed)]
    {
        if !keys.is_empty() {
            parts.push(format!("{what} {}", list(keys)));
        }
    }
    for (section, changed) in [
        ("zone", old.zone != new.zone),
        ("policies", old.protocol.policy != new.protocol.policy),
        ("timing", {
            let strip =
                |c: &Config| spdu_gossip::proto::Config { policy: Default::default(), ..c.protocol.clone() };
            strip(old) != strip(new)
        }),
        ("health", old.health != new.health),
        ("node.addresses", {
            let addresses = |c: &Config| (c.node.addresses.clone(), c.node.observed_address);
            addresses(old) != addresses(new)
        }),
    ] {
        if changed {
            parts.push(format!("{section} changed"));
        }
    }
    parts.join("; ")
}

/// Runs the health checks ([`crate::health::run`]) with the config's `[health]`, restarting
/// them whenever a reload changes it, until `shutdown`.
pub async fn follow_health(
    membership: Membership,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let mut health = config.borrow_and_update().health.clone();
    loop {
        let current = shutdown.child_token();
        let task = tokio::spawn(crate::health::run(membership.clone(), health.clone(), current.clone()));
        let next = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                changed = config.changed() => {
                    if changed.is_err() {
                        // No more reloads (shutting down): the checks run on until shutdown.
                        shutdown.cancelled().await;
                        break None;
                    }
                    let next = config.borrow_and_update().health.clone();
                    if next != health {
                        break Some(next);
                    }
                }
            }
        };
        current.cancel();
        let _ = task.await;
        match next {
            Some(next) => {
                tracing::info!("health checks restarted with the reloaded [health]");
                health = next;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use spdu_keys::SecretKey;

    use super::*;

    const BASE: &str = r#"
[node]
name = "alpha"
key = "alpha.key"
gossip = "127.0.0.1:7946"
dns = ["127.0.0.1:5353"]
control = "127.0.0.1:7947"
addresses = ["192.0.2.1"]

[zone]
origin = "pool.example.test"
names = ["api"]
ttl = 5
nameservers = ["ns.example.test"]

[[peers]]
name = "beta"
key = "BETA"
gossip = "127.0.0.2:7946"
"#;

    fn config(text: &str) -> Config {
        let beta = SecretKey::from_bytes(&[2; 32]).public().to_string();
        Config::parse(Path::new("/etc/spdu/spdu.toml"), &text.replace("BETA", &beta)).unwrap()
    }

    #[test]
    fn a_dnssec_change_needs_a_restart() {
        let key = SecretKey::from_bytes(&[1; 32]).public();
        let dnskey = format!("257 3 13 {}==", "A".repeat(86));
        let signed = format!("{BASE}dnssec_key = \"{dnskey}\"\n[dnssec]\nkey = \"zone.key\"\n");
        let e = restart_needed(&config(BASE), &config(&signed), key, key).unwrap_err().to_string();
        assert!(e.contains("dnssec: changed from off to key /etc/spdu/zone.key ttl 3600"), "{e}");
        let longer = signed.replace("zone.key\"\n", "zone.key\"\nsignature_validity = 7200\n");
        let e = restart_needed(&config(&signed), &config(&longer), key, key).unwrap_err().to_string();
        assert!(e.contains("validity 7200 s"), "{e}");
        assert!(restart_needed(&config(&signed), &config(&signed), key, key).is_ok());
    }

    #[test]
    fn identity_and_sockets_need_a_restart_everything_else_reloads() {
        let key = SecretKey::from_bytes(&[1; 32]).public();
        let old = config(BASE);
        let refused = |text: String, new_key: PublicKey| {
            let e = restart_needed(&old, &config(&text), key, new_key).unwrap_err().to_string();
            assert!(e.starts_with("/etc/spdu/spdu.toml: ") && e.contains("needs a restart"), "{e}");
            e
        };
        let e = refused(BASE.replace("127.0.0.1:7946", "127.0.0.1:7950"), key);
        assert!(e.contains("node.gossip: changed from 127.0.0.1:7946 to 127.0.0.1:7950"), "{e}");
        let e = refused(BASE.replace("alpha.key", "other.key"), key);
        assert!(e.contains("node.key: changed from /etc/spdu/alpha.key to /etc/spdu/other.key"), "{e}");
        let e = refused(BASE.to_owned(), SecretKey::from_bytes(&[9; 32]).public());
        assert!(e.contains("node.key: changed from key "), "{e}");
        assert!(refused(BASE.replace("5353", "5354"), key).contains("node.dns: "));
        assert!(refused(BASE.replace("7947", "7948"), key).contains("node.control: "));
        assert!(refused(BASE.replace("name = \"alpha\"", "name = \"alef\""), key).contains("node.name: "));
        let e = refused(format!("{BASE}\n[cluster]\nid = \"other\"\n"), key);
        assert!(e.contains("cluster.id: "), "{e}");
        let allow = BASE.replace(
            "addresses = [\"192.0.2.1\"]",
            "addresses = [\"192.0.2.1\"]\ncontrol_allow = [\"10.0.0.0/8\"]",
        );
        assert!(refused(allow, key).contains("node.control_allow: "));
        let e = refused(format!("{BASE}\n[dns]\nrrl_rate = 50\n"), key);
        assert!(e.contains("dns: changed from DnsConfig { rrl_rate: 1000"), "{e}");
        let e = refused(format!("{BASE}\n[dns]\ncookies = false\n"), key);
        assert!(e.contains("dns: changed from DnsConfig {") && e.contains("cookies: false }"), "{e}");

        // Zone, TTL, timing, addresses, peers, health: all live.
        let live = BASE
            .replace("ttl = 5", "ttl = 30")
            .replace("names = [\"api\"]", "names = [\"api\", \"www\"]")
            .replace("[\"192.0.2.1\"]", "[\"192.0.2.1\", \"192.0.2.9\"]")
            .replace("127.0.0.2:7946", "127.0.0.3:7946")
            + "\n[timing]\nprobe_interval_ms = 50\n";
        restart_needed(&old, &config(&live), key, key).unwrap();
    }

    #[test]
    fn reloads_count_each_outcome() {
        let reloads = Reloads::default();
        let clone = reloads.clone();
        clone.count(true);
        clone.count(false);
        clone.count(false);
        assert_eq!((reloads.ok(), reloads.refused()), (1, 2));
    }
}
