//! The QUIC endpoint's connection management: dialling every roster peer, and admitting
//! incoming handshakes.
//!
//! Handshake admission bounds the unauthenticated work a stranger can cause, and keeps room for
//! the roster:
//! - at most [`MAX_HANDSHAKES`] handshakes are in progress at once, each for at most
//!   [`HANDSHAKE_TIMEOUT`]; the last [`RESERVED_FOR_PEERS`] slots are only for sources at a
//!   roster peer's gossip IP (a dynamic peer's: the IP its latest verified observation signs,
//!   once it signed one; until then it is admitted as any source is);
//! - at most [`MAX_HANDSHAKES_PER_SOURCE`] in progress per source IP, except for a validated
//!   roster peer address (spoofed Initials from a peer's address cannot lock the peer out);
//! - once more than a quarter of the slots are in use, or its source is at its limit, a source
//!   whose address QUIC has not validated is sent a Retry (stateless: it takes no slot) and gets
//!   a slot only when it comes back with the token, so spoofed or unfinished Initials cannot
//!   hold slots;
//! - every attempt turned away is counted ([`super::NetMetrics::handshakes_refused`],
//!   [`super::NetMetrics::handshakes_retried`]) and logged at warn, at most once per
//!   [`WARN_EVERY`], with the counts since the previous line.
//!
//! The TLS handshake itself pins keys to the roster ([`spdu_keys::tls`]); a dialled peer must
//! also present the key it was dialled for. Every task here is spawned on the node's tracker
//! and ends on shutdown.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spdu_keys::{PublicKey, tls};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::conn::Event;
use super::metrics::NetMetrics;

/// Longest silence on a connection before QUIC drops it. Probes keep healthy connections busy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most streams a peer may have open towards us at once.
pub const MAX_STREAMS: u32 = 16;
/// Most bytes in flight without acknowledgement on one connection (bounds what a peer that
/// grants credit but never reads can make us buffer; above the largest frame).
pub const SEND_WINDOW: u64 = 2 * crate::proto::MAX_FRAME_BYTES as u64;
/// Most handshakes in progress at once (unauthenticated work is bounded).
pub const MAX_HANDSHAKES: usize = 64;
/// Slots of [`MAX_HANDSHAKES`] that only sources at a roster peer's gossip IP may take.
pub const RESERVED_FOR_PEERS: usize = 16;
/// Most handshakes in progress from one source IP.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 4;
/// Slots in use above which unvalidated sources are sent a Retry first.
pub const RETRY_ABOVE: usize = MAX_HANDSHAKES / 4;
/// How long an incoming handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two warnings about turned-away handshakes.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The transport settings of every connection, both directions.
pub(super) fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")));
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_concurrent_uni_streams(MAX_STREAMS.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t.send_window(SEND_WINDOW);
    t
}

/// A roster peer this node dials.
#[derive(Clone, Debug)]
pub(super) struct Dialled {
    pub(super) name: String,
    pub(super) key: PublicKey,
    pub(super) addr: SocketAddr,
}

/// Keeps one outgoing connection to `peer` open, reconnecting with backoff.
pub(super) async fn dial(
    endpoint: quinn::Endpoint,
    peer: Dialled,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        let attempt = async {
            let conn = endpoint
                .connect(peer.addr, "spdu")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            match tls::peer_key(&conn) {
                Some(key) if key == peer.key => Ok(conn),
                other => {
                    conn.close(1u32.into(), b"unexpected key");
                    Err(format!("{} presented key {other:?}, expected {}", peer.addr, peer.key.fingerprint()))
                }
            }
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(conn) => {
                if events.send(Event::Connected(peer.key, conn.clone(), false)).await.is_err() {
                    return;
                }
                let began = Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    reason = conn.closed() => debug!(peer = %peer.name, %reason, "connection closed"),
                }
                if began.elapsed() > IDLE_TIMEOUT {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => debug!(peer = %peer.name, error = %e, "connect failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Accepts incoming connections through the [`Admission`] policy; each admitted handshake runs
/// in its own tracked task holding its slot.
pub(super) async fn accept(
    endpoint: quinn::Endpoint,
    admission: Arc<Admission>,
    events: mpsc::Sender<Event>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let remote = incoming.remote_address();
        let slot =
            match admission.admit(remote.ip(), incoming.remote_address_validated(), incoming.may_retry()) {
                Verdict::Admit(slot) => slot,
                Verdict::Retry => {
                    // Only fails when the Initial already carried a token; refuse it then.
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                    continue;
                }
                Verdict::Refuse => {
                    incoming.refuse();
                    continue;
                }
            };
        let events = events.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let handshake = async {
                let conn = incoming.accept()?.await?;
                Ok::<_, quinn::ConnectionError>(conn)
            };
            let conn = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match r {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        // Counted (handshakes_refused) when the key was refused; a line per
                        // attempt would let strangers flood the log.
                        debug!(%remote, error = %e, "incoming handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%remote, "incoming handshake timed out");
                        return;
                    }
                },
            };
            drop(slot);
            if let Some(key) = tls::peer_key(&conn) {
                let _ = events.send(Event::Connected(key, conn, true)).await;
            }
        });
    }
}

