//! Signed observations: what one node says about itself and about every peer it probes.
//!
//! Invariants: a [`SignedObservation`] carries the exact postcard bytes that were signed, so the
//! signature can be checked by anyone (also outside spdu, from `spdu peers --json`) without
//! re-encoding. The signature covers the context [`OBSERVATION_CONTEXT`], the cluster id and those
//! bytes; the cluster id is also inside the body so that a wrong-cluster observation is told apart
//! from a forged one. Decoding is bounded by [`MAX_OBSERVATION_BYTES`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use spdu_keys::{PublicKey, SecretKey, Signature};

use super::{Bitmap, PolicyDigest, Roster, RosterId, ServiceCheck};

/// The signature context of observations.
pub const OBSERVATION_CONTEXT: &str = "spdu/observation/v1";

/// Largest encoded observation accepted (bitmaps for rosters far larger than any cluster).
pub const MAX_OBSERVATION_BYTES: usize = 64 * 1024;

/// What one node (the observer) says, at one (incarnation, seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The cluster this observation belongs to.
    pub cluster: String,
    /// Who observed (and signed).
    pub observer: PublicKey,
    /// The observer's name, as it calls itself.
    pub name: String,
    /// Grows on every restart of the observer.
    pub incarnation: u64,
    /// Grows with every observation within one incarnation.
    pub seq: u64,
    /// The observer's own health check verdict for its service.
    pub healthy: bool,
    /// The observer's service addresses (A and AAAA).
    pub addresses: Vec<IpAddr>,
    /// How peers may check the observer's service on its first address (none: they do not).
    pub service_check: Option<ServiceCheck>,
    /// The roster the bitmaps are over: the observer's sorted roster, itself included.
    pub roster: RosterId,
    /// The peers the observer's probing currently says are reachable: its heartbeats from them
    /// and, when it probes a peer's advertised service, that too. Its own bit is clear.
    pub reachable: Bitmap,
    /// The peers whose advertised service the observer probes.
    pub service_probed: Bitmap,
    /// Of those, the ones whose service passes.
    pub service_ok: Bitmap,
    /// A digest of the observer's failover policies (rules and site attributes), so that
    /// operators see when sites are configured differently. Appended last: a body signed by an
    /// older version ends exactly before it and reads as the all-zero digest (see
    /// [`decode_body`]); older versions ignore it (postcard leaves trailing bytes unread).
    #[serde(default)]
    pub policy: PolicyDigest,
    /// The address the observer's peers see its connections come from, once a quorum of them
    /// reported the same IP (see `proto::sightings`): where a peer that lists it with
    /// `gossip = "dynamic"` dials it. Appended after the policy digest, with the same rule: a
    /// body that ends exactly before it reads as `None`.
    #[serde(default)]
    pub observed: Option<SocketAddr>,
}

/// Decodes a signed body: the current layout, or one that ends exactly where an appended field
/// would start (an older version's), read with the defaults of the fields it lacks: without
/// `observed` (`None`), or without the policy digest as well (all zero). Anything else (a body
/// cut inside an appended field, trailing bytes after the last) is malformed.
fn decode_body(body: &[u8]) -> Option<Observation> {
    if let Ok((obs, [])) = postcard::take_from_bytes::<Observation>(body) {
        return Some(obs);
    }
    // The encodings of the defaults: `None` is one zero byte, the digest sixteen.
    for missing in [1, 16 + 1] {
        let mut padded = Vec::with_capacity(body.len() + missing);
        padded.extend_from_slice(body);
        padded.resize(body.len() + missing, 0);
        if let Ok((obs, [])) = postcard::take_from_bytes::<Observation>(&padded)
            && obs.observed.is_none()
        {
            return Some(obs);
        }
    }
    None
}

/// One observer's verdict on one peer, read from its bitmaps (see [`Observation::report`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerReport {
    /// The peer.
    pub key: PublicKey,
    /// Whether the observer's probing says the peer is reachable.
    pub reachable: bool,
    /// The observer's verdict on the peer's advertised service (none: not probed).
    pub service_ok: Option<bool>,
}

impl Observation {
    /// The version that orders observations of one observer: newer replaces older.
    pub fn version(&self) -> (u64, u64) {
        (self.incarnation, self.seq)
    }

