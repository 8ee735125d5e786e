//! Transport counters of one node, shared by the actor, the readers, the writers and the
//! handshake admission through an `Arc`; every field is a relaxed atomic (monotonic counters,
//! except `connections_open`, a gauge, and the `udp_*` pair, which the actor stores as of the
//! latest probe interval).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spdu_keys::tls::PinnedKeys;

/// Transport counters.
#[derive(Debug)]
pub struct NetMetrics {
    pub(super) pinned: Arc<PinnedKeys>,
    pub(super) malformed_frames: AtomicU64,
    pub(super) connections_open: AtomicU64,
    pub(super) frames_received: AtomicU64,
    pub(super) frames_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) udp_datagrams_sent: AtomicU64,
    pub(super) udp_bytes_sent: AtomicU64,
    pub(super) handshakes_dropped: AtomicU64,
    pub(super) handshakes_retried: AtomicU64,
    pub(super) send_queue_dropped: AtomicU64,
    pub(super) send_coalesced: AtomicU64,
    pub(super) streams_timed_out: AtomicU64,
}

impl NetMetrics {
    pub(super) fn new(pinned: Arc<PinnedKeys>) -> Self {
        Self {
            pinned,
            malformed_frames: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            udp_datagrams_sent: AtomicU64::new(0),
            udp_bytes_sent: AtomicU64::new(0),
            handshakes_dropped: AtomicU64::new(0),
            handshakes_retried: AtomicU64::new(0),
            send_queue_dropped: AtomicU64::new(0),
            send_coalesced: AtomicU64::new(0),
            streams_timed_out: AtomicU64::new(0),
        }
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Handshakes refused: the peer's key is not in the roster, or the handshake admission
    /// turned the attempt away (no slot free, too many from its address).
    pub fn handshakes_refused(&self) -> u64 {
        self.pinned.refused() + self.handshakes_dropped.load(Ordering::Relaxed)
    }
    /// Handshake attempts answered with a QUIC Retry (address validation under pressure).
    pub fn handshakes_retried(&self) -> u64 {
        self.handshakes_retried.load(Ordering::Relaxed)
    }
    /// Frames dropped because they did not decode.
    pub fn malformed_frames(&self) -> u64 {
        self.malformed_frames.load(Ordering::Relaxed)
    }
    /// Incoming streams dropped because the peer did not deliver them in time.
    pub fn streams_timed_out(&self) -> u64 {
        self.streams_timed_out.load(Ordering::Relaxed)
    }
    /// Authenticated connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }
    /// Frames received and decoded.
    pub fn frames_received(&self) -> u64 {
        self.frames_received.load(Ordering::Relaxed)
    }
    /// Frames handed to QUIC.
    pub fn frames_sent(&self) -> u64 {
        self.frames_sent.load(Ordering::Relaxed)
    }
    /// Payload bytes handed to QUIC.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
    /// Stream frames dropped from a full per-peer send queue, or given up after the peer did
    /// not take them in time.
    pub fn send_queue_dropped(&self) -> u64 {
        self.send_queue_dropped.load(Ordering::Relaxed)
    }
    /// Stream frames not queued because an identical or newer one of the same kind was already
    /// waiting for the same peer.
    pub fn send_coalesced(&self) -> u64 {
        self.send_coalesced.load(Ordering::Relaxed)
    }
    /// UDP datagrams QUIC sent on peer connections (handshakes, ACKs and retransmissions
    /// included), as of the latest probe interval.
    pub fn udp_datagrams_sent(&self) -> u64 {
        self.udp_datagrams_sent.load(Ordering::Relaxed)
    }
    /// Their UDP payload bytes (add 28 per datagram for IPv4 and UDP headers, 48 for IPv6).
    pub fn udp_bytes_sent(&self) -> u64 {
        self.udp_bytes_sent.load(Ordering::Relaxed)
    }
}
