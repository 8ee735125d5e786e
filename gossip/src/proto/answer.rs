//! The answer rule (docs/design.md §3), over observations.
//!
//! Node X answers with:
//! 1. itself, unless its own health check says its service is down;
//! 2. every peer P that X's own latest probing sees reachable, that says itself healthy, and that at
//!    least `quorum` of the live observers other than P see reachable (X counts);
//! 3. itself anyway if that leaves nothing (fail open).
//!
//! X's own latest probing is X's own current observation, so the rule needs nothing but
//! observations. Votes are counted in a [`Tally`]: one counter per roster member, which the
//! protocol state keeps up to date as observations arrive and go stale (adding or removing one
//! observation costs one pass over its bitmap), so the answer costs O(members) however many
//! observers there are. Observers whose bitmaps are over another roster have no vote.

use std::net::IpAddr;

use spdu_keys::PublicKey;

use super::{AnswerSet, Bitmap, NameAnswer, Observation, Roster};

/// How many live observers (other than the peer itself) must see a peer reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quorum {
    /// At least half of those who report on the peer; a tie counts as reachable.
    #[default]
    Half,
    /// At least this many of them.
    AtLeast(usize),
}

impl Quorum {
    /// Whether `yes` votes out of `voters` are enough.
    pub fn reached(self, yes: usize, voters: usize) -> bool {
        match self {
            Quorum::Half => 2 * yes >= voters,
            Quorum::AtLeast(k) => yes >= k,
        }
    }
}

/// The votes on one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    /// Live observers other than the peer that see it reachable.
    pub yes: Vec<PublicKey>,
    /// Live observers other than the peer that report on it at all.
    pub voters: Vec<PublicKey>,
}

/// Lists what the live observers other than `peer` say about `peer` (for display; the answer
/// itself uses a [`Tally`]).
pub fn votes<'a>(
    roster: &Roster,
    peer: &PublicKey,
    live: impl IntoIterator<Item = &'a Observation>,
) -> Votes {
    let mut votes = Votes::default();
    for obs in live.into_iter().filter(|o| o.observer != *peer) {
        if let Some(report) = obs.report(roster, peer) {
            votes.voters.push(obs.observer);
            if report.reachable {
                votes.yes.push(obs.observer);
            }
        }
    }
    votes
}

/// Votes per roster position from a set of counted observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    yes: Vec<u32>,
    counted: Vec<bool>,
    observers: u32,
}

impl Tally {
    /// No observer counted yet, over a roster of `len` members.
    pub fn new(len: usize) -> Self {
        Self { yes: vec![0; len], counted: vec![false; len], observers: 0 }
    }

    /// The tally of `live` observations (those not over `roster` have no vote).
    pub fn of<'a>(roster: &Roster, live: impl IntoIterator<Item = &'a Observation>) -> Self {
        let mut tally = Self::new(roster.len());
        for obs in live {
            if let Some(i) = roster.index(&obs.observer)
                && obs.is_over(roster)
            {
                tally.add(i, &obs.reachable);
            }
        }
        tally
    }

    /// Counts the observer at position `observer` with its reachable bitmap (its own bit clear);
    /// an observer already counted must be removed first.
    pub fn add(&mut self, observer: usize, reachable: &Bitmap) {
        debug_assert!(!self.counted[observer], "observer {observer} counted twice");
        self.counted[observer] = true;
        self.observers += 1;
        let len = self.yes.len();
        for j in reachable.ones().filter(|j| *j < len) {
            self.yes[j] += 1;
        }
    }

    /// Stops counting the observer at position `observer`, with the bitmap it was added with.
    pub fn remove(&mut self, observer: usize, reachable: &Bitmap) {
        debug_assert!(self.counted[observer], "observer {observer} not counted");
        self.counted[observer] = false;
        self.observers -= 1;
        let len = self.yes.len();
        for j in reachable.ones().filter(|j| *j < len) {
            self.yes[j] -= 1;
        }
    }

    /// Replaces a counted observer's bitmap: touches only the bits that differ.
    pub fn replace(&mut self, observer: usize, old: &Bitmap, new: &Bitmap) {
        debug_assert!(self.counted[observer], "observer {observer} not counted");
        let len = old.0.len().max(new.0.len());
        for at in 0..len {
            let (o, n) = (old.0.get(at).copied().unwrap_or(0), new.0.get(at).copied().unwrap_or(0));
            let changed = o ^ n;
            if changed == 0 {
                continue;
            }
            for bit in (0..8).filter(|bit| changed & (1 << bit) != 0) {
                let j = at * 8 + bit;
                if j < self.yes.len() {
                    if n & (1 << bit) != 0 {
                        self.yes[j] += 1;
                    } else {
                        self.yes[j] -= 1;
                    }
                }
            }
        }
    }

    /// Whether the observer at `observer` is counted (the one record of it: view entries keep
    /// no flag of their own).
    pub fn counts(&self, observer: usize) -> bool {
        self.counted[observer]
    }

    /// (yes, voters) on the member at position `peer`: counted observers other than it.
    pub fn on(&self, peer: usize) -> (usize, usize) {
        (self.yes[peer] as usize, (self.observers - u32::from(self.counted[peer])) as usize)
    }
}

