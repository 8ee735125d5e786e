//! Tests of the protocol state as a whole: each drives one or a few cores by hand.

use super::*;
use crate::proto::Quorum;
use crate::proto::liveness::{MAX_SILENCE_FACTOR, PING_EVERY, silence};
use crate::proto::view::RELAY_AFTER;
use crate::sim::fixtures::{node_info, observation, public_key, roster, secret_key};
use crate::snapshot::ViewSnapshot;

pub(super) fn node(
    i: usize,
    n: usize,
    incarnation: u64,
    config: Config,
    now: Instant,
) -> (State, Vec<OutEvent>) {
    let mut state = State::new(node_info(i, incarnation), roster(n), config, i as u64, now);
    let out = state.drain();
    (state, out)
}

/// The observations pushed to `to` in `out`.
pub(super) fn pushed(out: &[OutEvent], to: usize) -> Vec<SignedObservation> {
    out.iter()
        .filter_map(|e| match e {
            OutEvent::Send { to: t, message: Message::Push(list) } if *t == public_key(to) => Some(list),
            _ => None,
        })
        .flatten()
        .cloned()
        .collect()
}

pub(super) fn push(
    state: &mut State,
    now: Instant,
    from: usize,
    list: Vec<SignedObservation>,
) -> Vec<OutEvent> {
    state.step(now, InEvent::Message { from: public_key(from), message: Message::Push(list) })
}

pub(super) fn seq_of(state: &State, i: usize) -> Option<(u64, u64)> {
    state.observation(&public_key(i)).map(Observation::version)
}

#[test]
fn replay_is_refused_counted_and_ignored() {
    let t0 = Instant::now();
    let (mut a, _) = node(0, 2, 1, Config::default(), t0);
    let (mut b, out) = node(1, 2, 1, Config::default(), t0);
    let first = pushed(&out, 0);
    push(&mut a, t0, 1, first.clone());
    assert_eq!((a.stats().accepted, a.stats().replayed), (1, 0));
    // Equal version: a duplicate.
    push(&mut a, t0, 1, first.clone());
    assert_eq!((a.stats().accepted, a.stats().replayed), (1, 1));
    // A change of content (here: health) is published with the next seq.
    let out = b.force_own_health(t0 + Duration::from_secs(1), false);
    push(&mut a, t0, 1, pushed(&out, 0));
    assert_eq!(seq_of(&a, 1), Some((1, 2)));
    // Older: a replay. The view keeps the newer one.
    let before = ViewSnapshot::of(&a, t0).nodes[1].observation.clone().unwrap().signed;
    push(&mut a, t0, 1, first);
    assert_eq!((a.stats().accepted, a.stats().replayed), (2, 2));
    assert_eq!(a.signed_observation(&public_key(1)), Some(&before));
    // Equal version, different content, validly signed: still not newer.
    let mut forged = observation(1, 2, false, &[(0, true)]);
    forged.seq = 2;
    let out = push(&mut a, t0, 1, vec![forged.sign(&secret_key(1))]);
    assert_eq!(a.stats().replayed, 3);
    assert_eq!(a.signed_observation(&public_key(1)), Some(&before));
    assert!(out.iter().all(|e| !matches!(e, OutEvent::Send { .. })), "nothing is relayed");
}

#[test]
fn restarted_node_supersedes_its_old_incarnation() {
    let t0 = Instant::now();
    let (mut a, _) = node(0, 2, 1, Config::default(), t0);
    let (mut old, _) = node(1, 2, 1, Config::default(), t0);
    let mut late = Vec::new();
    for k in 1..=5 {
        late = pushed(&old.force_own_health(t0 + Duration::from_secs(k), k % 2 == 0), 0);
        if k < 5 {
            push(&mut a, t0, 1, late.clone());
        }
    }
    assert_eq!(seq_of(&a, 1), Some((1, 5)));
    let (_, out) = node(1, 2, 2, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 0));
    assert_eq!(seq_of(&a, 1), Some((2, 1)));
    // The old process's last words arrive late: refused.
    push(&mut a, t0, 1, late);
    assert_eq!(seq_of(&a, 1), Some((2, 1)));
    assert_eq!(a.stats().replayed, 1);
}

