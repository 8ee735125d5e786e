//! One node's protocol state: probing with hysteresis, its own signed observation, the view of
//! everyone's latest observation, anti-entropy, and the answer set.
//!
//! Invariants:
//! - the view holds at most one observation per roster member (self included), always the one
//!   with the highest (incarnation, seq) that verified; anything else is refused and counted;
//! - this node's own observation is re-signed (next `seq`) when its content changes — probing
//!   verdicts, health — at most once per probe interval (changes in between are coalesced), and
//!   refreshed by a signed [`Beat`] every heartbeat; beats are small, so the steady state costs one
//!   beat per peer per heartbeat, whatever the size of the roster;
//! - a view entry is fresh while newer observations or newer beats for it keep arriving;
//! - observations and beats travel to every direct peer, and are relayed only to peers whose own
//!   observation says they cannot reach the observer (plus digest-driven anti-entropy), so
//!   nothing floods;
//! - the answer set is recomputed after every event that can change it and on every heartbeat
//!   (observations go stale by the passing of time alone); [`OutEvent::AnswerChanged`] is emitted
//!   only when it really changed.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use spdu_keys::{PublicKey, SecretKey};

use super::{
    Beat, Config, MAX_ENTRIES, Member, Message, Observation, PeerReport, Rejection, SignedBeat,
    SignedObservation, answer_members, votes,
};
use super::health::ServiceHealth;
use super::{CheckResult, HealthView, ServiceCheck};

/// Most probes of one peer waiting for their pong at once.
const MAX_OUTSTANDING: usize = 64;
/// How many relayers, on average, forward one beat or observation to a peer that cannot reach
/// its observer. More than one so a single lost relay does not starve the peer.
const RELAY_REDUNDANCY: f64 = 3.0;
/// A peer must have reported an observer unreachable for this long before we relay to it (at
/// cold start every peer reports every other unreachable for a moment).
const RELAY_AFTER: Duration = Duration::from_secs(1);

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
    /// A timer set through [`OutEvent::SetTimer`] fired.
    Timer(Timer),
    /// This node's own service health check changed its verdict.
    SetHealthy(bool),
    /// One result of this node's own service check (counted with hysteresis, then as
    /// [`InEvent::SetHealthy`]).
    SelfCheck(CheckResult),
    /// One result of probing `peer`'s advertised service (counted with hysteresis; a peer is
    /// reported reachable only while both its QUIC probing and this verdict pass).
    ServiceProbe {
        /// The peer probed.
        peer: PublicKey,
        /// What the probe found.
        result: CheckResult,
    },
}

/// Timers the protocol asks for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Time to probe this peer again.
    Probe(PublicKey),
    /// The probe with this nonce has waited long enough for its pong.
    ProbeTimeout(PublicKey, u64),
    /// Time to sign a beat and run anti-entropy.
    Heartbeat,
    /// Time to publish a coalesced change of this node's observation.
    Publish,
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
    /// Fire `timer` at `at` (in addition to any other timers pending).
    SetTimer {
        /// When.
        at: Instant,
        /// Which.
        timer: Timer,
    },
    /// The answer set changed.
    AnswerChanged(AnswerSet),
}

/// The nodes and addresses this node answers with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnswerSet {
    /// Grows by one on every change.
    pub version: u64,
    /// The nodes in the answer: this node first (unless it withdrew), then peers in key order.
    pub members: Vec<PublicKey>,
    /// Their service addresses, in member order.
    pub addresses: Vec<IpAddr>,
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
}

