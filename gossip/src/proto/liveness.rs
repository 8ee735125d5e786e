//! The per-peer failure detector, and what this node reports about each peer.
//!
//! Owns, per roster position (none at this node's own): whether the peer is reachable, with the
//! hysteresis that decides it, the estimate of its messages' loss, the round-trip ping, and this
//! node's verdict on the peer's advertised service.
//!
//! Invariants:
//! - every probe interval each peer gets one [`Message::Alive`] (two bytes), or, one interval in
//!   [`PING_EVERY`], a round-trip [`Message::Ping`] (for the RTT that `spdu peers` shows);
//! - a peer becomes reachable after `up_after` of its periodic messages (Alive, Ping, Pong)
//!   arrive without a gap of more than two intervals (at most one per half interval counts), and
//!   unreachable once nothing at all has arrived from it for [`silence`] intervals: `down_after`,
//!   stretched on a link whose measured loss exceeds [`DESIGN_LOSS`];
//! - arrival stamps may come slightly out of order (the driver stamps each message when it
//!   arrives): the latest stamp stands, nothing goes back;
//! - what this node reports about a peer is [`Liveness::reports_reachable`]: reachable and its
//!   service verdict not false. That rule is written there only.

use std::time::{Duration, Instant};

use super::{CheckResult, Config, HealthPolicy, Message, Verdict};

/// One probe interval in this many, a peer gets a round-trip [`Message::Ping`] instead of an
/// [`Message::Alive`] (every 5 s at the default interval).
pub const PING_EVERY: u64 = 50;
/// Weight of one interval in a peer's loss estimate (about the last 32 intervals count).
const LOSS_WEIGHT: f64 = 1.0 / 32.0;
/// Gaps longer than this many intervals are outages, not loss, and leave the estimate alone.
const LOSS_MAX_GAP: u32 = 4;
/// The loss rate `down_after` is sized for: silence after up to this much loss stays as unlikely
/// as `down_after` losses in a row at this rate.
const DESIGN_LOSS: f64 = 0.1;
/// However lossy a link, a peer is declared unreachable after at most this many times
/// `down_after` silent intervals.
pub(super) const MAX_SILENCE_FACTOR: u32 = 4;

/// This node's probing state of one peer.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) reachable: bool,
    /// When `reachable` last changed (or the node started).
    pub(super) changed_at: Instant,
    /// Periodic messages heard in a row without a gap.
    streak: u32,
    /// When anything last arrived from the peer.
    last_heard: Option<Instant>,
    /// When the last periodic message that counted towards `streak` arrived.
    last_counted: Option<Instant>,
    /// When the last periodic message arrived.
    last_periodic: Option<Instant>,
    /// Estimated share of the peer's periodic messages that are lost (see [`silence`]).
    pub(super) loss: f64,
    pub(super) rtt: Option<Duration>,
    /// The outstanding round-trip ping.
    ping: Option<(u32, Instant)>,
    /// This node's verdict on the peer's advertised service, once probed (down until proven).
    pub(super) service: Option<Verdict>,
}

impl Link {
    /// A peer not heard yet: unreachable since `now`.
    fn unheard(now: Instant) -> Self {
        Self {
            reachable: false,
            changed_at: now,
            streak: 0,
            last_heard: None,
            last_counted: None,
            last_periodic: None,
            loss: 0.0,
            rtt: None,
            ping: None,
            service: None,
        }
    }
}

/// Every peer's [`Link`], by roster position.
#[derive(Debug)]
pub(super) struct Liveness {
    links: Vec<Option<Link>>,
    ticks: u64,
    next_nonce: u32,
}

impl Liveness {
    /// Every peer of a roster of `len` unreachable, `me` (a position) excluded.
    pub(super) fn new(len: usize, me: usize, now: Instant, first_nonce: u32) -> Self {
        let links = (0..len).map(|i| (i != me).then(|| Link::unheard(now))).collect();
        Self { links, ticks: 0, next_nonce: first_nonce }
    }

    /// The roster changed: the link at new position `j` is the one held at old position
    /// `from[j]` (kept as it is), or, for a new peer, unreachable and never heard; links of
    /// removed peers are dropped. `me` is this node's new position.
    pub(super) fn remap(&mut self, from: &[Option<usize>], me: usize, now: Instant) {
        let mut old = std::mem::take(&mut self.links);
        self.links = (from.iter().enumerate())
            .map(|(j, i)| {
                (j != me)
                    .then(|| i.and_then(|i| old.get_mut(i)?.take()).unwrap_or_else(|| Link::unheard(now)))
            })
            .collect();
    }

    /// The link to the peer at position `i` (none for this node itself).
    pub(super) fn link(&self, i: usize) -> Option<&Link> {
        self.links.get(i)?.as_ref()
    }

    /// Whether the peer at `i` is reachable by this node's probing.
    pub(super) fn is_reachable(&self, i: usize) -> bool {
        self.link(i).is_some_and(|l| l.reachable)
    }

    /// This node's verdict on the service of the peer at `i`: `None` when it does not probe
    /// peers or the peer advertises no check; otherwise the verdict, down until proven.
    pub(super) fn service_ok(&self, i: usize, advertises: bool, policy: &HealthPolicy) -> Option<bool> {
        (policy.probe_peers && advertises)
            .then(|| self.link(i).and_then(|l| l.service.as_ref()).is_some_and(Verdict::ok))
    }