#[test]
fn own_observation_echoed_is_a_replay_and_a_newer_one_a_conflict() {
    let t0 = Instant::now();
    let (mut a, out) = node(0, 2, 3, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 1));
    assert_eq!(a.stats().replayed, 1);
    let mut newer = observation(0, 2, true, &[(1, true)]);
    newer.incarnation = 4;
    push(&mut a, t0, 1, vec![newer.sign(&secret_key(0))]);
    assert_eq!(a.stats().self_conflict, 1);
    assert_eq!(seq_of(&a, 0), Some((3, 1)));
}

#[test]
fn relayed_observation_from_an_unreachable_peer_is_used() {
    let t0 = Instant::now();
    // 0 needs two votes for 1: its own and 2's, which only arrives relayed by 1.
    let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
    let (mut a, _) = node(0, 3, 1, config, t0);
    let (_, out) = node(1, 3, 1, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 0));
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &Config::default());
    assert!(!a.sees_reachable(&public_key(2)));
    assert_eq!(a.answer().members, vec![public_key(0)]);
    let from_2 = observation(2, 3, true, &[(0, false), (1, true)]).sign(&secret_key(2));
    let out = push(&mut a, now, 1, vec![from_2.clone()]);
    assert_eq!(seq_of(&a, 2), Some((1, 1)));
    let mut expected = vec![public_key(0), public_key(1)];
    expected[1..].sort();
    assert_eq!(a.answer().members, expected);
    assert!(out.iter().any(|e| matches!(e, OutEvent::AnswerChanged(_))));
}

/// A new observation goes on to the peers whose own observation says they cannot reach its
/// observer, and to nobody else; only from a node that hears the observer itself for a while.
#[test]
fn a_new_observation_is_relayed_to_the_peers_that_cannot_reach_its_observer() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 4, 1, config.clone(), t0);
    let mut now = t0;
    for peer in [1, 2, 3] {
        bring_up(&mut a, peer, &mut now, &config);
    }
    // 1 and 2 reach everyone; 3 cannot reach 2.
    push(
        &mut a,
        now,
        1,
        vec![observation(1, 4, true, &[(0, true), (2, true), (3, true)]).sign(&secret_key(1))],
    );
    push(
        &mut a,
        now,
        2,
        vec![observation(2, 4, true, &[(0, true), (1, true), (3, true)]).sign(&secret_key(2))],
    );
    push(
        &mut a,
        now,
        3,
        vec![observation(3, 4, true, &[(0, true), (1, true), (2, false)]).sign(&secret_key(3))],
    );
    // 2's next observation, relayed to a by 1 before a has heard 2 for long: not relayed on.
    let mut next = observation(2, 4, true, &[(0, true), (1, true), (3, true)]);
    next.seq = 2;
    let out = push(&mut a, now, 1, vec![next.sign(&secret_key(2))]);
    assert!((1..4).all(|p| pushed(&out, p).is_empty()), "relayed too early");
    // Once a has heard 2 (and known 3's observation) for a while, the next one goes to 3 only.
    let later = now + RELAY_AFTER;
    while now < later {
        now += config.probe_interval;
        for peer in [1, 2, 3] {
            alive(&mut a, peer, now);
        }
    }
    next.seq = 3;
    let signed = next.sign(&secret_key(2));
    let out = push(&mut a, now, 1, vec![signed.clone()]);
    assert_eq!(pushed(&out, 3), vec![signed], "relayed to the peer that cannot reach 2");
    assert!(pushed(&out, 1).is_empty() && pushed(&out, 2).is_empty(), "not to the sender or the observer");
}

