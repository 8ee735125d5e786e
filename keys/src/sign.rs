//! Domain-separated signatures.
//!
//! What is signed is `"spdu-sig-v1\0" || len(context) || context || len(cluster) || cluster ||
//! payload`, lengths as big-endian u16. The context names the message kind
//! (e.g. `"spdu/observation/v1"`), the cluster id names the cluster, so a signature can be replayed
//! neither into another message kind nor into another cluster. Verification is `verify_strict`
//! (no malleable or small-order keys).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;

use crate::{PublicKey, SecretKey};

const MAGIC: &[u8] = b"spdu-sig-v1\0";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature does not verify under this key, context and cluster.
    #[error("signature does not verify")]
    Invalid,
    /// A context or cluster id too long to frame.
    #[error("context or cluster id longer than 65535 bytes")]
    TooLong,
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

fn signed_bytes(context: &str, cluster: &str, payload: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + context.len() + cluster.len() + payload.len());
    out.extend_from_slice(MAGIC);
    for field in [context.as_bytes(), cluster.as_bytes()] {
        let len = u16::try_from(field.len()).map_err(|_| SignatureError::TooLong)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(payload);
    Ok(out)
}

impl SecretKey {
    /// Signs `payload` for message kind `context` in cluster `cluster`.
    ///
    /// # Panics
    /// If `context` or `cluster` is longer than 65535 bytes (both come from code or validated
    /// config).
    pub fn sign(&self, context: &str, cluster: &str, payload: &[u8]) -> Signature {
        let msg = signed_bytes(context, cluster, payload).expect("context and cluster id are short");
        Signature(self.signing_key().sign(&msg).to_bytes())
    }
}

impl PublicKey {
    /// Verifies a signature made by [`SecretKey::sign`] with the same context and cluster.
    pub fn verify(
        &self,
        context: &str,
        cluster: &str,
        payload: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let msg = signed_bytes(context, cluster, payload)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        let key = self.verifying_key().ok_or(SignatureError::Invalid)?;
        key.verify_strict(&msg, &sig).map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", URL_SAFE_NO_PAD.encode(&self.0[..8]))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes or their base64 text")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                v.try_into().map(Signature).map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Signature, E> {
                let raw = URL_SAFE_NO_PAD.decode(v).map_err(E::custom)?;
                self.visit_bytes(&raw)
            }
        }
        if d.is_human_readable() { d.deserialize_str(Visitor) } else { d.deserialize_bytes(Visitor) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &str = "spdu/test/v1";

    #[test]
    fn verifies_only_with_same_key_context_cluster_and_payload() {
        let key = SecretKey::from_bytes(&[1; 32]);
        let other = SecretKey::from_bytes(&[2; 32]).public();
        let sig = key.sign(CTX, "pool.example.test", b"payload");
        let public = key.public();
        assert_eq!(public.verify(CTX, "pool.example.test", b"payload", &sig), Ok(()));
        let bad = Err(SignatureError::Invalid);
        assert_eq!(public.verify(CTX, "pool.example.test", b"payloae", &sig), bad);
        assert_eq!(public.verify("spdu/other/v1", "pool.example.test", b"payload", &sig), bad);
        assert_eq!(public.verify(CTX, "pool.other.test", b"payload", &sig), bad);
        assert_eq!(other.verify(CTX, "pool.example.test", b"payload", &sig), bad);
        let mut flipped = sig;
        flipped.0[10] ^= 1;
        assert_eq!(public.verify(CTX, "pool.example.test", b"payload", &flipped), bad);
    }

    #[test]
    fn a_wire_key_that_is_no_point_verifies_nothing() {
        // Keys decoded from the wire are not validated up front; verification must still refuse.
        let bytes = (0..=255u8)
            .map(|b| [b; 32])
            .find(|b| PublicKey::from_bytes(b).is_err())
            .expect("some repeated byte is not a curve point");
        let key: PublicKey = postcard::from_bytes(&postcard::to_stdvec(&bytes).unwrap()).unwrap();
        let sig = SecretKey::from_bytes(&[1; 32]).sign(CTX, "c", b"m");
        assert_eq!(key.verify(CTX, "c", b"m", &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn framing_keeps_fields_apart() {
        // Without length framing, ("ab", "c") and ("a", "bc") would sign the same bytes.
        let key = SecretKey::from_bytes(&[3; 32]);
        let sig = key.sign("ab", "c", b"x");
        assert!(key.public().verify("a", "bc", b"x", &sig).is_err());
    }

    #[test]
    fn signature_serde_round_trips() {
        let sig = SecretKey::from_bytes(&[4; 32]).sign(CTX, "c", b"m");
        let bin = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(postcard::from_bytes::<Signature>(&bin).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(postcard::from_bytes::<Signature>(&bin[..40]).is_err());
    }
}