    /// The short tag of [`Observation::version`] that heartbeats carry, so a receiver notices
    /// that it holds an older observation than the one its sender has.
    pub fn version_tag(&self) -> u8 {
        version_tag(self.incarnation, self.seq)
    }

    /// Whether the bitmaps are over `roster` (and so can be read with it).
    pub fn is_over(&self, roster: &Roster) -> bool {
        self.roster == roster.id()
    }

    /// The report on the `i`-th member of `roster`, if the bitmaps are over it and `i` is not
    /// the observer.
    pub fn report_at(&self, roster: &Roster, i: usize) -> Option<PeerReport> {
        let key = roster.keys().get(i).copied()?;
        if !self.is_over(roster) || key == self.observer {
            return None;
        }
        Some(PeerReport {
            key,
            reachable: self.reachable.get(i),
            service_ok: self.service_probed.get(i).then(|| self.service_ok.get(i)),
        })
    }

    /// The report on `peer`, if the bitmaps are over `roster` and `peer` is in it.
    pub fn report(&self, roster: &Roster, peer: &PublicKey) -> Option<PeerReport> {
        self.report_at(roster, roster.index(peer)?)
    }

    /// Every report, in key order, if the bitmaps are over `roster`.
    pub fn reports(&self, roster: &Roster) -> Vec<PeerReport> {
        (0..roster.len()).filter_map(|i| self.report_at(roster, i)).collect()
    }

    /// Whether the bitmaps could be over `roster`: of its size, nothing set past the end, its
    /// own bit clear, and a service verdict only where a service is probed. Checked on arrival
    /// when the roster matches, so a report has one encoding.
    pub fn is_canonical(&self, roster: &Roster) -> bool {
        let n = roster.len();
        let own = roster.index(&self.observer);
        self.reachable.fits(n)
            && self.service_probed.fits(n)
            && self.service_ok.fits(n)
            && own.is_some_and(|i| !self.reachable.get(i) && !self.service_probed.get(i))
            && self.service_ok.0.iter().zip(&self.service_probed.0).all(|(ok, probed)| ok & !probed == 0)
    }

    /// Encodes and signs. The observer key must be `key`'s public key.
    pub fn sign(&self, key: &SecretKey) -> SignedObservation {
        debug_assert_eq!(self.observer, key.public());
        let body = postcard::to_stdvec(self).expect("observations always encode");
        let signature = key.sign(OBSERVATION_CONTEXT, &self.cluster, &body);
        SignedObservation { body, signature }
    }
}

/// See [`Observation::version_tag`].
pub fn version_tag(incarnation: u64, seq: u64) -> u8 {
    (seq ^ incarnation ^ (incarnation >> 8)) as u8
}

/// An observation as it travels: the signed bytes and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedObservation {
    /// postcard encoding of an [`Observation`].
    #[serde(with = "bytes")]
    pub body: Vec<u8>,
    /// The observer's signature over context, cluster and `body`.
    pub signature: Signature,
}

/// Why an observation was refused. Refusing never changes the receiver's view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Larger than [`MAX_OBSERVATION_BYTES`] or not a valid encoding.
    #[error("malformed observation")]
    Malformed,
    /// For another cluster.
    #[error("observation for cluster {0:?}")]
    WrongCluster(String),
    /// Observer not in the roster.
    #[error("observation from unknown observer {0}")]
    UnknownObserver(PublicKey),
    /// Signature does not verify under the observer's key.
    #[error("bad signature on observation from {0}")]
    BadSignature(PublicKey),
    /// Not newer than what the view already holds.
    #[error("replayed or old observation")]
    Replay,
    /// Claims to be from this node itself but is not what it published.
    #[error("observation claims to be from this node")]
    SelfConflict,
}

impl SignedObservation {
    /// Decodes the body and checks cluster, roster membership and signature.
    pub fn verify(
        &self,
        cluster: &str,
        trusted: impl Fn(&PublicKey) -> bool,
    ) -> Result<Observation, Rejection> {
        if self.body.len() > MAX_OBSERVATION_BYTES {
            return Err(Rejection::Malformed);
        }
        let obs = decode_body(&self.body).ok_or(Rejection::Malformed)?;
        if obs.cluster != cluster {
            return Err(Rejection::WrongCluster(obs.cluster));
        }
        if !trusted(&obs.observer) {
            return Err(Rejection::UnknownObserver(obs.observer));
        }
        obs.observer
            .verify(OBSERVATION_CONTEXT, cluster, &self.body, &self.signature)
            .map_err(|_| Rejection::BadSignature(obs.observer))?;
        Ok(obs)
    }
}