#[test]
fn anti_entropy_fills_in_missing_observations() {
    let t0 = Instant::now();
    let (mut a, _) = node(0, 3, 1, Config::default(), t0);
    let (mut b, _) = node(1, 3, 1, Config::default(), t0);
    let from_2 = observation(2, 3, true, &[(0, true), (1, true)]).sign(&secret_key(2));
    push(&mut a, t0, 2, vec![from_2.clone()]);
    assert!(b.observation(&public_key(2)).is_none());
    // a's heartbeat sends a hash of what it holds to a random peer: wait for one to b.
    let mut now = t0;
    let summary = loop {
        now += Duration::from_secs(1);
        let out = a.fire(now, Timer::Heartbeat);
        if let [m @ Message::Summary(_)] = sends(&out, 1)[..] {
            break m.clone();
        }
    };
    // b holds something else: it answers with its digest.
    let out = b.step(now, InEvent::Message { from: public_key(0), message: summary.clone() });
    let Some(digest) = sends(&out, 0).into_iter().find(|m| matches!(m, Message::Digest { reply: false, .. }))
    else {
        panic!("a digest in answer to a differing summary")
    };
    // a pushes what b lacks and, since b holds what a lacks, replies with its own digest.
    let out = a.step(now, InEvent::Message { from: public_key(1), message: digest.clone() });
    push(&mut b, now, 0, pushed(&out, 1));
    assert_eq!(b.signed_observation(&public_key(2)), Some(&from_2));
    let reply = sends(&out, 1)
        .into_iter()
        .find(|m| matches!(m, Message::Digest { reply: true, .. }))
        .expect("a reply digest")
        .clone();
    let out = b.step(now, InEvent::Message { from: public_key(0), message: reply });
    // A reply is never answered with another digest.
    assert!(out.iter().all(|e| !matches!(e, OutEvent::Send { message: Message::Digest { .. }, .. })));
    push(&mut a, now, 1, pushed(&out, 0));
    assert!(a.observation(&public_key(1)).is_some());
    // Now both hold the same versions: a summary from one is answered with nothing.
    let out = a.fire(now, Timer::Heartbeat);
    let hash = out.iter().find_map(|e| match e {
        OutEvent::Send { message: Message::Summary(h), .. } => Some(*h),
        _ => None,
    });
    let out = b.step(now, InEvent::Message { from: public_key(0), message: Message::Summary(hash.unwrap()) });
    assert!(sends(&out, 0).is_empty(), "equal views: nothing to exchange");
}

/// `peer`'s periodic Alive arrives, naming the version `state` holds of it (if any).
pub(super) fn alive(state: &mut State, peer: usize, now: Instant) -> Vec<OutEvent> {
    let tag = state.observation(&public_key(peer)).map_or(0, Observation::version_tag);
    state.step(now, InEvent::Message { from: public_key(peer), message: Message::Alive(tag) })
}

pub(super) fn tick(state: &mut State, now: Instant) -> Vec<OutEvent> {
    state.fire(now, Timer::Tick)
}

/// Makes `peer` reachable at `state`: `up_after` Alives one interval apart, from `now`.
pub(super) fn bring_up(state: &mut State, peer: usize, now: &mut Instant, config: &Config) {
    for _ in 0..config.up_after {
        *now += config.probe_interval;
        alive(state, peer, *now);
    }
    assert!(state.sees_reachable(&public_key(peer)));
}

pub(super) fn sends(out: &[OutEvent], to: usize) -> Vec<&Message> {
    out.iter()
        .filter_map(|e| match e {
            OutEvent::Send { to: t, message } if *t == public_key(to) => Some(message),
            _ => None,
        })
        .collect()
}

