//! The wire messages between two nodes, encoded with postcard.
//!
//! Invariants: decoding is bounded by [`MAX_FRAME_BYTES`] and never panics on arbitrary input;
//! anything that does not decode is dropped and counted by the caller.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use spdu_keys::PublicKey;

use super::{SignedBeat, SignedObservation};

/// Largest frame a node accepts (a push of many observations at large cluster sizes).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Most entries a digest or push may carry.
pub const MAX_ENTRIES: usize = 4096;

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Sent to every peer every probe interval: the sender is alive and its path to the receiver
    /// works. Carries the [`super::Observation::version_tag`] of the sender's current
    /// observation: a receiver holding that observation counts it fresh, one holding another asks
    /// for it. Two bytes on the wire: this is most of the idle traffic.
    Alive(u8),
    /// A round-trip time probe (a few per minute); answered with a [`Message::Pong`].
    Ping {
        /// Chosen by the prober.
        nonce: u32,
    },
    /// The answer to a probe.
    Pong {
        /// The probe's nonce.
        nonce: u32,
    },
    /// Observations the receiver may not have yet (own, relayed, or asked for by a digest).
    Push(Vec<SignedObservation>),
    /// The versions the sender holds; the receiver pushes back whatever is newer.
    Digest {
        /// (observer, incarnation, seq) for every observation the sender holds.
        versions: Vec<(PublicKey, u64, u64)>,
        /// Whether this digest answers another one (a reply is never answered with a digest).
        reply: bool,
    },
    /// Heartbeats: the observations they name are still current.
    Beat(Vec<SignedBeat>),
    /// Asks for the full current observations of these observers (sent when a beat names a
    /// version the receiver does not hold).
    Want(Vec<PublicKey>),
    /// A hash of the versions the sender holds ([`Message::Digest`] in eight bytes): a receiver
    /// whose own hash differs answers with its full digest.
    Summary(u64),
    /// The sender holds an observation of the receiver at this version, newer than the one the
    /// receiver just sent or named: the receiver restarted with a lower incarnation, and rises
    /// above it.
    Superseded {
        /// The incarnation the sender holds for the receiver.
        incarnation: u64,
        /// The seq the sender holds for the receiver.
        seq: u64,
    },
    /// The sender sees the receiver's connection come from this address (sent when a connection
    /// from the receiver is accepted, when QUIC reports that it migrated, and once per
    /// heartbeat until the receiver signs that address). A node adopts an address only when a quorum of its peers report the same IP.
    /// (Last variant: older variants keep their encodings.)
    Observed(SocketAddr),
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a valid encoding of a [`Message`], or too many entries.
    #[error("malformed frame")]
    Malformed,
}

impl Message {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("messages always encode")
    }

    /// Decodes a frame received from the wire.
    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(frame.len()));
        }
        let msg: Message = postcard::from_bytes(frame).map_err(|_| FrameError::Malformed)?;
        let entries = match &msg {
            Message::Push(obs) => obs.len(),
            Message::Digest { versions, .. } => versions.len(),
            Message::Beat(beats) => beats.len(),
            Message::Want(keys) => keys.len(),
            _ => 0,
        };
        if entries > MAX_ENTRIES {
            return Err(FrameError::Malformed);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let msg = Message::Digest { versions: vec![], reply: true };
        assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
        assert_eq!(Message::decode(&[0xff, 0xff, 0xff]), Err(FrameError::Malformed));
        assert_eq!(Message::decode(&[]), Err(FrameError::Malformed));
        assert!(matches!(Message::decode(&vec![0; MAX_FRAME_BYTES + 1]), Err(FrameError::TooLarge(_))));
        // A truncated push: claims one observation, carries none.
        assert_eq!(Message::decode(&[3, 1]), Err(FrameError::Malformed));
    }

    #[test]
    fn the_idle_messages_are_small() {
        assert_eq!(Message::Alive(200).encode().len(), 2);
        assert_eq!(Message::Summary(u64::MAX).encode().len(), 11);
        assert!(Message::Ping { nonce: 70_000 }.encode().len() <= 4);
        let observed = Message::Observed("198.18.0.3:7946".parse().unwrap());
        assert!(observed.encode().len() <= 9);
    }

    #[test]
    fn observed_is_appended_after_every_older_kind() {
        // Older kinds keep their tags: Superseded is 8, Observed the new 9.
        assert_eq!(Message::Superseded { incarnation: 1, seq: 1 }.encode()[0], 8);
        let msg = Message::Observed("[2001:db8::1]:7946".parse().unwrap());
        let frame = msg.encode();
        assert_eq!(frame[0], 9);
        assert_eq!(Message::decode(&frame).unwrap(), msg);
        for len in 0..frame.len() {
            assert!(Message::decode(&frame[..len]).is_err(), "{len} bytes");
        }
    }
}
