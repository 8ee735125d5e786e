//! The actor: the one task that owns the protocol core ([`State`]), the connections' outboxes and
//! the core's timers. Everything else talks to it through channels, so the core needs no locks.
//!
//! Invariants:
//! - each message is handled with the `Instant` it arrived at (stamped by the reader), never the
//!   time the actor got round to it;
//! - messages go out on the open connection to a peer on which something (a datagram, a QUIC
//!   keep-alive) arrived most recently, the newest among equals: a restarted peer is reached at
//!   once, and when a peer's address changes, the connection it migrated takes over from the
//!   one dialled at its old address; while nothing was heard on any for [`PATH_SILENT`],
//!   datagrams go on all of them, so a moved node's liveness reaches its peers at once; at most
//!   [`MAX_CONNECTIONS_PER_PEER`] are kept per peer, the oldest closed beyond;
//! - what the node needs (answers, probe targets, incarnation, liveness of this loop) is pushed
//!   on watch channels and atomics, so readers never wait on the actor;
//! - the core's timers are one `Instant` ([`State::poll_timeout`]), no queue of our own;
//! - the loop wakes at least every [`PULSE`], so [`super::Membership::is_alive`] can tell a
//!   stalled actor from an idle one;
//! - one dial task per roster peer, each under its own child of the shutdown token (cancelled
//!   when a reload removes or re-addresses the peer); connections are held only for pinned keys.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spdu_keys::PublicKey;
use spdu_keys::tls::PinnedKeys;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::Reconfiguration;
use super::conn::{self, Event, Inbox, Outbox};
use super::endpoint::{self, Admission, Dialled};
use super::metrics::NetMetrics;
use crate::proto::{AnswerSet, InEvent, Member, Message, OutEvent, ProbeTarget, Reconfigured, State};
use crate::snapshot::{Explanation, ViewSnapshot};

/// Most connections one peer may hold at once (its dialled one, ours, and reconnects in
/// between); the oldest beyond that is closed, so a misbehaving member cannot pile them up.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Time without anything received on a peer's best connection after which datagrams to it go
/// on all its connections (a working one hears something at every probe interval, or at least
/// every QUIC keep-alive).
pub const PATH_SILENT: Duration = Duration::from_millis(300);
/// Longest the loop sleeps without work.
pub const PULSE: Duration = Duration::from_secs(1);
/// Most urgent events handled in one go before timers or after a stream frame.
pub const URGENT_BATCH: usize = 256;

/// What the rest of the node asks of the actor.
pub(super) enum Command {
    Snapshot(oneshot::Sender<ViewSnapshot>),
    Explain(String, oneshot::Sender<Option<Explanation>>),
    Input(InEvent),
    Reconfigure(Box<Reconfiguration>, oneshot::Sender<Reconfigured>),
}

/// Where the actor publishes what the node reads.
#[derive(Debug)]
pub(super) struct Outputs {
    pub(super) answers: watch::Sender<AnswerSet>,
    pub(super) probe_targets: watch::Sender<Vec<ProbeTarget>>,
    pub(super) incarnation: watch::Sender<u64>,
}

/// When the actor last ran its loop, in milliseconds since `epoch`.
#[derive(Debug)]
pub(super) struct Pulse {
    pub(super) epoch: Instant,
    pub(super) last_ms: AtomicU64,
}

impl Pulse {
    const NEVER: u64 = u64::MAX;

    pub(super) fn new() -> Self {
        Self { epoch: Instant::now(), last_ms: AtomicU64::new(Self::NEVER) }
    }