impl Stats {
    fn count(&mut self, rejection: &Rejection) {
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

#[derive(Debug)]
struct Probe {
    reachable: bool,
    changed_at: Instant,
    ok_streak: u32,
    fail_streak: u32,
    rtt: Option<Duration>,
    outstanding: VecDeque<(u64, Instant)>,
    last_ping_heard: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    signed: SignedObservation,
    obs: Observation,
    /// When the observation or a newer beat for it last arrived (freshness).
    received_at: Instant,
    /// The newest beat seen for this observation.
    beat: u64,
}

/// The protocol state of one node. See the module docs for its invariants.
#[derive(Debug)]
pub struct State {
    key: SecretKey,
    me: PublicKey,
    name: String,
    cluster: String,
    config: Config,
    incarnation: u64,
    seq: u64,
    beat: u64,
    last_publish: Option<Instant>,
    publish_pending: bool,
    healthy: bool,
    addresses: Vec<IpAddr>,
    service_check: Option<ServiceCheck>,
    health: ServiceHealth,
    members: BTreeMap<PublicKey, String>,
    probes: BTreeMap<PublicKey, Probe>,
    view: BTreeMap<PublicKey, Entry>,
    answer: AnswerSet,
    next_nonce: u64,
    rng: StdRng,
    stats: Stats,
    dirty: bool,
    out: Vec<OutEvent>,
}

/// Identity and settings of the node that owns a [`State`].
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
}

impl State {
    /// A node that has not probed anyone yet: every peer starts unreachable.
    ///
    /// Call [`State::start`] once before handling events.
    pub fn new(info: NodeInfo, roster: Vec<Member>, config: Config, seed: u64, now: Instant) -> Self {
        let me = info.key.public();
        let members: BTreeMap<_, _> =
            roster.into_iter().filter(|m| m.key != me).map(|m| (m.key, m.name)).collect();
        let probes = members
            .keys()
            .map(|k| {
                let probe = Probe {
                    reachable: false,
                    changed_at: now,
                    ok_streak: 0,
                    fail_streak: 0,
                    rtt: None,
                    outstanding: VecDeque::new(),
                    last_ping_heard: None,
                };
                (*k, probe)
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            me,
            key: info.key,
            name: info.name,
            cluster: info.cluster,
            config,
            incarnation: info.incarnation,
            seq: 0,
            beat: 0,
            last_publish: None,
            publish_pending: false,
            healthy: true,
            addresses: info.addresses,
            service_check: info.service_check,
            health: ServiceHealth::default(),
            members,
            probes,
            view: BTreeMap::new(),
            answer: AnswerSet::default(),
            next_nonce: rng.random(),
            rng,
            stats: Stats::default(),
            dirty: true,
            out: Vec::new(),
        }
    }

    /// Publishes the first observation and schedules probes (spread over one interval) and the
    /// heartbeat.
    pub fn start(&mut self, now: Instant) -> Vec<OutEvent> {
        let interval = self.config.probe_interval.as_micros().max(1) as u64;
        let peers: Vec<PublicKey> = self.members.keys().copied().collect();
        for peer in peers {
            let offset = Duration::from_micros(self.rng.random_range(0..interval));
            self.set_timer(now + offset, Timer::Probe(peer));
        }
        self.set_timer(now + self.config.heartbeat, Timer::Heartbeat);
        self.publish(now);
        self.finish(now)
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, now: Instant, event: InEvent) -> Vec<OutEvent> {
        match event {
            InEvent::Message { from, message } => self.on_message(now, from, message),
            InEvent::Timer(Timer::Probe(peer)) => self.on_probe(now, peer),
            InEvent::Timer(Timer::ProbeTimeout(peer, nonce)) => self.on_probe_timeout(now, peer, nonce),
            InEvent::Timer(Timer::Heartbeat) => self.on_heartbeat(now),
            InEvent::Timer(Timer::Publish) => {
                if self.publish_pending {
                    self.publish(now);
                }
            }
            InEvent::SetHealthy(healthy) => self.set_healthy(now, healthy),
            InEvent::SelfCheck(result) => {
                if let Some(healthy) = self.health.on_self_check(now, result, &self.config.health) {
                    self.set_healthy(now, healthy);
                }
            }
            InEvent::ServiceProbe { peer, result } => self.on_service_probe(now, peer, result),
        }
        self.finish(now)
    }

    /// This node's key.
    pub fn key(&self) -> PublicKey {
        self.me
    }

    /// The current answer set.
    pub fn answer(&self) -> &AnswerSet {
        &self.answer
    }

    /// Counters of accepted and refused input.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether this node's probing currently sees `peer` reachable.
    pub fn sees_reachable(&self, peer: &PublicKey) -> bool {
        self.probes.get(peer).is_some_and(|p| p.reachable)
    }

    /// The newest observation of `observer` in the view.
    pub fn observation(&self, observer: &PublicKey) -> Option<&Observation> {
        self.view.get(observer).map(|e| &e.obs)
    }

    /// The signed newest observation of `observer` in the view.
    pub fn signed_observation(&self, observer: &PublicKey) -> Option<&SignedObservation> {
        self.view.get(observer).map(|e| &e.signed)
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.out.push(OutEvent::SetTimer { at, timer });
    }

    fn send(&mut self, to: PublicKey, message: Message) {
        self.out.push(OutEvent::Send { to, message });
    }

    fn finish(&mut self, now: Instant) -> Vec<OutEvent> {
        if self.dirty {
            self.dirty = false;
            self.recompute_answer(now);
        }
        std::mem::take(&mut self.out)
    }

    fn on_message(&mut self, now: Instant, from: PublicKey, message: Message) {
        if !self.members.contains_key(&from) {
            self.stats.unknown_sender += 1;
            return;
        }
        match message {
            Message::Ping { nonce } => {
                if let Some(p) = self.probes.get_mut(&from) {
                    p.last_ping_heard = Some(now);
                }
                self.send(from, Message::Pong { nonce });
            }
            Message::Pong { nonce } => self.on_pong(now, from, nonce),
            Message::Push(list) => self.on_push(now, from, list),
            Message::Digest { versions, reply } => self.on_digest(from, versions, reply),
            Message::Beat(beats) => self.on_beat(now, from, beats),
            Message::Want(observers) => self.on_want(from, observers),
        }
    }

    fn on_probe(&mut self, now: Instant, peer: PublicKey) {
        let Some(probe) = self.probes.get_mut(&peer) else { return };
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        if probe.outstanding.len() == MAX_OUTSTANDING {
            probe.outstanding.pop_front();
        }
        probe.outstanding.push_back((nonce, now));
        self.send(peer, Message::Ping { nonce });
        self.set_timer(now + self.config.probe_timeout, Timer::ProbeTimeout(peer, nonce));
        self.set_timer(now + self.config.probe_interval, Timer::Probe(peer));
    }

    fn on_pong(&mut self, now: Instant, from: PublicKey, nonce: u64) {
        let Some(probe) = self.probes.get_mut(&from) else { return };
        let Some(i) = probe.outstanding.iter().position(|(n, _)| *n == nonce) else { return };
        let (_, sent) = probe.outstanding.remove(i).expect("index from position");
        let sample = now.saturating_duration_since(sent);
        probe.rtt = Some(match probe.rtt {
            Some(rtt) => (rtt * 7 + sample) / 8,
            None => sample,
        });
        self.record(now, from, true);
    }

    fn on_probe_timeout(&mut self, now: Instant, peer: PublicKey, nonce: u64) {
        let Some(probe) = self.probes.get_mut(&peer) else { return };
        let Some(i) = probe.outstanding.iter().position(|(n, _)| *n == nonce) else { return };
        let (_, sent) = probe.outstanding.remove(i).expect("index from position");
        // The pong was lost or late, but a ping from the peer since this probe left proves the
        // peer alive and its path to us working: only both missing count as a failure. It is no
        // success either: one ping heard would otherwise count for every probe outstanding,
        // bringing a peer back after a single packet instead of `up_after` round trips.
        if probe.last_ping_heard.is_some_and(|t| t >= sent) {
            probe.fail_streak = 0;
        } else {
            self.record(now, peer, false);
        }
    }

    fn record(&mut self, now: Instant, peer: PublicKey, ok: bool) {
        let (up_after, down_after) = (self.config.up_after, self.config.down_after);
        let Some(probe) = self.probes.get_mut(&peer) else { return };
        let flipped = if ok {
            probe.ok_streak = probe.ok_streak.saturating_add(1);
            probe.fail_streak = 0;
            !probe.reachable && probe.ok_streak >= up_after
        } else {
            probe.fail_streak = probe.fail_streak.saturating_add(1);
            probe.ok_streak = 0;
            probe.reachable && probe.fail_streak >= down_after
        };
        if flipped {
            probe.reachable = ok;
            probe.changed_at = now;
            self.request_publish(now);
        }
    }

    fn set_healthy(&mut self, now: Instant, healthy: bool) {
        if healthy != self.healthy {
            self.healthy = healthy;
            self.request_publish(now);
        }
    }

    fn on_service_probe(&mut self, now: Instant, peer: PublicKey, result: CheckResult) {
        if !self.members.contains_key(&peer) {
            return;
        }
        self.health.on_service_probe(now, peer, result, &self.config.health);
        // Publish whenever the report would differ from the published one: a flip, but also a
        // peer that started advertising a check since (its service is down until proven).
        let reachable = self.sees_reachable(&peer) && self.service_ok(&peer) != Some(false);
        let published = self.view.get(&self.me).and_then(|e| e.obs.report(&peer));
        if published.is_none_or(|r| r.reachable != reachable || r.service_ok != self.service_ok(&peer)) {
            self.request_publish(now);
        }
    }

    /// This node's verdict on `peer`'s service, if it probes it (see [`ServiceHealth::service_ok`]).
    fn service_ok(&self, peer: &PublicKey) -> Option<bool> {
        let advertises = self.observation(peer).is_some_and(|o| o.service_check.is_some());
        self.health.service_ok(peer, advertises, &self.config.health)
    }

    /// The peers' services to probe: each roster peer whose latest observation advertises a
    /// check, with its first service address. Empty unless the config probes peers.
    pub fn service_targets(&self) -> Vec<(PublicKey, IpAddr, ServiceCheck)> {
        if !self.config.health.probe_peers {
            return Vec::new();
        }
        self.members
            .keys()
            .filter_map(|k| {
                let obs = self.observation(k)?;
                Some((*k, *obs.addresses.first()?, obs.service_check.clone()?))
            })
            .collect()
    }

    fn on_heartbeat(&mut self, now: Instant) {
        self.set_timer(now + self.config.heartbeat, Timer::Heartbeat);
        self.beat += 1;
        let beat = Beat { observer: self.me, incarnation: self.incarnation, seq: self.seq, beat: self.beat };
        let signed = beat.sign(&self.key, &self.cluster);
        let peers: Vec<PublicKey> = self.members.keys().copied().collect();
        for peer in peers {
            self.send(peer, Message::Beat(vec![signed.clone()]));
        }
        if let Some(mine) = self.view.get_mut(&self.me) {
            mine.received_at = now;
            mine.beat = self.beat;
        }
        // Anti-entropy: one random peer learns what we hold and pushes back what we lack.
        if !self.members.is_empty() {
            let i = self.rng.random_range(0..self.members.len());
            let peer = *self.members.keys().nth(i).expect("index in range");
            let versions = self.versions();
            self.send(peer, Message::Digest { versions, reply: false });
        }
        // Freshness changes with time alone.
        self.dirty = true;
    }

    /// Publishes a change now, or once a probe interval has passed since the last publication
    /// (a burst of verdict changes, as at start-up, becomes one observation).
    fn request_publish(&mut self, now: Instant) {
        match self.last_publish {
            Some(last) if now < last + self.config.probe_interval => {
                if !self.publish_pending {
                    self.publish_pending = true;
                    self.set_timer(last + self.config.probe_interval, Timer::Publish);
                }
            }
            _ => self.publish(now),
        }
    }

    /// Re-signs this node's observation with the next seq, stores it, and pushes it to every peer.
    fn publish(&mut self, now: Instant) {
        self.seq += 1;
        self.publish_pending = false;
        self.last_publish = Some(now);
        let peers = self
            .probes
            .iter()
            .map(|(key, p)| {
                let service_ok = self.service_ok(key);
                PeerReport {
                    key: *key,
                    reachable: p.reachable && service_ok != Some(false),
                    rtt_us: p.rtt.map(|d| d.as_micros().min(u32::MAX as u128) as u32),
                    for_ms: now.saturating_duration_since(p.changed_at).as_millis() as u64,
                    service_ok,
                    service_latency_us: service_ok.and_then(|_| self.health.latency_us(key)),
                }
            })
            .collect();
        let obs = Observation {
            cluster: self.cluster.clone(),
            observer: self.me,
            name: self.name.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            healthy: self.healthy,
            addresses: self.addresses.clone(),
            peers,
            service_check: self.service_check.clone(),
        };
        let signed = obs.sign(&self.key);
        let peers: Vec<PublicKey> = self.members.keys().copied().collect();
        for peer in peers {
            self.send(peer, Message::Push(vec![signed.clone()]));
        }
        self.view.insert(self.me, Entry { signed, obs, received_at: now, beat: self.beat });
        self.dirty = true;
    }

    fn on_push(&mut self, now: Instant, from: PublicKey, list: Vec<SignedObservation>) {
        let mut relay = Vec::new();
        for signed in list {
            match self.accept(now, signed) {
                Ok(observer) => relay.push(observer),
                Err(rejection) => self.stats.count(&rejection),
            }
        }
        // Relay what was new to the peers that cannot hear its observer themselves.
        let mut batches: BTreeMap<PublicKey, Vec<SignedObservation>> = BTreeMap::new();
        for observer in relay {
            for peer in self.relay_targets(now, &observer, &from) {
                batches.entry(peer).or_default().push(self.view[&observer].signed.clone());
            }
        }
        for (peer, batch) in batches {
            self.send(peer, Message::Push(batch));
        }
    }

    /// The peers that should get `observer`'s news from us: not the sender, not the observer,
    /// and only those whose own observation has said for a while that they cannot reach it.
    /// Every node that hears the observer makes the same choice, so each such peer is picked
    /// with a probability that makes about [`RELAY_REDUNDANCY`] relayers serve it.
    fn relay_targets(&mut self, now: Instant, observer: &PublicKey, from: &PublicKey) -> Vec<PublicKey> {
        let relayers = self.members.len().saturating_sub(1).max(1) as f64;
        let chance = (RELAY_REDUNDANCY / relayers).min(1.0);
        let mut targets = Vec::new();
        for (peer, entry) in &self.view {
            if peer == observer || peer == from || *peer == self.me {
                continue;
            }
            let Some(report) = entry.obs.report(observer) else { continue };
            let cut_for = Duration::from_millis(report.for_ms) + now.saturating_duration_since(entry.received_at);
            if !report.reachable && cut_for >= RELAY_AFTER {
                targets.push(*peer);
            }
        }
        targets.retain(|_| chance >= 1.0 || self.rng.random_bool(chance));
        targets
    }

    fn on_beat(&mut self, now: Instant, from: PublicKey, beats: Vec<SignedBeat>) {
        let mut want = Vec::new();
        let mut relay: BTreeMap<PublicKey, Vec<SignedBeat>> = BTreeMap::new();
        for signed in beats {
            let observer = signed.beat.observer;
            if observer == self.me {
                continue;
            }
            if !self.members.contains_key(&observer) {
                self.stats.unknown_observer += 1;
                continue;
            }
            let held = self.view.get(&observer).map(|e| (e.obs.version(), e.beat));
            match held {
                // We lack the observation it names: ask the sender for it (nothing is trusted
                // until the observation itself arrives and verifies).
                None => want.push(observer),
                Some((version, _)) if version < signed.beat.version() => want.push(observer),
                Some((version, beat)) if version > signed.beat.version() || beat >= signed.beat.beat => {
                    self.stats.replayed += 1;
                }
                Some(_) => {
                    if let Err(rejection) = signed.verify(&self.cluster) {
                        self.stats.count(&rejection);
                        continue;
                    }
                    let stale_after = self.config.stale_after;
                    let entry = self.view.get_mut(&observer).expect("held");
                    // Only a stale observer coming back to life changes the answer; fresh ones
                    // going stale are caught by the heartbeat's recomputation.
                    if now.saturating_duration_since(entry.received_at) >= stale_after {
                        self.dirty = true;
                    }
                    entry.received_at = now;
                    entry.beat = signed.beat.beat;
                    for peer in self.relay_targets(now, &observer, &from) {
                        relay.entry(peer).or_default().push(signed.clone());
                    }
                }
            }
        }
        if !want.is_empty() {
            self.send(from, Message::Want(want));
        }
        for (peer, beats) in relay {
            self.send(peer, Message::Beat(beats));
        }
    }

    fn on_want(&mut self, from: PublicKey, mut observers: Vec<PublicKey>) {
        // Each observation at most once: a Want naming one key many times must not turn 32 bytes
        // into as many copies of a 64 KiB observation (found by tests/fuzz `state`).
        observers.truncate(MAX_ENTRIES);
        observers.sort();
        observers.dedup();
        let list: Vec<SignedObservation> = observers
            .iter()
            .filter_map(|k| self.view.get(k))
            .map(|e| e.signed.clone())
            .collect();
        if !list.is_empty() {
            self.send(from, Message::Push(list));
        }
    }

    fn accept(&mut self, now: Instant, signed: SignedObservation) -> Result<PublicKey, Rejection> {
        // Relays deliver each observation once per peer: refuse what is not newer before paying
        // for the signature check. Only refusals take this shortcut; all that is kept is verified.
        if let Some((observer, version)) = signed.claimed_version(&self.cluster)
            && self.view.get(&observer).is_some_and(|e| version <= e.obs.version())
        {
            return Err(Rejection::Replay);
        }
        let me = self.me;
        let obs = signed.verify(&self.cluster, |k| *k == me || self.members.contains_key(k))?;
        if obs.observer == me {
            // Our own observations come back through relays; an equal or older one is an echo.
            // A newer one means another process runs with our key, or our incarnation went back.
            return Err(if obs.version() <= (self.incarnation, self.seq) {
                Rejection::Replay
            } else {
                Rejection::SelfConflict
            });
        }
        if let Some(old) = self.view.get(&obs.observer)
            && obs.version() <= old.obs.version()
        {
            return Err(Rejection::Replay);
        }
        if !obs.peers.is_sorted_by(|a, b| a.key < b.key) {
            // Canonical form: one report per peer, in key order (votes are looked up by key).
            return Err(Rejection::Malformed);
        }
        let observer = obs.observer;
        self.view.insert(observer, Entry { signed, obs, received_at: now, beat: 0 });
        self.stats.accepted += 1;
        self.dirty = true;
        Ok(observer)
    }

    fn versions(&self) -> Vec<(PublicKey, u64, u64)> {
        self.view.iter().map(|(k, e)| (*k, e.obs.incarnation, e.obs.seq)).collect()
    }

    fn on_digest(&mut self, from: PublicKey, versions: Vec<(PublicKey, u64, u64)>, reply: bool) {
        let theirs: BTreeMap<PublicKey, (u64, u64)> =
            versions.into_iter().map(|(k, inc, seq)| (k, (inc, seq))).collect();
        let newer: Vec<SignedObservation> = self
            .view
            .iter()
            .filter(|(k, e)| theirs.get(*k).is_none_or(|v| *v < e.obs.version()))
            .map(|(_, e)| e.signed.clone())
            .collect();
        if !newer.is_empty() {
            self.send(from, Message::Push(newer));
        }
        let they_have_newer = theirs.iter().any(|(k, v)| {
            (*k == from || self.members.contains_key(k))
                && self.view.get(k).is_none_or(|e| e.obs.version() < *v)
        });
        if !reply && they_have_newer {
            let versions = self.versions();
            self.send(from, Message::Digest { versions, reply: true });
        }
    }

    fn is_fresh(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.received_at) < self.config.stale_after
    }