/// The peers (as roster positions) that rule 2 admits: seen reachable by `mine`, healthy by
/// their latest observation, and with a quorum of the votes in `tally`.
///
/// - `roster`: this node's roster (`mine` is over it);
/// - `mine`: this node's own current observation (its latest probing and health);
/// - `tally`: the votes of every live observation, `mine` included;
/// - `healthy`: whether the latest known observation (fresh or not) of the member at a position
///   says it is healthy (false if none is known).
pub fn admitted_peers(
    roster: &Roster,
    mine: &Observation,
    tally: &Tally,
    healthy: impl Fn(usize) -> bool,
    quorum: Quorum,
) -> Bitmap {
    let mut admitted = Bitmap::new(roster.len());
    if mine.is_over(roster) {
        for j in mine.reachable.ones().filter(|&j| j < roster.len() && healthy(j)) {
            let (yes, voters) = tally.on(j);
            if quorum.reached(yes, voters) {
                admitted.set(j, true);
            }
        }
    }
    admitted
}

/// Rules 1 and 3 around the admitted peers.
pub fn members_of(roster: &Roster, mine: &Observation, admitted: &Bitmap) -> Vec<PublicKey> {
    let mut members = Vec::new();
    if mine.healthy {
        members.push(mine.observer);
    }
    members.extend(admitted.ones().map(|j| roster.key(j)));
    if members.is_empty() {
        members.push(mine.observer);
    }
    members
}

/// The answer set and what it was built from. At hundreds of nodes the answer is recomputed
/// for every arriving observation: it compares the admitted peers (a bitmap) and own health, and
/// builds the member and address lists only when these or an address changed.
#[derive(Debug, Default)]
pub(super) struct AnswerCache {
    /// The peers admitted to the current answer and whether this node was healthy then; none
    /// after an address changed.
    admitted: Option<(Bitmap, bool)>,
    answer: AnswerSet,
}

impl AnswerCache {
    /// The current answer.
    pub(super) fn answer(&self) -> &AnswerSet {
        &self.answer
    }

    /// Some member's service addresses changed: the next [`AnswerCache::update`] rebuilds.
    pub(super) fn addresses_changed(&mut self) {
        self.admitted = None;
    }

    /// Applies the answer rule to `mine` and the votes in `tally`; returns whether the
    /// qualifying members or their addresses changed (the version is left to
    /// [`AnswerCache::changed`]). `healthy(j)` tells whether the latest observation of the member
    /// at `j` says it is healthy; `addresses(key)` gives the addresses served for a member.
    pub(super) fn update<I: IntoIterator<Item = IpAddr>>(
        &mut self,
        roster: &Roster,
        mine: &Observation,
        tally: &Tally,
        healthy: impl Fn(usize) -> bool,
        quorum: Quorum,
        addresses: impl Fn(&PublicKey) -> I,
    ) -> bool {
        let key = (admitted_peers(roster, mine, tally, healthy, quorum), mine.healthy);
        if self.admitted.as_ref() == Some(&key) {
            return false;
        }
        let members = members_of(roster, mine, &key.0);
        self.admitted = Some(key);
        let addresses: Vec<IpAddr> = members.iter().flat_map(addresses).collect();
        if members == self.answer.members && addresses == self.answer.addresses {
            return false;
        }
        self.answer.members = members;
        self.answer.addresses = addresses;
        true
    }

