//! The QUIC driver: one actor task owns the protocol core, the endpoint and the connections,
//! and sleeps until the core's next timeout.
//!
//! - Every node dials every roster peer (a task per peer, reconnecting with backoff) and accepts
//!   connections from them; the TLS handshake pins both sides to roster keys
//!   ([`spdu_keys::tls`]), and a dialled peer must present the key it was dialled for. Messages go
//!   out on the newest live connection to a peer, so a restarted peer is reached at once.
//! - Frames small enough travel as QUIC datagrams (probes must see real loss, not
//!   retransmissions); larger ones as one unidirectional stream each, read with a size bound.
//! - Reader tasks decode frames and hand messages to the actor; malformed frames are dropped and
//!   counted. The actor alone touches [`State`], so the core needs no locks.
//!
//! Everything stops when the shutdown token is cancelled.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spdu_keys::tls::{self, PinnedKeys};
use spdu_keys::{PublicKey, SecretKey};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::proto::{
    self, AnswerSet, CheckResult, InEvent, MAX_FRAME_BYTES, Member, Message, NodeInfo, OutEvent,
    ServiceCheck, State,
};
use crate::snapshot::ViewSnapshot;

/// Longest silence on a connection before QUIC drops it. Probes keep healthy connections busy.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most streams a peer may have open towards us at once.
const MAX_STREAMS: u32 = 16;
/// How long a peer gets to deliver one stream frame.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most handshakes in progress at once (unauthenticated work is bounded).
const MAX_HANDSHAKES: usize = 64;
/// Most connections one peer may hold at once (its dialled one, ours, and reconnects in
/// between); the oldest beyond that is closed, so a misbehaving member cannot pile them up.
const MAX_CONNECTIONS_PER_PEER: usize = 4;

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

/// Transport counters.
#[derive(Debug)]
pub struct NetMetrics {
    pinned: Arc<PinnedKeys>,
    malformed_frames: AtomicU64,
    connections_open: AtomicU64,
    frames_received: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    udp_datagrams_sent: AtomicU64,
    udp_bytes_sent: AtomicU64,
}

impl NetMetrics {
    /// Handshakes refused because the peer's key is not in the roster.
    pub fn handshakes_refused(&self) -> u64 {
        self.pinned.refused()
    }
    /// Frames dropped because they did not decode.
    pub fn malformed_frames(&self) -> u64 {
        self.malformed_frames.load(Ordering::Relaxed)
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

enum Command {
    Snapshot(oneshot::Sender<ViewSnapshot>),
    Health(InEvent),
    ServiceTargets(oneshot::Sender<Vec<(PublicKey, IpAddr, ServiceCheck)>>),
}

enum Event {
    Connected(PublicKey, quinn::Connection),
    Closed(PublicKey, usize),
    Message(PublicKey, Message),
}

/// A handle on a running node's membership. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    answers: watch::Receiver<AnswerSet>,
    metrics: Arc<NetMetrics>,
}

impl Membership {
    /// Binds the QUIC endpoint. Nothing is sent until [`Bound::run`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(settings: Settings) -> Result<Bound, NetError> {
        let pinned = PinnedKeys::new(settings.peers.iter().map(|p| p.key));
        let mut server = tls::server_config(&settings.key, pinned.clone())?;
        let mut client = tls::client_config(&settings.key, pinned.clone())?;
        let transport = Arc::new(transport_config());
        server.transport_config(transport.clone());
        client.transport_config(transport);
        let bind_err = |source| NetError::Bind { addr: settings.listen, source };
        let socket = std::net::UdpSocket::bind(settings.listen).map_err(bind_err)?;
        let runtime = quinn::default_runtime().expect("inside a tokio runtime");
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
                .map_err(bind_err)?;
        endpoint.set_default_client_config(client);

        let now = Instant::now().into_std();
        let seed = u64::from_le_bytes(settings.key.public().as_bytes()[..8].try_into().expect("8 bytes"))
            ^ settings.incarnation;
        let roster = settings.peers.clone();
        let info = NodeInfo {
            key: settings.key,
            name: settings.name,
            cluster: settings.cluster,
            incarnation: settings.incarnation,
            addresses: settings.addresses,
            service_check: settings.service_check,
        };
        let state = State::new(info, roster, settings.protocol, seed, now);
        let (answers_tx, answers) = watch::channel(state.answer().clone());
        let (commands_tx, commands) = mpsc::channel(64);
        let metrics = Arc::new(NetMetrics {
            pinned,
            malformed_frames: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            udp_datagrams_sent: AtomicU64::new(0),
            udp_bytes_sent: AtomicU64::new(0),
        });
        let membership = Membership { commands: commands_tx, answers, metrics };
        Ok(Bound { endpoint, state, peers: settings.peers, commands, answers_tx, membership })
    }

    /// The answer set, updated whenever it changes.
    pub fn answers(&self) -> watch::Receiver<AnswerSet> {
        self.answers.clone()
    }

