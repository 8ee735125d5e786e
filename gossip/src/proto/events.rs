//! What goes into and out of the protocol core, and the figures it keeps: inputs
//! ([`InEvent`]), outputs ([`OutEvent`]) and what they carry, the node's identity ([`NodeInfo`]),
//! counters ([`Stats`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use spdu_keys::{PublicKey, SecretKey};
use spdu_policy::Pick;

use super::{CheckResult, Message, Rejection, ServiceCheck};

/// An input to the protocol.
#[derive(Clone, Debug)]
pub enum InEvent {
    /// A message arrived from an authenticated peer.
    Message {
        /// The sender (authenticated by the transport).
        from: PublicKey,
        /// What it sent.
        message: Message,
    },
    /// One result of this node's own service check (counted with hysteresis; the verdict is the
    /// `healthy` flag of this node's observation).
    SelfCheck(CheckResult),
    /// One result of probing `peer`'s advertised service (counted with hysteresis; a peer is
    /// reported reachable only while both its liveness and this verdict pass).
    ServiceProbe {
        /// The peer probed.
        peer: PublicKey,
        /// What the probe found.
        result: CheckResult,
    },
    /// A connection `peer` opened to this node comes from `addr` (reported when one is
    /// accepted, and whenever QUIC reports that the newest one migrated): the peer is told at
    /// once ([`Message::Observed`]), and again every heartbeat until it signs that address.
    RemoteAddress {
        /// The peer.
        peer: PublicKey,
        /// Where its connection comes from.
        addr: SocketAddr,
    },
}

/// An output of the protocol.
#[derive(Clone, Debug)]
pub enum OutEvent {
    /// Send `message` to `to` (best effort: the protocol tolerates loss).
    Send {
        /// The receiver.
        to: PublicKey,
        /// What to send.
        message: Message,
    },
    /// The answer set changed.
    AnswerChanged(AnswerSet),
    /// The peers' services to probe changed (see [`super::State::probe_targets`]).
    ProbeTargetsChanged(Vec<ProbeTarget>),
    /// This node rose to a new incarnation (a peer held a newer observation of it than it had:
    /// it restarted with a lower one). The node stores it so that the next start goes higher.
    IncarnationChanged(u64),
    /// A dynamic peer (its [`super::Member::gossip`] is `None`) signed a new address its own
    /// peers see it at: dial it there.
    PeerAddressChanged {
        /// The peer.
        peer: PublicKey,
        /// Where to dial it.
        addr: SocketAddr,
    },
}

/// A peer's advertised service check and the one address it is run against: the peer's first
/// exact pin, else the first address of its observation inside its pins. Never an address the
/// peer alone chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The peer.
    pub peer: PublicKey,
    /// Its name in the local roster.
    pub name: String,
    /// Where to connect.
    pub addr: IpAddr,
    /// What to run (its `host` is only a Host header or TLS name, never where to connect).
    pub check: ServiceCheck,
}

/// The sites that qualify (the answer rule) and what each name answers with (its policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnswerSet {
    /// Grows by one on every change (of the qualifying sites or of any name's answer).
    pub version: u64,
    /// The nodes that qualify: this node first (unless it withdrew), then peers in key order.
    pub members: Vec<PublicKey>,
    /// Their service addresses, in member order.
    pub addresses: Vec<IpAddr>,
    /// One per rule of [`super::Config::policy`], in its order: what the name answers with.
    pub names: Vec<NameAnswer>,
}

/// What one name answers with, as its policy chose among the qualifying sites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NameAnswer {
    /// The rule's name as configured (`api`, `@`, `www.deep`).
    pub name: String,
    /// The chosen sites, in answer order (never empty while the rule has a site in the roster).
    pub sites: Vec<AnswerSite>,
    /// What each response takes from `sites`.
    pub pick: Pick,
    /// The TTL of its records: the rule's `ttl`, or `ttl_degraded` while degraded.
    pub ttl: u32,
    /// The answer lacks a site it would hold if every site were up.
    pub degraded: bool,
    /// No site of the name qualifies: this is the fail-open answer.
    pub fail_open: bool,
}

/// One site of a [`NameAnswer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnswerSite {
    /// Its key.
    pub key: PublicKey,
    /// Its roster name.
    pub name: String,
    /// Its service addresses (as served: inside its pins).
    pub addresses: Vec<IpAddr>,
    /// Its weight (for [`Pick::Weighted`]).
    pub weight: u32,
}

/// Counters of what arrived and what was refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Observations accepted into the view.
    pub accepted: u64,
    /// Refused: not newer than the view's (replays, duplicates from relays).
    pub replayed: u64,
    /// Refused: malformed body.
    pub malformed: u64,
    /// Refused: another cluster.
    pub wrong_cluster: u64,
    /// Refused: observer not in the roster.
    pub unknown_observer: u64,
    /// Refused: signature does not verify.
    pub bad_signature: u64,
    /// Refused: claimed to come from this node.
    pub self_conflict: u64,
    /// Messages from senders not in the roster.
    pub unknown_sender: u64,
    /// Accepted, but over another roster than this node's: kept and relayed, no vote.
    pub other_roster: u64,
    /// Push or beat entries beyond the roster size (no honest push carries more), dropped
    /// unread.
    pub entries_over_cap: u64,
    /// Claims dropped unverified because their sender spent its verification budget.
    pub over_budget: u64,
    /// Wants merged into a reply already owed to their sender (answered together once per
    /// probe interval).
    pub wants_coalesced: u64,
    /// Summaries dropped: their sender already got an answer within the last half heartbeat.
    pub summaries_dropped: u64,
    /// Digests dropped: their sender already got an answer within the last half heartbeat.
    pub digests_dropped: u64,
    /// [`Message::Observed`] reports dropped: their sender had one taken within the last half
    /// probe interval.
    pub observed_dropped: u64,
}

impl Stats {
    pub(super) fn count(&mut self, rejection: &Rejection) {
        let counter = match rejection {
            Rejection::Malformed => &mut self.malformed,
            Rejection::WrongCluster(_) => &mut self.wrong_cluster,
            Rejection::UnknownObserver(_) => &mut self.unknown_observer,
            Rejection::BadSignature(_) => &mut self.bad_signature,
            Rejection::Replay => &mut self.replayed,
            Rejection::SelfConflict => &mut self.self_conflict,
        };
        *counter += 1;
    }
}

/// This node's probing verdict on one peer (see [`super::State::link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Reachable from here.
    pub reachable: bool,
    /// Smoothed round-trip time, once a ping was answered.
    pub rtt: Option<Duration>,
    /// When the verdict last changed (or the node started).
    pub since: Instant,
}

/// Identity and settings of the node that owns a [`super::State`].
#[derive(Debug)]
pub struct NodeInfo {
    /// Its key (signs its observations).
    pub key: SecretKey,
    /// Its name.
    pub name: String,
    /// The cluster id (part of every signature).
    pub cluster: String,
    /// Greater than that of any earlier run of this node.
    pub incarnation: u64,
    /// Its service addresses.
    pub addresses: Vec<IpAddr>,
    /// The check of its service it advertises to peers, if any.
    pub service_check: Option<ServiceCheck>,
    /// Its service address is the IP its peers see its connections come from, once a quorum of
    /// them agree (`[node] addresses = "observed"`); `addresses` is then ignored.
    pub observed_address: bool,
}
