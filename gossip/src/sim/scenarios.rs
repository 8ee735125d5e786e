//! Scenario tests: membership behaviour over the simulated network, at 3, 10 and 100 nodes (the
//! minute-long ones at 100 only with `SPDU_SIM_LARGE=1`; 1000 nodes are in the sim bench). Times
//! printed are simulated; run with `--nocapture` to see them.

use std::time::Duration;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// The cluster sizes every scenario runs at.
/// 3, 10 and 100 nodes.
fn sizes() -> Vec<usize> {
    vec![3, 10, 100]
}

/// For the scenarios that run a minute or more of simulated time: 3 and 10 nodes, and 100 with
/// `SPDU_SIM_LARGE=1` (each is about ten seconds of real time at 100 nodes in a debug build).
fn long_sizes() -> Vec<usize> {
    let mut sizes = vec![3, 10];
    if std::env::var_os("SPDU_SIM_LARGE").is_some_and(|v| v == "1") {
        sizes.push(100);
    }
    sizes
}

fn with_seed(seed: u64) -> SimConfig {
    SimConfig { seed, ..SimConfig::default() }
}

/// Runs until every running node answers with exactly the running nodes; returns when.
fn converge(sim: &mut Sim, within: Duration) -> Duration {
    let deadline = sim.now() + within;
    let at = sim.run_until_cond(deadline, Sim::converged);
    at.unwrap_or_else(|| panic!("not converged by {deadline:?}: {:?}", answers(sim)))
}

fn answers(sim: &Sim) -> Vec<Vec<NodeId>> {
    (0..sim.len()).map(|i| sim.answer(i).to_vec()).collect()
}

fn all_but(n: usize, out: &[NodeId]) -> Vec<NodeId> {
    (0..n).filter(|i| !out.contains(i)).collect()
}

/// Removals at or after `since` other than those allowed by `allowed(removal)`.
fn unexpected_removals(sim: &Sim, since: Duration, allowed: impl Fn(&Removal) -> bool) -> Vec<Removal> {
    sim.removals_since(since).filter(|r| !allowed(r)).copied().collect()
}

#[test]
fn cold_start_converges() {
    for n in sizes() {
        let mut sim = Sim::new(n, with_seed(n as u64));
        let at = converge(&mut sim, secs(5));
        eprintln!("cold start, {n} nodes: every answer holds every node at {at:?}");
        sim.run_for(secs(10));
        assert!(sim.converged());
        assert_eq!(unexpected_removals(&sim, at, |_| false), vec![]);
        let t = sim.traffic(0);
        let per_sec = |bytes: u64| bytes as f64 / sim.now().as_secs_f64();
        eprintln!(
            "  node 0 sends {:.0} B/s ({:.0} B/s of it observation pushes), {:.0} messages/s",
            per_sec(t.sent.bytes),
            per_sec(t.sent_push.bytes),
            t.sent.messages as f64 / sim.now().as_secs_f64()
        );
    }
}

#[test]
fn crash_is_dropped_by_every_survivor_and_restart_returns() {
    for n in sizes() {
        let mut sim = Sim::new(n, with_seed(10 + n as u64));
        converge(&mut sim, secs(5));
        sim.run_for(secs(2));
        let x = n - 1;
        let survivors = all_but(n, &[x]);
        let crash_at = sim.now();
        sim.crash(x);
        let gone = sim
            .run_until_cond(crash_at + secs(10), |s| s.dropped_by_all(x, &survivors, crash_at).is_some())
            .expect("every survivor drops the crashed node");
        eprintln!("{n} nodes: crashed node gone from every survivor's answer after {:?}", gone - crash_at);
        assert!(gone - crash_at < secs(3), "detection took {:?}", gone - crash_at);
        // Nobody else was dropped, then or later.
        sim.run_for(secs(5));
        assert_eq!(unexpected_removals(&sim, crash_at, |r| r.dropped == x), vec![]);
        assert!(sim.converged());

        let restart_at = sim.now();
        sim.restart(x);
        let back = converge(&mut sim, secs(10));
        eprintln!("{n} nodes: restarted node back in every answer after {:?}", back - restart_at);
        assert!(back - restart_at < secs(5), "recovery took {:?}", back - restart_at);
        assert_eq!(sim.state(x).unwrap().observation(&sim.key(x)).unwrap().incarnation, 2);
        sim.run_for(secs(5));
        assert_eq!(unexpected_removals(&sim, back, |_| false), vec![]);
    }
}

