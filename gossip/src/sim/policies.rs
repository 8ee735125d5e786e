//! Failover policies over the simulated network, at 3 and 10 nodes: every node runs the same
//! rules (as operators would configure them), services are checked every 500 ms, and the tests
//! read what each node's names answer with ([`Sim::name_sites`]) and, for weighted names, what
//! responses hold ([`Sim::count_responses`]).

use std::time::Duration;

use super::*;
use crate::proto::{Config, Policy, PolicyConfig, Rule, SiteAttrs};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// `n` nodes with one name under `rule`, node `i` having `attrs(i)`, services checked.
fn sim(n: usize, rule: Rule, attrs: impl Fn(usize) -> SiteAttrs) -> Sim {
    let policy =
        PolicyConfig { rules: vec![rule], sites: (0..n).map(|i| (fixtures::name(i), attrs(i))).collect() };
    let protocol = Config { policy, ..Config::default() };
    Sim::new(n, SimConfig { seed: n as u64, protocol, services: Some(ms(500)), ..SimConfig::default() })
}

fn rule(policy: Policy) -> Rule {
    Rule { policy, ttl_degraded: 2, ..Rule::all("www", 30) }
}

/// Runs until every running node's name answers with `sites` (in any order); returns when.
fn until_all_answer(sim: &mut Sim, sites: &[NodeId], within: Duration) -> Duration {
    let mut want = sites.to_vec();
    want.sort_unstable();
    let deadline = sim.now() + within;
    let holds = |sim: &Sim| {
        sim.up_nodes().iter().all(|i| {
            let mut got = sim.name_sites(*i, 0);
            got.sort_unstable();
            got == want
        })
    };
    let at = sim.run_until_cond(deadline, holds);
    let last: Vec<Vec<NodeId>> = (0..sim.len()).map(|i| sim.name_sites(i, 0)).collect();
    at.unwrap_or_else(|| panic!("not every node answers {want:?} within {within:?}: {last:?}"))
}

/// Node 0 is the primary (priority 1), node 1 the first backup (2), the rest the second (3).
fn priorities(i: usize) -> SiteAttrs {
    SiteAttrs { priority: (i as u32 + 1).min(3), ..SiteAttrs::default() }
}

#[test]
fn priority_primary_lost_and_back_two_levels_lost() {
    for n in [3, 10] {
        let mut sim = sim(n, rule(Policy::Priority), priorities);
        until_all_answer(&mut sim, &[0], secs(10));
        assert!(sim.names(1)[0].ttl == 30 && !sim.names(1)[0].degraded);

        let lost = sim.now();
        sim.crash(0);
        let took = until_all_answer(&mut sim, &[1], secs(5)) - lost;
        println!("{n} nodes: primary lost, backup alone after {took:?}");
        assert!(
            sim.names(1)[0].degraded && sim.names(1)[0].ttl == 2,
            "degraded TTL while the primary is out"
        );

        sim.crash(1);
        let third: Vec<NodeId> = (2..n).collect();
        until_all_answer(&mut sim, &third, secs(5));

        let back = sim.now();
        sim.restart(0);
        sim.restart(1);
        let took = until_all_answer(&mut sim, &[0], secs(10)) - back;
        println!("{n} nodes: primary back in every answer after {took:?}");
        assert!(sim.up_nodes().iter().all(|i| !sim.names(*i)[0].degraded));
    }
}

#[test]
fn a_removal_is_never_delayed_by_the_change_interval() {
    for n in [3, 10] {
        let interval = secs(30);
        let mut sim = sim(n, Rule { min_change_interval: interval, ..rule(Policy::Priority) }, priorities);
        until_all_answer(&mut sim, &[0], secs(10));
        // The primary goes and comes back: the failover itself is never held...
        let lost = sim.now();
        sim.crash(0);
        let failover = until_all_answer(&mut sim, &[1], secs(5)) - lost;
        // ...the return is, for the interval since that change, at every node.
        sim.restart(0);
        let back = sim.now();
        sim.run_for(secs(5));
        // (The restarted primary itself starts afresh: its first choice is never held.)
        let others: Vec<NodeId> = sim.up_nodes().into_iter().filter(|i| *i != 0).collect();
        assert!(others.iter().all(|i| sim.name_sites(*i, 0) == [1]), "held back for the interval");
        assert!(sim.names(1)[0].degraded, "short TTL while the primary is held back");
        let failback = until_all_answer(&mut sim, &[0], interval + secs(5)) - back;
        assert!(failback + ms(1) >= interval - secs(5) - failover, "failback after {failback:?}");
        // The backup, now out, is lost: nothing to hold. The primary is lost: the backup is
        // gone too, so the name fails over to the third level at once, 1 s after the last change.
        sim.crash(1);
        sim.run_for(secs(1));
        let lost = sim.now();
        sim.crash(0);
        if n > 2 {
            let third: Vec<NodeId> = (2..n).collect();
            let took = until_all_answer(&mut sim, &third, secs(5)) - lost;
            assert!(took < secs(5), "removal not delayed: {took:?}");
        }
        println!("{n} nodes: failover {failover:?}, failback {failback:?} (interval {interval:?})");
    }
}

