//! The view: every member's newest verified observation (this node's own included), its
//! freshness, the votes of the fresh ones, and what anti-entropy exchanges about it.
//!
//! Owns, per roster position: the entry (the observation as signed and decoded, when something
//! last vouched for it, its newest beat, since when its incarnation is held); and the [`Tally`]
//! of the counted entries, and the cached summary hash.
//!
//! Invariants:
//! - at most one entry per roster member, always the one with the highest (incarnation, seq)
//!   that verified (the caller verifies; [`View::store`] only takes newer ones);
//! - an entry is fresh while something recent vouches that it is its observer's current one
//!   (the observation arriving, an Alive of its observer naming it, a newer signed beat);
//! - an entry's votes are in the tally exactly while it is fresh and over this node's roster:
//!   the tally's `counted` is the one record of that (entries keep no flag of their own), kept
//!   as entries arrive, are replaced, refreshed and go stale ([`View::sweep`]);
//! - the summary is the hash of the versions held, recomputed only after a change.

use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use spdu_keys::PublicKey;

use super::{Observation, Roster, SignedObservation, Tally};

/// Relaying waits until the relayer has heard the observer, and known the peer's incarnation,
/// for this long (at cold start every peer reports every other unreachable for a moment).
pub(super) const RELAY_AFTER: Duration = Duration::from_secs(1);
/// How many relayers, on average, forward one beat or observation to a peer that cannot reach
/// its observer. More than one so a single lost relay does not starve the peer.
const RELAY_REDUNDANCY: f64 = 3.0;

/// One member's newest observation.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) signed: SignedObservation,
    pub(super) obs: Observation,
    /// When something last vouched that this is the observer's current observation.
    pub(super) received_at: Instant,
    /// The newest beat seen for this observation.
    pub(super) beat: u64,
    /// When the observer's current incarnation was first accepted.
    pub(super) since: Instant,
}

impl Entry {
    /// Whether something vouched for it less than `stale_after` ago.
    pub(super) fn is_fresh(&self, now: Instant, stale_after: Duration) -> bool {
        now.saturating_duration_since(self.received_at) < stale_after
    }
}

/// What changed when an entry was stored.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stored {
    /// Its service addresses differ from the entry it replaced (or there was none).
    pub(super) addresses: bool,
    /// Its advertised service check differs (or there was no entry).
    pub(super) check: bool,
}

/// Every member's newest observation, by roster position, and the tally of their votes.
#[derive(Debug)]
pub(super) struct View {
    entries: Vec<Option<Entry>>,
    tally: Tally,
    summary: Option<u64>,
}

impl View {
    /// Empty, over a roster of `len`.
    pub(super) fn new(len: usize) -> Self {
        Self { entries: (0..len).map(|_| None).collect(), tally: Tally::new(len), summary: None }
    }

