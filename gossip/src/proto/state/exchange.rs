//! Anti-entropy and asks: answering Want, Summary and Digest, within the per-sender limits of
//! [`super::super::limits`] (coalesced Wants; one summary, digest and digest reply answered per
//! half heartbeat per sender; the rest dropped and counted in [`super::super::Stats`]).
//!
//! Invariant: nothing here changes the view; what is sent is only ever what the view holds.

use std::collections::BTreeMap;
use std::time::Instant;

use spdu_keys::PublicKey;

use super::super::limits::Limited;
use super::super::{Message, SignedObservation};
use super::State;

impl State {
    /// Sends `peer` the observations held at positions `observers`, if any.
    pub(super) fn push_to(&mut self, peer: usize, observers: &[usize]) {
        let list: Vec<SignedObservation> =
            observers.iter().filter_map(|j| self.view.get(*j)).map(|e| e.signed.clone()).collect();
        if !list.is_empty() {
            self.send(peer, Message::Push(list));
        }
    }

    /// A Want: what it names is owed to the sender and sent at most once per probe interval
    /// (coalesced: each observation at most once, however often it is named; a coalesced Want
    /// is counted in `wants_coalesced`). Keys outside the roster are ignored. Changes nothing
    /// but what is owed.
    pub(super) fn on_want(&mut self, now: Instant, from: usize, observers: Vec<PublicKey>) {
        let wanted: Vec<usize> = observers.iter().filter_map(|k| self.roster.index(k)).collect();
        match self.limits.want(from, wanted, now, self.config.probe_interval) {
            Some(owed) => self.push_to(from, &owed),
            None => self.stats.wants_coalesced += 1,
        }
    }

    /// A summary differing from ours is answered with our digest, at most once per half
    /// heartbeat per sender (else dropped, counted in `summaries_dropped`). Changes nothing.
    pub(super) fn on_summary(&mut self, now: Instant, from: usize, hash: u64) {
        if hash == self.view.summary() {
            return;
        }
        if !self.limits.allow(from, Limited::Summary, now, self.config.heartbeat / 2) {
            self.stats.summaries_dropped += 1;
            return;
        }
        let versions = self.view.versions();
        self.send(from, Message::Digest { versions, reply: false });
    }

    /// A digest: push back what is newer here and, unless it is itself a reply, reply with our
    /// digest if the sender holds something newer. At most once per half heartbeat per sender
    /// and kind (else dropped, counted in `digests_dropped`). Changes nothing.
    pub(super) fn on_digest(
        &mut self,
        now: Instant,
        from: usize,
        versions: Vec<(PublicKey, u64, u64)>,
        reply: bool,
    ) {
        let kind = if reply { Limited::DigestReply } else { Limited::Digest };
        if !self.limits.allow(from, kind, now, self.config.heartbeat / 2) {
            self.stats.digests_dropped += 1;
            return;
        }
        let theirs: BTreeMap<usize, (u64, u64)> = versions
            .into_iter()
            .filter_map(|(k, inc, seq)| Some((self.roster.index(&k)?, (inc, seq))))
            .collect();
        let newer: Vec<usize> = self
            .view
            .entries()
            .filter(|(i, e)| theirs.get(i).is_none_or(|v| *v < e.obs.version()))
            .map(|(i, _)| i)
            .collect();
        self.push_to(from, &newer);
        let they_have_newer =
            theirs.iter().any(|(i, v)| self.view.get(*i).is_none_or(|e| e.obs.version() < *v));
        if !reply && they_have_newer {
            let versions = self.view.versions();
            self.send(from, Message::Digest { versions, reply: true });
        }
    }
}
