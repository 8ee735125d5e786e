//! The QUIC driver: runs one node's protocol core on a real QUIC endpoint.
//!
//! Module map:
//! - this module: the public face ([`Membership::bind`], [`Bound::run`], the [`Membership`]
//!   handle) and the wiring of the parts below;
//! - `actor`: the one task that owns the core, the outboxes and the timers;
//! - `endpoint`: dialling roster peers and admitting incoming handshakes (slots, Retry under
//!   pressure, per-source limits);
//! - `conn`: one connection's datagram reader, stream reader and writer;
//! - `queue`: the bounded, coalescing queue of stream frames per connection;
//! - `metrics`: the transport counters.
//!
//! Every node dials every roster peer and accepts connections from them; the TLS handshake pins
//! both sides to roster keys ([`spdu_keys::tls`]). A dynamic peer (no configured gossip
//! address) is dialled at the address its latest verified observation signs, once it signs
//! one, and redialled when that changes; its connections are accepted from any address. The
//! remote address of every connection a peer opened is reported to the core on connect and
//! whenever QUIC reports it migrated (checked at every core timer), so the peer hears where it
//! is seen from. A reload ([`Membership::reconfigure`])
//! replaces the roster in one step of the actor: the pinned keys and admission's peer addresses
//! first, then the removed peers' dial tasks are cancelled and their connections closed, the
//! added (or re-addressed) peers dialled, and the core reconfigured; kept peers' connections
//! stay up. Frames small enough travel as QUIC datagrams
//! (probes must see real loss, not retransmissions); larger ones as one unidirectional stream
//! each. Every task is spawned on one tracker and ends when the shutdown token is cancelled.

mod actor;
mod conn;
mod endpoint;
mod metrics;
mod queue;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use spdu_keys::tls::{self, PinnedKeys};
use spdu_keys::{PublicKey, SecretKey};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proto::{
    self, AnswerSet, CheckResult, InEvent, Member, NodeInfo, ProbeTarget, Reconfigured, ServiceCheck, State,
};
use crate::snapshot::{Explanation, ViewSnapshot};
use actor::{Actor, Command, Pulse};
pub use conn::{STREAM_READ_TIMEOUT, STREAM_READERS, STREAM_WRITE_TIMEOUT};
pub use endpoint::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, RESERVED_FOR_PEERS,
    RETRY_ABOVE,
};
pub use metrics::NetMetrics;
pub use queue::{FrameQueue, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES, Pushed};

/// Stream frames (up to 1 MiB each) decoded and waiting for the actor, all peers together;
/// readers wait when it is full. Datagrams have their own, larger, backlog.
pub const BULK_BACKLOG: usize = 16;
/// Datagrams and connection events waiting for the actor.
pub const URGENT_BACKLOG: usize = 1024;

/// [`Membership::is_alive`] is false once the actor has not run its loop for this long.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(5);

/// Everything the driver needs to run one node.
#[derive(Debug)]
pub struct Settings {
    /// This node's key.
    pub key: SecretKey,
    /// This node's name.
    pub name: String,
    /// Cluster id (signed into every observation).
    pub cluster: String,
    /// Greater than that of any earlier run with this key.
    pub incarnation: u64,
    /// Where to listen for QUIC.
    pub listen: SocketAddr,
    /// This site's service addresses.
    pub addresses: Vec<IpAddr>,
    /// The roster, without this node.
    pub peers: Vec<Member>,
    /// Protocol timing and quorum.
    pub protocol: proto::Config,
    /// The check of this site's service that peers may run, advertised in its observations.
    pub service_check: Option<ServiceCheck>,
    /// This site's service address is the IP its peers see it at (`addresses` is ignored).
    pub observed_address: bool,
}