    fn beat(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the actor last ran its loop (`Duration::MAX` before it first did).
    pub(super) fn since(&self) -> Duration {
        match self.last_ms.load(Ordering::Relaxed) {
            Self::NEVER => Duration::MAX,
            last => self.epoch.elapsed().saturating_sub(Duration::from_millis(last)),
        }
    }
}

pub(super) struct Actor {
    pub(super) state: State,
    pub(super) endpoint: quinn::Endpoint,
    /// The keys the TLS handshakes accept (the roster's).
    pub(super) pinned: Arc<PinnedKeys>,
    pub(super) admission: Arc<Admission>,
    /// Each roster peer's dial task: where it dials, and the token that stops it.
    pub(super) dials: BTreeMap<PublicKey, (Dialled, CancellationToken)>,
    pub(super) connections: BTreeMap<PublicKey, Vec<Outbox>>,
    /// The remote address of each peer's newest incoming connection, as last reported to the core.
    pub(super) reported: BTreeMap<PublicKey, SocketAddr>,
    pub(super) outputs: Outputs,
    pub(super) metrics: Arc<NetMetrics>,
    pub(super) pulse: Arc<Pulse>,
    /// UDP (datagrams, bytes) sent by connections no longer held.
    pub(super) closed_udp: (u64, u64),
    pub(super) inbox: Inbox,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

impl Actor {
    /// Serves shutdown first, then due timers (after the datagrams already waiting, up to
    /// [`URGENT_BATCH`], so a silence check sees what arrived before it), then one input picked
    /// at random among urgent events, commands and bulk events; each bulk event is followed by
    /// the urgent events waiting (up to [`URGENT_BATCH`]). So no input kind starves another, the
    /// timers run on time whatever floods in, and datagrams never wait behind more than one
    /// stream frame.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut urgent: mpsc::Receiver<Event>,
        mut bulk: mpsc::Receiver<Event>,
    ) {
        // The core is ready from `State::new`: its first outputs wait.
        self.apply();
        while !self.shutdown.is_cancelled() {
            self.pulse.beat();
            if self.state.poll_timeout().is_some_and(|at| at <= Self::now()) {
                self.drain(&mut urgent);
                self.fire_timers();
            }
            let next = self.state.poll_timeout().map(Instant::from_std);
            let wake = next.map_or(Instant::now() + PULSE, |at| at.min(Instant::now() + PULSE));
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
                Some(event) = urgent.recv() => self.on_event(event),
                Some(command) = commands.recv() => self.on_command(command),
                Some(event) = bulk.recv() => {
                    self.on_event(event);
                    self.drain(&mut urgent);
                }
            }
        }
        for outbox in self.connections.values().flatten() {
            outbox.conn.close(0u32.into(), b"shutdown");
        }
    }