/// Checks that over `queries` responses of node `at`, node `j` appears in `share(j)` of them,
/// within ±5 % of that share.
fn assert_shares(sim: &mut Sim, at: NodeId, queries: usize, share: impl Fn(NodeId) -> f64) {
    let counts = sim.count_responses(at, 0, queries);
    for (j, count) in counts.iter().enumerate() {
        let got = *count as f64 / queries as f64;
        let want = share(j);
        assert!(
            (got - want).abs() <= 0.05 * want + f64::EPSILON,
            "node {j}: {got:.4} of responses, want {want:.4}: {counts:?}"
        );
    }
}

#[test]
fn weighted_shares_over_ten_thousand_queries_and_standby() {
    for n in [3, 10] {
        // Node i weighs 10 (i + 1), except the last: standby.
        let weight = |i: usize| if i == n - 1 { 0 } else { 10 * (i as u32 + 1) };
        let mut sim = sim(n, Rule { max_answers: 1, ..rule(Policy::Weighted) }, |i| SiteAttrs {
            weight: weight(i),
            ..SiteAttrs::default()
        });
        let active: Vec<NodeId> = (0..n - 1).collect();
        until_all_answer(&mut sim, &active, secs(10));
        let total: u32 = (0..n).map(weight).sum();
        for at in [0, n - 1] {
            assert_shares(&mut sim, at, 20_000, |j| f64::from(weight(j)) / f64::from(total));
        }
        // Every positive-weight site lost: the standby takes every response.
        for i in 0..n - 1 {
            sim.crash(i);
        }
        until_all_answer(&mut sim, &[n - 1], secs(5));
        assert_shares(&mut sim, n - 1, 10_000, |j| if j == n - 1 { 1.0 } else { 0.0 });
        // One comes back: the standby leaves.
        sim.restart(0);
        until_all_answer(&mut sim, &[0], secs(10));
    }
}

#[test]
fn fastest_stays_put_for_ten_minutes_of_jitter() {
    for (n, max) in [(3, 1), (10, 3)] {
        let mut sim = sim(n, Rule { max_answers: max, good_enough: ms(5), ..rule(Policy::Fastest) }, |_| {
            SiteAttrs::default()
        });
        // Service latencies 20, 35, 50, … ms; every node measures the same services.
        for i in 0..n {
            sim.set_service_latency(i, ms(20 + 15 * ((i * 7) % n) as u64));
        }
        sim.set_service_jitter(0.2);
        // Settle: latencies are measured and smoothed, the sets chosen.
        sim.run_for(secs(30));
        let chosen: Vec<Vec<NodeId>> = (0..n).map(|i| sim.name_sites(i, 0)).collect();
        // Every node measures the same latencies: each chose the true fastest.
        let mut fastest: Vec<NodeId> = (0..n).collect();
        fastest.sort_by_key(|i| (20 + 15 * ((i * 7) % n), *i));
        fastest.truncate(max);
        fastest.sort_unstable();
        for (i, sites) in chosen.iter().enumerate() {
            let mut sorted = sites.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, fastest, "node {i}: {chosen:?}");
        }
        let before = sim.name_changes().len();
        let start = sim.now();
        sim.run_for(secs(600));
        let during: Vec<_> = sim.name_changes()[before..].to_vec();
        assert!(during.is_empty(), "{n} nodes: the fastest set changed under ±20 % jitter: {during:?}");
        for (i, sites) in chosen.iter().enumerate() {
            assert_eq!(&sim.name_sites(i, 0), sites, "node {i}");
        }
        // A member is lost: replaced at every node that had it, at once.
        let victim = chosen[0].iter().copied().find(|s| *s != 0).unwrap_or(chosen[0][0]);
        let lost = sim.now();
        sim.crash(victim);
        sim.run_for(secs(3));
        for i in sim.up_nodes() {
            let sites = sim.name_sites(i, 0);
            assert!(!sites.contains(&victim) && sites.len() == max.min(n - 1), "node {i}: {sites:?}");
        }
        println!(
            "{n} nodes: fastest {max} unchanged for {:?} of jitter; loss handled after {lost:?}",
            sim.now() - start
        );
    }
}

#[test]
fn fastest_prefers_the_fastest_sites() {
    let n = 10;
    let mut sim = sim(n, Rule { max_answers: 2, ..rule(Policy::Fastest) }, |_| SiteAttrs::default());
    // Node 7 and 8 are far faster than everyone; all nodes measure the same.
    for i in 0..n {
        sim.set_service_latency(i, ms(if i == 7 || i == 8 { 5 } else { 200 + i as u64 }));
    }
    sim.run_for(secs(30));
    for i in [1, 2, 9] {
        let mut sites = sim.name_sites(i, 0);
        sites.sort_unstable();
        assert_eq!(sites, [7, 8], "node {i}");
    }
}

#[test]
fn all_with_max_answers_rotates_over_every_site() {
    let n = 10;
    let mut sim = sim(n, Rule { max_answers: 3, ..rule(Policy::All) }, |_| SiteAttrs::default());
    until_all_answer(&mut sim, &(0..n).collect::<Vec<_>>(), secs(10));
    let counts = sim.count_responses(4, 0, 1000);
    assert_eq!(counts.iter().sum::<usize>(), 3000, "three per response");
    assert!(counts.iter().all(|c| *c == 300), "even spread: {counts:?}");
}
