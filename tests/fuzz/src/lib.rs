//! Shared oracles and fixtures for the fuzz targets in `fuzz_targets/`.
//!
//! The roster is the gossip simulator's fixture nodes `0..ROSTER` (deterministic keys); keys
//! `ROSTER..KEYS` are outsiders. Every check here panics on a violated invariant, which is what
//! libFuzzer reports as a crash.

use std::sync::OnceLock;

use spdu_gossip::proto::{Observation, SignedObservation};
use spdu_gossip::sim::fixtures::public_key;
use spdu_keys::PublicKey;

/// Nodes in the fuzzed roster (node 0 is the node under test).
pub const ROSTER: usize = 4;
/// Fixture keys used in all: roster members, then outsiders.
pub const KEYS: usize = 6;

/// The public keys of fixture nodes `0..KEYS`, computed once.
pub fn keys() -> &'static [PublicKey] {
    static KEYS_: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS_.get_or_init(|| (0..KEYS).map(public_key).collect())
}

/// Whether `key` is in the fuzzed roster.
pub fn roster_has(key: &PublicKey) -> bool {
    keys()[..ROSTER].contains(key)
}

/// Verifies `signed` and checks that the cheap `claimed_version` agrees with what `verify`
/// accepted (the replay shortcut in the protocol core trusts it for refusals).
pub fn check_observation(
    signed: &SignedObservation,
    cluster: &str,
    trusted: impl Fn(&PublicKey) -> bool,
) -> Option<Observation> {
    let claimed = signed.claimed_version(cluster);
    let obs = signed.verify(cluster, trusted).ok()?;
    assert_eq!(obs.cluster, cluster);
    assert_eq!(
        claimed,
        Some((*obs.observer.as_bytes(), obs.version())),
        "claimed_version disagrees with the verified observation"
    );
    Some(obs)
}