#[test]
fn symmetric_partition_splits_and_heals() {
    for n in [3, 4, 10] {
        let mut sim = Sim::new(n, with_seed(20 + n as u64));
        converge(&mut sim, secs(5));
        let rest = all_but(n, &[0]);
        sim.partition(&[vec![0], rest.clone()]);
        sim.run_for(secs(10));
        // docs/design.md §3: partition {A} | {B, C, D}: A answers A; B, C and D answer B, C, D.
        assert_eq!(sim.answer(0), &[0]);
        for &i in &rest {
            assert_eq!(sim.answer(i), &rest[..], "node {i}");
        }
        let heal_at = sim.now();
        sim.apply(Action::Heal);
        let back = converge(&mut sim, secs(10));
        eprintln!("{n} nodes: partition {{0}}|{{rest}} healed in {:?}", back - heal_at);
    }
}

#[test]
fn node_reachable_from_one_observer_only() {
    for n in sizes() {
        let mut sim = Sim::new(n, with_seed(30 + n as u64));
        converge(&mut sim, secs(5));
        let x = n - 1;
        let others = all_but(n, &[0, x]);
        for &j in &others {
            sim.apply(Action::SetLinkUp { from: x, to: j, up: false });
            sim.apply(Action::SetLinkUp { from: j, to: x, up: false });
        }
        let since = sim.now();
        sim.run_for(secs(10));
        for &j in &others {
            assert!(!sim.answer(j).contains(&x), "node {j} answers with {x}: {:?}", sim.answer(j));
            assert!(sim.answer(j).contains(&0), "node {j} lost node 0");
        }
        // With 3 nodes this is docs/design.md's broken B–C link: A answers A, B, C (one of the two
        // observers of each agrees); with more, one vantage point is outvoted.
        assert_eq!(sim.answer(0).contains(&x), n == 3, "node 0: {:?}", sim.answer(0));
        assert_eq!(
            unexpected_removals(&sim, since, |r| r.dropped == x || (r.node == x && r.dropped != 0)),
            vec![]
        );
    }
}

fn no_false_drops_under_loss(n: usize, minutes: u64) {
    let mut config = with_seed(40 + n as u64);
    config.link.loss = 0.1;
    let mut sim = Sim::new(n, config);
    let at = converge(&mut sim, secs(10));
    sim.run_until(secs(60 * minutes));
    assert_eq!(unexpected_removals(&sim, at, |_| false), vec![], "{n} nodes under 10% loss");
    assert!(sim.converged());
    eprintln!(
        "{n} nodes, 10% loss on every link: converged at {at:?}, no drop in {minutes} min ({} events)",
        sim.events()
    );
}

#[test]
fn ten_percent_loss_everywhere_3_nodes() {
    no_false_drops_under_loss(3, 10);
}

#[test]
fn ten_percent_loss_everywhere_10_nodes() {
    no_false_drops_under_loss(10, 10);
}

#[test]
fn one_way_loss_at_one_observer() {
    for n in long_sizes() {
        let mut sim = Sim::new(n, with_seed(50 + n as u64));
        converge(&mut sim, secs(5));
        let since = sim.now();
        // Half of everything towards node 0 is lost: nobody else drops anyone. Node 0 itself
        // needs a few seconds of evidence before its liveness checks allow for the loss; after
        // that it drops nobody either.
        for j in 1..n {
            sim.set_link(j, 0, Link { loss: 0.5, ..sim.link(j, 0) });
        }
        let adapted = since + secs(10);
        sim.run_for(secs(60));
        assert_eq!(
            unexpected_removals(&sim, since, |r| r.node == 0 && r.at < adapted),
            vec![],
            "{n} nodes, 50% one-way loss"
        );
        let early = sim.removals_since(since).filter(|r| r.at < adapted).count();
        eprintln!("{n} nodes, 50% loss towards node 0: {early} drops by node 0 while adapting, none after");
        // Node 0 goes deaf: it hears nothing, sees everyone unreachable and says so. Only node 0
        // itself may leave answers; nobody else is dropped.
        let since = sim.now();
        for j in 1..n {
            sim.set_link(j, 0, Link { loss: 1.0, ..sim.link(j, 0) });
        }
        sim.run_for(secs(20));
        assert_eq!(
            unexpected_removals(&sim, since, |r| r.node == 0 || r.dropped == 0),
            vec![],
            "{n} nodes, deaf node 0"
        );
        assert_eq!(sim.answer(0), &[0]);
    }
}

