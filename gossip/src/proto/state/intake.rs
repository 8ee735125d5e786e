//! What enters the view from the wire: pushed observations and beats, checked cheapest first
//! and paid for from the sender's verification budget ([`super::super::limits`]), relayed on to
//! the peers that cannot hear their observer; and the incarnation tell
//! ([`Message::Superseded`]) both ways.
//!
//! Invariants: a claim is verified only if it is the newest for its observer in its push, newer
//! than the one held, by a member, and within the sender's budget; a push or beat list is read
//! up to the roster size. Every refusal is counted in [`Stats`] and changes nothing in the view.

use std::collections::BTreeMap;
use std::time::Instant;

use super::super::limits::Limited;
use super::super::view::RELAY_AFTER;
use super::super::{
    MAX_SERVICE_ADDRESSES, Message, Observation, OutEvent, Rejection, SignedBeat, SignedObservation, Stats,
};
use super::State;

impl State {
    pub(super) fn on_push(&mut self, now: Instant, from: usize, list: Vec<SignedObservation>) {
        let claims = newest_claims(list, self.roster.len(), self.publisher.cluster(), &mut self.stats);
        let mut relay: BTreeMap<usize, Vec<SignedObservation>> = BTreeMap::new();
        for signed in claims {
            let Some(observer) = self.accept(now, from, signed) else { continue };
            // Relay what was new to the peers that cannot hear its observer themselves.
            for peer in self.relay_targets(now, observer, from) {
                let signed = self.view.get(observer).expect("just stored").signed.clone();
                relay.entry(peer).or_default().push(signed);
            }
        }
        for (peer, batch) in relay {
            self.send(peer, Message::Push(batch));
        }
    }

    /// Verifies one claim from the peer at `from` and stores it if newer; returns the
    /// observer's position. Refused (counted), changing nothing but the sender's budget and the
    /// tell below: not newer than held (found without verifying); over the sender's
    /// verification budget (`over_budget`); anything [`SignedObservation::verify`] refuses; our
    /// own key; more than [`MAX_SERVICE_ADDRESSES`] addresses or a non-canonical report
    /// (`malformed`). If the sender sent its own observation of a lower incarnation than
    /// the one held, it restarted with a lower incarnation: it is told ([`Message::Superseded`];
    /// it rises only if what we hold is newer than anything it signed). A lower seq of the same
    /// incarnation is not told: that is its own pushes arriving out of order.
    pub(super) fn accept(&mut self, now: Instant, from: usize, signed: SignedObservation) -> Option<usize> {
        let claim = signed.claimed_version(self.publisher.cluster());
        let claimed = claim.and_then(|(key, version)| Some((self.roster.index_of_bytes(&key)?, version)));
        if let Some((i, version)) = claimed
            && let Some(held) = self.view.get(i).filter(|e| version <= e.obs.version())
        {
            if i == from && version.0 < held.obs.incarnation {
                self.tell_superseded(now, from);
            }
            self.stats.replayed += 1;
            return None;
        }
        // Only a claim by a member costs a signature check (anything else is refused first):
        // the sender pays for it from its budget.
        if claimed.is_some() && !self.limits.verify(from, now) {
            self.stats.over_budget += 1;
            return None;
        }
        match self.verify(signed) {
            Ok((i, signed, obs)) => {
                self.store(i, now, signed, obs, 0);
                self.stats.accepted += 1;
                Some(i)
            }
            Err(rejection) => {
                self.stats.count(&rejection);
                None
            }
        }
    }

    /// Checks a claim fully (see [`State::accept`]); changes nothing.
    pub(super) fn verify(
        &mut self,
        signed: SignedObservation,
    ) -> Result<(usize, SignedObservation, Observation), Rejection> {
        let roster = &self.roster;
        let obs = signed.verify(self.publisher.cluster(), |k| roster.index(k).is_some())?;
        let i = roster.index(&obs.observer).expect("verified against the roster");
        if i == self.me {
            // Our own observations come back through relays; an equal or older one is an echo.
            // A newer one means another process runs with our key, or our incarnation went back.
            return Err(if obs.version() <= self.publisher.version() {
                Rejection::Replay
            } else {
                Rejection::SelfConflict
            });
        }
        if self.view.get(i).is_some_and(|old| obs.version() <= old.obs.version()) {
            return Err(Rejection::Replay);
        }
        if obs.addresses.len() > MAX_SERVICE_ADDRESSES {
            return Err(Rejection::Malformed);
        }
        if obs.is_over(roster) {
            // Canonical form: one encoding per set of reports (votes are read by position).
            if !obs.is_canonical(roster) {
                return Err(Rejection::Malformed);
            }
        } else {
            self.stats.other_roster += 1;
        }
        Ok((i, signed, obs))
    }

