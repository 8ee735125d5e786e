//! Tests of the simulator's own bookkeeping: answer histories and convergence times.

use super::*;

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[test]
fn converged_at_from_recorded_changes() {
    let mut sim = Sim::new(4, SimConfig::default());
    sim.crash(3);
    let change = |at: u64, node: NodeId, members: &[NodeId]| AnswerChange {
        at: ms(at),
        node,
        members: members.to_vec(),
    };
    sim.changes = vec![
        change(1, 0, &[0, 1]),
        change(1, 1, &[0, 1, 2]),
        change(1, 2, &[0, 1, 2, 3]),
        change(2, 0, &[0, 1, 2]),
        change(3, 0, &[0, 1, 2, 3]),
        change(4, 1, &[0, 1]),
        change(5, 1, &[0, 1, 2]),
        change(6, 2, &[2]),
    ];
    for (i, members) in [vec![0, 1, 2, 3], vec![0, 1, 2], vec![2]].into_iter().enumerate() {
        sim.nodes[i].answer = members;
    }
    // Node 0 holds 0, 1, 2 from 2 ms on (the crashed 3 does not matter); node 1 lost 2 at
    // 4 ms and got it back at 5; node 2 lacks 0 and 1; node 3 is crashed.
    assert_eq!(sim.converged_at(Duration::ZERO), vec![Some(ms(2)), Some(ms(5)), None, None]);
    assert_eq!(sim.converged_at(ms(3)), vec![Some(ms(3)), Some(ms(5)), None, None]);
    assert_eq!(sim.converged_at(ms(10)), vec![Some(ms(10)), Some(ms(10)), None, None]);
}

#[test]
fn included_by_all_is_when_the_last_observer_took_the_node_back() {
    let mut sim = Sim::new(3, SimConfig::default());
    let change = |at: u64, node: NodeId, members: &[NodeId]| AnswerChange {
        at: ms(at),
        node,
        members: members.to_vec(),
    };
    sim.changes = vec![
        change(1, 0, &[0, 2]),
        change(2, 1, &[1]),
        change(3, 0, &[0, 1, 2]),
        change(4, 1, &[1, 2]),
        change(5, 1, &[0, 1, 2]),
        change(6, 0, &[0]),
        change(7, 0, &[0, 2]),
    ];
    sim.nodes[0].answer = vec![0, 2];
    sim.nodes[1].answer = vec![0, 1, 2];
    // Node 0 holds 2 since 7 ms (it dropped it at 6), node 1 since 4 ms: both since 7.
    assert_eq!(sim.included_by_all(2, &[0, 1], Duration::ZERO), Some(ms(7)));
    assert_eq!(sim.included_by_all(2, &[1], Duration::ZERO), Some(ms(4)));
    assert_eq!(sim.included_by_all(2, &[1], ms(10)), Some(ms(10)));
    assert_eq!(sim.included_by_all(1, &[0, 1], Duration::ZERO), None, "node 0 lacks 1");
}

#[test]
fn last_node_to_converge_is_when_the_cluster_converges() {
    let mut sim = Sim::new(5, SimConfig { seed: 3, ..SimConfig::default() });
    let at = sim.run_until_cond(Duration::from_secs(5), Sim::converged).expect("converges");
    let per_node = sim.converged_at(Duration::ZERO);
    assert!(per_node.iter().all(|t| t.is_some_and(|t| t <= at)), "{per_node:?} {at:?}");
    assert_eq!(per_node.iter().flatten().max(), Some(&at));
    // A crashed node: none for it, and the others still hold every running node.
    let crash_at = sim.now();
    sim.crash(4);
    let after = sim.converged_at(crash_at);
    assert_eq!(after[4], None);
    assert!(after[..4].iter().all(|t| *t == Some(crash_at)), "{after:?}");
}