#[test]
fn flapping_link_only_affects_its_ends() {
    for n in long_sizes() {
        let mut sim = Sim::new(n, with_seed(60 + n as u64));
        converge(&mut sim, secs(5));
        let since = sim.now();
        // 0 ↔ 1 goes down for 2 s and up for 2 s, ten times.
        for k in 0..10 {
            let down = since + secs(4 * k);
            for (from, to) in [(0, 1), (1, 0)] {
                sim.schedule(down, Action::SetLinkUp { from, to, up: false });
                sim.schedule(down + secs(2), Action::SetLinkUp { from, to, up: true });
            }
        }
        sim.run_for(secs(45));
        let flips = sim.removals_since(since).count();
        assert_eq!(
            unexpected_removals(&sim, since, |r| matches!((r.node, r.dropped), (0, 1) | (1, 0))),
            vec![],
            "{n} nodes"
        );
        assert!(flips > 0, "a 2 s outage is detected");
        assert!(sim.converged());
        // Outages shorter than `down_after` probe timeouts go unnoticed.
        let since = sim.now();
        for k in 0..20 {
            let down = since + ms(1000 * k);
            for (from, to) in [(0, 1), (1, 0)] {
                sim.schedule(down, Action::SetLinkUp { from, to, up: false });
                sim.schedule(down + ms(300), Action::SetLinkUp { from, to, up: true });
            }
        }
        sim.run_for(secs(25));
        assert_eq!(unexpected_removals(&sim, since, |_| false), vec![], "{n} nodes, 300 ms flaps");
    }
}

/// Converges, makes node 0 lie, crashes `crash`, runs 20 s; returns when the lie started.
fn lying_run(n: usize, seed: u64, lie: Lie, crash: Option<NodeId>) -> (Sim, Duration) {
    let mut sim = Sim::new(n, with_seed(seed));
    // A liar from the start: observations change only when their content does, so a lie set
    // later would go out only with node 0's next change.
    sim.set_lie(0, lie);
    let since = converge(&mut sim, secs(5));
    if let Some(d) = crash {
        sim.crash(d);
    }
    sim.run_for(secs(20));
    (sim, since)
}

#[test]
fn lying_observer_cannot_add_a_dead_node() {
    for n in sizes() {
        let dead = n - 1;
        let (sim, _) =
            lying_run(n, 70 + n as u64, Lie { reachable: vec![dead], ..Lie::default() }, Some(dead));
        // The lie really went out: honest nodes hold node 0's claim that `dead` is reachable.
        let honest = sim.state(1).unwrap();
        let claim = honest.observation(&sim.key(0)).unwrap();
        assert!(claim.report(honest.roster(), &sim.key(dead)).unwrap().reachable);
        for i in all_but(n, &[dead]) {
            assert!(!sim.answer(i).contains(&dead), "node {i}: {:?}", sim.answer(i));
        }
        assert!(sim.converged());
    }
}

#[test]
fn lying_observer_cannot_remove_a_live_node() {
    for n in sizes() {
        let victims: Vec<NodeId> = (1..n).collect();
        let (sim, since) = lying_run(n, 80 + n as u64, Lie { unreachable: victims, ..Lie::default() }, None);
        let honest = sim.state(1).unwrap();
        let claim = honest.observation(&sim.key(0)).unwrap();
        assert!(claim.reports(honest.roster()).iter().all(|r| !r.reachable));
        assert!(sim.converged(), "{n} nodes: {:?}", answers(&sim));
        assert_eq!(unexpected_removals(&sim, since, |_| false), vec![]);
    }
}

#[test]
fn unhealthy_node_withdraws_and_returns() {
    let n = 10;
    let mut sim = Sim::new(n, with_seed(90));
    converge(&mut sim, secs(5));
    sim.apply(Action::SetHealthy(3, false));
    sim.run_for(secs(2));
    for i in 0..n {
        assert!(!sim.answer(i).contains(&3), "node {i}: {:?}", sim.answer(i));
    }
    sim.apply(Action::SetHealthy(3, true));
    converge(&mut sim, secs(5));
}

fn eventful_run(seed: u64) -> Sim {
    let mut config = with_seed(seed);
    config.link.loss = 0.05;
    let mut sim = Sim::new(10, config);
    sim.schedule(secs(3), Action::Crash(4));
    sim.schedule(secs(5), Action::Partition(vec![vec![0, 1, 2], vec![3, 5, 6, 7, 8, 9]]));
    sim.schedule(secs(9), Action::Heal);
    sim.schedule(secs(10), Action::Restart(4));
    sim.run_until(secs(15));
    sim
}

#[test]
fn same_seed_same_run() {
    let a = eventful_run(7);
    let b = eventful_run(7);
    assert_eq!(a.trace_hash(), b.trace_hash());
    assert_eq!(a.changes(), b.changes());
    assert_eq!(a.events(), b.events());
    assert!(a.changes().len() > 20);
    let c = eventful_run(8);
    assert_ne!(a.trace_hash(), c.trace_hash());
}