/// The leading fields of an encoded [`Observation`], enough to order it.
#[derive(Deserialize)]
struct Head<'a> {
    cluster: &'a str,
    // Raw bytes: decoding a `PublicKey` validates the point, which costs as much as the rest.
    observer: [u8; 32],
    _name: &'a str,
    incarnation: u64,
    seq: u64,
}

impl SignedObservation {
    /// The observer and version the body claims for `cluster`, read without checking anything
    /// else (cheap). Only good for refusing: nothing read here is authenticated.
    pub fn claimed_version(&self, cluster: &str) -> Option<([u8; 32], (u64, u64))> {
        let (head, _) = postcard::take_from_bytes::<Head<'_>>(&self.body).ok()?;
        (head.cluster == cluster).then_some((head.observer, (head.incarnation, head.seq)))
    }
}

/// Bytes in binary formats, base64 in human-readable ones (JSON for `spdu peers --json`): the
/// signed body here, the bitmaps of [`super::Bitmap`].
pub(super) mod bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text).map_err(serde::de::Error::custom)
        } else {
            serde_bytes_vec(d)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures::{CLUSTER, observation, public_key, secret_key};

    fn roster(k: &PublicKey) -> bool {
        (0..3).any(|i| public_key(i) == *k)
    }

    #[test]
    fn policy_digest_is_signed_and_absent_from_older_bodies() {
        let mut obs = observation(0, 3, true, &[(1, true)]);
        obs.policy = PolicyDigest([7; 16]);
        let signed = obs.sign(&secret_key(0));
        assert_eq!(signed.verify(CLUSTER, roster).unwrap().policy, PolicyDigest([7; 16]));
        // A body as older versions sign it ends before the digest (and `observed`, one byte
        // here): it reads as unknown.
        let legacy_body = signed.body[..signed.body.len() - 17].to_vec();
        let legacy = SignedObservation {
            signature: secret_key(0).sign(OBSERVATION_CONTEXT, CLUSTER, &legacy_body),
            body: legacy_body,
        };
        let read = legacy.verify(CLUSTER, roster).unwrap();
        assert!(read.policy.is_unknown());
        assert_eq!(read, Observation { policy: PolicyDigest::default(), ..obs.clone() });
        // A body cut inside the digest, or with bytes after it, is malformed.
        for body in [signed.body[..signed.body.len() - 2].to_vec(), [&signed.body[..], &[0]].concat()] {
            let tampered = SignedObservation {
                signature: secret_key(0).sign(OBSERVATION_CONTEXT, CLUSTER, &body),
                body,
            };
            assert_eq!(tampered.verify(CLUSTER, roster), Err(Rejection::Malformed));
        }
    }

    #[test]
    fn observed_address_is_signed_and_absent_from_older_bodies() {
        let mut obs = observation(0, 3, true, &[(1, true)]);
        obs.policy = PolicyDigest([7; 16]);
        obs.observed = Some("198.18.0.3:7946".parse().unwrap());
        let signed = obs.sign(&secret_key(0));
        assert_eq!(signed.verify(CLUSTER, roster).unwrap(), obs);
        let resign = |body: Vec<u8>| SignedObservation {
            signature: secret_key(0).sign(OBSERVATION_CONTEXT, CLUSTER, &body),
            body,
        };
        // Signed by the version before `observed`: ends after the digest, reads as none.
        let without = Observation { observed: None, ..obs.clone() };
        let full = postcard::to_stdvec(&without).unwrap();
        let previous = resign(full[..full.len() - 1].to_vec());
        assert_eq!(previous.verify(CLUSTER, roster).unwrap(), without);
        // Cut anywhere inside the address, or with a byte after it: malformed, never misread.
        let body = &signed.body;
        let at = full.len() - 1;
        for len in at + 1..body.len() {
            assert_eq!(
                resign(body[..len].to_vec()).verify(CLUSTER, roster),
                Err(Rejection::Malformed),
                "{len}"
            );
        }
        let longer = resign([&body[..], &[0]].concat());
        assert_eq!(longer.verify(CLUSTER, roster), Err(Rejection::Malformed));
    }

    fn signed() -> (Observation, SignedObservation) {
        let obs = observation(0, 3, true, &[(1, true), (2, false)]);
        let signed = obs.sign(&secret_key(0));
        (obs, signed)
    }

    #[test]
    fn valid_observation_verifies() {
        let (obs, signed) = signed();
        assert_eq!(signed.verify(CLUSTER, roster), Ok(obs.clone()));
        assert_eq!(signed.claimed_version(CLUSTER), Some((*public_key(0).as_bytes(), (1, 1))));
        assert_eq!(signed.claimed_version("other"), None);
    }

    #[test]
    fn forged_signature_is_refused() {
        let (_, mut signed) = signed();
        signed.signature.0[7] ^= 1;
        assert_eq!(signed.verify(CLUSTER, roster), Err(Rejection::BadSignature(public_key(0))));
    }

    #[test]
    fn altered_body_is_refused() {
        let (mut obs, signed) = signed();
        obs.reachable.set(1, !obs.reachable.get(1));
        let altered = SignedObservation { body: postcard::to_stdvec(&obs).unwrap(), ..signed };
        assert_eq!(altered.verify(CLUSTER, roster), Err(Rejection::BadSignature(public_key(0))));
    }

    #[test]
    fn signed_by_another_roster_key_is_refused() {
        let (_, signed) = signed();
        let signature = secret_key(1).sign(OBSERVATION_CONTEXT, CLUSTER, &signed.body);
        let resigned = SignedObservation { body: signed.body, signature };
        assert_eq!(resigned.verify(CLUSTER, roster), Err(Rejection::BadSignature(public_key(0))));
    }

    #[test]
    fn signed_for_another_message_kind_is_refused() {
        let (_, signed) = signed();
        let signature = secret_key(0).sign("spdu/other/v1", CLUSTER, &signed.body);
        let other = SignedObservation { body: signed.body, signature };
        assert_eq!(other.verify(CLUSTER, roster), Err(Rejection::BadSignature(public_key(0))));
    }

    #[test]
    fn wrong_cluster_is_refused() {
        let mut obs = observation(0, 3, true, &[]);
        obs.cluster = "elsewhere".into();
        let signed = obs.sign(&secret_key(0));
        assert_eq!(signed.verify(CLUSTER, roster), Err(Rejection::WrongCluster("elsewhere".into())));
        // Valid in its own cluster, so the refusal is about the cluster and nothing else.
        assert!(signed.verify("elsewhere", roster).is_ok());
    }

    #[test]
    fn unknown_observer_is_refused() {
        let obs = observation(7, 8, true, &[(0, true)]);
        let signed = obs.sign(&secret_key(7));
        assert_eq!(signed.verify(CLUSTER, roster), Err(Rejection::UnknownObserver(public_key(7))));
    }

    #[test]
    fn malformed_oversize_and_truncated_bodies_are_refused() {
        let (_, signed) = signed();
        let with_body = |body: Vec<u8>| SignedObservation { body, signature: signed.signature };
        assert_eq!(with_body(vec![0xff; 40]).verify(CLUSTER, roster), Err(Rejection::Malformed));
        assert_eq!(with_body(Vec::new()).verify(CLUSTER, roster), Err(Rejection::Malformed));
        let mut big = signed.body.clone();
        big.resize(MAX_OBSERVATION_BYTES + 1, 0);
        assert_eq!(with_body(big).verify(CLUSTER, roster), Err(Rejection::Malformed));
        // (Cut by one byte, it is a valid body that ends before `observed`: see below.)
        for len in [1, signed.body.len() / 2, signed.body.len() - 2] {
            let truncated = with_body(signed.body[..len].to_vec());
            assert_eq!(truncated.verify(CLUSTER, roster), Err(Rejection::Malformed), "{len} bytes");
        }
    }

    #[test]
    fn travels_inside_a_push() {
        use crate::proto::Message;
        let (obs, signed) = signed();
        let frame = Message::Push(vec![signed]).encode();
        let Ok(Message::Push(list)) = Message::decode(&frame) else { panic!("a push") };
        assert_eq!(list[0].verify(CLUSTER, roster), Ok(obs));
        // Cut anywhere, the frame is refused rather than misread.
        for len in 0..frame.len() {
            assert!(Message::decode(&frame[..len]).is_err(), "{len} bytes");
        }
    }
}
