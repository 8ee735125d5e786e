//! What a simulation is made of and what can be done to it: its shape ([`SimConfig`]), links,
//! scheduled actions and lies.

use std::time::Duration;

use super::NodeId;
use crate::proto::Config;

/// The shape of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds the network and every node.
    pub seed: u64,
    /// The protocol settings of every node.
    pub protocol: Config,
    /// Every link's initial settings (see [`super::Sim::set_link`] to change one).
    pub link: Link,
    /// When set, every node advertises a service check, checks its own service and probes every
    /// peer's this often (see [`Action::SetService`] and [`Action::BlockService`]).
    pub services: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { seed: 1, protocol: Config::default(), link: Link::default(), services: None }
    }
}

/// One direction of the link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..jitter` (so messages may be reordered).
    pub jitter: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// A link that is down loses everything.
    pub up: bool,
}

impl Default for Link {
    fn default() -> Self {
        Self { latency: Duration::from_millis(10), jitter: Duration::from_millis(5), loss: 0.0, up: true }
    }
}

/// Something the simulation does to itself at a scheduled time (see [`super::Sim::schedule`]).
#[derive(Clone, Debug)]
pub enum Action {
    /// Stop the node.
    Crash(NodeId),
    /// Start the node again with a higher incarnation.
    Restart(NodeId),
    /// Set one direction of a link up or down.
    SetLinkUp {
        /// Sender side.
        from: NodeId,
        /// Receiver side.
        to: NodeId,
        /// Up or down.
        up: bool,
    },
    /// Partition the nodes into these groups (unlisted nodes are alone).
    Partition(Vec<Vec<NodeId>>),
    /// Remove any partition.
    Heal,
    /// Feed a node's own health check results until its verdict is this (as many in a row as
    /// its thresholds need).
    SetHealthy(NodeId, bool),
    /// Reload a node's config with the roster `roster` (node ids; its own is added if missing)
    /// and the run's protocol config ([`State::reconfigure`](crate::proto::State::reconfigure)).
    Reconfigure(NodeId, Vec<NodeId>),
    /// Start or stop a node's service (its node keeps running); needs [`SimConfig::services`].
    SetService(NodeId, bool),
    /// Make service probes from one node to another fail (or pass again), whatever the service
    /// and the links do: a firewall or route that affects only the service.
    BlockService {
        /// The prober.
        from: NodeId,
        /// The service's node.
        to: NodeId,
        /// Blocked or not.
        blocked: bool,
    },
}

/// What a falsifying observer claims about peers in every observation of its own that it sends.
/// Its probing and everything else stay honest; the rewritten observations are re-signed with its
/// own (valid) key.
#[derive(Clone, Debug, Default)]
pub struct Lie {
    /// Claimed reachable whatever its probing says.
    pub reachable: Vec<NodeId>,
    /// Claimed unreachable whatever its probing says.
    pub unreachable: Vec<NodeId>,
    /// Every [`crate::proto::Message::Observed`] it sends names this address instead of where
    /// it really sees the receiver.
    pub observed: Option<std::net::SocketAddr>,
}
