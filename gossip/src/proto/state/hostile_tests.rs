//! A hostile or broken roster member against one core: self-asserted addresses, floods of
//! requests, pushes of bogus claims, and the incarnation tell.

use std::net::IpAddr;

use super::tests::{bring_up, node, push, pushed, sends, seq_of, tick};
use super::*;
use crate::proto::{
    AddressPin, MAX_ENTRIES, MAX_SERVICE_ADDRESSES, OBSERVATION_CONTEXT, ServiceCheck, VERIFY_BURST_ROSTERS,
    VERIFY_ROSTERS_PER_SEC,
};
use crate::sim::fixtures::{CLUSTER, address, member, node_info, observation, public_key, secret_key};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node 0 of 2 whose peer 1 is pinned to `pins`, has pushed an observation listing `addresses`
/// (advertising a tcp check) and is reachable, its service too.
fn with_peer_claiming(pins: &[&str], addresses: &[&str]) -> (State, Instant) {
    let t0 = Instant::now();
    let config = Config::default();
    let mut peer = member(1);
    peer.addresses = pins.iter().map(|p| p.parse::<AddressPin>().unwrap()).collect();
    let mut a = State::new(node_info(0, 1), vec![member(0), peer], config.clone(), 0, t0);
    a.drain();
    let mut obs = observation(1, 2, true, &[(0, true)]);
    obs.addresses = addresses.iter().map(|a| ip(a)).collect();
    obs.service_check = Some(ServiceCheck::Tcp { port: 80 });
    push(&mut a, t0, 1, vec![obs.sign(&secret_key(1))]);
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    for _ in 0..config.health.up_after {
        let result = CheckResult::pass(Duration::from_millis(1));
        a.step(now, InEvent::ServiceProbe { peer: public_key(1), result });
    }
    now += config.probe_interval;
    a.fire(now, Timer::Publish);
    (a, now)
}

#[test]
fn served_addresses_are_those_inside_the_peers_pins_and_not_special_purpose() {
    // Before pinning, every address a member claimed was served: another site's, 0.0.0.0,
    // a private address of the member's choice, multicast.
    let (a, _) =
        with_peer_claiming(&["10.0.0.1"], &["10.0.0.2", "0.0.0.0", "10.66.66.66", "224.0.0.1", "10.0.0.1"]);
    assert_eq!(a.answer().members.len(), 2);
    assert_eq!(a.answer().addresses, vec![address(0), ip("10.0.0.1")]);
    // A prefix pin admits what lies inside it, but never a special-purpose address.
    let (a, _) = with_peer_claiming(
        &["0.0.0.0/0", "2001:db8::/32"],
        &["0.0.0.0", "255.255.255.255", "169.254.1.1", "203.0.113.5", "2001:db8::7", "ff02::1", "fe80::1"],
    );
    assert_eq!(a.answer().addresses, vec![address(0), ip("203.0.113.5"), ip("2001:db8::7")]);
    // No pin at all: the peer is answered (its votes count) but with no address.
    let (a, _) = with_peer_claiming(&[], &["10.0.0.1"]);
    assert_eq!((a.answer().members.len(), &a.answer().addresses[..]), (2, &[address(0)][..]));
}