#[test]
fn liveness_hysteresis() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 2, 1, config.clone(), t0);
    let b = public_key(1);
    let step = config.probe_interval;
    let mut now = t0;
    for k in 1..config.up_after {
        now += step;
        alive(&mut a, 1, now);
        assert!(!a.sees_reachable(&b), "up after {k} messages");
    }
    now += step;
    alive(&mut a, 1, now);
    assert!(a.sees_reachable(&b));
    // Silence shorter than `down_after` intervals, even many times over, never flips it.
    for _ in 0..10 {
        for _ in 1..config.down_after {
            now += step;
            tick(&mut a, now);
        }
        alive(&mut a, 1, now);
        assert!(a.sees_reachable(&b));
    }
    for _ in 1..config.down_after {
        now += step;
        tick(&mut a, now);
        assert!(a.sees_reachable(&b));
    }
    now += step;
    tick(&mut a, now);
    assert!(!a.sees_reachable(&b));
    let mine = a.observation(&a.key()).unwrap();
    assert_eq!(mine.report(a.roster(), &b).map(|r| r.reachable), Some(false));
    // A burst of messages at one instant after the outage is one message, not a streak.
    now += step;
    for _ in 0..10 {
        alive(&mut a, 1, now);
    }
    assert!(!a.sees_reachable(&b));
    // A gap of more than two intervals starts the streak again.
    now += 3 * step;
    alive(&mut a, 1, now);
    now += step;
    alive(&mut a, 1, now);
    assert!(!a.sees_reachable(&b), "the streak restarted");
    now += step;
    alive(&mut a, 1, now);
    assert!(a.sees_reachable(&b));
}

#[test]
fn an_observation_over_another_roster_is_kept_but_has_no_vote() {
    let t0 = Instant::now();
    let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let (_, out) = node(1, 3, 1, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 0));
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    // 2 knows a fourth node: its bitmaps are over a roster of four, not a's three.
    let other = observation(2, 4, true, &[(0, true), (1, true)]);
    push(&mut a, now, 2, vec![other.sign(&secret_key(2))]);
    assert_eq!((a.stats().accepted, a.stats().other_roster), (2, 1));
    assert!(a.observation(&public_key(2)).is_some(), "kept (and shown)");
    assert_eq!(a.answer().members, vec![public_key(0)], "its yes on 1 does not count");
    let view = ViewSnapshot::of(&a, now);
    let shown = view.nodes.iter().find(|n| n.key == public_key(2)).unwrap().observation.as_ref().unwrap();
    assert!(!shown.same_roster && shown.reports.is_empty());
    // The same report over a's roster counts.
    let mut same = observation(2, 3, true, &[(0, true), (1, true)]);
    same.seq = 2;
    push(&mut a, now, 2, vec![same.sign(&secret_key(2))]);
    assert!(a.answer().members.contains(&public_key(1)));
}

#[test]
fn silence_stretches_with_loss_beyond_the_design_rate_only() {
    assert_eq!(silence(8, 0.0), 8);
    assert_eq!(silence(8, 0.1), 8);
    assert_eq!(silence(8, 0.2), 12);
    assert_eq!(silence(8, 0.5), 27);
    assert_eq!(silence(8, 0.9), 32);
    assert_eq!(silence(1, 0.5), 4);
}

#[test]
fn a_lossy_link_is_given_longer_before_its_peer_is_dropped() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 2, 1, config.clone(), t0);
    let b = public_key(1);
    let step = config.probe_interval;
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    // Every other message lost for a while: the estimate climbs towards 50 %.
    for _ in 0..200 {
        now += 2 * step;
        alive(&mut a, 1, now);
        tick(&mut a, now);
    }
    assert!(
        a.liveness.link(a.roster.index(&b).unwrap()).unwrap().loss > 0.4,
        "{}",
        a.liveness.link(a.roster.index(&b).unwrap()).unwrap().loss
    );
    // Then silence: the clean-link threshold passes without a verdict...
    let quiet_from = now;
    while now < quiet_from + step * (config.down_after + 2) {
        now += step;
        tick(&mut a, now);
    }
    assert!(a.sees_reachable(&b));
    // ...but the stretched one does not.
    while now < quiet_from + step * (config.down_after * MAX_SILENCE_FACTOR + 1) {
        now += step;
        tick(&mut a, now);
    }
    assert!(!a.sees_reachable(&b));
}