/// What a reload may change in a running node (see [`Membership::reconfigure`]); the key,
/// name, cluster and listen address are fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Reconfiguration {
    /// The roster, without this node.
    pub peers: Vec<Member>,
    /// Protocol timing, quorum, health thresholds and failover policies.
    pub protocol: proto::Config,
    /// This site's service addresses.
    pub addresses: Vec<IpAddr>,
    /// The check of this site's service that peers may run.
    pub service_check: Option<ServiceCheck>,
    /// Whether this node still runs a check of its own service (without one, the verdict of
    /// the old check is dropped: healthy).
    pub self_check: bool,
    /// This site's service address is the IP its peers see it at (`addresses` is ignored).
    pub observed_address: bool,
}

/// Errors starting the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The UDP socket could not be bound.
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A handle on a running node's membership. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    answers: watch::Receiver<AnswerSet>,
    probe_targets: watch::Receiver<Vec<ProbeTarget>>,
    incarnation: watch::Receiver<u64>,
    metrics: Arc<NetMetrics>,
    pulse: Arc<Pulse>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Snapshot(_) => "Snapshot",
            Command::Explain(..) => "Explain",
            Command::Input(_) => "Input",
            Command::Reconfigure(..) => "Reconfigure",
        })
    }
}

impl Membership {
    /// Binds the QUIC endpoint. Nothing is sent until [`Bound::run`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(settings: Settings) -> Result<Bound, NetError> {
        let pinned = PinnedKeys::new(settings.peers.iter().map(|p| p.key));
        let mut server = tls::server_config(&settings.key, pinned.clone())?;
        let mut client = tls::client_config(&settings.key, pinned.clone())?;
        let transport = Arc::new(endpoint::transport_config());
        server.transport_config(transport.clone());
        client.transport_config(transport);
        let bind_err = |source| NetError::Bind { addr: settings.listen, source };
        let socket = std::net::UdpSocket::bind(settings.listen).map_err(bind_err)?;
        let runtime = quinn::default_runtime().expect("inside a tokio runtime");
        let mut quic = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
            .map_err(bind_err)?;
        quic.set_default_client_config(client);

        let now = Instant::now().into_std();
        let seed = u64::from_le_bytes(settings.key.public().as_bytes()[..8].try_into().expect("8 bytes"))
            ^ settings.incarnation;
        // A dynamic peer is dialled once its observation signs an address (the actor's job).
        let dialled = (settings.peers.iter())
            .filter_map(|p| Some(endpoint::Dialled { name: p.name.clone(), key: p.key, addr: p.gossip? }))
            .collect();
        let roster = settings.peers;
        let info = NodeInfo {
            key: settings.key,
            name: settings.name,
            cluster: settings.cluster,
            incarnation: settings.incarnation,
            addresses: settings.addresses,
            service_check: settings.service_check,
            observed_address: settings.observed_address,
        };
        let state = State::new(info, roster, settings.protocol, seed, now);
        let (answers_tx, answers) = watch::channel(state.answer().clone());
        let (probe_targets_tx, probe_targets) = watch::channel(state.probe_targets().to_vec());
        let (incarnation_tx, incarnation) = watch::channel(state.incarnation());
        let outputs = actor::Outputs {
            answers: answers_tx,
            probe_targets: probe_targets_tx,
            incarnation: incarnation_tx,
        };
        let (commands_tx, commands) = mpsc::channel(64);
        let metrics = Arc::new(NetMetrics::new(pinned.clone()));
        let pulse = Arc::new(Pulse::new());
        let membership =
            Membership { commands: commands_tx, answers, probe_targets, incarnation, metrics, pulse };
        Ok(Bound { endpoint: quic, state, peers: dialled, pinned, commands, outputs, membership })
    }

    /// The answer set, updated whenever it changes.
    pub fn answers(&self) -> watch::Receiver<AnswerSet> {
        self.answers.clone()
    }

    /// The peers' services to probe, updated whenever they change.
    pub fn probe_targets(&self) -> watch::Receiver<Vec<ProbeTarget>> {
        self.probe_targets.clone()
    }

    /// This node's incarnation, updated whenever it rises (a peer held a newer observation of
    /// this node): the node persists every change.
    pub fn incarnation(&self) -> watch::Receiver<u64> {
        self.incarnation.clone()
    }

    /// The current signed view; `None` once the node stopped.
    pub async fn snapshot(&self) -> Option<ViewSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Why the name `name` answers with what it does (`spdu explain`); `None` when no rule has
    /// that name or the node stopped.
    pub async fn explain(&self, name: String) -> Option<Explanation> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Explain(name, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Whether the actor ran its loop within [`ALIVE_WITHIN`] (it wakes at least every second).
    /// O(1): for health endpoints.
    pub fn is_alive(&self) -> bool {
        !self.commands.is_closed() && self.pulse.since() < ALIVE_WITHIN
    }

    /// Applies a reload to the running node: the new roster and settings (see the module docs
    /// and [`State::reconfigure`] for what is kept). Returns what changed in the roster, or
    /// `None` if the node stopped.
    pub async fn reconfigure(&self, reconfiguration: Reconfiguration) -> Option<Reconfigured> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Reconfigure(Box::new(reconfiguration), tx)).await.ok()?;
        rx.await.ok()
    }

    /// Reports one result of this node's own service check (counted with hysteresis).
    pub fn report_self_check(&self, result: CheckResult) {
        // A full queue means the actor is far behind; dropping one result only delays a verdict.
        let _ = self.commands.try_send(Command::Input(InEvent::SelfCheck(result)));
    }

    /// Reports one result of probing `peer`'s advertised service (counted with hysteresis).
    pub fn report_service_probe(&self, peer: PublicKey, result: CheckResult) {
        let _ = self.commands.try_send(Command::Input(InEvent::ServiceProbe { peer, result }));
    }

    /// Transport counters.
    pub fn metrics(&self) -> &NetMetrics {
        &self.metrics
    }
}