#[test]
fn an_observation_listing_too_many_addresses_is_refused_as_malformed() {
    let too_many: Vec<String> = (0..=MAX_SERVICE_ADDRESSES).map(|k| format!("10.0.1.{k}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let (a, _) = with_peer_claiming(&["10.0.1.0/24"], &too_many);
    assert_eq!(a.stats().malformed, 1);
    assert!(a.observation(&public_key(1)).is_none());
    let (a, _) = with_peer_claiming(&["10.0.1.0/24"], &too_many[..MAX_SERVICE_ADDRESSES]);
    assert_eq!((a.stats().malformed, a.answer().addresses.len()), (0, 1 + MAX_SERVICE_ADDRESSES));
}

#[test]
fn probe_targets_are_only_at_pinned_addresses() {
    let target = |a: &State| a.probe_targets().iter().map(|t| t.addr).collect::<Vec<_>>();
    // An exact pin is the target, whatever the observation lists first.
    let (a, _) = with_peer_claiming(&["10.0.0.1"], &["127.0.0.1", "10.0.0.1"]);
    assert_eq!(target(&a), [ip("10.0.0.1")]);
    let (a, _) = with_peer_claiming(&["10.9.0.0/16", "10.0.0.1"], &["10.9.0.5"]);
    assert_eq!(target(&a), [ip("10.0.0.1")], "the first exact pin");
    // Only prefixes: the first listed address inside one, not special-purpose.
    let (a, _) = with_peer_claiming(&["0.0.0.0/0"], &["0.0.0.0", "127.0.0.1", "10.0.0.3"]);
    assert_eq!(target(&a), [ip("127.0.0.1")]);
    let (a, _) = with_peer_claiming(&["10.9.0.0/16"], &["127.0.0.1", "10.9.3.4"]);
    assert_eq!(target(&a), [ip("10.9.3.4")]);
    // Nothing inside its pins: not probed at all.
    let (a, _) = with_peer_claiming(&["10.9.0.0/16"], &["127.0.0.1"]);
    assert!(target(&a).is_empty());
}

/// A claim of `observer`'s observation at `seq`, signed by `signer` (a forgery unless they are
/// the same).
fn claim(observer: usize, signer: usize, seq: u64) -> SignedObservation {
    let mut obs = observation(observer, 4, true, &[]);
    obs.seq = seq;
    let body = postcard::to_stdvec(&obs).unwrap();
    SignedObservation { signature: secret_key(signer).sign(OBSERVATION_CONTEXT, CLUSTER, &body), body }
}

/// Signature checks so far: every claim that got as far as one.
fn verifications(a: &State) -> u64 {
    let s = a.stats();
    s.accepted + s.bad_signature + s.self_conflict + s.malformed
}

#[test]
fn pushes_of_bogus_newer_claims_cost_at_most_the_senders_budget() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 4, 1, config.clone(), t0);
    push(&mut a, t0, 1, vec![observation(1, 4, true, &[(0, true)]).sign(&secret_key(1))]);
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    assert!(a.answer().members.contains(&public_key(1)));
    let before = verifications(&a);
    // Member 2 pushes 4096 claims of newer observations of 1 and 3, signed with its own key:
    // each one used to cost a signature check.
    let forged: Vec<SignedObservation> = (0..64).map(|k| claim(1 + 2 * (k % 2), 2, 2 + k as u64)).collect();
    let flood: Vec<SignedObservation> = forged.iter().cycle().take(MAX_ENTRIES).cloned().collect();
    let out = push(&mut a, now, 2, flood.clone());
    assert!(out.is_empty());
    // Read up to the roster size (4), and of those the newest per observer: 2 checks.
    assert_eq!(verifications(&a) - before, 2);
    assert_eq!(a.stats().entries_over_cap, (MAX_ENTRIES - 4) as u64);
    // A thousand such pushes at once cost the burst budget and no more.
    for _ in 0..1000 {
        push(&mut a, now, 2, flood.clone());
    }
    let burst = (VERIFY_BURST_ROSTERS * 4.0) as u64;
    assert_eq!(verifications(&a) - before, burst);
    assert_eq!(a.stats().over_budget, 1001 * 2 - burst);
    // A second later, the rate's worth more.
    now += Duration::from_secs(1);
    for _ in 0..1000 {
        push(&mut a, now, 2, flood.clone());
    }
    assert_eq!(verifications(&a) - before, burst + (VERIFY_ROSTERS_PER_SEC * 4.0) as u64);
    // The live observer's entry stayed, and so did it in the answer; another sender's budget
    // is its own: 1's real next observation is taken at once.
    assert_eq!(seq_of(&a, 1), Some((1, 1)));
    assert!(a.answer().members.contains(&public_key(1)));
    let mut next = observation(1, 4, true, &[(0, true)]);
    next.seq = 2;
    push(&mut a, now, 1, vec![next.sign(&secret_key(1))]);
    assert_eq!(seq_of(&a, 1), Some((1, 2)));
}

/// Pushes sent to `to` in `out`, with their sizes.
fn push_sizes(out: &[OutEvent], to: usize) -> Vec<usize> {
    sends(out, to)
        .into_iter()
        .filter_map(|m| if let Message::Push(l) = m { Some(l.len()) } else { None })
        .collect()
}

#[test]
fn a_want_flood_is_answered_once_per_probe_interval() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    push(&mut a, t0, 2, vec![observation(2, 3, true, &[(0, true)]).sign(&secret_key(2))]);
    let want = |k: usize| Message::Want(vec![public_key(k % 3)]);
    let mut answered = Vec::new();
    for k in 0..4000 {
        let at = t0 + Duration::from_micros(k as u64 * 10);
        answered
            .extend(push_sizes(&a.step(at, InEvent::Message { from: public_key(1), message: want(k) }), 1));
    }
    // Before the limit every Want got its own push (4000 observations sent).
    assert_eq!(answered, vec![1], "one answer within the interval");
    assert_eq!(a.stats().wants_coalesced, 3999);
    // What was asked meanwhile goes out once, with the next tick; then nothing more is owed.
    let out = tick(&mut a, t0 + config.probe_interval);
    assert_eq!(push_sizes(&out, 1), vec![2], "0's and 2's observations, once each");
    let out = tick(&mut a, t0 + 2 * config.probe_interval);
    assert!(push_sizes(&out, 1).is_empty());
}