#[test]
fn any_message_keeps_a_peer_alive_but_only_periodic_ones_bring_it_up() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 2, 1, config.clone(), t0);
    let b = public_key(1);
    let mut now = t0;
    for _ in 0..2 * config.up_after {
        now += config.probe_interval;
        a.step(now, InEvent::Message { from: b, message: Message::Summary(7) });
    }
    assert!(!a.sees_reachable(&b), "anti-entropy traffic alone does not bring a peer up");
    bring_up(&mut a, 1, &mut now, &config);
    for _ in 0..3 * config.down_after {
        now += config.probe_interval;
        a.step(now, InEvent::Message { from: b, message: Message::Summary(7) });
        tick(&mut a, now);
    }
    assert!(a.sees_reachable(&b));
}

#[test]
fn every_tick_sends_each_peer_an_alive_or_now_and_then_a_ping() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let mut now = t0;
    let (mut alives, mut pings) = (0, Vec::new());
    for _ in 0..PING_EVERY {
        now += config.probe_interval;
        let out = tick(&mut a, now);
        for peer in [1, 2] {
            match sends(&out, peer)[..] {
                [Message::Alive(tag)] => {
                    assert_eq!(*tag, a.observation(&a.key()).unwrap().version_tag());
                    alives += 1;
                }
                [Message::Ping { nonce }] => pings.push((peer, *nonce)),
                ref other => panic!("one liveness message per peer per tick, got {other:?}"),
            }
        }
    }
    assert_eq!((alives, pings.len() as u64), (2 * PING_EVERY - 2, 2));
    // A pong within the timeout gives the RTT that `spdu peers` shows.
    let (peer, nonce) = pings[1];
    let later = now + Duration::from_millis(30);
    a.step(later, InEvent::Message { from: public_key(peer), message: Message::Pong { nonce } });
    let rtt = ViewSnapshot::of(&a, later)
        .nodes
        .iter()
        .find(|n| n.key == public_key(peer))
        .unwrap()
        .probe
        .as_ref()
        .unwrap()
        .rtt_us;
    assert!(rtt.is_some(), "pong measured");
    // And the receiving side answers a ping with a pong of the same nonce.
    let out = a.step(now, InEvent::Message { from: public_key(1), message: Message::Ping { nonce: 99 } });
    assert!(matches!(sends(&out, 1)[..], [Message::Pong { nonce: 99 }]));
}

#[test]
fn an_alive_keeps_the_observation_it_names_fresh_and_asks_for_one_it_lacks() {
    let t0 = Instant::now();
    let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let (mut b, out) = node(1, 3, 1, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 0));
    push(&mut a, t0, 2, vec![observation(2, 3, true, &[(1, true)]).sign(&secret_key(2))]);
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    assert!(a.answer().members.contains(&public_key(1)));
    // Long past `stale_after`, 1's and 2's observations are still fresh while Alives naming
    // them keep arriving; nothing else is sent.
    let end = now + 3 * config.stale_after;
    while now < end {
        now += config.probe_interval;
        alive(&mut a, 1, now);
        alive(&mut a, 2, now);
        tick(&mut a, now);
    }
    assert!(a.answer().members.contains(&public_key(1)));
    // 1 publishes a new observation that a misses: 1's Alives now name another version.
    let out = b.force_own_health(now, false);
    let newer = pushed(&out, 0);
    let tag = b.observation(&public_key(1)).unwrap().version_tag();
    let from_1 = |message| InEvent::Message { from: public_key(1), message };
    let out = a.step(now, from_1(Message::Alive(tag)));
    assert!(matches!(sends(&out, 1)[..], [Message::Want(k)] if k == &vec![public_key(1)]));
    // Asked once, not on every Alive while the observation is on its way...
    now += config.probe_interval;
    assert!(sends(&a.step(now, from_1(Message::Alive(tag))), 1).is_empty());
    // ...and it does not keep the older one fresh.
    let stale_at = now + config.stale_after;
    while now < stale_at {
        now += config.probe_interval;
        a.step(now, from_1(Message::Alive(tag)));
        alive(&mut a, 2, now);
        tick(&mut a, now);
    }
    let fresh = |a: &State, now| {
        let view = ViewSnapshot::of(a, now);
        let node = view.nodes.iter().find(|n| n.key == public_key(1)).unwrap();
        node.observation.as_ref().unwrap().fresh
    };
    assert!(!fresh(&a, now), "1's observation went stale");
    push(&mut a, now, 1, newer);
    assert_eq!(seq_of(&a, 1), Some((1, 2)));
    assert!(fresh(&a, now));
}

