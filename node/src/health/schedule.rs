//! Scheduling checks: every interval, runs this site's own check and one probe of each peer's
//! advertised service, and feeds each result to membership, whose core turns results into
//! verdicts (hysteresis, damping) and verdicts into signed observations and answers.
//!
//! Peer probes start at a random offset within the interval (no thundering herd) and at most
//! `max_concurrent_probes` run at once; a probe that cannot start within one interval is skipped
//! (no result: overload here says nothing about the peer); one that this machine could not run
//! (out of file descriptors and the like) is reported as unknown, neither a pass nor a failure,
//! and logged at most once a minute. A peer's check
//! only ever connects to the address membership gives for that peer (its pinned address: see
//! [`ProbeTarget`]), read from membership's watch channel every round; a command is never run
//! for a peer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use spdu_gossip::net::Membership;
use spdu_gossip::proto::{CheckResult, ProbeTarget, ServiceCheck};
use spdu_keys::PublicKey;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Check;
use crate::config::HealthConfig;
use crate::limits::RateLimitedLog;

/// At most one warning per this long about checks this machine could not run.
const SHORTAGE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Warns, at most once per [`SHORTAGE_LOG_INTERVAL`], that a check could not run here.
fn warn_local_shortage() {
    static SHORTAGE: RateLimitedLog = RateLimitedLog::new(SHORTAGE_LOG_INTERVAL);
    SHORTAGE.warn(format_args!(
        "a health check could not run: this machine is out of file descriptors, memory, buffers \
         or local addresses (counted as no result, not as a failure)"
    ));
}

/// Runs this node's own check and the probes of its peers' services until `shutdown`.
pub async fn run(membership: Membership, config: HealthConfig, shutdown: CancellationToken) {
    let own = match config.check.as_ref().map(|c| Check::own(c, config.timeout)) {
        Some(Ok(check)) => Some(Arc::new(check)),
        Some(Err(e)) => {
            // The config was validated; this is a client that cannot be built at all.
            tracing::error!("health check disabled: {e}");
            None
        }
        None => None,
    };
    let permits = Arc::new(Semaphore::new(config.max_concurrent_probes));
    let probe_targets = membership.probe_targets();
    let tasks = TaskTracker::new();
    let mut remote: BTreeMap<PublicKey, (IpAddr, ServiceCheck, Arc<Check>)> = BTreeMap::new();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Some(check) = &own {
            let (check, membership, timeout) = (check.clone(), membership.clone(), config.timeout);
            tasks.spawn(until(shutdown.clone(), async move {
                let result = check.run(timeout).await;
                if result.unknown {
                    warn_local_shortage();
                }
                membership.report_self_check(result);
            }));
        }
        // The driver keeps the targets current; each round reads the latest.
        let targets = probe_targets.borrow().clone();
        remote.retain(|k, _| targets.iter().any(|t| t.peer == *k));
        for ProbeTarget { peer, addr: ip, check: service, .. } in targets {
            let current = remote.get(&peer).filter(|(i, s, _)| *i == ip && *s == service);
            let check = match current {
                Some((_, _, check)) => check.clone(),
                None => match Check::service(&service, SocketAddr::new(ip, service.port()), config.timeout) {
                    Ok(check) => {
                        let check = Arc::new(check);
                        remote.insert(peer, (ip, service, check.clone()));
                        check
                    }
                    Err(e) => {
                        membership.report_service_probe(
                            peer,
                            CheckResult::fail(format!("advertised check refused: {e}")),
                        );
                        continue;
                    }
                },
            };
            let offset = config.interval.mul_f64(rand::rng().random_range(0.0..1.0));
            let (membership, permits, interval, timeout) =
                (membership.clone(), permits.clone(), config.interval, config.timeout);
            tasks.spawn(until(shutdown.clone(), async move {
                tokio::time::sleep(offset).await;
                let Ok(Ok(_permit)) = tokio::time::timeout(interval, permits.acquire_owned()).await else {
                    tracing::debug!(peer = %peer.fingerprint(), "too many service probes running; skipping one");
                    return;
                };
                let result = check.run(timeout).await;
                if result.unknown {
                    warn_local_shortage();
                }
                membership.report_service_probe(peer, result);
            }));
        }
    }
    tasks.close();
    tasks.wait().await;
}

async fn until(shutdown: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = task => {}
    }
}
