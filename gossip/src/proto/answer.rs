//! The answer rule (DESIGN.md), as a pure function of observations.
//!
//! Node X answers with:
//! 1. itself, unless its own health check says its service is down;
//! 2. every peer P that X's own latest probing sees reachable, that says itself healthy, and that at
//!    least `quorum` of the live observers other than P see reachable (X counts);
//! 3. itself anyway if that leaves nothing (fail open).
//!
//! X's own latest probing is X's own current observation, so the rule needs nothing but
//! observations. Observers that do not report on P at all (P is not in their roster) have no vote.

use spdu_keys::PublicKey;

use super::Observation;

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

/// Tallies what the live observers other than `peer` say about `peer`.
pub fn votes<'a>(peer: &PublicKey, live: impl IntoIterator<Item = &'a Observation>) -> Votes {
    let mut votes = Votes::default();
    for obs in live.into_iter().filter(|o| o.observer != *peer) {
        if let Some(report) = obs.report(peer) {
            votes.voters.push(obs.observer);
            if report.reachable {
                votes.yes.push(obs.observer);
            }
        }
    }
    votes
}

/// (yes, voters) for each of `candidates` (sorted), from the live observers other than the
/// candidate itself: one merge of two sorted lists per observer, so the whole answer costs
/// O(observers × peers), which matters at hundreds of nodes.
fn tally(candidates: &[PublicKey], live: &[&Observation]) -> Vec<(usize, usize)> {
    let mut counts = vec![(0, 0); candidates.len()];
    for obs in live {
        debug_assert!(obs.peers.is_sorted_by(|a, b| a.key < b.key), "reports in canonical order");
        let mut reports = obs.peers.iter().peekable();
        for (candidate, count) in candidates.iter().zip(counts.iter_mut()) {
            while reports.next_if(|r| r.key < *candidate).is_some() {}
            if let Some(report) = reports.next_if(|r| r.key == *candidate)
                && obs.observer != *candidate
            {
                count.1 += 1;
                count.0 += usize::from(report.reachable);
            }
        }
    }
    counts
}

/// The nodes whose addresses node `mine.observer` answers with, itself first, peers in key order.
///
/// - `mine`: this node's own current observation (its latest probing and health);
/// - `live`: every fresh observation in the view, `mine` included;
/// - `latest`: the latest known observation of any node, fresh or not (for peers' own health).
pub fn answer_members<'a>(
    mine: &Observation,
    live: &[&'a Observation],
    latest: impl Fn(&PublicKey) -> Option<&'a Observation>,
    quorum: Quorum,
) -> Vec<PublicKey> {
    let mut members = Vec::new();
    if mine.healthy {
        members.push(mine.observer);
    }
    let mut candidates: Vec<PublicKey> = mine
        .peers
        .iter()
        .filter(|r| r.reachable && latest(&r.key).is_some_and(|o| o.healthy))
        .map(|r| r.key)
        .collect();
    candidates.sort();
    let tally = tally(&candidates, live);
    members.extend(
        candidates
            .iter()
            .zip(tally)
            .filter(|(_, (yes, voters))| quorum.reached(*yes, *voters))
            .map(|(k, _)| *k),
    );
    if members.is_empty() {
        members.push(mine.observer);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures::{observation, public_key};

    /// Node `i`'s healthy observation in a full mesh of `n`, seeing everyone but `unreachable`.
    fn sees(i: usize, n: usize, unreachable: &[usize]) -> Observation {
        let reports: Vec<(usize, bool)> =
            (0..n).filter(|j| *j != i).map(|j| (j, !unreachable.contains(&j))).collect();
        observation(i, true, &reports)
    }

    fn index_of(key: &PublicKey) -> usize {
        (0..16).find(|i| public_key(*i) == *key).expect("a fixture key")
    }

    /// What node `me` answers (as node indices, in answer order) given everyone's latest
    /// observations `all`, of which those of `live` are fresh.
    fn answer_q(me: usize, all: &[Observation], live: &[usize], quorum: Quorum) -> Vec<usize> {
        let of = |i: usize| all.iter().find(|o| o.observer == public_key(i));
        let mine = of(me).expect("my own observation");
        let live: Vec<&Observation> = live.iter().filter_map(|i| of(*i)).collect();
        let members = answer_members(mine, &live, |k| all.iter().find(|o| o.observer == *k), quorum);
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
    fn observers_that_do_not_report_on_a_peer_have_no_vote() {
        // 1 does not have 2 in its roster; 0's own yes is the only vote.
        let all = [sees(0, 3, &[]), observation(1, true, &[(0, true)]), sees(2, 3, &[])];
        let v = votes(&public_key(2), all.iter().take(2));
        assert_eq!((v.yes.len(), v.voters.len()), (1, 1));
        assert_eq!(sorted(answer_q(0, &all, &[0, 1, 2], Quorum::AtLeast(1))), [0, 1, 2]);
    }
}
