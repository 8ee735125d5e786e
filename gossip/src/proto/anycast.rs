//! The anycast rule (docs/design.md "Anycast"): whether this site should announce its anycast
//! prefixes, from the same votes as the answer rule.
//!
//! A site announces only while
//! 1. its own health check says its service is up, and
//! 2. at least one live observer other than itself reports on it, and
//! 3. a quorum of those live observers sees it reachable (the answer rule's [`Quorum`]).
//!
//! Rule 2 is where it differs from the answer rule: there a peer's 0 of 0 votes pass (a tie),
//! and a node always keeps itself (fail open). For routing that is wrong: a site cut off from
//! every peer has no live observer and cannot tell "everyone else died" from "I am cut off",
//! and a cut-off site that keeps announcing keeps attracting traffic it may not be able to
//! serve. So it withdraws (fail closed); a lone survivor stops announcing too, which is the
//! price of never black-holing behind a broken upstream.
//!
//! Inputs carry the node's hysteresis already (health verdicts and link verdicts change only
//! after their streaks), so the decision changes no faster than they do.

use serde::{Deserialize, Serialize};

use super::{Observation, Quorum, Tally};

/// Why a site announces or withdraws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnycastReason {
    /// Healthy and a quorum of the live observers sees it reachable.
    Reachable,
    /// Its own service check fails.
    Unhealthy,
    /// No live observer other than itself reports on it (cut off, or alone).
    NoObservers,
    /// Fewer than a quorum of the live observers see it reachable.
    NoQuorum,
}

/// The anycast decision and the votes it was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnycastVerdict {
    /// Whether the site should announce its prefixes.
    pub announce: bool,
    /// Why.
    pub reason: AnycastReason,
    /// Its own health verdict (as in its current observation).
    pub healthy: bool,
    /// Live observers other than itself that see it reachable.
    pub yes: usize,
    /// Live observers other than itself that report on it.
    pub voters: usize,
}