    /// Sends the peer at `peer` the version we hold of its observation (at most once per
    /// heartbeat: a peer cannot make us repeat it faster).
    pub(super) fn tell_superseded(&mut self, now: Instant, peer: usize) {
        let Some((incarnation, seq)) = self.view.get(peer).map(|e| e.obs.version()) else { return };
        if self.limits.allow(peer, Limited::Superseded, now, self.config.heartbeat) {
            self.send(peer, Message::Superseded { incarnation, seq });
        }
    }

    /// A roster peer holds an observation of ours at (`incarnation`, `seq`): if that is not
    /// older than ours, rise above it, publish at once and tell the node (see
    /// [`Publisher::rise_above`] for what is refused, changing nothing).
    pub(super) fn on_superseded(&mut self, now: Instant, incarnation: u64, seq: u64) {
        if let Some(new) = self.publisher.rise_above((incarnation, seq)) {
            self.out.push_back(OutEvent::IncarnationChanged(new));
            self.publish(now);
        }
    }

    /// The peers that should get the news of the observer at `observer` from us: only if we
    /// have heard the observer ourselves for a while (see [`View::relay_targets`]).
    pub(super) fn relay_targets(&mut self, now: Instant, observer: usize, from: usize) -> Vec<usize> {
        let Some(link) = self.liveness.link(observer) else { return Vec::new() };
        if !link.reachable || now.saturating_duration_since(link.changed_at) < RELAY_AFTER {
            return Vec::new();
        }
        let relayers = self.roster.len().saturating_sub(2);
        self.view.relay_targets(observer, [from, self.me], relayers, now, &mut self.rng)
    }

    /// Beats: each vouches for the observation it names. Refused (counted), changing nothing:
    /// beats past the roster size (`entries_over_cap`), of non-members (`unknown_observer`), of
    /// an older observation or not newer than the one held (`replayed`), over the sender's
    /// budget (`over_budget`), not verifying. A beat naming a newer observation than held makes
    /// us ask the sender for it (nothing is trusted until it arrives and verifies).
    pub(super) fn on_beat(&mut self, now: Instant, from: usize, mut beats: Vec<SignedBeat>) {
        let cap = self.roster.len();
        if beats.len() > cap {
            self.stats.entries_over_cap += (beats.len() - cap) as u64;
            beats.truncate(cap);
        }
        let mut want = Vec::new();
        let mut relay: BTreeMap<usize, Vec<SignedBeat>> = BTreeMap::new();
        for signed in beats {
            let Some(i) = self.roster.index(&signed.beat.observer) else {
                self.stats.unknown_observer += 1;
                continue;
            };
            if i == self.me {
                continue;
            }
            match self.view.get(i).map(|e| (e.obs.version(), e.beat)) {
                None => want.push(self.roster.key(i)),
                Some((version, _)) if version < signed.beat.version() => want.push(self.roster.key(i)),
                Some((version, beat)) if version > signed.beat.version() || beat >= signed.beat.beat => {
                    self.stats.replayed += 1;
                }
                Some(_) => {
                    if !self.limits.verify(from, now) {
                        self.stats.over_budget += 1;
                        continue;
                    }
                    if let Err(rejection) = signed.verify(self.publisher.cluster()) {
                        self.stats.count(&rejection);
                        continue;
                    }
                    self.view.set_beat(i, signed.beat.beat);
                    if self.view.refresh(i, now, &self.roster) {
                        self.dirty = true;
                    }
                    for peer in self.relay_targets(now, i, from) {
                        relay.entry(peer).or_default().push(signed.clone());
                    }
                }
            }
        }
        if !want.is_empty() {
            self.send(from, Message::Want(want));
        }
        for (peer, beats) in relay {
            self.send(peer, Message::Beat(beats));
        }
    }
}

/// Of a push, the claims worth checking: at most `cap` entries (the roster size: no honest push
/// carries more; the rest is dropped unread and counted in `entries_over_cap`), and of several
/// claims for one observer only the newest (the others counted as `replayed`, unread). Claims
/// that cannot be read are kept: they are refused without a signature check.
fn newest_claims(
    mut list: Vec<SignedObservation>,
    cap: usize,
    cluster: &str,
    stats: &mut Stats,
) -> Vec<SignedObservation> {
    if list.len() > cap {
        stats.entries_over_cap += (list.len() - cap) as u64;
        list.truncate(cap);
    }
    let mut newest: BTreeMap<[u8; 32], (usize, (u64, u64))> = BTreeMap::new();
    let mut keep = vec![true; list.len()];
    for (at, signed) in list.iter().enumerate() {
        let Some((observer, version)) = signed.claimed_version(cluster) else { continue };
        match newest.get_mut(&observer) {
            Some((best, best_version)) if *best_version >= version => keep[at] = false,
            Some((best, best_version)) => {
                keep[*best] = false;
                (*best, *best_version) = (at, version);
            }
            None => {
                newest.insert(observer, (at, version));
            }
        }
    }
    stats.replayed += keep.iter().filter(|k| !**k).count() as u64;
    list.into_iter().zip(keep).filter_map(|(signed, keep)| keep.then_some(signed)).collect()
}
