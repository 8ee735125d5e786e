//! The membership protocol core: no IO, no clock, no tokio.
//!
//! [`State`] is fed `now` and received [`Message`]s and check results through [`State::handle`],
//! and the passing of time through [`State::handle_timeout`] whenever [`State::poll_timeout`]
//! comes due (one slot per kind of timer, as quinn-proto does it). Its outputs wait in
//! [`State::poll_event`]: messages to send, a new [`AnswerSet`] whenever it changes, new service
//! probe targets, a new incarnation. Randomness comes from a seed given at construction, and all
//! maps are ordered, so the same inputs give the same outputs bit for bit (the simulator relies on
//! it). The QUIC driver in [`crate::net`], the simulator in [`crate::sim`] and the fuzz targets
//! are the only callers. `docs/design.md` §3–5 describes the rule, the messages and the timers.
//!
//! Layout (each module's header states what it owns and its invariants):
//! - `state`: [`State`], which routes inputs, timeouts and outputs between the sub-machines
//!   below (its push and beat intake in `state/intake.rs`, its anti-entropy answers in
//!   `state/exchange.rs`, a reload's new roster and settings in `state/reconfigure.rs`);
//! - `liveness`: the per-peer failure detector and what this node reports about each peer;
//! - `view`: every member's newest verified observation, freshness, the tally, digests;
//! - `publisher`: this node's own observation, version, health and beats;
//! - `limits`: the bounds on the work one peer can cause (request rates, verification budget);
//! - `answer`: the answer rule and the cached answer set;
//! - `anycast`: whether this site announces its anycast prefixes (same votes, fails closed);
//! - `sightings`: where peers see this node's connections come from, and the address adopted
//!   from a quorum of their reports (`[node] addresses = "observed"`, dynamic peers);
//! - `policies`: each name's failover policy over the qualifying sites (`spdu-policy`'s
//!   selectors, fed this node's view and latencies);
//! - `events`: inputs, outputs, identity and counters;
//! - `roster`, `observation`, `beat`, `message`, `health`: the data and its wire forms.

mod answer;
mod anycast;
mod beat;
mod events;
#[cfg(test)]
mod fuzz_regressions;
mod health;
mod limits;
mod liveness;
mod message;
mod observation;
mod policies;
mod publisher;
mod roster;
mod sightings;
mod state;
mod view;

use std::time::Duration;

pub use answer::{Quorum, Tally, Votes, admitted_peers, members_of, votes};
pub use anycast::{AnycastReason, AnycastVerdict, anycast_verdict};
pub use beat::{BEAT_CONTEXT, Beat, SignedBeat};
pub use events::{
    AnswerSet, AnswerSite, InEvent, LinkStatus, NameAnswer, NodeInfo, OutEvent, ProbeTarget, Stats,
};
pub use health::{CheckResult, HealthPolicy, MAX_CHECK_FIELD, ServiceCheck, Verdict};
pub use limits::{VERIFY_BURST_ROSTERS, VERIFY_ROSTERS_PER_SEC};
pub use message::{FrameError, MAX_ENTRIES, MAX_FRAME_BYTES, Message};
pub use observation::{
    MAX_OBSERVATION_BYTES, OBSERVATION_CONTEXT, Observation, PeerReport, Rejection, SignedObservation,
    version_tag,
};
pub use roster::{
    AddressPin, Bitmap, MAX_SERVICE_ADDRESSES, Member, PinError, Roster, RosterId, is_special_purpose,
};
pub use sightings::needed as observed_quorum;
pub use spdu_policy::{Pick, Policy, PolicyConfig, PolicyDigest, Rule, SiteAttrs};
#[cfg(test)]
pub(crate) use state::Timer;
pub use state::{Reconfigured, State};

/// Protocol timing and quorum. Defaults detect a lost peer in under a second and ride out heavy
/// packet loss: a peer is dropped only after eight probe intervals in which not one of its
/// messages arrived (at 10 % loss, one chance in 10^8 per interval).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time between two liveness messages to one peer.
    pub probe_interval: Duration,
    /// How long a round-trip ping (for the RTT `spdu peers` shows) waits for its pong.
    pub probe_timeout: Duration,
    /// Probe intervals without a single message from a reachable peer before it is declared
    /// unreachable.
    pub down_after: u32,
    /// Periodic messages in a row (no gap longer than two intervals) before an unreachable peer
    /// is declared reachable.
    pub up_after: u32,
    /// Time between two anti-entropy rounds (and beats, while some peer cannot hear this node).
    pub heartbeat: Duration,
    /// An observer whose newest observation is older than this (receiver's clock) stops counting.
    pub stale_after: Duration,
    /// How many live observers must agree that a peer is reachable.
    pub quorum: Quorum,
    /// Service health checks: thresholds, damping, whether peers' services are probed.
    pub health: HealthPolicy,
    /// Each name's failover policy and every site's priority and weight.
    pub policy: PolicyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(1000),
            down_after: 8,
            up_after: 3,
            heartbeat: Duration::from_millis(1000),
            stale_after: Duration::from_millis(3500),
            quorum: Quorum::Half,
            health: HealthPolicy::default(),
            policy: PolicyConfig::default(),
        }
    }
}