    /// What this node reports about the peer at `i`: reachable (its probing passes and its
    /// service verdict is not false), and the service verdict.
    pub(super) fn reports_reachable(
        &self,
        i: usize,
        advertises: bool,
        policy: &HealthPolicy,
    ) -> (bool, Option<bool>) {
        let service = self.service_ok(i, advertises, policy);
        (self.is_reachable(i) && service != Some(false), service)
    }

    /// Counts a probe of the service of the peer at `i`.
    pub(super) fn on_service_probe(
        &mut self,
        i: usize,
        now: Instant,
        result: CheckResult,
        policy: &HealthPolicy,
    ) {
        if let Some(link) = self.links.get_mut(i).and_then(Option::as_mut) {
            link.service.get_or_insert_with(|| Verdict::new(false)).record(now, result, policy);
        }
    }

    /// Something arrived from the peer at `i`: it is alive and its path to us works. Periodic
    /// messages build the streak that brings a peer back, so a burst of other messages after an
    /// outage is not mistaken for a working link. Returns whether the peer became reachable.
    pub(super) fn heard(&mut self, i: usize, now: Instant, periodic: bool, config: &Config) -> bool {
        let interval = config.probe_interval;
        let Some(link) = self.links.get_mut(i).and_then(Option::as_mut) else { return false };
        let gap = link.last_heard.map(|t| now.saturating_duration_since(t));
        link.last_heard = Some(link.last_heard.map_or(now, |t| t.max(now)));
        if gap.is_none_or(|gap| gap > 2 * interval) {
            link.streak = 0;
            link.last_counted = None;
        }
        if !periodic {
            return false;
        }
        // Each periodic message tells how many were lost since the previous one.
        if let Some(prev) = link.last_periodic {
            let gap =
                (now.saturating_duration_since(prev).as_secs_f64() / interval.as_secs_f64()).round() as u32;
            if (1..=LOSS_MAX_GAP).contains(&gap) {
                for _ in 1..gap {
                    link.loss += LOSS_WEIGHT * (1.0 - link.loss);
                }
                link.loss -= LOSS_WEIGHT * link.loss;
            }
        }
        link.last_periodic = Some(link.last_periodic.map_or(now, |t| t.max(now)));
        if link.last_counted.is_some_and(|t| now < t + interval / 2) {
            return false;
        }
        link.last_counted = Some(now);
        link.streak = link.streak.saturating_add(1);
        if !link.reachable && link.streak >= config.up_after {
            link.reachable = true;
            link.changed_at = now;
            return true;
        }
        false
    }

    /// One probe interval passed: the liveness message for each peer (position and message;
    /// Alives name `tag`, this node's current version), and whether some peer fell silent for
    /// long enough to be declared unreachable (it then is).
    pub(super) fn tick(&mut self, now: Instant, tag: u8, config: &Config) -> (Vec<(usize, Message)>, bool) {
        self.ticks += 1;
        let mut flipped = false;
        let mut out = Vec::with_capacity(self.links.len());
        for (i, link) in self.links.iter_mut().enumerate() {
            let Some(link) = link else { continue };
            let message = if (self.ticks + i as u64).is_multiple_of(PING_EVERY) {
                let nonce = self.next_nonce;
                self.next_nonce = self.next_nonce.wrapping_add(1);
                link.ping = Some((nonce, now));
                Message::Ping { nonce }
            } else {
                Message::Alive(tag)
            };
            out.push((i, message));
            let quiet = config.probe_interval * silence(config.down_after, link.loss);
            if link.reachable && link.last_heard.is_none_or(|t| now.saturating_duration_since(t) >= quiet) {
                link.reachable = false;
                link.changed_at = now;
                link.streak = 0;
                flipped = true;
            }
        }
        (out, flipped)
    }

    /// A pong from the peer at `i`: a sample of the round-trip time if it answers the
    /// outstanding ping in time. Refused, changing nothing: another nonce, or too late.
    pub(super) fn on_pong(&mut self, i: usize, now: Instant, nonce: u32, timeout: Duration) {
        let Some(link) = self.links.get_mut(i).and_then(Option::as_mut) else { return };
        let Some((expected, sent)) = link.ping else { return };
        if expected != nonce || now.saturating_duration_since(sent) > timeout {
            return;
        }
        link.ping = None;
        let sample = now.saturating_duration_since(sent);
        link.rtt = Some(match link.rtt {
            Some(rtt) => (rtt * 7 + sample) / 8,
            None => sample,
        });
    }
}

/// Silent intervals after which a peer is declared unreachable, given the estimated loss of its
/// messages: `down_after` up to [`DESIGN_LOSS`]; beyond it, as many as keep a false verdict as
/// unlikely as `down_after` losses in a row at that rate (so a lossy but working link is not
/// cut), capped at [`MAX_SILENCE_FACTOR`] times `down_after`. The estimate is only updated when
/// messages arrive, so the silence of a dead peer does not stretch its own detection. This is
/// the idea of accrual failure detectors (Hayashibara et al.), reduced to the one case that
/// matters here: independent loss.
pub(super) fn silence(down_after: u32, loss: f64) -> u32 {
    if loss <= DESIGN_LOSS {
        return down_after;
    }
    let needed = f64::from(down_after) * DESIGN_LOSS.ln() / loss.min(0.99).ln();
    (needed.ceil() as u32).clamp(down_after, down_after.saturating_mul(MAX_SILENCE_FACTOR))
}