/// What [`Admission::admit`] decided for one incoming handshake.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Go ahead; the slot is released when dropped.
    Admit(Slot),
    /// Validate the source address first (QUIC Retry).
    Retry,
    /// Turn it away (no slot for it).
    Refuse,
}

/// The handshake slots (see the module docs for the policy).
#[derive(Debug)]
pub(super) struct Admission {
    slots: Mutex<Slots>,
    metrics: Arc<NetMetrics>,
}

#[derive(Debug)]
struct Slots {
    /// The roster peers' gossip IPs (replaced on a reload).
    peer_ips: BTreeSet<IpAddr>,
    in_use: usize,
    per_source: HashMap<IpAddr, usize>,
    /// Turned away since the last warning: (refused, retried), and when that warning was.
    unreported: (u64, u64),
    warned_at: Option<Instant>,
}

/// One handshake slot, released on drop.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.admission.lock();
        slots.in_use -= 1;
        if let Some(n) = slots.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                slots.per_source.remove(&self.source);
            }
        }
    }
}

impl Admission {
    /// Slots for handshakes, with [`RESERVED_FOR_PEERS`] kept for sources in `peer_ips`.
    pub(super) fn new(peer_ips: impl IntoIterator<Item = IpAddr>, metrics: Arc<NetMetrics>) -> Arc<Self> {
        let slots = Slots {
            peer_ips: peer_ips.into_iter().collect(),
            in_use: 0,
            per_source: HashMap::new(),
            unreported: (0, 0),
            warned_at: None,
        };
        Arc::new(Self { slots: Mutex::new(slots), metrics })
    }