    /// Handles the urgent events already waiting, at most [`URGENT_BATCH`].
    fn drain(&mut self, urgent: &mut mpsc::Receiver<Event>) {
        for _ in 0..URGENT_BATCH {
            match urgent.try_recv() {
                Ok(event) => self.on_event(event),
                Err(_) => break,
            }
        }
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    fn fire_timers(&mut self) {
        let now = Self::now();
        if self.state.poll_timeout().is_some_and(|at| at <= now) {
            self.count_udp();
            self.report_remote_addresses();
            self.state.handle_timeout(now);
            self.apply();
        }
    }

    /// Tells the core where each peer's newest incoming connection comes from, if that changed
    /// (QUIC migrates a connection whose client moved to another address).
    fn report_remote_addresses(&mut self) {
        let now = Self::now();
        for (peer, outboxes) in &self.connections {
            let Some(newest) = outboxes.iter().rev().find(|o| o.incoming && o.conn.close_reason().is_none())
            else {
                continue;
            };
            let addr = newest.conn.remote_address();
            if self.reported.insert(*peer, addr) != Some(addr) {
                debug!(peer = %peer.fingerprint(), remote = %addr, "peer seen at a new address");
                self.state.handle(now, InEvent::RemoteAddress { peer: *peer, addr });
            }
        }
        self.apply();
    }

    /// Where to dial `peer` ([`State::dial_address`]; none yet: not dialled).
    fn dial_target(&self, peer: &Member) -> Option<Dialled> {
        let addr = peer.gossip.or_else(|| self.state.dial_address(&peer.key))?;
        Some(Dialled { name: peer.name.clone(), key: peer.key, addr })
    }

    /// The handshake slots kept for peers go to their configured gossip IPs and to the IPs
    /// dynamic peers signed.
    fn refresh_admission(&self) {
        let ips: Vec<IpAddr> =
            self.state.members().filter_map(|m| self.dial_target(m)).map(|d| d.addr.ip()).collect();
        self.admission.set_peer_ips(ips);
    }

    /// Publishes what QUIC sent on all connections, held and closed, and notes which ones
    /// received anything since the last look.
    fn count_udp(&mut self) {
        let now = Instant::now();
        let (mut datagrams, mut bytes) = self.closed_udp;
        for outbox in self.connections.values_mut().flatten() {
            outbox.look(now);
            let tx = outbox.conn.stats().udp_tx;
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
            Command::Explain(name, reply) => {
                let _ = reply.send(self.state.explain(Self::now(), &name));
            }
            Command::Input(event) => {
                self.state.handle(Self::now(), event);
                self.apply();
            }
            Command::Reconfigure(reconfiguration, reply) => {
                let summary = self.reconfigure(*reconfiguration);
                let _ = reply.send(summary);
            }
        }
    }

    /// Spawns the task that keeps a connection to `peer` open.
    pub(super) fn dial(&mut self, peer: Dialled) {
        let token = self.shutdown.child_token();
        let task =
            endpoint::dial(self.endpoint.clone(), peer.clone(), self.inbox.urgent.clone(), token.clone());
        self.tasks.spawn(task);
        if let Some((_, old)) = self.dials.insert(peer.key, (peer, token)) {
            old.cancel();
        }
    }

    /// A reload: the handshakes accept the new roster's keys only, removed peers are let go of
    /// (dial task stopped, connections closed), added or re-addressed ones dialled, and the
    /// core takes the new roster and settings.
    fn reconfigure(&mut self, r: Reconfiguration) -> Reconfigured {
        self.pinned.replace(r.peers.iter().map(|p| p.key));
        let roster: BTreeSet<PublicKey> = r.peers.iter().map(|p| p.key).collect();
        let gone: BTreeSet<PublicKey> = (self.dials.keys().chain(self.connections.keys()))
            .filter(|k| !roster.contains(*k))
            .copied()
            .collect();
        for key in gone {
            if let Some((peer, token)) = self.dials.remove(&key) {
                info!(peer = %peer.name, key = %key.fingerprint(), "removed from the roster: disconnecting");
                token.cancel();
            }
            for outbox in self.connections.remove(&key).unwrap_or_default() {
                outbox.conn.close(3u32.into(), b"removed from the roster");
                self.forget(&outbox.conn);
            }
            self.reported.remove(&key);
        }
        for member in &r.peers {
            let current = self.dials.get(&member.key).map(|(d, _)| d.addr);
            match self.dial_target(member) {
                Some(peer) if current != Some(peer.addr) => {
                    info!(peer = %peer.name, addr = %peer.addr, "dialling (roster changed)");
                    self.dial(peer);
                }
                Some(_) => {}
                // Became dynamic with no signed address yet: wait for its connections.
                None => {
                    if let Some((_, token)) = self.dials.remove(&member.key) {
                        token.cancel();
                    }
                }
            }
        }
        let summary = self.state.reconfigure(
            Self::now(),
            r.peers,
            r.protocol,
            r.addresses,
            r.service_check,
            r.self_check,
        );
        self.state.set_observed_address(Self::now(), r.observed_address);
        self.refresh_admission();
        self.apply();
        summary
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(peer, conn, incoming) => self.on_connected(peer, conn, incoming),
            Event::Closed(peer, id) => {
                self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                if let Some(outboxes) = self.connections.get_mut(&peer)
                    && let Some(i) = outboxes.iter().position(|o| o.conn.stable_id() == id)
                {
                    let gone = outboxes.remove(i);
                    self.forget(&gone.conn);
                }
            }
            Event::Message(from, message, arrived) => {
                self.state.handle(arrived, InEvent::Message { from, message });
                self.apply();
            }
        }
    }