fn with_services(seed: u64) -> SimConfig {
    SimConfig { services: Some(ms(500)), ..with_seed(seed) }
}

#[test]
fn a_dead_service_leaves_every_answer_and_returns() {
    for n in long_sizes() {
        let mut sim = Sim::new(n, with_services(100 + n as u64));
        let since = converge(&mut sim, secs(10));
        let x = n - 1;
        let stopped = sim.now();
        sim.apply(Action::SetService(x, false));
        // Every node drops it, itself included (it withdraws its own addresses).
        let everyone: Vec<NodeId> = (0..n).collect();
        let at = sim
            .run_until_cond(stopped + secs(5), |s| s.dropped_by_all(x, &everyone, stopped).is_some())
            .unwrap_or_else(|| panic!("{n} nodes: {:?}", answers(&sim)));
        assert!(at - stopped <= secs(3), "{n} nodes: dropped after {:?}", at - stopped);
        sim.run_for(secs(3));
        assert!(everyone.iter().all(|i| !sim.answer(*i).contains(&x)), "{n} nodes: stays out");
        sim.apply(Action::SetService(x, true));
        converge(&mut sim, secs(5));
        assert_eq!(unexpected_removals(&sim, since, |r| r.dropped == x), vec![], "{n} nodes");
    }
}

#[test]
fn a_service_one_observer_cannot_reach_stays_in_the_others_answers() {
    for n in long_sizes() {
        let mut sim = Sim::new(n, with_services(110 + n as u64));
        let since = converge(&mut sim, secs(10));
        let x = n - 1;
        sim.apply(Action::BlockService { from: 0, to: x, blocked: true });
        sim.run_for(secs(10));
        // Node 0 drops it (its own probe says no); one dissenting vote does not sway the rest.
        assert!(!sim.answer(0).contains(&x), "{n} nodes: {:?}", sim.answer(0));
        for i in 1..n {
            assert!(sim.answer(i).contains(&x), "{n} nodes, node {i}: {:?}", sim.answer(i));
        }
        assert_eq!(unexpected_removals(&sim, since, |r| (r.node, r.dropped) == (0, x)), vec![], "{n} nodes");
        sim.apply(Action::BlockService { from: 0, to: x, blocked: false });
        converge(&mut sim, secs(5));
    }
}

#[test]
fn a_node_restarted_with_a_lower_incarnation_is_a_full_member_again() {
    for n in sizes() {
        let mut sim = Sim::new(n, with_seed(120 + n as u64));
        converge(&mut sim, secs(5));
        // x runs at incarnation 7 for a while, then comes back at 1: its incarnation file was
        // lost and its clock is behind.
        let x = n - 1;
        sim.crash(x);
        sim.restart_with_incarnation(x, 7);
        converge(&mut sim, secs(10));
        sim.run_for(secs(2));
        sim.crash(x);
        sim.run_for(secs(1));
        let restart_at = sim.now();
        sim.restart_with_incarnation(x, 1);
        // Every peer holds x's current observation, fresh (so its votes and its health count).
        let current = |s: &Sim| {
            let Some(own) = s.state(x) else { return false };
            let mine = own.observation(&s.key(x)).map(crate::proto::Observation::version);
            let now = s.base + s.now;
            all_but(n, &[x]).iter().all(|&j| {
                let peer = s.state(j).expect("running");
                peer.observation(&s.key(x)).map(crate::proto::Observation::version) == mine
                    && peer.is_fresh(&s.key(x), now)
            })
        };
        let deadline = restart_at + secs(5);
        while !current(&sim) && sim.now() < deadline {
            sim.run_for(ms(100));
        }
        let took = sim.now() - restart_at;
        eprintln!("{n} nodes: a node restarted at a lower incarnation is current everywhere after {took:?}");
        assert!(current(&sim), "{n} nodes: not current after {took:?}");
        let incarnation = sim.state(x).unwrap().incarnation();
        assert!(incarnation > 7, "{n} nodes: rose above its old incarnation, to {incarnation}");
        sim.run_for(secs(5));
        assert!(current(&sim), "{n} nodes: stays current");
        assert!(sim.converged());
    }
}

