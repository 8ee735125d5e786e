//! Inputs the fuzz targets in `tests/fuzz` found, kept as unit tests: each feeds the input
//! that failed and checks the property the target checks.

use std::time::Instant;

use super::{Config, InEvent, Message, OutEvent, State};
use crate::sim::fixtures::{node_info, public_key, roster};

/// `state` target, `Want { from: 3, who: [0, 3, 0] }`: the node answered a Want naming its own
/// key twice with a push carrying its observation twice (a roster member could have it push one
/// observation 4096 times per 130-byte frame).
#[test]
fn want_with_repeated_keys_pushes_each_observation_once() {
    let now = Instant::now();
    let mut state = State::new(node_info(0, 3), roster(4), Config::default(), 7, now);
    state.drain();
    let who = vec![public_key(0), public_key(3), public_key(0)];
    let out = state.step(now, InEvent::Message { from: public_key(3), message: Message::Want(who) });
    let pushes: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            OutEvent::Send { message: Message::Push(list), .. } => Some(list.len()),
            _ => None,
        })
        .collect();
    assert_eq!(pushes, vec![1], "one push with our one observation");

    // One probe interval later (Wants are answered at most once per interval and sender).
    let now = now + Config::default().probe_interval;
    let many = vec![public_key(0); super::MAX_ENTRIES];
    let out = state.step(now, InEvent::Message { from: public_key(3), message: Message::Want(many) });
    let sent: usize = out
        .iter()
        .map(|e| match e {
            OutEvent::Send { message: Message::Push(list), .. } => list.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, 1);
}