    fn on_connected(&mut self, peer: PublicKey, conn: quinn::Connection, incoming: bool) {
        if !self.pinned.contains(&peer) {
            // Its handshake finished just before a reload removed it.
            conn.close(3u32.into(), b"removed from the roster");
            return;
        }
        info!(peer = %peer.fingerprint(), remote = %conn.remote_address(), "connected");
        self.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        let outbox = conn::start(
            &self.tasks,
            peer,
            conn,
            incoming,
            self.inbox.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        let outboxes = self.connections.entry(peer).or_default();
        let (closed, open): (Vec<_>, Vec<_>) =
            std::mem::take(outboxes).into_iter().partition(|o| o.conn.close_reason().is_some());
        *outboxes = open;
        outboxes.push(outbox);
        let excess = outboxes.len().saturating_sub(MAX_CONNECTIONS_PER_PEER);
        let oldest: Vec<Outbox> = outboxes.drain(..excess).collect();
        for old in &oldest {
            debug!(peer = %peer.fingerprint(), "too many connections; closing the oldest");
            old.conn.close(2u32.into(), b"too many connections");
        }
        for gone in closed.iter().chain(&oldest) {
            self.forget(&gone.conn);
        }
        if incoming {
            // A new connection is reported even from the same address: a restarted peer has
            // forgotten what it was told.
            self.reported.remove(&peer);
            self.report_remote_addresses();
        }
    }

    fn apply(&mut self) {
        while let Some(event) = self.state.poll_event() {
            match event {
                OutEvent::Send { to, message } => self.send(to, &message),
                OutEvent::AnswerChanged(answer) => {
                    debug!(version = answer.version, addresses = ?answer.addresses, "answer set changed");
                    self.outputs.answers.send_replace(answer);
                }
                OutEvent::ProbeTargetsChanged(targets) => {
                    self.outputs.probe_targets.send_replace(targets);
                }
                OutEvent::IncarnationChanged(incarnation) => {
                    info!(
                        incarnation,
                        "a peer held a newer observation of this node: rose to a new incarnation"
                    );
                    self.outputs.incarnation.send_replace(incarnation);
                }
                OutEvent::PeerAddressChanged { peer, addr } => {
                    let member = self.state.members().find(|m| m.key == peer);
                    if let Some(name) = member.map(|m| m.name.clone())
                        && self.dials.get(&peer).is_none_or(|(d, _)| d.addr != addr)
                    {
                        info!(peer = %name, %addr, "dynamic peer signed a new address: dialling it there");
                        self.dial(Dialled { name, key: peer, addr });
                        self.refresh_admission();
                    }
                }
            }
        }
    }

    fn send(&mut self, to: PublicKey, message: &Message) {
        let open: Vec<&Outbox> = (self.connections.get(&to).into_iter().flatten())
            .filter(|o| o.conn.close_reason().is_none())
            .collect();
        // `max_by_key` keeps the last of equals: the newest.
        let Some(outbox) = open.iter().copied().max_by_key(|o| o.heard_at) else {
            return;
        };
        let frame = Bytes::from(message.encode());
        self.metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        // Nothing heard lately on any: the path may have moved (the peer's address or ours
        // changed). Datagrams go on every connection, so the one that still works carries them
        // and, sent from our new address, makes the peer's QUIC migrate it.
        let datagram = |o: &Outbox| o.conn.max_datagram_size().is_some_and(|max| frame.len() <= max);
        if outbox.heard_at.elapsed() >= PATH_SILENT && open.len() > 1 && datagram(outbox) {
            for o in &open {
                o.send(frame.clone(), false);
            }
            return;
        }
        // A full digest states everything the sender holds: a newer one makes a waiting one moot.
        let supersedes = matches!(message, Message::Digest { .. });
        outbox.send(frame, supersedes);
    }
}