#[test]
fn summary_and_digest_floods_are_answered_once_per_half_heartbeat() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 3, 1, config.clone(), t0);
    let from_1 = |message| InEvent::Message { from: public_key(1), message };
    let mut digests = 0;
    let mut pushes = 0;
    for k in 0..4000u64 {
        let at = t0 + Duration::from_micros(k * 100);
        let out = a.step(at, from_1(Message::Summary(k)));
        digests += sends(&out, 1).iter().filter(|m| matches!(m, Message::Digest { .. })).count();
        let out = a.step(at, from_1(Message::Digest { versions: vec![], reply: false }));
        pushes += push_sizes(&out, 1).len();
    }
    assert_eq!((digests, pushes), (1, 1));
    assert_eq!((a.stats().summaries_dropped, a.stats().digests_dropped), (3999, 3999));
    // Half a heartbeat later, the next is answered again.
    let at = t0 + config.heartbeat / 2 + Duration::from_millis(1);
    let out = a.step(at, from_1(Message::Summary(1)));
    assert!(sends(&out, 1).iter().any(|m| matches!(m, Message::Digest { .. })));
}

#[test]
fn a_peer_restarted_with_a_lower_incarnation_is_told_and_rises_above() {
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 2, 1, config.clone(), t0);
    // a holds 1's observation at incarnation 5, seq 3.
    let mut held = observation(1, 2, true, &[(0, true)]);
    (held.incarnation, held.seq) = (5, 3);
    push(&mut a, t0, 1, vec![held.sign(&secret_key(1))]);
    // 1 restarts at incarnation 2: its pushes are refused as replays, and it is told, once per
    // heartbeat however often it pushes.
    let (mut b, out) = node(1, 2, 2, config.clone(), t0);
    let first = pushed(&out, 0);
    let out = push(&mut a, t0, 1, first.clone());
    assert_eq!(sends(&out, 1), vec![&Message::Superseded { incarnation: 5, seq: 3 }]);
    for k in 1..100 {
        let out = push(&mut a, t0 + Duration::from_millis(k), 1, first.clone());
        assert!(sends(&out, 1).is_empty());
    }
    assert_eq!(seq_of(&a, 1), Some((5, 3)));
    // Told, it rises above what a holds, publishes at once and says so.
    let tell =
        InEvent::Message { from: public_key(0), message: Message::Superseded { incarnation: 5, seq: 3 } };
    let out = b.step(t0, tell);
    assert!(out.iter().any(|e| matches!(e, OutEvent::IncarnationChanged(6))));
    assert_eq!((b.incarnation(), seq_of(&b, 1)), (6, Some((6, 1))));
    push(&mut a, t0, 1, pushed(&out, 0));
    assert_eq!(seq_of(&a, 1), Some((6, 1)), "a full member again");
    // A repeated or older tell changes nothing; nor does one near the top of the range.
    for (incarnation, seq) in [(5, 3), (6, 1), (1, 99), (u64::MAX / 2, 0), (u64::MAX, u64::MAX)] {
        let message = Message::Superseded { incarnation, seq };
        let out = b.step(t0, InEvent::Message { from: public_key(0), message });
        assert!(out.is_empty(), "{incarnation}, {seq}: {out:?}");
    }
    // ((6, 1) is also what a peer tells when our own observations reach it out of order: one
    // we signed ourselves, not newer than ours.)
    assert_eq!(b.incarnation(), 6);
}

#[test]
fn an_answered_peer_stays_at_most_one_interval_after_this_node_drops_it() {
    // What the `state` fuzz target once asserted, that the answer only ever holds peers this
    // node's probing sees reachable, does not hold: the answer follows the published
    // observation, and a drop right after a publication waits for the next one.
    let t0 = Instant::now();
    let config = Config::default();
    let (mut a, _) = node(0, 2, 1, config.clone(), t0);
    push(&mut a, t0, 1, vec![observation(1, 2, true, &[(0, true)]).sign(&secret_key(1))]);
    let mut now = t0;
    bring_up(&mut a, 1, &mut now, &config);
    let heard = now;
    let drop_at = heard + config.probe_interval * config.down_after;
    // A publication just before the drop (own health changes)...
    a.force_own_health(drop_at - Duration::from_millis(10), false);
    assert!(a.answer().members.contains(&public_key(1)));
    // ...then the drop: 1 is no longer reachable, but still answered until the coalesced
    // publication, due within one interval.
    a.fire(drop_at, Timer::Tick);
    assert!(!a.sees_reachable(&public_key(1)));
    assert!(a.answer().members.contains(&public_key(1)));
    let due = a.publisher.publish_at().expect("a publication waits");
    assert!(due < drop_at + config.probe_interval);
    a.fire(due, Timer::Publish);
    assert!(!a.answer().members.contains(&public_key(1)));
}