    /// The peers admitted by the last [`AnswerCache::update`] and whether this node was healthy.
    pub(super) fn admitted(&self) -> Option<&(Bitmap, bool)> {
        self.admitted.as_ref()
    }

    /// Replaces what the names answer with.
    pub(super) fn set_names(&mut self, names: Vec<NameAnswer>) {
        self.answer.names = names;
    }

    /// Marks a change of the answer: its version grows by one. Returns the new answer.
    pub(super) fn changed(&mut self) -> AnswerSet {
        self.answer.version += 1;
        self.answer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nodes whose addresses node `mine.observer` answers with, itself first, peers in key order:
    /// rule 1, the peers of [`admitted_peers`], and rule 3.
    fn answer_members(
        roster: &Roster,
        mine: &Observation,
        tally: &Tally,
        healthy: impl Fn(usize) -> bool,
        quorum: Quorum,
    ) -> Vec<PublicKey> {
        members_of(roster, mine, &admitted_peers(roster, mine, tally, healthy, quorum))
    }

    use crate::sim::fixtures::{observation, public_key, roster_of};

    /// Node `i`'s healthy observation in a full mesh of `n`, seeing everyone but `unreachable`.
    fn sees(i: usize, n: usize, unreachable: &[usize]) -> Observation {
        let reports: Vec<(usize, bool)> =
            (0..n).filter(|j| *j != i).map(|j| (j, !unreachable.contains(&j))).collect();
        observation(i, n, true, &reports)
    }

    fn index_of(key: &PublicKey) -> usize {
        (0..16).find(|i| public_key(*i) == *key).expect("a fixture key")
    }

    /// The fixture roster an observation is over.
    fn roster_for(obs: &Observation) -> Roster {
        (1..16).map(roster_of).find(|r| obs.is_over(r)).expect("a fixture roster")
    }

    /// What node `me` answers (as node indices, in answer order) given everyone's latest
    /// observations `all`, of which those of `live` are fresh.
    fn answer_q(me: usize, all: &[Observation], live: &[usize], quorum: Quorum) -> Vec<usize> {
        let of = |i: usize| all.iter().find(|o| o.observer == public_key(i));
        let mine = of(me).expect("my own observation");
        let roster = roster_for(mine);
        let live: Vec<&Observation> = live.iter().filter_map(|i| of(*i)).collect();
        let tally = Tally::of(&roster, live.iter().copied());
        let healthy = |j: usize| all.iter().find(|o| o.observer == roster.key(j)).is_some_and(|o| o.healthy);
        let members = answer_members(&roster, mine, &tally, healthy, quorum);
        members.iter().map(index_of).collect()
    }

    fn answer(me: usize, all: &[Observation], live: &[usize]) -> Vec<usize> {
        answer_q(me, all, live, Quorum::Half)
    }

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    #[test]
    fn two_nodes_me_plus_the_peer_i_reach() {
        let all = [sees(0, 2, &[]), sees(1, 2, &[])];
        assert_eq!(sorted(answer(0, &all, &[0, 1])), [0, 1]);
        // Whatever the peer says about us, only our own probing matters for it.
        let all = [sees(0, 2, &[1]), sees(1, 2, &[])];
        assert_eq!(answer(0, &all, &[0, 1]), [0]);
        assert_eq!(sorted(answer(1, &all, &[0, 1])), [0, 1]);
    }

    #[test]
    fn self_first_then_peers_in_key_order() {
        let all: Vec<Observation> = (0..5).map(|i| sees(i, 5, &[])).collect();
        let live = [0, 1, 2, 3, 4];
        for me in 0..5 {
            let got = answer(me, &all, &live);
            assert_eq!(got[0], me);
            let keys: Vec<PublicKey> = got[1..].iter().map(|i| public_key(*i)).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(sorted(got), live);
        }
    }

    #[test]
    fn design_example_three_sites_b_c_broken() {
        let (a, b, c) = (0, 1, 2);
        let all = [sees(a, 3, &[]), sees(b, 3, &[c]), sees(c, 3, &[b])];
        let live = [a, b, c];
        assert_eq!(sorted(answer(a, &all, &live)), [a, b, c]);
        assert_eq!(sorted(answer(b, &all, &live)), [a, b]);
        assert_eq!(sorted(answer(c, &all, &live)), [a, c]);
    }

    #[test]
    fn design_example_partition_a_from_b_c_d() {
        let (a, b, c, d) = (0, 1, 2, 3);
        let all = [sees(a, 4, &[b, c, d]), sees(b, 4, &[a]), sees(c, 4, &[a]), sees(d, 4, &[a])];
        // Each side's observations are stale on the other side.
        assert_eq!(answer(a, &all, &[a]), [a]);
        for me in [b, c, d] {
            assert_eq!(sorted(answer(me, &all, &[b, c, d])), [b, c, d], "node {me}");
        }
        // Before A's observation goes stale, its dissent is outvoted.
        for me in [b, c, d] {
            assert_eq!(sorted(answer(me, &all, &[a, b, c, d])), [b, c, d], "node {me}");
        }
    }

    #[test]
    fn five_nodes_all_reachable() {
        let all: Vec<Observation> = (0..5).map(|i| sees(i, 5, &[])).collect();
        for me in 0..5 {
            assert_eq!(sorted(answer(me, &all, &[0, 1, 2, 3, 4])), [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn a_lying_observer_cannot_add_a_dead_peer() {
        // 3 nodes: 0 honest, 1 lies that the dead 2 is reachable. 2's last observation is
        // stale (not live) but known.
        let all = [sees(0, 3, &[2]), sees(1, 3, &[]), sees(2, 3, &[])];
        assert_eq!(sorted(answer(0, &all, &[0, 1])), [0, 1]);
        // 5 nodes: 4 is dead, 3 lies.
        let mut all: Vec<Observation> = (0..3).map(|i| sees(i, 5, &[4])).collect();
        all.extend([sees(3, 5, &[]), sees(4, 5, &[])]);
        for me in 0..3 {
            assert_eq!(sorted(answer(me, &all, &[0, 1, 2, 3])), [0, 1, 2, 3], "node {me}");
        }
    }

    #[test]
    fn a_lying_observer_cannot_remove_a_live_peer() {
        // 3 nodes: 1 lies that 2 is unreachable; 0 sees 2: one vote of two is a tie.
        let all = [sees(0, 3, &[]), sees(1, 3, &[2]), sees(2, 3, &[])];
        assert_eq!(sorted(answer(0, &all, &[0, 1, 2])), [0, 1, 2]);
        // 5 nodes: 3 lies that everyone is unreachable.
        let mut all: Vec<Observation> = (0..5).map(|i| sees(i, 5, &[])).collect();
        all[3] = sees(3, 5, &[0, 1, 2, 4]);
        for me in [0, 1, 2, 4] {
            assert_eq!(sorted(answer(me, &all, &[0, 1, 2, 3, 4])), [0, 1, 2, 3, 4], "node {me}");
        }
        // Two dissenters of four voters are still a tie; three are a majority.
        all[2] = sees(2, 5, &[4]);
        assert!(answer(0, &all, &[0, 1, 2, 3, 4]).contains(&4));
        all[1] = sees(1, 5, &[4]);
        assert!(!answer(0, &all, &[0, 1, 2, 3, 4]).contains(&4));
    }

    #[test]
    fn unhealthy_self_withdraws() {
        let mut all = [sees(0, 3, &[]), sees(1, 3, &[]), sees(2, 3, &[])];
        all[0].healthy = false;
        assert_eq!(sorted(answer(0, &all, &[0, 1, 2])), [1, 2]);
        // The others drop it too: it says itself unhealthy.
        assert_eq!(sorted(answer(1, &all, &[0, 1, 2])), [1, 2]);
    }

    #[test]
    fn fails_open_to_self() {
        let mut all = [sees(0, 3, &[1, 2]), sees(1, 3, &[]), sees(2, 3, &[])];
        assert_eq!(answer(0, &all, &[0, 1, 2]), [0]);
        all[0].healthy = false;
        assert_eq!(answer(0, &all, &[0, 1, 2]), [0]);
        // Unhealthy and every peer unhealthy too.
        let mut all = [sees(0, 3, &[]), sees(1, 3, &[]), sees(2, 3, &[])];
        all.iter_mut().for_each(|o| o.healthy = false);
        assert_eq!(answer(0, &all, &[0, 1, 2]), [0]);
    }

    #[test]
    fn absolute_quorum() {
        // 4 is seen by 0 and 1 only.
        let mut all: Vec<Observation> = (0..4).map(|i| sees(i, 5, &[])).collect();
        all[2] = sees(2, 5, &[4]);
        all[3] = sees(3, 5, &[4]);
        all.push(sees(4, 5, &[]));
        let live = [0, 1, 2, 3, 4];
        assert!(answer_q(0, &all, &live, Quorum::Half).contains(&4));
        assert!(answer_q(0, &all, &live, Quorum::AtLeast(2)).contains(&4));
        assert!(!answer_q(0, &all, &live, Quorum::AtLeast(3)).contains(&4));
        // Stale observers do not count towards an absolute quorum either.
        assert!(!answer_q(0, &all, &[0, 2, 3, 4], Quorum::AtLeast(2)).contains(&4));
        assert!(Quorum::Half.reached(1, 2) && !Quorum::Half.reached(1, 3) && Quorum::Half.reached(0, 0));
        assert!(Quorum::AtLeast(2).reached(2, 9) && !Quorum::AtLeast(2).reached(1, 1));
    }

    #[test]
    fn peer_reporting_itself_unhealthy_is_excluded() {
        let mut all = [sees(0, 3, &[]), sees(1, 3, &[]), sees(2, 3, &[])];
        all[2].healthy = false;
        assert_eq!(sorted(answer(0, &all, &[0, 1, 2])), [0, 1]);
        // Its stale observation still tells its health.
        assert_eq!(sorted(answer(0, &all, &[0, 1])), [0, 1]);
    }

    #[test]
    fn peer_without_known_observation_is_excluded() {
        let all = [sees(0, 3, &[]), sees(1, 3, &[])];
        assert_eq!(sorted(answer(0, &all, &[0, 1])), [0, 1]);
    }

    #[test]
    fn observers_over_another_roster_have_no_vote() {
        // 1's roster is another (it lacks 2): its bitmaps cannot be read, so 0's own yes is
        // the only vote on 2.
        let all = [sees(0, 3, &[]), observation(1, 2, true, &[(0, true)]), sees(2, 3, &[])];
        let v = votes(&roster_of(3), &public_key(2), all.iter().take(2));
        assert_eq!((v.yes.len(), v.voters.len()), (1, 1));
        assert_eq!(sorted(answer_q(0, &all, &[0, 1, 2], Quorum::AtLeast(1))), [0, 1, 2]);
    }
}

#[cfg(test)]
mod tally_tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::sim::fixtures::{observation, roster_of};

    /// Adding, replacing and removing observations in any order gives the tally of what is left.
    #[test]
    fn incremental_tally_equals_recount() {
        let n = 19;
        let roster = roster_of(n);
        let mut rng = StdRng::seed_from_u64(7);
        let mut held: Vec<Option<Observation>> = vec![None; n];
        let mut tally = Tally::new(n);
        for _ in 0..2000 {
            let i = rng.random_range(0..n);
            let observer = roster.key(i);
            let who = (0..n).find(|k| crate::sim::fixtures::public_key(*k) == observer).unwrap();
            let reports: Vec<(usize, bool)> =
                (0..n).filter(|j| *j != who).map(|j| (j, rng.random_bool(0.7))).collect();
            let new = observation(who, n, true, &reports);
            match (held[i].take(), rng.random_range(0..3)) {
                (Some(old), 0) => tally.remove(i, &old.reachable),
                (Some(old), _) => {
                    tally.replace(i, &old.reachable, &new.reachable);
                    held[i] = Some(new);
                }
                (None, _) => {
                    tally.add(i, &new.reachable);
                    held[i] = Some(new);
                }
            }
            assert_eq!(tally, Tally::of(&roster, held.iter().flatten()));
        }
    }
}
