//! The core's side of dynamic addresses (design §6a): what a node tells its peers it sees them
//! at, the budget on their reports, the address it adopts and signs, and the dial address of a
//! dynamic peer. Peers are played by test code through [`State::step`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::{Config, InEvent, Message, OutEvent};
use super::State;
use super::Timer;
use super::tests::{bring_up, push, sends};
use crate::sim::fixtures::{node_info, observation, public_key, roster, secret_key};

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Node 0 of three, node 2 listed as dynamic, every peer reachable.
fn with_dynamic_peer(observed_address: bool) -> (State, Instant, Config) {
    let config = Config::default();
    let mut now = Instant::now();
    let mut members = roster(3);
    members[2].gossip = None;
    members[2].addresses = vec!["198.18.0.0/15".parse().unwrap()];
    let info = crate::proto::NodeInfo { observed_address, ..node_info(0, 1) };
    let mut state = State::new(info, members, config.clone(), 0, now);
    for peer in [1, 2] {
        bring_up(&mut state, peer, &mut now, &config);
    }
    state.drain();
    (state, now, config)
}

fn observed(state: &mut State, now: Instant, from: usize, addr: SocketAddr) -> Vec<OutEvent> {
    state.step(now, InEvent::Message { from: public_key(from), message: Message::Observed(addr) })
}

fn dials(out: &[OutEvent]) -> Vec<(usize, SocketAddr)> {
    out.iter()
        .filter_map(|e| match e {
            OutEvent::PeerAddressChanged { peer, addr } => {
                Some(((0..3).find(|i| public_key(*i) == *peer).unwrap(), *addr))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_peers_connection_address_is_told_at_once_and_every_heartbeat() {
    let (mut state, now, _) = with_dynamic_peer(false);
    let seen = at("198.18.0.3:7946");
    let out = state.step(now, InEvent::RemoteAddress { peer: public_key(2), addr: seen });
    assert_eq!(sends(&out, 2), [&Message::Observed(seen)]);
    // A new connection from the same address (a restarted peer): told again at once.
    let again = state.step(now, InEvent::RemoteAddress { peer: public_key(2), addr: seen });
    assert_eq!(sends(&again, 2), [&Message::Observed(seen)]);
    let beat = state.fire(now + Duration::from_secs(1), Timer::Heartbeat);
    assert!(sends(&beat, 2).contains(&&Message::Observed(seen)), "and again every heartbeat");
    assert!(!sends(&beat, 1).iter().any(|m| matches!(m, Message::Observed(_))), "not seen: not told");
    // Until the peer signs that address: then the heartbeats say nothing more.
    let mut obs = observation(2, 3, true, &[(0, true)]);
    obs.observed = Some(seen);
    push(&mut state, now, 2, vec![obs.sign(&secret_key(2))]);
    let beat = state.fire(now + Duration::from_secs(2), Timer::Heartbeat);
    assert!(!sends(&beat, 2).iter().any(|m| matches!(m, Message::Observed(_))), "signed: not told again");
}

#[test]
fn reports_are_budgeted_per_sender_and_adopted_by_quorum_then_signed() {
    let (mut state, mut now, _) = with_dynamic_peer(true);
    let (a, b) = (at("198.18.0.33:7946"), at("198.18.0.44:7946"));
    observed(&mut state, now, 1, a);
    // Changing its mind within half a probe interval: dropped.
    observed(&mut state, now + Duration::from_millis(1), 1, b);
    observed(&mut state, now, 2, b);
    assert_eq!(state.observed_address(), None, "one report each: no quorum");
    assert_eq!(state.stats().observed_dropped, 1);
    now += Duration::from_millis(60);
    let out = observed(&mut state, now, 1, b);
    assert_eq!(state.observed_address(), Some(b));
    // Signed (published at once or at the next publication slot), with the service address.
    let mut out = out;
    out.extend(state.fire(now + Duration::from_millis(100), Timer::Publish));
    let own = state.observation(&public_key(0)).unwrap();
    assert_eq!((own.observed, own.addresses.clone()), (Some(b), vec![b.ip()]));
    assert!(out.iter().any(|e| matches!(e, OutEvent::Send { message: Message::Push(_), .. })));
}

#[test]
fn a_dynamic_peers_signed_address_is_dialled_a_fixed_peers_is_not() {
    let (mut state, now, _) = with_dynamic_peer(false);
    let addr = at("198.18.0.3:7946");
    let signed = |i: usize, seq: u64, observed: Option<SocketAddr>| {
        let mut obs = observation(i, 3, true, &[(0, true)]);
        obs.seq = seq;
        obs.observed = observed;
        obs.sign(&secret_key(i))
    };
    let out = push(&mut state, now, 2, vec![signed(2, 1, Some(addr))]);
    assert_eq!(dials(&out), [(2, addr)]);
    let out = push(&mut state, now, 2, vec![signed(2, 2, Some(addr))]);
    assert!(dials(&out).is_empty(), "unchanged: no redial");
    let out = push(&mut state, now, 2, vec![signed(2, 3, Some(at("198.18.0.3:0")))]);
    assert!(dials(&out).is_empty(), "an unusable address is not dialled");
    let out = push(&mut state, now, 1, vec![signed(1, 1, Some(at("198.18.0.9:7946")))]);
    assert!(dials(&out).is_empty(), "a fixed peer is dialled where its operator said");
    assert_eq!(state.dial_address(&public_key(1)), roster(3)[1].gossip);
    // Outside its pins: never dialled there, whatever it signs.
    let outside = at("203.0.113.7:7946");
    let out = push(&mut state, now, 2, vec![signed(2, 4, Some(outside))]);
    assert!(dials(&out).is_empty(), "outside its pins");
    assert_eq!(state.dial_address(&public_key(2)), None);
}