/// Applies the anycast rule to the site at roster position `me`, whose current observation is
/// `mine`, with the votes of every live observation in `tally`.
pub fn anycast_verdict(me: usize, mine: &Observation, tally: &Tally, quorum: Quorum) -> AnycastVerdict {
    let (yes, voters) = tally.on(me);
    let reason = if !mine.healthy {
        AnycastReason::Unhealthy
    } else if voters == 0 {
        AnycastReason::NoObservers
    } else if yes == 0 || !quorum.reached(yes, voters) {
        AnycastReason::NoQuorum
    } else {
        AnycastReason::Reachable
    };
    AnycastVerdict {
        announce: reason == AnycastReason::Reachable,
        reason,
        healthy: mine.healthy,
        yes,
        voters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures::{observation, roster_of};

    /// Node `i`'s observation in a mesh of `n`, seeing everyone but `unreachable`.
    fn sees(i: usize, n: usize, healthy: bool, unreachable: &[usize]) -> Observation {
        let reports: Vec<(usize, bool)> =
            (0..n).filter(|j| *j != i).map(|j| (j, !unreachable.contains(&j))).collect();
        observation(i, n, healthy, &reports)
    }

    /// The verdict of node `me` (a fixture index) with the observations of `live` fresh.
    fn verdict(me: usize, all: &[Observation], live: &[usize], quorum: Quorum) -> AnycastVerdict {
        let roster = roster_of(all.len());
        let live = live.iter().map(|i| &all[*i]);
        let tally = Tally::of(&roster, live);
        let at = roster.index(&all[me].observer).expect("in the roster");
        anycast_verdict(at, &all[me], &tally, quorum)
    }

    #[test]
    fn healthy_and_seen_by_all_announces() {
        let all: Vec<Observation> = (0..3).map(|i| sees(i, 3, true, &[])).collect();
        let v = verdict(0, &all, &[0, 1, 2], Quorum::Half);
        assert_eq!((v.announce, v.reason, v.yes, v.voters), (true, AnycastReason::Reachable, 2, 2));
    }

    #[test]
    fn unhealthy_withdraws_whatever_the_votes() {
        let mut all: Vec<Observation> = (0..3).map(|i| sees(i, 3, true, &[])).collect();
        all[0].healthy = false;
        let v = verdict(0, &all, &[0, 1, 2], Quorum::Half);
        assert_eq!((v.announce, v.reason, v.healthy), (false, AnycastReason::Unhealthy, false));
    }

    #[test]
    fn cut_off_site_hears_nobody_and_withdraws() {
        // Its peers' observations went stale: 0 of 0, which the answer rule would pass.
        let all: Vec<Observation> = (0..3).map(|i| sees(i, 3, true, &[])).collect();
        let v = verdict(0, &all, &[0], Quorum::Half);
        assert_eq!((v.announce, v.reason, v.voters), (false, AnycastReason::NoObservers, 0));
        assert!(Quorum::Half.reached(0, 0), "the answer rule's tie");
    }

    #[test]
    fn votes_follow_the_quorum() {
        // 1 of 2 live observers sees node 0: a tie, reachable under Half, not under AtLeast(2).
        let all = [sees(0, 3, true, &[]), sees(1, 3, true, &[0]), sees(2, 3, true, &[])];
        assert!(verdict(0, &all, &[0, 1, 2], Quorum::Half).announce);
        let v = verdict(0, &all, &[0, 1, 2], Quorum::AtLeast(2));
        assert_eq!((v.announce, v.reason, v.yes, v.voters), (false, AnycastReason::NoQuorum, 1, 2));
        // Both see it unreachable: withdraw.
        let all = [sees(0, 3, true, &[]), sees(1, 3, true, &[0]), sees(2, 3, true, &[0])];
        let v = verdict(0, &all, &[0, 1, 2], Quorum::Half);
        assert_eq!((v.announce, v.reason, v.yes, v.voters), (false, AnycastReason::NoQuorum, 0, 2));
        // 2 of 5 (minority) withdraws; 3 of 5 announces.
        let mut all: Vec<Observation> = (0..5).map(|i| sees(i, 5, true, &[])).collect();
        all[1] = sees(1, 5, true, &[0]);
        all[2] = sees(2, 5, true, &[0]);
        assert!(verdict(0, &all, &[0, 1, 2, 3, 4], Quorum::Half).announce);
        all[3] = sees(3, 5, true, &[0]);
        assert!(!verdict(0, &all, &[0, 1, 2, 3, 4], Quorum::Half).announce);
    }

    #[test]
    fn its_own_observation_is_no_vote() {
        // Node 0 sees everyone but nobody else is live: it must not vouch for itself.
        let all: Vec<Observation> = (0..2).map(|i| sees(i, 2, true, &[])).collect();
        assert!(!verdict(0, &all, &[0], Quorum::AtLeast(1)).announce);
        assert!(verdict(0, &all, &[0, 1], Quorum::AtLeast(1)).announce);
    }
}

/// The rule on the simulated network: real protocol states, partitions and crashes.
#[cfg(test)]
mod sim_tests {
    use std::time::Duration;

    use super::AnycastReason;
    use crate::sim::{Sim, SimConfig};

    fn reason(sim: &Sim, i: usize) -> AnycastReason {
        sim.state(i).expect("node is up").anycast().reason
    }

    /// Runs in 50 ms steps until `done` holds (the sim's own condition runner looks only after
    /// answer changes) or `within` passes; returns the simulated time it held at.
    fn run_until(sim: &mut Sim, within: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let deadline = sim.now() + within;
        while !done(sim) {
            if sim.now() >= deadline {
                return None;
            }
            sim.run_for(Duration::from_millis(50));
        }
        Some(sim.now())
    }

    fn all_announce(sim: &Sim, nodes: &[usize]) -> bool {
        nodes.iter().all(|i| reason(sim, *i) == AnycastReason::Reachable)
    }

    #[test]
    fn cut_off_withdraws_its_company_keeps_announcing() {
        for n in [3, 10] {
            let mut sim = Sim::new(n, SimConfig { seed: 7 + n as u64, ..SimConfig::default() });
            let everyone: Vec<usize> = (0..n).collect();
            let at = run_until(&mut sim, Duration::from_secs(20), |s| all_announce(s, &everyone));
            assert!(at.is_some(), "{n} nodes: not every node announces after start");

            // Node 0 alone on one side: it hears nobody, so nobody vouches for it. Within
            // stale_after (plus a few intervals) it withdraws; the rest never stop announcing.
            let rest: Vec<usize> = (1..n).collect();
            let cut = sim.now();
            sim.partition(&[vec![0], rest.clone()]);
            let stale = sim.state(0).unwrap().anycast();
            assert!(stale.announce, "withdrawn at once, before the votes went stale: {stale:?}");
            let withdrawn =
                run_until(&mut sim, Duration::from_secs(6), |s| reason(s, 0) == AnycastReason::NoObservers)
                    .unwrap_or_else(|| panic!("{n} nodes: node 0 still {:?}", reason(&sim, 0)));
            assert!(
                withdrawn - cut >= Duration::from_secs(3),
                "withdrawn {:?} after the cut",
                withdrawn - cut
            );
            let until = sim.now() + Duration::from_secs(5);
            while sim.now() < until {
                assert!(all_announce(&sim, &rest), "{n} nodes: a connected node withdrew");
                assert_eq!(reason(&sim, 0), AnycastReason::NoObservers);
                sim.run_for(Duration::from_millis(100));
            }

            // Healed: announced again.
            sim.partition(std::slice::from_ref(&everyone));
            assert!(
                run_until(&mut sim, Duration::from_secs(10), |s| all_announce(s, &everyone)).is_some(),
                "{n} nodes: node 0 not announced after the heal"
            );

            // Two of them on one side: each still has a live observer that vouches for it.
            if n >= 5 {
                let (pair, others) = (vec![0, 1], (2..n).collect::<Vec<usize>>());
                sim.partition(&[pair.clone(), others.clone()]);
                sim.run_for(Duration::from_secs(8));
                assert!(
                    all_announce(&sim, &pair),
                    "the pair withdrew: {:?}",
                    pair.iter().map(|i| reason(&sim, *i)).collect::<Vec<_>>()
                );
                assert!(all_announce(&sim, &others));
            }
        }
    }

    #[test]
    fn a_crashed_peer_withdraws_nobody() {
        let mut sim = Sim::new(3, SimConfig { seed: 3, ..SimConfig::default() });
        assert!(run_until(&mut sim, Duration::from_secs(20), |s| all_announce(s, &[0, 1, 2])).is_some());
        sim.crash(2);
        sim.run_for(Duration::from_secs(8));
        assert!(all_announce(&sim, &[0, 1]), "{:?} {:?}", reason(&sim, 0), reason(&sim, 1));
        // And with both peers gone, the survivor cannot tell that from being cut off.
        sim.crash(1);
        sim.run_for(Duration::from_secs(8));
        assert_eq!(reason(&sim, 0), AnycastReason::NoObservers);
    }
}