    fn recompute_answer(&mut self, now: Instant) {
        let mine = &self.view[&self.me].obs;
        let live: Vec<&Observation> =
            self.view.values().filter(|e| self.is_fresh(e, now)).map(|e| &e.obs).collect();
        let members = answer_members(mine, &live, |k| self.observation(k), self.config.quorum);
        let addresses: Vec<IpAddr> = members
            .iter()
            .filter_map(|k| self.observation(k))
            .flat_map(|o| o.addresses.iter().copied())
            .collect();
        if members != self.answer.members || addresses != self.answer.addresses {
            self.answer = AnswerSet { version: self.answer.version + 1, members, addresses };
            self.out.push(OutEvent::AnswerChanged(self.answer.clone()));
        }
    }

    /// Everything `spdu peers` shows, as of `now`.
    pub fn snapshot(&self, now: Instant) -> ViewSnapshot {
        let live: Vec<&Observation> =
            self.view.values().filter(|e| self.is_fresh(e, now)).map(|e| &e.obs).collect();
        let all = std::iter::once((self.me, self.name.clone()))
            .chain(self.members.iter().map(|(k, n)| (*k, n.clone())));
        let nodes = all
            .map(|(key, name)| {
                let v = votes(&key, live.iter().copied());
                NodeView {
                    key,
                    fingerprint: key.fingerprint(),
                    name,
                    is_self: key == self.me,
                    probe: self.probes.get(&key).map(|p| ProbeView {
                        reachable: p.reachable,
                        rtt_us: p.rtt.map(|d| d.as_micros() as u64),
                        for_ms: now.saturating_duration_since(p.changed_at).as_millis() as u64,
                    }),
                    seen_reachable_by: v.yes,
                    voters: v.voters,
                    in_answer: self.answer.members.contains(&key),
                    health: if key == self.me {
                        self.health.own().map(|v| HealthView::of(v, None, now))
                    } else {
                        let check = self.observation(&key).and_then(|o| o.service_check.as_ref());
                        self.health.peer(&key).map(|v| HealthView::of(v, check, now))
                    },
                    observation: self.view.get(&key).map(|e| ObservationView {
                        age_ms: now.saturating_duration_since(e.received_at).as_millis() as u64,
                        fresh: self.is_fresh(e, now),
                        observation: e.obs.clone(),
                        signed: e.signed.clone(),
                    }),
                }
            })
            .collect();
        ViewSnapshot {
            me: self.me,
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            answer: self.answer.clone(),
            nodes,
            stats: self.stats.clone(),
        }
    }
}

/// The signed view as one node sees it (what `spdu peers` prints).
#[derive(Clone, Debug, Serialize)]
pub struct ViewSnapshot {
    /// This node.
    pub me: PublicKey,
    /// Its name.
    pub name: String,
    /// The cluster id.
    pub cluster: String,
    /// What this node answers with.
    pub answer: AnswerSet,
    /// This node first, then every roster peer.
    pub nodes: Vec<NodeView>,
    /// Counters of accepted and refused observations.
    pub stats: Stats,
}

/// One node in a [`ViewSnapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// Its key.
    pub key: PublicKey,
    /// Short form of the key.
    pub fingerprint: String,
    /// The local roster's name for it.
    pub name: String,
    /// Whether this is the node that made the snapshot.
    pub is_self: bool,
    /// This node's own probing of it (none for itself).
    pub probe: Option<ProbeView>,
    /// Live observers other than it that see it reachable.
    pub seen_reachable_by: Vec<PublicKey>,
    /// Live observers other than it that report on it.
    pub voters: Vec<PublicKey>,
    /// Whether it is in this node's DNS answer.
    pub in_answer: bool,
    /// This node's service check verdict on it (its own check for itself, the probing of its
    /// advertised service for a peer), with the latest result; none before the first result.
    pub health: Option<HealthView>,
    /// Its newest observation in the view.
    pub observation: Option<ObservationView>,
}