/// A bound, not yet running node.
#[derive(Debug)]
pub struct Bound {
    endpoint: quinn::Endpoint,
    state: State,
    peers: Vec<endpoint::Dialled>,
    pinned: Arc<PinnedKeys>,
    commands: mpsc::Receiver<Command>,
    outputs: actor::Outputs,
    membership: Membership,
}

impl Bound {
    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound socket has an address")
    }

    /// A handle for the rest of the node.
    pub fn membership(&self) -> Membership {
        self.membership.clone()
    }

    /// Runs until `shutdown` is cancelled, then closes every connection and waits (briefly) for
    /// every task to end.
    pub async fn run(self, shutdown: CancellationToken) {
        let Bound { endpoint: quic, state, peers, pinned, commands, outputs, membership } = self;
        let (urgent_tx, urgent) = mpsc::channel(URGENT_BACKLOG);
        let (bulk_tx, bulk) = mpsc::channel(BULK_BACKLOG);
        let inbox = conn::Inbox { urgent: urgent_tx, bulk: bulk_tx };
        let tasks = tokio_util::task::TaskTracker::new();
        let admission =
            endpoint::Admission::new(peers.iter().map(|p| p.addr.ip()), membership.metrics.clone());
        tasks.spawn(endpoint::accept(
            quic.clone(),
            admission.clone(),
            inbox.urgent.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let mut actor = Actor {
            state,
            endpoint: quic.clone(),
            pinned,
            admission,
            dials: BTreeMap::new(),
            connections: BTreeMap::new(),
            reported: BTreeMap::new(),
            outputs,
            metrics: membership.metrics.clone(),
            pulse: membership.pulse.clone(),
            closed_udp: (0, 0),
            inbox,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        for peer in peers {
            actor.dial(peer);
        }
        actor.run(commands, urgent, bulk).await;
        quic.close(0u32.into(), b"shutdown");
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tasks.wait().await;
            quic.wait_idle().await;
        })
        .await;
    }
}
