//! Heartbeats: a small signed statement "my observation (incarnation, seq) is still current".
//!
//! An observation is re-signed only when its content changes; between changes the observer signs
//! a [`Beat`] every heartbeat interval with a growing `beat` counter. A beat refreshes the
//! freshness of the observation it names, and only if it is newer than the last beat seen for it,
//! so replaying an old beat cannot keep a dead observer alive. Beats are relayed to peers that
//! cannot reach the observer, like observations; the signature (context [`BEAT_CONTEXT`], cluster
//! id) is what makes a relayed beat trustworthy.

use serde::{Deserialize, Serialize};
use spdu_keys::{PublicKey, SecretKey, Signature};

use super::Rejection;

/// The signature context of beats.
pub const BEAT_CONTEXT: &str = "spdu/beat/v1";

/// "The observation (incarnation, seq) of `observer` is still current", the `beat`-th time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Who says so.
    pub observer: PublicKey,
    /// The incarnation of the observation it refreshes.
    pub incarnation: u64,
    /// The seq of the observation it refreshes.
    pub seq: u64,
    /// Grows with every beat within one incarnation.
    pub beat: u64,
}

/// A beat and its observer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBeat {
    /// What is said.
    pub beat: Beat,
    /// The observer's signature over context, cluster and the encoded beat.
    pub signature: Signature,
}

impl Beat {
    /// The (incarnation, seq) of the observation this beat refreshes.
    pub fn version(&self) -> (u64, u64) {
        (self.incarnation, self.seq)
    }

    /// Signs for `cluster`. The observer must be `key`'s public key.
    pub fn sign(self, key: &SecretKey, cluster: &str) -> SignedBeat {
        debug_assert_eq!(self.observer, key.public());
        let payload = postcard::to_stdvec(&self).expect("beats always encode");
        let signature = key.sign(BEAT_CONTEXT, cluster, &payload);
        SignedBeat { beat: self, signature }
    }
}

impl SignedBeat {
    /// Checks the signature for `cluster` (the caller checks roster membership and versions).
    pub fn verify(&self, cluster: &str) -> Result<(), Rejection> {
        let payload = postcard::to_stdvec(&self.beat).expect("beats always encode");
        self.beat
            .observer
            .verify(BEAT_CONTEXT, cluster, &payload, &self.signature)
            .map_err(|_| Rejection::BadSignature(self.beat.observer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_verify_only_in_their_cluster_and_unaltered() {
        let key = SecretKey::from_bytes(&[9; 32]);
        let beat = Beat { observer: key.public(), incarnation: 3, seq: 7, beat: 11 };
        let signed = beat.clone().sign(&key, "pool.example.test");
        assert_eq!(signed.verify("pool.example.test"), Ok(()));
        assert!(signed.verify("pool.other.test").is_err());
        let mut bumped = signed.clone();
        bumped.beat.beat += 1;
        assert!(bumped.verify("pool.example.test").is_err(), "a beat counter cannot be advanced by others");
        // Signed by one key, claiming to be another's beat.
        let other = SecretKey::from_bytes(&[8; 32]);
        let mut forged = signed.clone();
        forged.beat.observer = other.public();
        assert!(forged.verify("pool.example.test").is_err());
    }
}
