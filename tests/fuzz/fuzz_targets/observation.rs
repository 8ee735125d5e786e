//! Observation bodies that carry a valid signature: arbitrary bytes signed by a roster key, so
//! the fuzzer reaches the body decoder behind the signature check (what a compromised roster
//! member can send), plus the same bytes with a forged signature.
//!
//! Checks: nothing panics; `verify` accepts exactly the correctly signed bodies that decode, for
//! the right cluster and a roster observer; `claimed_version` agrees with what it accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spdu_fuzz::{check_observation, roster_has};
use spdu_gossip::proto::{OBSERVATION_CONTEXT, SignedObservation};
use spdu_gossip::sim::fixtures::{CLUSTER, secret_key};

fuzz_target!(|input: (u8, Vec<u8>)| {
    let (signer, body) = input;
    let key = secret_key(usize::from(signer % 8));
    let signature = key.sign(OBSERVATION_CONTEXT, CLUSTER, &body);
    let signed = SignedObservation { body, signature };
    if let Some(obs) = check_observation(&signed, CLUSTER, roster_has) {
        assert_eq!(obs.observer, key.public(), "accepted a body signed by someone else");
    }
    let mut forged = signed;
    forged.signature.0[0] ^= 1;
    assert!(forged.verify(CLUSTER, roster_has).is_err(), "accepted a forged signature");
});