    /// The roster changed: the reserved slots and the per-source exemption go to `peer_ips`
    /// from now on (handshakes in progress keep their slots).
    pub(super) fn set_peer_ips(&self, peer_ips: impl IntoIterator<Item = IpAddr>) {
        self.lock().peer_ips = peer_ips.into_iter().collect();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on one incoming handshake from `source`. `validated`: QUIC has validated the
    /// source address (it came back with a Retry token); `may_retry`: a Retry is still possible.
    pub(super) fn admit(self: &Arc<Self>, source: IpAddr, validated: bool, may_retry: bool) -> Verdict {
        let mut slots = self.lock();
        let from_source = slots.per_source.get(&source).copied().unwrap_or(0);
        let source_full = from_source >= MAX_HANDSHAKES_PER_SOURCE;
        if !validated && may_retry && (slots.in_use >= RETRY_ABOVE || source_full) {
            NetMetrics::add(&self.metrics.handshakes_retried, 1);
            slots.unreported.1 += 1;
            self.warn_if_due(&mut slots);
            return Verdict::Retry;
        }
        let from_peer = slots.peer_ips.contains(&source);
        let limit = if from_peer { MAX_HANDSHAKES } else { MAX_HANDSHAKES - RESERVED_FOR_PEERS };
        // A validated roster address is not held to the per-source limit: unvalidated Initials
        // spoofing its address must not lock the real peer out.
        let source_limited = source_full && !(validated && from_peer);
        if source_limited || slots.in_use >= limit {
            NetMetrics::add(&self.metrics.handshakes_dropped, 1);
            slots.unreported.0 += 1;
            debug!(%source, in_use = slots.in_use, from_source, "handshake refused: no slot");
            self.warn_if_due(&mut slots);
            return Verdict::Refuse;
        }
        slots.in_use += 1;
        *slots.per_source.entry(source).or_default() += 1;
        Verdict::Admit(Slot { admission: self.clone(), source })
    }

    fn warn_if_due(&self, slots: &mut Slots) {
        let now = Instant::now();
        if slots.warned_at.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        let (refused, retried) = std::mem::take(&mut slots.unreported);
        warn!(
            refused,
            retried,
            in_progress = slots.in_use,
            sources = slots.per_source.len(),
            "incoming QUIC handshakes under pressure: turned away or asked to validate their address \
             (counted in spdu_gossip_handshakes_refused_total/_retried_total; next report in {}s at the earliest)",
            WARN_EVERY.as_secs()
        );
        slots.warned_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use spdu_keys::tls::PinnedKeys;

    use super::*;

    fn admission(peers: &[IpAddr]) -> Arc<Admission> {
        let metrics = Arc::new(NetMetrics::new(PinnedKeys::new([])));
        Admission::new(peers.iter().copied(), metrics)
    }

    fn ip(last: u8, third: u8) -> IpAddr {
        IpAddr::from([127, 0, third, last])
    }

    #[test]
    fn a_source_at_its_limit_is_retried_first_then_refused() {
        let a = admission(&[]);
        let source = ip(1, 1);
        let held: Vec<Slot> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .map(|_| match a.admit(source, false, true) {
                Verdict::Admit(slot) => slot,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(a.admit(source, false, true), Verdict::Retry));
        assert!(matches!(a.admit(source, true, false), Verdict::Refuse));
        assert!(matches!(a.admit(ip(2, 1), false, true), Verdict::Admit(_)), "another source gets in");
        drop(held);
        assert!(matches!(a.admit(source, false, true), Verdict::Admit(_)));
    }

    #[test]
    fn unvalidated_sources_are_retried_under_pressure_and_peers_keep_their_slots() {
        let peer = ip(12, 0);
        let a = admission(&[peer]);
        let mut held = Vec::new();
        // No pressure: strangers get slots, at most a few per source.
        for i in 0..RETRY_ABOVE {
            match a.admit(ip(i as u8, 1), false, true) {
                Verdict::Admit(slot) => held.push(slot),
                other => panic!("{other:?}"),
            }
        }
        // Pressure: an unvalidated source, peer or not, is asked to validate first.
        assert!(matches!(a.admit(ip(200, 1), false, true), Verdict::Retry));
        assert!(matches!(a.admit(peer, false, true), Verdict::Retry));
        assert_eq!(a.metrics.handshakes_retried(), 2);
        // Validated strangers fill the unreserved slots, a few per source.
        let mut source = 0u8;
        loop {
            let mut admitted = 0;
            for _ in 0..MAX_HANDSHAKES_PER_SOURCE + 1 {
                if let Verdict::Admit(slot) = a.admit(ip(source, 2), true, false) {
                    held.push(slot);
                    admitted += 1;
                }
            }
            assert!(admitted <= MAX_HANDSHAKES_PER_SOURCE);
            source += 1;
            if admitted == 0 {
                break;
            }
        }
        assert_eq!(held.len(), MAX_HANDSHAKES - RESERVED_FOR_PEERS);
        assert!(a.metrics.handshakes_refused() > 0);
        // The roster peer still gets in, even past the per-source limit (spoofed attempts from its
        // address may hold those).
        let mut peer_slots = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE + 1 {
            let Verdict::Admit(slot) = a.admit(peer, true, false) else { panic!("peer refused") };
            peer_slots.push(slot);
        }
        // A reload drops that peer: its address is a stranger's from then on.
        a.set_peer_ips([ip(13, 0)]);
        assert!(matches!(a.admit(peer, true, false), Verdict::Refuse));
        assert!(matches!(a.admit(ip(13, 0), true, false), Verdict::Admit(_)));
        held.clear();
        peer_slots.clear();
        assert_eq!(a.lock().in_use, 0);
        assert!(a.lock().per_source.is_empty());
    }
}