    /// The roster changed to `roster`: the entry at new position `j` is the one held at old
    /// position `from[j]` (none for a new member); entries of removed members are dropped. The
    /// tally is counted afresh: an entry counts if it is fresh and over the new roster (entries
    /// over the old one have no vote until their observers publish over the new one).
    pub(super) fn remap(
        &mut self,
        from: &[Option<usize>],
        roster: &Roster,
        now: Instant,
        stale_after: Duration,
    ) {
        let mut old = std::mem::take(&mut self.entries);
        self.entries = from.iter().map(|i| i.and_then(|i| old.get_mut(i)?.take())).collect();
        self.tally = Tally::new(roster.len());
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(entry) = entry
                && entry.is_fresh(now, stale_after)
                && entry.obs.is_over(roster)
            {
                self.tally.add(i, &entry.obs.reachable);
            }
        }
        self.summary = None;
    }

    /// The entry of the member at `i`.
    pub(super) fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)?.as_ref()
    }

    /// The entries held, with their positions, in roster (key) order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| Some((i, e.as_ref()?)))
    }

    /// The votes of the counted entries.
    pub(super) fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Whether the entry at `i` is counted (fresh and over this node's roster).
    pub(super) fn is_counted(&self, i: usize) -> bool {
        self.tally.counts(i)
    }

    /// Puts a verified observation of the member at `i`, newer than the one held (if any), into
    /// the view and the tally, vouched for as of `now`.
    pub(super) fn store(
        &mut self,
        i: usize,
        now: Instant,
        signed: SignedObservation,
        obs: Observation,
        beat: u64,
        roster: &Roster,
    ) -> Stored {
        let counts = obs.is_over(roster);
        let old = self.entries[i].take();
        debug_assert!(
            old.as_ref().is_none_or(|o| o.obs.version() < obs.version()),
            "only newer ones are stored"
        );
        let since = match &old {
            Some(old) if old.obs.incarnation == obs.incarnation => old.since,
            _ => now,
        };
        match (old.as_ref().filter(|_| self.tally.counts(i)), counts) {
            (Some(old), true) => self.tally.replace(i, &old.obs.reachable, &obs.reachable),
            (Some(old), false) => self.tally.remove(i, &old.obs.reachable),
            (None, true) => self.tally.add(i, &obs.reachable),
            (None, false) => {}
        }
        let stored = Stored {
            addresses: old.as_ref().is_none_or(|o| o.obs.addresses != obs.addresses),
            check: old.as_ref().is_none_or(|o| o.obs.service_check != obs.service_check),
        };
        self.entries[i] = Some(Entry { signed, obs, received_at: now, beat, since });
        self.summary = None;
        stored
    }

    /// The entry at `i` is vouched current as of `now` (counted again if it had gone stale).
    /// Returns whether the tally changed.
    pub(super) fn refresh(&mut self, i: usize, now: Instant, roster: &Roster) -> bool {
        let Some(entry) = self.entries.get_mut(i).and_then(Option::as_mut) else { return false };
        entry.received_at = entry.received_at.max(now);
        if !self.tally.counts(i) && entry.obs.is_over(roster) {
            self.tally.add(i, &entry.obs.reachable);
            return true;
        }
        false
    }

    /// A newer beat of the entry at `i`'s observation verified.
    pub(super) fn set_beat(&mut self, i: usize, beat: u64) {
        if let Some(entry) = self.entries.get_mut(i).and_then(Option::as_mut) {
            entry.beat = beat;
        }
    }

    /// Takes the votes of entries that went stale out of the tally; returns whether any did.
    pub(super) fn sweep(&mut self, now: Instant, stale_after: Duration) -> bool {
        let mut changed = false;
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(entry) = entry
                && self.tally.counts(i)
                && !entry.is_fresh(now, stale_after)
            {
                self.tally.remove(i, &entry.obs.reachable);
                changed = true;
            }
        }
        changed
    }

    /// (observer, incarnation, seq) of every entry, in key order.
    pub(super) fn versions(&self) -> Vec<(PublicKey, u64, u64)> {
        self.entries().map(|(_, e)| (e.obs.observer, e.obs.incarnation, e.obs.seq)).collect()
    }

    /// A hash of [`View::versions`] (cached until the view changes).
    pub(super) fn summary(&mut self) -> u64 {
        if let Some(hash) = self.summary {
            return hash;
        }
        let mut hash = Sha256::new();
        for (_, e) in self.entries() {
            hash.update(e.obs.observer.as_bytes());
            hash.update(e.obs.incarnation.to_le_bytes());
            hash.update(e.obs.seq.to_le_bytes());
        }
        let digest = hash.finalize();
        let value = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        self.summary = Some(value);
        value
    }

    /// Whether a counted entry of a peer we have known for a while (not `me`) reports the member
    /// at `me` unreachable: only then do its observations need signed beats others can relay.
    pub(super) fn someone_cannot_reach(&self, me: usize, now: Instant) -> bool {
        self.entries().any(|(i, e)| {
            i != me
                && self.tally.counts(i)
                && now.saturating_duration_since(e.since) >= RELAY_AFTER
                && !e.obs.reachable.get(me)
        })
    }

    /// The members (positions) that should get news of the observer at `observer` from this
    /// node: not `skip` (the sender, this node), not the observer, and only those whose counted
    /// entry, held for a while, says they cannot reach it. Every node that hears the observer
    /// makes the same choice, so each such member is picked with a chance that makes about
    /// [`RELAY_REDUNDANCY`] of the `relayers` serve it.
    pub(super) fn relay_targets(
        &self,
        observer: usize,
        skip: [usize; 2],
        relayers: usize,
        now: Instant,
        rng: &mut StdRng,
    ) -> Vec<usize> {
        // Cheap common case: every counted observer sees it, so nobody needs a relay.
        let (yes, voters) = self.tally.on(observer);
        if yes == voters {
            return Vec::new();
        }
        let chance = (RELAY_REDUNDANCY / relayers.max(1) as f64).min(1.0);
        let mut targets: Vec<usize> = self
            .entries()
            .filter(|(i, e)| {
                *i != observer
                    && !skip.contains(i)
                    && self.tally.counts(*i)
                    && now.saturating_duration_since(e.since) >= RELAY_AFTER
                    && !e.obs.reachable.get(observer)
            })
            .map(|(i, _)| i)
            .collect();
        targets.retain(|_| chance >= 1.0 || rng.random_bool(chance));
        targets
    }
}