    /// The current signed view; `None` once the node stopped.
    pub async fn snapshot(&self) -> Option<ViewSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Reports one result of this node's own service check (counted with hysteresis).
    pub fn report_self_check(&self, result: CheckResult) {
        // A full queue means the actor is far behind; dropping one result only delays a verdict.
        let _ = self.commands.try_send(Command::Health(InEvent::SelfCheck(result)));
    }

    /// Reports one result of probing `peer`'s advertised service (counted with hysteresis).
    pub fn report_service_probe(&self, peer: PublicKey, result: CheckResult) {
        let _ = self.commands.try_send(Command::Health(InEvent::ServiceProbe { peer, result }));
    }

    /// The peers' services to probe now (see [`State::probe_targets`]); empty once stopped.
    pub async fn service_targets(&self) -> Vec<(PublicKey, IpAddr, ServiceCheck)> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::ServiceTargets(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Transport counters.
    pub fn metrics(&self) -> &NetMetrics {
        &self.metrics
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")));
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_concurrent_uni_streams(MAX_STREAMS.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t
}

/// A bound, not yet running node.
#[derive(Debug)]
pub struct Bound {
    endpoint: quinn::Endpoint,
    state: State,
    peers: Vec<Member>,
    commands: mpsc::Receiver<Command>,
    answers_tx: watch::Sender<AnswerSet>,
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

    /// Runs until `shutdown` is cancelled, then closes every connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let Bound { endpoint, state, peers, commands, answers_tx, membership } = self;
        let (events_tx, events) = mpsc::channel(1024);
        let tasks = tokio_util::task::TaskTracker::new();
        for peer in &peers {
            tasks.spawn(dial(endpoint.clone(), peer.clone(), events_tx.clone(), shutdown.clone()));
        }
        tasks.spawn(accept(endpoint.clone(), events_tx.clone(), shutdown.clone()));
        let actor = Actor {
            state,
            connections: BTreeMap::new(),
            answers_tx,
            metrics: membership.metrics.clone(),
            closed_udp: (0, 0),
            events_tx,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        actor.run(commands, events).await;
        endpoint.close(0u32.into(), b"shutdown");
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tasks.wait().await;
            endpoint.wait_idle().await;
        })
        .await;
    }
}

struct Actor {
    state: State,
    connections: BTreeMap<PublicKey, Vec<quinn::Connection>>,
    answers_tx: watch::Sender<AnswerSet>,
    metrics: Arc<NetMetrics>,
    /// UDP (datagrams, bytes) sent by connections no longer held.
    closed_udp: (u64, u64),
    events_tx: mpsc::Sender<Event>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut events: mpsc::Receiver<Event>) {
        self.apply();
        loop {
            let next = self.state.poll_timeout().map(Instant::from_std);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(command) = commands.recv() => self.on_command(command),
                Some(event) = events.recv() => self.on_event(event),
                () = sleep => self.fire_timers(),
            }
        }
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    fn fire_timers(&mut self) {
        self.count_udp();
        self.state.handle_timeout(Self::now());
        self.apply();
    }

    /// Publishes what QUIC sent on all connections, held and closed.
    fn count_udp(&mut self) {
        let (mut datagrams, mut bytes) = self.closed_udp;
        for conn in self.connections.values().flatten() {
            let tx = conn.stats().udp_tx;
            datagrams += tx.datagrams;
            bytes += tx.bytes;
        }
        self.metrics.udp_datagrams_sent.store(datagrams, Ordering::Relaxed);
        self.metrics.udp_bytes_sent.store(bytes, Ordering::Relaxed);
    }

    /// Remembers what a connection that is let go of sent.
    fn forget(&mut self, conn: &quinn::Connection) {
        let tx = conn.stats().udp_tx;
        self.closed_udp.0 += tx.datagrams;
        self.closed_udp.1 += tx.bytes;
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Snapshot(reply) => {
                let _ = reply.send(ViewSnapshot::of(&self.state, Self::now()));
            }
            Command::Health(event) => {
                self.state.handle(Self::now(), event);
                self.apply();
            }
            Command::ServiceTargets(reply) => {
                let targets = self.state.probe_targets().iter().map(|t| (t.peer, t.addr, t.check.clone()));
                let _ = reply.send(targets.collect());
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(peer, conn) => {
                info!(peer = %peer.fingerprint(), remote = %conn.remote_address(), "connected");
                self.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                self.tasks.spawn(read(
                    peer,
                    conn.clone(),
                    self.events_tx.clone(),
                    self.metrics.clone(),
                    self.shutdown.clone(),
                ));
                let conns = self.connections.entry(peer).or_default();
                let (closed, open): (Vec<_>, Vec<_>) =
                    std::mem::take(conns).into_iter().partition(|c| c.close_reason().is_some());
                *conns = open;
                conns.push(conn);
                let excess = conns.len().saturating_sub(MAX_CONNECTIONS_PER_PEER);
                let oldest: Vec<quinn::Connection> = conns.drain(..excess).collect();
                for old in &oldest {
                    debug!(peer = %peer.fingerprint(), "too many connections; closing the oldest");
                    old.close(2u32.into(), b"too many connections");
                }
                for gone in closed.iter().chain(&oldest) {
                    self.forget(gone);
                }
            }
            Event::Closed(peer, id) => {
                self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                if let Some(conns) = self.connections.get_mut(&peer)
                    && let Some(i) = conns.iter().position(|c| c.stable_id() == id)
                {
                    let gone = conns.remove(i);
                    self.forget(&gone);
                }
            }
            Event::Message(from, message) => {
                self.state.handle(Self::now(), InEvent::Message { from, message });
                self.apply();
            }
        }
    }

