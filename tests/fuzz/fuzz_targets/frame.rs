//! Gossip frames as a peer sends them: `Message::decode` on arbitrary bytes, then every
//! observation in a push through `claimed_version` and `verify`.
//!
//! Checks: nothing panics; a decoded frame re-encodes to a frame that decodes to the same
//! message; `claimed_version` agrees with what `verify` accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spdu_fuzz::{check_observation, roster_has};
use spdu_gossip::proto::Message;
use spdu_gossip::sim::fixtures::CLUSTER;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else { return };
    assert_eq!(Message::decode(&message.encode()).as_ref(), Ok(&message), "re-encoding changed the message");
    if let Message::Push(list) = &message {
        for signed in list {
            check_observation(signed, CLUSTER, roster_has);
        }
    }
});