/// This node's probing verdict on a peer.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeView {
    /// Reachable from here.
    pub reachable: bool,
    /// Smoothed round-trip time.
    pub rtt_us: Option<u64>,
    /// For how long the verdict has held.
    pub for_ms: u64,
}

/// A view entry: the observation, decoded and as signed.
#[derive(Clone, Debug, Serialize)]
pub struct ObservationView {
    /// Time since it arrived (receiver's clock).
    pub age_ms: u64,
    /// Whether it still counts as live.
    pub fresh: bool,
    /// Decoded.
    pub observation: Observation,
    /// As signed (verifiable with the observer's key, context and cluster id).
    pub signed: SignedObservation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Quorum;
    use crate::sim::fixtures::{node_info, observation, public_key, roster, secret_key};

    fn node(i: usize, n: usize, incarnation: u64, config: Config, now: Instant) -> (State, Vec<OutEvent>) {
        let mut state = State::new(node_info(i, incarnation), roster(n), config, i as u64, now);
        let out = state.start(now);
        (state, out)
    }

    /// The observations pushed to `to` in `out`.
    fn pushed(out: &[OutEvent], to: usize) -> Vec<SignedObservation> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::Send { to: t, message: Message::Push(list) } if *t == public_key(to) => Some(list),
                _ => None,
            })
            .flatten()
            .cloned()
            .collect()
    }

    fn push(state: &mut State, now: Instant, from: usize, list: Vec<SignedObservation>) -> Vec<OutEvent> {
        state.handle(now, InEvent::Message { from: public_key(from), message: Message::Push(list) })
    }

    fn seq_of(state: &State, i: usize) -> Option<(u64, u64)> {
        state.observation(&public_key(i)).map(Observation::version)
    }

    #[test]
    fn replay_is_refused_counted_and_ignored() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 2, 1, Config::default(), t0);
        let (mut b, out) = node(1, 2, 1, Config::default(), t0);
        let first = pushed(&out, 0);
        push(&mut a, t0, 1, first.clone());
        assert_eq!((a.stats().accepted, a.stats().replayed), (1, 0));
        // Equal version: a duplicate.
        push(&mut a, t0, 1, first.clone());
        assert_eq!((a.stats().accepted, a.stats().replayed), (1, 1));
        // A change of content (here: health) is published with the next seq.
        let out = b.handle(t0 + Duration::from_secs(1), InEvent::SetHealthy(false));
        push(&mut a, t0, 1, pushed(&out, 0));
        assert_eq!(seq_of(&a, 1), Some((1, 2)));
        // Older: a replay. The view keeps the newer one.
        let before = a.snapshot(t0).nodes[1].observation.clone().unwrap().signed;
        push(&mut a, t0, 1, first);
        assert_eq!((a.stats().accepted, a.stats().replayed), (2, 2));
        assert_eq!(a.signed_observation(&public_key(1)), Some(&before));
        // Equal version, different content, validly signed: still not newer.
        let mut forged = observation(1, false, &[(0, true)]);
        forged.seq = 2;
        let out = push(&mut a, t0, 1, vec![forged.sign(&secret_key(1))]);
        assert_eq!(a.stats().replayed, 3);
        assert_eq!(a.signed_observation(&public_key(1)), Some(&before));
        assert!(out.iter().all(|e| !matches!(e, OutEvent::Send { .. })), "nothing is relayed");
    }

    #[test]
    fn restarted_node_supersedes_its_old_incarnation() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 2, 1, Config::default(), t0);
        let (mut old, _) = node(1, 2, 1, Config::default(), t0);
        let mut late = Vec::new();
        for k in 1..=5 {
            late = pushed(&old.handle(t0 + Duration::from_secs(k), InEvent::SetHealthy(k % 2 == 0)), 0);
            if k < 5 {
                push(&mut a, t0, 1, late.clone());
            }
        }
        assert_eq!(seq_of(&a, 1), Some((1, 5)));
        let (_, out) = node(1, 2, 2, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 0));
        assert_eq!(seq_of(&a, 1), Some((2, 1)));
        // The old process's last words arrive late: refused.
        push(&mut a, t0, 1, late);
        assert_eq!(seq_of(&a, 1), Some((2, 1)));
        assert_eq!(a.stats().replayed, 1);
    }

    #[test]
    fn own_observation_echoed_is_a_replay_and_a_newer_one_a_conflict() {
        let t0 = Instant::now();
        let (mut a, out) = node(0, 2, 3, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 1));
        assert_eq!(a.stats().replayed, 1);
        let mut newer = observation(0, true, &[(1, true)]);
        newer.incarnation = 4;
        push(&mut a, t0, 1, vec![newer.sign(&secret_key(0))]);
        assert_eq!(a.stats().self_conflict, 1);
        assert_eq!(seq_of(&a, 0), Some((3, 1)));
    }

    #[test]
    fn relayed_observation_from_an_unreachable_peer_is_used() {
        let t0 = Instant::now();
        // 0 needs two votes for 1: its own and 2's, which only arrives relayed by 1.
        let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
        let (mut a, _) = node(0, 3, 1, config, t0);
        let (_, out) = node(1, 3, 1, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 0));
        let mut now = t0;
        for _ in 0..3 {
            now += Duration::from_millis(100);
            probe_ok(&mut a, 1, now);
        }
        assert!(a.sees_reachable(&public_key(1)));
        assert!(!a.sees_reachable(&public_key(2)));
        assert_eq!(a.answer().members, vec![public_key(0)]);
        let from_2 = observation(2, true, &[(0, false), (1, true)]).sign(&secret_key(2));
        let out = push(&mut a, now, 1, vec![from_2.clone()]);
        assert_eq!(seq_of(&a, 2), Some((1, 1)));
        let mut expected = vec![public_key(0), public_key(1)];
        expected[1..].sort();
        assert_eq!(a.answer().members, expected);
        assert!(out.iter().any(|e| matches!(e, OutEvent::AnswerChanged(_))));
        // And relayed on to everyone but its sender and its observer: nobody here.
        assert!(pushed(&out, 1).is_empty() && pushed(&out, 2).is_empty());
    }

    #[test]
    fn digest_exchange_fills_in_missing_observations() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 3, 1, Config::default(), t0);
        let (mut b, _) = node(1, 3, 1, Config::default(), t0);
        let from_2 = observation(2, true, &[(0, true), (1, true)]).sign(&secret_key(2));
        push(&mut a, t0, 2, vec![from_2.clone()]);
        assert!(b.observation(&public_key(2)).is_none());
        // a's heartbeat digest goes to a random peer: wait for one to b.
        let mut now = t0;
        let versions = loop {
            now += Duration::from_secs(1);
            let out = a.handle(now, InEvent::Timer(Timer::Heartbeat));
            let digest = out.into_iter().find_map(|e| match e {
                OutEvent::Send { to, message: Message::Digest { versions, reply: false } }
                    if to == public_key(1) =>
                {
                    Some(versions)
                }
                _ => None,
            });
            if let Some(v) = digest {
                break v;
            }
        };
        // b pushes its own (a lacks it) and, since a holds what b lacks, asks with a reply digest.
        let out = b.handle(
            now,
            InEvent::Message { from: public_key(0), message: Message::Digest { versions, reply: false } },
        );
        push(&mut a, now, 1, pushed(&out, 0));
        assert!(a.observation(&public_key(1)).is_some());
        let reply = out
            .into_iter()
            .find_map(|e| match e {
                OutEvent::Send { message: m @ Message::Digest { reply: true, .. }, .. } => Some(m),
                _ => None,
            })
            .expect("a reply digest");
        let out = a.handle(now, InEvent::Message { from: public_key(1), message: reply });
        // A reply is never answered with another digest.
        assert!(out.iter().all(|e| !matches!(e, OutEvent::Send { message: Message::Digest { .. }, .. })));
        push(&mut b, now, 0, pushed(&out, 1));
        assert_eq!(b.signed_observation(&public_key(2)), Some(&from_2));
    }

    /// Runs one probe of `peer` answered by its pong.
    fn probe_ok(state: &mut State, peer: usize, now: Instant) {
        let nonce = send_probe(state, peer, now);
        state.handle(now, InEvent::Message { from: public_key(peer), message: Message::Pong { nonce } });
    }

    /// Runs one probe of `peer` whose ping or pong is lost.
    fn probe_lost(state: &mut State, peer: usize, now: Instant) {
        let nonce = send_probe(state, peer, now);
        state.handle(now, InEvent::Timer(Timer::ProbeTimeout(public_key(peer), nonce)));
    }

    fn send_probe(state: &mut State, peer: usize, now: Instant) -> u64 {
        let out = state.handle(now, InEvent::Timer(Timer::Probe(public_key(peer))));
        out.iter()
            .find_map(|e| match e {
                OutEvent::Send { message: Message::Ping { nonce }, .. } => Some(*nonce),
                _ => None,
            })
            .expect("a ping")
    }

    #[test]
    fn probing_hysteresis() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let mut now = t0;
        let mut tick = || {
            now += config.probe_interval;
            now
        };
        for k in 1..config.up_after {
            probe_ok(&mut a, 1, tick());
            assert!(!a.sees_reachable(&b), "up after {k} probes");
        }
        probe_ok(&mut a, 1, tick());
        assert!(a.sees_reachable(&b));
        // Single losses, even many of them, never flip it.
        for _ in 0..10 {
            probe_lost(&mut a, 1, tick());
            probe_ok(&mut a, 1, tick());
            assert!(a.sees_reachable(&b));
        }
        for _ in 1..config.down_after {
            probe_lost(&mut a, 1, tick());
            assert!(a.sees_reachable(&b));
        }
        probe_lost(&mut a, 1, tick());
        assert!(!a.sees_reachable(&b));
        assert_eq!(a.observation(&a.key()).unwrap().report(&b).map(|r| r.reachable), Some(false));
        // One success does not bring it back either.
        probe_ok(&mut a, 1, tick());
        probe_lost(&mut a, 1, tick());
        probe_ok(&mut a, 1, tick());
        assert!(!a.sees_reachable(&b));
    }

    #[test]
    fn lost_pong_is_forgiven_when_the_peer_pinged_us() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let mut now = t0;
        for _ in 0..config.up_after {
            now += config.probe_interval;
            probe_ok(&mut a, 1, now);
        }
        for _ in 0..2 * config.down_after {
            now += config.probe_interval;
            let nonce = send_probe(&mut a, 1, now);
            a.handle(now, InEvent::Message { from: b, message: Message::Ping { nonce: 7 } });
            a.handle(now + config.probe_timeout, InEvent::Timer(Timer::ProbeTimeout(b, nonce)));
        }
        assert!(a.sees_reachable(&b));
    }

    #[test]
    fn one_ping_heard_after_an_outage_does_not_bring_a_peer_back() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let mut now = t0;
        // Probes sent during an outage, all lost; then one ping from b gets through.
        let nonces: Vec<u64> = (0..5)
            .map(|_| {
                now += config.probe_interval;
                send_probe(&mut a, 1, now)
            })
            .collect();
        a.handle(now, InEvent::Message { from: b, message: Message::Ping { nonce: 7 } });
        for nonce in nonces {
            a.handle(now + config.probe_timeout, InEvent::Timer(Timer::ProbeTimeout(b, nonce)));
        }
        assert!(!a.sees_reachable(&b), "up_after needs round trips, not one packet");
    }

    #[test]
    fn messages_from_outside_the_roster_are_dropped() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 2, 1, Config::default(), t0);
        let out = a.handle(t0, InEvent::Message { from: public_key(9), message: Message::Ping { nonce: 1 } });
        assert!(out.is_empty());
        assert_eq!(a.stats().unknown_sender, 1);
    }

    #[test]
    fn stale_observers_stop_counting_with_time_alone() {
        let t0 = Instant::now();
        let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
        let (mut a, _) = node(0, 3, 1, config.clone(), t0);
        let (_, out) = node(1, 3, 1, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 0));
        push(&mut a, t0, 2, vec![observation(2, true, &[(1, true)]).sign(&secret_key(2))]);
        let mut now = t0;
        for _ in 0..3 {
            now += config.probe_interval;
            probe_ok(&mut a, 1, now);
        }
        assert!(a.answer().members.contains(&public_key(1)));
        // 2 falls silent; keep 1 reachable through the heartbeats that follow.
        let out = a.handle(t0 + config.stale_after + config.heartbeat, InEvent::Timer(Timer::Heartbeat));
        assert!(out.iter().any(|e| matches!(e, OutEvent::AnswerChanged(_))));
        assert_eq!(a.answer().members, vec![public_key(0)]);
    }
}