#[test]
fn beats_are_signed_only_while_some_peer_cannot_hear_us() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let heartbeat = |a: &mut State, now: Instant| {
        let out = a.fire(now, Timer::Heartbeat);
        out.iter().filter(|e| matches!(e, OutEvent::Send { message: Message::Beat(_), .. })).count()
    };
    let mut now = t0 + RELAY_AFTER;
    push(&mut a, now, 1, vec![observation(1, 3, true, &[(0, true), (2, true)]).sign(&secret_key(1))]);
    push(&mut a, now, 2, vec![observation(2, 3, true, &[(0, true), (1, true)]).sign(&secret_key(2))]);
    now += RELAY_AFTER;
    assert_eq!(heartbeat(&mut a, now), 0, "everyone hears us");
    let mut cut = observation(2, 3, true, &[(0, false), (1, true)]);
    cut.seq = 2;
    push(&mut a, now, 2, vec![cut.sign(&secret_key(2))]);
    assert_eq!(heartbeat(&mut a, now), 2, "a beat to each peer");
}

#[test]
fn messages_from_outside_the_roster_are_dropped() {
    let t0 = Instant::now();
    let (mut a, _) = node(0, 2, 1, Config::default(), t0);
    let out = a.step(t0, InEvent::Message { from: public_key(9), message: Message::Alive(1) });
    assert!(out.is_empty());
    assert_eq!(a.stats().unknown_sender, 1);
}

#[test]
fn stale_observers_stop_counting_with_time_alone() {
    let t0 = Instant::now();
    let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let (_, out) = node(1, 3, 1, Config::default(), t0);
    push(&mut a, t0, 1, pushed(&out, 0));
    push(&mut a, t0, 2, vec![observation(2, 3, true, &[(1, true)]).sign(&secret_key(2))]);
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    assert!(a.answer().members.contains(&public_key(1)));
    // 2 falls silent while 1 keeps talking: 2's vote goes stale with the passing of time.
    let mut changed = false;
    while now < t0 + config.stale_after + config.probe_interval {
        now += config.probe_interval;
        alive(&mut a, 1, now);
        changed |= tick(&mut a, now).iter().any(|e| matches!(e, OutEvent::AnswerChanged(_)));
    }
    assert!(changed);
    assert_eq!(a.answer().members, vec![public_key(0)]);
}

/// A peer whose service fails its probes stops advertising a check: it is reported reachable
/// again at once, without waiting for a probe result that will never come (its probing stops).
#[test]
fn a_peer_that_stops_advertising_its_check_is_reported_reachable_at_once() {
    let config = Config::default();
    let mut now = Instant::now();
    let (mut a, _) = node(0, 2, 1, config.clone(), now);
    bring_up(&mut a, 1, &mut now, &config);
    let mut checked = observation(1, 2, true, &[(0, true)]);
    checked.service_check = Some(crate::proto::ServiceCheck::Tcp { port: 80 });
    push(&mut a, now, 1, vec![checked.sign(&secret_key(1))]);
    for _ in 0..config.health.down_after.max(1) + 1 {
        now += Duration::from_millis(200);
        a.step(now, InEvent::ServiceProbe { peer: public_key(1), result: CheckResult::fail("refused") });
    }
    now += config.probe_interval;
    a.fire(now, Timer::Publish);
    let report = |a: &State| a.observation(&public_key(0)).unwrap().report(a.roster(), &public_key(1));
    assert_eq!(report(&a).map(|r| r.reachable), Some(false), "its service fails");
    let mut unchecked = observation(1, 2, true, &[(0, true)]);
    unchecked.seq = 2;
    push(&mut a, now, 1, vec![unchecked.sign(&secret_key(1))]);
    now += config.probe_interval;
    a.fire(now, Timer::Publish);
    assert_eq!(report(&a).map(|r| (r.reachable, r.service_ok)), Some((true, None)));
}