    fn apply(&mut self) {
        while let Some(event) = self.state.poll_event() {
            match event {
                OutEvent::Send { to, message } => self.send(to, message),
                OutEvent::AnswerChanged(answer) => {
                    debug!(version = answer.version, addresses = ?answer.addresses, "answer set changed");
                    self.answers_tx.send_replace(answer);
                }
                // Read on demand through `Membership::service_targets`.
                OutEvent::ProbeTargetsChanged(_) => {}
                OutEvent::IncarnationChanged(incarnation) => {
                    info!(
                        incarnation,
                        "a peer held a newer observation of this node: rose to a new incarnation"
                    );
                }
            }
        }
    }

    fn send(&mut self, to: PublicKey, message: Message) {
        let Some(conn) = self
            .connections
            .get(&to)
            .and_then(|conns| conns.iter().rev().find(|c| c.close_reason().is_none()))
        else {
            return;
        };
        let frame = Bytes::from(message.encode());
        self.metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        if conn.max_datagram_size().is_some_and(|max| frame.len() <= max) {
            match conn.send_datagram(frame.clone()) {
                Ok(()) => return,
                Err(e) => debug!(error = %e, "datagram refused, sending as stream"),
            }
        }
        let conn = conn.clone();
        self.tasks.spawn(async move {
            let result = async {
                let mut stream = conn.open_uni().await?;
                stream.write_all(&frame).await?;
                stream.finish()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            if let Err(e) = result.await {
                debug!(error = %e, "stream send failed");
            }
        });
    }
}

/// Keeps one outgoing connection to `peer` open, reconnecting with backoff.
async fn dial(
    endpoint: quinn::Endpoint,
    peer: Member,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        let attempt = async {
            let conn = endpoint
                .connect(peer.gossip, "spdu")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            match tls::peer_key(&conn) {
                Some(key) if key == peer.key => Ok(conn),
                other => {
                    conn.close(1u32.into(), b"unexpected key");
                    Err(format!(
                        "{} presented key {other:?}, expected {}",
                        peer.gossip,
                        peer.key.fingerprint()
                    ))
                }
            }
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(conn) => {
                if events.send(Event::Connected(peer.key, conn.clone())).await.is_err() {
                    return;
                }
                let began = Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    reason = conn.closed() => debug!(peer = %peer.name, %reason, "connection closed"),
                }
                if began.elapsed() > IDLE_TIMEOUT {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => debug!(peer = %peer.name, error = %e, "connect failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Accepts incoming connections; the handshake itself refuses keys outside the roster.
async fn accept(endpoint: quinn::Endpoint, events: mpsc::Sender<Event>, shutdown: CancellationToken) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            debug!(remote = %incoming.remote_address(), "too many handshakes in progress; refusing");
            incoming.refuse();
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    // Counted (handshakes_refused); a log line per attempt would let strangers flood the log.
                    debug!(%remote, error = %e, "incoming handshake failed");
                    return;
                }
            };
            drop(permit);
            if let Some(key) = tls::peer_key(&conn) {
                let _ = events.send(Event::Connected(key, conn)).await;
            }
        });
    }
}

/// Reads datagrams and streams from one connection until it closes.
async fn read(
    peer: PublicKey,
    conn: quinn::Connection,
    events: mpsc::Sender<Event>,
    metrics: Arc<NetMetrics>,
    shutdown: CancellationToken,
) {
    let deliver = |frame: &[u8]| match Message::decode(frame) {
        Ok(message) => {
            metrics.frames_received.fetch_add(1, Ordering::Relaxed);
            Some(Event::Message(peer, message))
        }
        Err(e) => {
            metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer.fingerprint(), error = %e, "dropping frame");
            None
        }
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            datagram = conn.read_datagram() => match datagram {
                Ok(frame) => deliver(&frame),
                Err(_) => break,
            },
            stream = conn.accept_uni() => match stream {
                Ok(mut stream) => {
                    // One stream at a time per connection: a slow sender only slows itself.
                    match tokio::time::timeout(STREAM_READ_TIMEOUT, stream.read_to_end(MAX_FRAME_BYTES)).await {
                        Ok(Ok(frame)) => deliver(&frame),
                        Ok(Err(e)) => {
                            metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                            debug!(peer = %peer.fingerprint(), error = %e, "dropping stream");
                            None
                        }
                        Err(_) => None,
                    }
                }
                Err(_) => break,
            },
        };
        if let Some(event) = event
            && events.send(event).await.is_err()
        {
            break;
        }
    }
    let _ = events.send(Event::Closed(peer, conn.stable_id())).await;
}
