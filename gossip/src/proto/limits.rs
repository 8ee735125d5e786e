//! The bounds on the work one roster member can make this node do, per sender (by roster
//! position).
//!
//! A member holds a valid key, so everything it sends is processed; these bounds keep a lying or
//! broken one from turning small messages into large work:
//! - answers to [`super::Message::Want`] are coalesced: what a peer asks for is owed to it (one
//!   bit per observer, so a flood costs nothing more than one ask) and sent at most once per
//!   probe interval, the rest at the next tick;
//! - a [`super::Message::Summary`], a digest and a digest reply are each answered at most once
//!   per half heartbeat per sender (an honest peer sends each at most once per heartbeat);
//! - signature checks of observations and beats a peer sends are paid from a token bucket of
//!   [`VERIFY_ROSTERS_PER_SEC`] roster sizes per second (burst [`VERIFY_BURST_ROSTERS`] roster
//!   sizes): beyond it, claims are dropped unverified and counted;
//! - this node tells a peer [`super::Message::Superseded`] at most once per heartbeat, and asks
//!   it for the observation its Alive names at most once per few probe intervals;
//! - a peer's [`super::Message::Observed`] is taken at most once per half probe interval.
//!
//! Nothing here changes the view; a refusal only drops (and the caller counts) the request.

use std::time::{Duration, Instant};

use super::Bitmap;

/// Signature checks a sender may cost per second, in roster sizes.
pub const VERIFY_ROSTERS_PER_SEC: f64 = 4.0;
/// Signature checks a sender may cost at once, in roster sizes.
pub const VERIFY_BURST_ROSTERS: f64 = 8.0;

/// A kind of reply (or tell) limited to one per interval per peer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limited {
    /// Our digest, answering a summary that differs.
    Summary = 0,
    /// What a digest (not a reply) asks for.
    Digest = 1,
    /// What a digest reply asks for.
    DigestReply = 2,
    /// A [`super::Message::Superseded`].
    Superseded = 3,
    /// Our [`super::Message::Want`] for the observation a peer's Alive names.
    Ask = 4,
    /// A [`super::Message::Observed`] the peer sent us, taken at most once per half probe
    /// interval (an honest peer sends one per heartbeat and one per migration).
    Observed = 5,
}

#[derive(Debug)]
struct Peer {
    /// The observers (roster positions) the peer asked for and we have not sent yet.
    owed: Bitmap,
    /// When its Wants were last answered.
    wants_answered_at: Option<Instant>,
    /// When each [`Limited`] kind last went to it.
    replied_at: [Option<Instant>; 6],
    /// Signature checks it may still cost, and when that was computed.
    verify_tokens: f64,
    verify_at: Option<Instant>,
}

impl Peer {
    /// Nothing spent, in a roster of `len`.
    fn new(len: usize) -> Self {
        Self {
            owed: Bitmap::new(len),
            wants_answered_at: None,
            replied_at: [None; 6],
            verify_tokens: VERIFY_BURST_ROSTERS * len as f64,
            verify_at: None,
        }
    }
}

/// The per-sender limits of every roster member, by position.
#[derive(Debug)]
pub(super) struct Limits {
    peers: Vec<Peer>,
}

impl Limits {
    /// Nothing spent, over a roster of `len`.
    pub(super) fn new(len: usize) -> Self {
        Self { peers: (0..len).map(|_| Peer::new(len)).collect() }
    }

    /// The roster changed: the peer at new position `j` keeps what the one at old position
    /// `from[j]` spent (its replies and verification budget); a new member starts with nothing
    /// spent. What was owed is dropped (positions moved; a peer that still lacks something asks
    /// again).
    pub(super) fn remap(&mut self, from: &[Option<usize>]) {
        let len = from.len();
        let mut old: Vec<Option<Peer>> = std::mem::take(&mut self.peers).into_iter().map(Some).collect();
        self.peers = (from.iter())
            .map(|i| match i.and_then(|i| old.get_mut(i)?.take()) {
                Some(peer) => Peer { owed: Bitmap::new(len), ..peer },
                None => Peer::new(len),
            })
            .collect();
    }

    /// The peer at `i` asked for the observations at `observers`: they are owed to it. Returns
    /// what to send it now (everything owed), or `None` if it got an answer less than
    /// `interval` ago: then the ask waits for [`Limits::due_wants`] (coalesced).
    pub(super) fn want(
        &mut self,
        i: usize,
        observers: impl IntoIterator<Item = usize>,
        now: Instant,
        interval: Duration,
    ) -> Option<Vec<usize>> {
        let peer = &mut self.peers[i];
        for j in observers {
            peer.owed.set(j, true);
        }
        if peer.wants_answered_at.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            return None;
        }
        Some(Self::pay(peer, now))
    }

    /// Every peer owed observations whose last answer is at least `interval` old, with what it
    /// is owed (at a tick).
    pub(super) fn due_wants(&mut self, now: Instant, interval: Duration) -> Vec<(usize, Vec<usize>)> {
        let mut due = Vec::new();
        for (i, peer) in self.peers.iter_mut().enumerate() {
            if peer.owed.ones().next().is_some()
                && peer.wants_answered_at.is_none_or(|t| now.saturating_duration_since(t) >= interval)
            {
                due.push((i, Self::pay(peer, now)));
            }
        }
        due
    }

    fn pay(peer: &mut Peer, now: Instant) -> Vec<usize> {
        peer.wants_answered_at = Some(now);
        let owed = peer.owed.ones().collect();
        peer.owed.0.fill(0);
        owed
    }

    /// Whether a `kind` reply may go to the peer at `i` now (at most one per `gap`); if so, it
    /// is counted as sent.
    pub(super) fn allow(&mut self, i: usize, kind: Limited, now: Instant, gap: Duration) -> bool {
        let last = &mut self.peers[i].replied_at[kind as usize];
        if last.is_some_and(|t| now.saturating_duration_since(t) < gap) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Whether the peer at `i` may cost one more signature check now (if so, it is paid).
    pub(super) fn verify(&mut self, i: usize, now: Instant) -> bool {
        let len = self.peers.len() as f64;
        let peer = &mut self.peers[i];
        if let Some(at) = peer.verify_at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * VERIFY_ROSTERS_PER_SEC * len;
            peer.verify_tokens = (peer.verify_tokens + earned).min(VERIFY_BURST_ROSTERS * len);
        }
        peer.verify_at = Some(peer.verify_at.map_or(now, |t| t.max(now)));
        if peer.verify_tokens < 1.0 {
            return false;
        }
        peer.verify_tokens -= 1.0;
        true
    }
}
