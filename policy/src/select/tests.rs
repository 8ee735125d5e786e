use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

const NAMES: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

/// Site `i` of `n`, site 0 being this node.
fn sites(n: usize, priorities: &[u32], up: &[bool]) -> Vec<Candidate<'static>> {
    (0..n)
        .map(|i| Candidate {
            name: NAMES[i],
            attrs: SiteAttrs { priority: priorities.get(i).copied().unwrap_or(1), weight: 100 },
            qualifies: up.get(i).copied().unwrap_or(true),
            latency: None,
            settling: false,
            is_self: i == 0,
        })
        .collect()
}

fn rule(policy: Policy) -> Rule {
    Rule { policy, ttl_degraded: 2, ..Rule::all("www", 30) }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn priority_fails_over_and_back_after_the_interval() {
    let t0 = Instant::now();
    let mut sel = Selector::new(Rule { min_change_interval: ms(10_000), ..rule(Policy::Priority) });
    // Site 1 is the primary; this node (0) and site 2 are backups at level 2 and 3.
    let pri = [2, 1, 3];
    let c = sel.select(t0, &sites(3, &pri, &[true, true, true]));
    assert_eq!((c.sites.clone(), c.ttl, c.degraded), (vec![1], 30, false));

    // The primary is lost: level 2 at once (a removal is never delayed, nothing else is left).
    let c = sel.select(t0 + ms(1), &sites(3, &pri, &[true, false, true]));
    assert_eq!((c.sites.clone(), c.ttl, c.degraded), (vec![0], 2, true));
    // Two levels lost: level 3.
    let c = sel.select(t0 + ms(2), &sites(3, &pri, &[false, false, true]));
    assert_eq!(c.sites, [2]);

    // Level 2 returns at once: the last change was 1 ms ago, but... the interval holds it.
    let c = sel.select(t0 + ms(3), &sites(3, &pri, &[true, false, true]));
    assert_eq!(c.sites, [2], "held: a better site returning is an addition");
    assert!(c.degraded);
    assert_eq!(sel.due(), Some(t0 + ms(2) + ms(10_000)));
    let why = sel.explain(t0 + ms(3), &sites(3, &pri, &[true, false, true]));
    assert!(!why[0].in_answer && why[0].why.contains("held back"), "{why:?}");
    assert!(why[2].in_answer && why[2].why.contains("kept until"), "{why:?}");

    // While held, the kept site failing makes the held change happen at once.
    let c = sel.select(t0 + ms(4), &sites(3, &pri, &[true, false, false]));
    assert_eq!(c.sites, [0]);
    // The primary returns; back to it once the interval since the last change passed.
    let all = sites(3, &pri, &[true, true, true]);
    assert_eq!(sel.select(t0 + ms(5), &all).sites, [0]);
    assert_eq!(sel.select(t0 + ms(10_003), &all).sites, [0]);
    let c = sel.select(t0 + ms(10_004), &all);
    assert_eq!((c.sites, c.ttl, c.degraded), (vec![1], 30, false));
    assert_eq!(sel.due(), None);
}

#[test]
fn the_first_choice_and_removals_are_never_held() {
    let t0 = Instant::now();
    let mut sel = Selector::new(Rule { min_change_interval: ms(60_000), ..rule(Policy::All) });
    assert_eq!(sel.select(t0, &sites(3, &[], &[true, false, false])).sites, [0]);
    // The first change after the start is not held (there was no change to space it from)...
    assert_eq!(sel.select(t0 + ms(1), &sites(3, &[], &[true, true, false])).sites, [0, 1]);
    // ...the next addition is.
    assert_eq!(sel.select(t0 + ms(2), &sites(3, &[], &[true, true, true])).sites, [0, 1]);
    // Removals go through while an addition waits: 1 and 2 lost, 2 back.
    assert_eq!(sel.select(t0 + ms(3), &sites(3, &[], &[true, false, false])).sites, [0]);
    assert_eq!(sel.select(t0 + ms(4), &sites(3, &[], &[true, false, true])).sites, [0]);
    // Due one interval after the last addition (removals do not restart it).
    assert_eq!(sel.select(t0 + ms(60_000), &sites(3, &[], &[true, false, true])).sites, [0]);
    assert_eq!(sel.select(t0 + ms(60_001), &sites(3, &[], &[true, false, true])).sites, [0, 2]);
}

#[test]
fn fail_open_to_self_or_to_the_ideal_sites() {
    let t0 = Instant::now();
    let mut sel = Selector::new(rule(Policy::Priority));
    let c = sel.select(t0, &sites(3, &[1, 2, 3], &[false, false, false]));
    assert_eq!((c.sites, c.fail_open, c.ttl), (vec![0], true, 2));
    // A name this node is not a site of fails open to what it would answer if all were up.
    let mut sel = Selector::new(Rule { sites: Some(vec!["b".into(), "c".into()]), ..rule(Policy::Priority) });
    let c = sel.select(t0, &sites(3, &[1, 3, 2], &[true, false, false]));
    assert_eq!((c.sites, c.fail_open), (vec![2], true));
    let c = sel.select(t0, &sites(3, &[1, 3, 2], &[true, true, false]));
    assert_eq!((c.sites, c.fail_open, c.degraded), (vec![1], false, true));
}

#[test]
fn weighted_standby_only_when_nothing_else_qualifies() {
    let t0 = Instant::now();
    let mut sel = Selector::new(Rule { max_answers: 1, ..rule(Policy::Weighted) });
    let mut c = sites(3, &[], &[true, true, true]);
    c[2].attrs.weight = 0;
    let got = sel.select(t0, &c);
    assert_eq!((got.sites, got.pick, got.degraded), (vec![0, 1], Pick::Weighted { max: 1 }, false));
    c[0].qualifies = false;
    c[1].qualifies = false;
    let got = sel.select(t0, &c);
    assert_eq!((got.sites, got.degraded), (vec![2], true));
    let why = sel.explain(t0, &c);
    assert!(why[2].why.contains("standby"), "{why:?}");
}

#[test]
fn fastest_is_sticky_under_jitter_and_moves_for_a_clear_winner() {
    let t0 = Instant::now();
    let mut sel =
        Selector::new(Rule { max_answers: 3, min_change_interval: ms(5_000), ..rule(Policy::Fastest) });
    let base = [30u64, 200, 90, 40, 120, 150, 60, 300, 250, 80];
    let mut rng = StdRng::seed_from_u64(3);
    let at = |lat: &[u64]| {
        let mut c = sites(10, &[], &[]);
        for (c, l) in c.iter_mut().zip(lat) {
            c.latency = Some(ms(*l));
        }
        c
    };
    let first = sel.select(t0, &at(&base));
    // Under good_enough (50 ms) is a tie: 0 (30 ms) and 3 (40 ms), then 6 (60 ms).
    assert_eq!(first.sites, [0, 3, 6]);
    for step in 1..=6000u64 {
        // ±20 % jitter, every 100 ms for 10 minutes.
        let jittered: Vec<u64> =
            base.iter().map(|l| (*l as f64 * rng.random_range(0.8..1.2)) as u64).collect();
        let c = sel.select(t0 + ms(100 * step), &at(&jittered));
        assert_eq!(c.sites, first.sites, "changed at step {step}");
    }
    // A member stops qualifying: replaced by the next fastest at once (nothing held: it is the
    // first change).
    let mut c = at(&base);
    c[6].qualifies = false;
    let now = t0 + ms(700_000);
    assert_eq!(sel.select(now, &c).sites, [0, 3, 9]);
    // 6 returns: 9 (80 ms) is not beaten by a clear margin by 6 (60 ms).
    assert_eq!(sel.select(now + ms(10_000), &at(&base)).sites, [0, 3, 9]);
    // A non-member becomes clearly faster than the worst member: swapped once the interval allows.
    let mut fast = base;
    fast[7] = 10;
    assert_eq!(sel.select(now + ms(10_001), &at(&fast)).sites, [0, 3, 7]);
    fast[1] = 5;
    assert_eq!(
        sel.select(now + ms(10_002), &at(&fast)).sites,
        [0, 3, 7],
        "ties under good_enough do not swap"
    );
}

#[test]
fn a_lost_member_is_replaced_at_once_while_growth_waits() {
    let t0 = Instant::now();
    let mut sel =
        Selector::new(Rule { max_answers: 2, min_change_interval: ms(60_000), ..rule(Policy::Fastest) });
    let at = |lat: [u64; 4], up: [bool; 4]| {
        let mut c = sites(4, &[], &up);
        for (c, l) in c.iter_mut().zip(lat) {
            c.latency = Some(ms(l));
        }
        c
    };
    assert_eq!(sel.select(t0, &at([10, 100, 200, 300], [true, false, true, true])).sites, [0, 2]);
    // The first change is never held; the next growth would be, but a replacement is not.
    assert_eq!(sel.select(t0 + ms(1), &at([10, 100, 200, 300], [true, true, true, true])).sites, [0, 1]);
    assert_eq!(sel.select(t0 + ms(2), &at([10, 100, 200, 300], [true, false, true, true])).sites, [0, 2]);
    // A reshuffle (a clearly faster site returning) waits.
    assert_eq!(sel.select(t0 + ms(3), &at([10, 60, 200, 300], [true, true, true, true])).sites, [0, 2]);
    assert_eq!(sel.select(t0 + ms(60_003), &at([10, 60, 200, 300], [true, true, true, true])).sites, [0, 1]);
}

#[test]
fn rotation_and_restricted_sites() {
    let t0 = Instant::now();
    let mut sel = Selector::new(Rule {
        max_answers: 2,
        sites: Some(vec!["a".into(), "c".into(), "d".into()]),
        ..rule(Policy::All)
    });
    let got = sel.select(t0, &sites(4, &[], &[]));
    assert_eq!((got.sites, got.pick), (vec![0, 2, 3], Pick::Rotate { max: 2 }));
    let why = sel.explain(t0, &sites(4, &[], &[]));
    assert_eq!(why[1], SiteVerdict { in_answer: false, why: "not among this name's sites".into() });
}