/// Reloads: every node but `x` drops `x` from its roster (one after the other, as operators
/// would) while `x` is stopped; later `x` starts again and is added back the same way. The
/// others never leave one another's answers, and `x` joins every answer.
#[test]
fn a_member_removed_and_added_by_reloads_while_the_others_keep_answering() {
    for n in sizes() {
        let mut sim = Sim::new(n, with_seed(40 + n as u64));
        converge(&mut sim, secs(5));
        let x = n - 1;
        let others = all_but(n, &[x]);
        let start = sim.now();
        sim.crash(x);
        for (k, i) in others.iter().enumerate() {
            sim.schedule(start + ms(50 * k as u64 % 2000), Action::Reconfigure(*i, others.clone()));
        }
        sim.run_for(secs(3));
        converge(&mut sim, secs(10));
        for i in &others {
            let state = sim.state(*i).unwrap();
            assert_eq!(state.roster().len(), n - 1);
            assert!(state.observation(&sim.key(x)).is_none(), "{i} dropped x's observation");
        }
        sim.run_for(secs(2));

        let add = sim.now();
        sim.restart(x);
        let everyone: Vec<NodeId> = (0..n).collect();
        for (k, i) in others.iter().enumerate() {
            sim.schedule(add + ms(50 * k as u64 % 2000), Action::Reconfigure(*i, everyone.clone()));
        }
        let back = converge(&mut sim, secs(15));
        eprintln!(
            "{n} nodes: a member added by reloads is in every answer {:?} after it started",
            back - add
        );
        sim.run_for(secs(5));
        assert!(sim.converged());
        assert_eq!(unexpected_removals(&sim, start, |r| r.dropped == x), vec![], "no gap for the others");
    }
}

/// Node `n - 1` takes its service address from what its peers see; node 0 lies about it.
fn observed_address_run(n: usize, liar: Option<std::net::SocketAddr>) -> Sim {
    let mut sim = Sim::new(n, with_seed(90 + n as u64));
    if let Some(fake) = liar {
        sim.set_lie(0, Lie { observed: Some(fake), ..Lie::default() });
    }
    converge(&mut sim, secs(5));
    sim.use_observed_address(n - 1);
    sim
}

/// The service addresses node `at` holds in `of`'s newest observation (signed by `of`).
fn served_addresses(sim: &Sim, at: NodeId, of: NodeId) -> Vec<std::net::IpAddr> {
    let state = sim.state(at).expect("running");
    state.observation(&sim.key(of)).map(|o| o.addresses.clone()).unwrap_or_default()
}

#[test]
fn an_address_seen_by_a_quorum_is_adopted_and_served_everywhere() {
    let n = 5;
    let dynamic = n - 1;
    let first: std::net::SocketAddr = "198.18.0.5:7946".parse().unwrap();
    let moved: std::net::SocketAddr = "198.18.1.5:7946".parse().unwrap();
    let mut sim = observed_address_run(n, None);
    sim.see_at(dynamic, first);
    sim.run_for(secs(2));
    assert_eq!(sim.state(dynamic).unwrap().observed_address(), Some(first));
    for i in 0..n {
        assert_eq!(served_addresses(&sim, i, dynamic), vec![first.ip()], "at node {i}");
    }
    // It moves: the new address is in every answer within a heartbeat or two, the old in none.
    sim.see_at(dynamic, moved);
    // (Checked every 100 ms: at the peers only the signed addresses change, not the answer.)
    let moved_at = sim.now();
    let mut done = None;
    for _ in 0..50 {
        if (0..n).all(|i| served_addresses(&sim, i, dynamic) == vec![moved.ip()]) {
            done = Some(sim.now() - moved_at);
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    assert!(
        done.is_some_and(|took| took <= secs(3)),
        "the moved address reached every answer: adopted {:?}, held {:?}",
        sim.state(dynamic).unwrap().observed_address(),
        (0..n).map(|i| served_addresses(&sim, i, dynamic)).collect::<Vec<_>>()
    );
}

#[test]
fn a_single_lying_peer_cannot_change_another_sites_address() {
    let fake: std::net::SocketAddr = "198.18.9.9:7946".parse().unwrap();
    for n in [3, 5] {
        let dynamic = n - 1;
        let real: std::net::SocketAddr = "198.18.0.5:7946".parse().unwrap();
        let mut sim = observed_address_run(n, Some(fake));
        sim.see_at(dynamic, real);
        sim.run_for(secs(5));
        let state = sim.state(dynamic).unwrap();
        if n == 3 {
            // One honest peer and one liar: no quorum for either address.
            assert_eq!(state.observed_address(), None, "n = {n}");
        } else {
            assert_eq!(state.observed_address(), Some(real), "n = {n}");
        }
        for i in 0..n {
            assert!(!served_addresses(&sim, i, dynamic).contains(&fake.ip()), "n = {n}, node {i}");
        }
    }
}
