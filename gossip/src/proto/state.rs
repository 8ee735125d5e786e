//! One node's protocol state: liveness with hysteresis, its own signed observation, the view of
//! everyone's latest observation, anti-entropy, and the answer set.
//!
//! Invariants:
//! - every probe interval this node sends each peer one [`Message::Alive`] (two bytes); a peer is
//!   reachable after `up_after` of its periodic messages arrive without a gap, and unreachable
//!   once nothing at all has arrived from it for `down_after` probe intervals. A round-trip
//!   [`Message::Ping`] replaces one Alive in [`PING_EVERY`] (for the RTT that `spdu peers` shows);
//! - the view holds at most one observation per roster member (self included), always the one
//!   with the highest (incarnation, seq) that verified; anything else is refused and counted;
//! - this node's own observation is re-signed (next `seq`) when its content changes — liveness
//!   verdicts, health — at most once per probe interval (changes in between are coalesced);
//! - a view entry is fresh while something recent vouches that it is its observer's current one:
//!   the observation itself arriving, an [`Message::Alive`] from the observer naming its version
//!   (the transport authenticates the sender), or a newer signed [`Beat`] (which can be relayed).
//!   So a full mesh needs no beats at all; a node signs beats only while some peer reports it
//!   unreachable, and they, like observations, are relayed only to such peers;
//! - the votes of fresh observations are kept in a [`Tally`], updated as observations arrive,
//!   are replaced and go stale (checked every probe interval), so the answer costs O(members);
//!   [`OutEvent::AnswerChanged`] is emitted only when the answer really changed.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use spdu_keys::{PublicKey, SecretKey};

use super::health::ServiceHealth;
use super::health::Verdict;
use super::{
    Beat, Bitmap, CheckResult, Config, MAX_ENTRIES, MAX_SERVICE_ADDRESSES, Member, Message, Observation,
    Rejection, Roster, ServiceCheck, SignedBeat, SignedObservation, Tally, admitted_peers,
    is_special_purpose, members_of,
};

/// One probe interval in this many, a peer gets a round-trip [`Message::Ping`] instead of an
/// [`Message::Alive`] (every 5 s at the default interval).
pub const PING_EVERY: u64 = 50;
/// How many relayers, on average, forward one beat or observation to a peer that cannot reach
/// its observer. More than one so a single lost relay does not starve the peer.
const RELAY_REDUNDANCY: f64 = 3.0;
/// Relaying waits until the relayer has heard the observer, and known the peer's incarnation,
/// for this long (at cold start every peer reports every other unreachable for a moment).
const RELAY_AFTER: Duration = Duration::from_secs(1);
/// Probe intervals to wait before asking an observer again for the observation its Alive names.
const WANT_AGAIN: u32 = 3;
/// Weight of one interval in a peer's loss estimate (about the last 32 intervals count).
const LOSS_WEIGHT: f64 = 1.0 / 32.0;
/// Gaps longer than this many intervals are outages, not loss, and leave the estimate alone.
const LOSS_MAX_GAP: u32 = 4;
/// The loss rate `down_after` is sized for: silence after up to this much loss stays as unlikely
/// as `down_after` losses in a row at this rate.
const DESIGN_LOSS: f64 = 0.1;
/// However lossy a link, a peer is declared unreachable after at most this many times
/// `down_after` silent intervals.
const MAX_SILENCE_FACTOR: u32 = 4;

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
}

/// The core's timers: one slot each (see [`State::poll_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Time to send every peer its Alive (or Ping), and to check who fell silent.
    Tick,
    /// Time to sign a beat (if anyone needs one) and run anti-entropy.
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
    /// The answer set changed.
    AnswerChanged(AnswerSet),
    /// The peers' services to probe changed (see [`State::probe_targets`]).
    ProbeTargetsChanged(Vec<ProbeTarget>),
    /// This node rose to a new incarnation (a peer held a newer observation of it than it had:
    /// it restarted with a lower one). The node stores it so that the next start goes higher.
    IncarnationChanged(u64),
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
    /// Accepted, but over another roster than this node's: kept and relayed, no vote.
    pub other_roster: u64,
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
    /// The peer's position in the roster.
    index: usize,
    reachable: bool,
    changed_at: Instant,
    /// Periodic messages heard in a row without a gap.
    streak: u32,
    /// When anything last arrived from the peer.
    last_heard: Option<Instant>,
    /// When the last periodic message that counted towards `streak` arrived.
    last_counted: Option<Instant>,
    /// When the last periodic message arrived.
    last_periodic: Option<Instant>,
    /// Estimated share of the peer's periodic messages that are lost (see [`silence`]).
    loss: f64,
    rtt: Option<Duration>,
    /// The outstanding round-trip ping.
    ping: Option<(u32, Instant)>,
    /// When we last asked the peer for the observation its Alive named.
    wanted_at: Option<Instant>,
    /// When we last told the peer we hold a newer observation of it than it sent.
    told_superseded_at: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    signed: SignedObservation,
    obs: Observation,
    /// When something last vouched that this is the observer's current observation (freshness).
    received_at: Instant,
    /// The newest beat seen for this observation.
    beat: u64,
    /// When the observer's current incarnation was first accepted.
    since: Instant,
    /// Whether its votes are in the tally (fresh and over this node's roster).
    counted: bool,
}

impl Entry {
    /// Whether something vouched for it less than `stale_after` ago.
    fn is_fresh(&self, now: Instant, stale_after: Duration) -> bool {
        now.saturating_duration_since(self.received_at) < stale_after
    }
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
    started_at: Instant,
    last_publish: Option<Instant>,
    /// Timer slots: the next tick, the next heartbeat, a coalesced publication if one waits.
    tick_at: Instant,
    heartbeat_at: Instant,
    publish_at: Option<Instant>,
    healthy: bool,
    addresses: Vec<IpAddr>,
    service_check: Option<ServiceCheck>,
    health: ServiceHealth,
    members: BTreeMap<PublicKey, Member>,
    roster: Roster,
    my_index: usize,
    probes: BTreeMap<PublicKey, Probe>,
    view: BTreeMap<PublicKey, Entry>,
    tally: Tally,
    /// Per roster position: whether the member's latest observation says it is healthy.
    members_healthy: Bitmap,
    /// The peers admitted to the current answer, and whether this node was healthy then: the
    /// answer is rebuilt only when these (or an address) change.
    admitted: Option<(Bitmap, bool)>,
    summary: Option<u64>,
    answer: AnswerSet,
    probe_targets: Vec<ProbeTarget>,
    ticks: u64,
    next_nonce: u32,
    rng: StdRng,
    stats: Stats,
    dirty: bool,
    targets_dirty: bool,
    out: VecDeque<OutEvent>,
}

/// This node's probing verdict on one peer (see [`State::link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Reachable from here.
    pub reachable: bool,
    /// Smoothed round-trip time, once a ping was answered.
    pub rtt: Option<Duration>,
    /// When the verdict last changed (or the node started).
    pub since: Instant,
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
    /// A node that has not heard anyone yet: every peer starts unreachable. Ready at once: its
    /// first observation is published (the pushes wait in [`State::poll_event`]), the first tick
    /// is due at a random point of one interval (so nodes do not tick in step) and the first
    /// heartbeat one heartbeat from now.
    pub fn new(info: NodeInfo, roster: Vec<Member>, config: Config, seed: u64, now: Instant) -> Self {
        let me = info.key.public();
        let members: BTreeMap<_, _> =
            roster.into_iter().filter(|m| m.key != me).map(|m| (m.key, m)).collect();
        let full = Roster::new(members.keys().copied().chain([me]));
        let probes = members
            .keys()
            .map(|k| {
                let probe = Probe {
                    index: full.index(k).expect("a member"),
                    reachable: false,
                    changed_at: now,
                    streak: 0,
                    last_heard: None,
                    last_counted: None,
                    last_periodic: None,
                    loss: 0.0,
                    rtt: None,
                    ping: None,
                    wanted_at: None,
                    told_superseded_at: None,
                };
                (*k, probe)
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let next_nonce = rng.random();
        let interval = config.probe_interval.as_micros().max(1) as u64;
        let tick_at = now + Duration::from_micros(rng.random_range(0..interval));
        let heartbeat_at = now + config.heartbeat;
        let mut state = Self {
            me,
            key: info.key,
            name: info.name,
            cluster: info.cluster,
            config,
            incarnation: info.incarnation,
            seq: 0,
            beat: 0,
            started_at: now,
            last_publish: None,
            tick_at,
            heartbeat_at,
            publish_at: None,
            healthy: true,
            addresses: info.addresses,
            service_check: info.service_check,
            health: ServiceHealth::default(),
            members,
            my_index: full.index(&me).expect("self is in its roster"),
            tally: Tally::new(full.len()),
            members_healthy: Bitmap::new(full.len()),
            admitted: None,
            roster: full,
            probes,
            view: BTreeMap::new(),
            summary: None,
            answer: AnswerSet::default(),
            probe_targets: Vec::new(),
            ticks: 0,
            next_nonce,
            rng,
            stats: Stats::default(),
            dirty: true,
            targets_dirty: false,
            out: VecDeque::new(),
        };
        state.publish(now);
        state.finish();
        state
    }

    /// Handles one input at time `now`. `now` may be a little earlier than an earlier call's
    /// (the driver stamps messages with their arrival time): nothing goes back in time.
    pub fn handle(&mut self, now: Instant, event: InEvent) {
        match event {
            InEvent::Message { from, message } => self.on_message(now, from, message),
            InEvent::SelfCheck(result) => {
                if let Some(healthy) = self.health.on_self_check(now, result, &self.config.health) {
                    self.set_healthy(now, healthy);
                }
            }
            InEvent::ServiceProbe { peer, result } => self.on_service_probe(now, peer, result),
        }
        self.finish();
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer().filter(|(at, _)| *at <= now) {
            // A slot is handled at the time it was due for, not later: the driver may be late.
            self.fire_timer(now.max(at), timer);
        }
        self.finish();
    }

    /// When [`State::handle_timeout`] must be called next: the earliest timer slot.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// The next output, if any: call until `None` after every input.
    pub fn poll_event(&mut self) -> Option<OutEvent> {
        self.out.pop_front()
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let publish = self.publish_at.map(|at| (at, Timer::Publish));
        [Some((self.tick_at, Timer::Tick)), Some((self.heartbeat_at, Timer::Heartbeat)), publish]
            .into_iter()
            .flatten()
            .min()
    }

    fn fire_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Tick => self.on_tick(now),
            Timer::Heartbeat => self.on_heartbeat(now),
            Timer::Publish => {
                self.publish_at = None;
                self.publish(now);
            }
        }
    }

    /// Runs one timer's work now, whether due or not, and returns the outputs (tests drive the
    /// timers by hand).
    #[cfg(test)]
    pub(crate) fn fire(&mut self, now: Instant, timer: Timer) -> Vec<OutEvent> {
        match timer {
            Timer::Publish if self.publish_at.is_none() => {}
            timer => self.fire_timer(now, timer),
        }
        self.finish();
        self.out.drain(..).collect()
    }

    /// Handles `event` and returns the outputs (for tests).
    #[cfg(test)]
    pub(crate) fn step(&mut self, now: Instant, event: InEvent) -> Vec<OutEvent> {
        self.handle(now, event);
        self.out.drain(..).collect()
    }

    /// Feeds own check results until the verdict is `healthy` (as many as the thresholds need)
    /// and returns the outputs (for tests).
    #[cfg(test)]
    pub(crate) fn force_own_health(&mut self, now: Instant, healthy: bool) -> Vec<OutEvent> {
        let result =
            if healthy { CheckResult::pass(Duration::from_millis(1)) } else { CheckResult::fail("down") };
        let mut out = Vec::new();
        for _ in 0..self.config.health.down_after.max(self.config.health.up_after) {
            if self.healthy == healthy {
                break;
            }
            out.extend(self.step(now, InEvent::SelfCheck(result.clone())));
        }
        out
    }

    /// The outputs waiting (for tests).
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<OutEvent> {
        self.out.drain(..).collect()
    }

    /// This node's key.
    pub fn key(&self) -> PublicKey {
        self.me
    }

    /// The roster as observations index it (this node included).
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The current answer set.
    pub fn answer(&self) -> &AnswerSet {
        &self.answer
    }

    /// Counters of accepted and refused input.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// This node's incarnation (it rises when a peer shows it held a newer one).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster id.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The roster peers (this node excluded), in key order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The peers' services to probe (empty unless the config probes peers), in key order.
    pub fn probe_targets(&self) -> &[ProbeTarget] {
        &self.probe_targets
    }

    /// This node's probing of `peer`: reachable, smoothed RTT, and since when the verdict holds.
    pub fn link(&self, peer: &PublicKey) -> Option<LinkStatus> {
        self.probes.get(peer).map(|p| LinkStatus { reachable: p.reachable, rtt: p.rtt, since: p.changed_at })
    }

    /// When something last vouched that `observer`'s observation in the view is current.
    pub fn vouched_at(&self, observer: &PublicKey) -> Option<Instant> {
        self.view.get(observer).map(|e| e.received_at)
    }

    /// Whether `observer`'s observation in the view is fresh (counts) as of `now`.
    pub fn is_fresh(&self, observer: &PublicKey, now: Instant) -> bool {
        self.view.get(observer).is_some_and(|e| e.is_fresh(now, self.config.stale_after))
    }

    /// The verdict of this node's own service check, once it reported a result.
    pub fn own_health(&self) -> Option<&Verdict> {
        self.health.own()
    }

    /// This node's verdict on `peer`'s advertised service, once probed.
    pub fn peer_health(&self, peer: &PublicKey) -> Option<&Verdict> {
        self.health.peer(peer)
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

    fn send(&mut self, to: PublicKey, message: Message) {
        self.out.push_back(OutEvent::Send { to, message });
    }

    fn finish(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.recompute_answer();
        }
        if self.targets_dirty {
            self.targets_dirty = false;
            let targets = self.compute_probe_targets();
            if targets != self.probe_targets {
                self.probe_targets = targets.clone();
                self.out.push_back(OutEvent::ProbeTargetsChanged(targets));
            }
        }
    }

    fn on_message(&mut self, now: Instant, from: PublicKey, message: Message) {
        if !self.members.contains_key(&from) {
            self.stats.unknown_sender += 1;
            return;
        }
        let periodic = matches!(message, Message::Alive(_) | Message::Ping { .. } | Message::Pong { .. });
        self.heard(now, from, periodic);
        match message {
            Message::Alive(tag) => self.on_alive(now, from, tag),
            Message::Ping { nonce } => self.send(from, Message::Pong { nonce }),
            Message::Pong { nonce } => self.on_pong(now, from, nonce),
            Message::Push(list) => self.on_push(now, from, list),
            Message::Digest { versions, reply } => self.on_digest(from, versions, reply),
            Message::Beat(beats) => self.on_beat(now, from, beats),
            Message::Want(observers) => self.on_want(from, observers),
            Message::Superseded { incarnation, seq } => self.on_superseded(now, incarnation, seq),
            Message::Summary(hash) => {
                if hash != self.summary() {
                    let versions = self.versions();
                    self.send(from, Message::Digest { versions, reply: false });
                }
            }
        }
    }

    /// Something arrived from `peer`: it is alive and its path to us works. Periodic messages
    /// (at most one per half interval counts) build the streak that brings a peer back, so a
    /// burst of other messages after an outage is not mistaken for a working link.
    fn heard(&mut self, now: Instant, peer: PublicKey, periodic: bool) {
        let interval = self.config.probe_interval;
        let up_after = self.config.up_after;
        let Some(probe) = self.probes.get_mut(&peer) else { return };
        let gap = probe.last_heard.map(|t| now.saturating_duration_since(t));
        // Arrival stamps may come a little out of order: the latest one stands.
        probe.last_heard = Some(probe.last_heard.map_or(now, |t| t.max(now)));
        if gap.is_none_or(|gap| gap > 2 * interval) {
            probe.streak = 0;
            probe.last_counted = None;
        }
        if !periodic {
            return;
        }
        // Each periodic message tells how many were lost since the previous one.
        if let Some(prev) = probe.last_periodic {
            let gap =
                (now.saturating_duration_since(prev).as_secs_f64() / interval.as_secs_f64()).round() as u32;
            if (1..=LOSS_MAX_GAP).contains(&gap) {
                for _ in 1..gap {
                    probe.loss += LOSS_WEIGHT * (1.0 - probe.loss);
                }
                probe.loss -= LOSS_WEIGHT * probe.loss;
            }
        }
        probe.last_periodic = Some(now);
        if probe.last_counted.is_some_and(|t| now < t + interval / 2) {
            return;
        }
        probe.last_counted = Some(now);
        probe.streak = probe.streak.saturating_add(1);
        if !probe.reachable && probe.streak >= up_after {
            probe.reachable = true;
            probe.changed_at = now;
            self.request_publish(now);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        self.tick_at = now + interval;
        self.ticks += 1;
        let down_after = self.config.down_after;
        let tag = self.view.get(&self.me).map_or(0, |e| e.obs.version_tag());
        let mut flipped = false;
        for (key, probe) in &mut self.probes {
            let message = if (self.ticks + probe.index as u64).is_multiple_of(PING_EVERY) {
                let nonce = self.next_nonce;
                self.next_nonce = self.next_nonce.wrapping_add(1);
                probe.ping = Some((nonce, now));
                Message::Ping { nonce }
            } else {
                Message::Alive(tag)
            };
            self.out.push_back(OutEvent::Send { to: *key, message });
            let quiet = interval * silence(down_after, probe.loss);
            if probe.reachable && probe.last_heard.is_none_or(|t| now.saturating_duration_since(t) >= quiet) {
                probe.reachable = false;
                probe.changed_at = now;
                probe.streak = 0;
                flipped = true;
            }
        }
        if flipped {
            self.request_publish(now);
        }
        if let Some(mine) = self.view.get_mut(&self.me) {
            mine.received_at = now;
        }
        self.sweep(now);
    }

    /// Takes the votes of observations that went stale out of the tally.
    fn sweep(&mut self, now: Instant) {
        let stale_after = self.config.stale_after;
        for entry in self.view.values_mut() {
            if entry.counted && !entry.is_fresh(now, stale_after) {
                let i = self.roster.index(&entry.obs.observer).expect("counted observers are members");
                self.tally.remove(i, &entry.obs.reachable);
                entry.counted = false;
                self.dirty = true;
            }
        }
    }

    fn on_alive(&mut self, now: Instant, from: PublicKey, tag: u8) {
        if self.view.get(&from).is_some_and(|e| e.obs.version_tag() == tag) {
            self.refresh(now, from);
            return;
        }
        // We lack the observation it names: ask, but not again while the answer is on its way.
        let again = self.config.probe_interval * WANT_AGAIN;
        let Some(probe) = self.probes.get_mut(&from) else { return };
        if probe.wanted_at.is_none_or(|t| now.saturating_duration_since(t) >= again) {
            probe.wanted_at = Some(now);
            self.send(from, Message::Want(vec![from]));
        }
    }

    /// `observer`'s observation in the view is vouched current as of `now`.
    fn refresh(&mut self, now: Instant, observer: PublicKey) {
        let Some(entry) = self.view.get_mut(&observer) else { return };
        entry.received_at = now;
        if !entry.counted && entry.obs.is_over(&self.roster) {
            let i = self.roster.index(&observer).expect("view entries are members");
            self.tally.add(i, &entry.obs.reachable);
            entry.counted = true;
            self.dirty = true;
        }
    }

    fn on_pong(&mut self, now: Instant, from: PublicKey, nonce: u32) {
        let timeout = self.config.probe_timeout;
        let Some(probe) = self.probes.get_mut(&from) else { return };
        let Some((expected, sent)) = probe.ping else { return };
        if expected != nonce || now.saturating_duration_since(sent) > timeout {
            return;
        }
        probe.ping = None;
        let sample = now.saturating_duration_since(sent);
        probe.rtt = Some(match probe.rtt {
            Some(rtt) => (rtt * 7 + sample) / 8,
            None => sample,
        });
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
        let published = self.view.get(&self.me).and_then(|e| e.obs.report(&self.roster, &peer));
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
    /// check, at its first exact pin or else the first address of its observation inside its
    /// pins (none: not probed). Empty unless the config probes peers.
    fn compute_probe_targets(&self) -> Vec<ProbeTarget> {
        if !self.config.health.probe_peers {
            return Vec::new();
        }
        self.members
            .values()
            .filter_map(|m| {
                let obs = self.observation(&m.key)?;
                let check = obs.service_check.clone()?;
                let addr = m.addresses.iter().find_map(|p| p.exact()).or_else(|| {
                    obs.addresses
                        .iter()
                        .copied()
                        .find(|a| !is_special_purpose(*a) && m.addresses.iter().any(|p| p.contains(*a)))
                })?;
                Some(ProbeTarget { peer: m.key, name: m.name.clone(), addr, check })
            })
            .collect()
    }

    /// The addresses of `member`'s observation that this node serves: inside one of its pins
    /// and not special-purpose.
    fn served_addresses<'a>(&'a self, obs: &'a Observation) -> impl Iterator<Item = IpAddr> + 'a {
        let pins = self.members.get(&obs.observer).map(|m| &m.addresses[..]);
        obs.addresses.iter().copied().filter(move |a| match pins {
            // This node's own addresses come from its own configuration.
            None => true,
            Some(pins) => !is_special_purpose(*a) && pins.iter().any(|p| p.contains(*a)),
        })
    }

    fn on_heartbeat(&mut self, now: Instant) {
        self.heartbeat_at = now + self.config.heartbeat;
        debug_assert_eq!(
            self.tally,
            Tally::of(&self.roster, self.view.values().filter(|e| e.counted).map(|e| &e.obs)),
            "the tally counts exactly the counted entries"
        );
        if self.someone_cannot_hear_us(now) {
            self.beat += 1;
            let beat =
                Beat { observer: self.me, incarnation: self.incarnation, seq: self.seq, beat: self.beat };
            let signed = beat.sign(&self.key, &self.cluster);
            let peers: Vec<PublicKey> = self.members.keys().copied().collect();
            for peer in peers {
                self.send(peer, Message::Beat(vec![signed.clone()]));
            }
            if let Some(mine) = self.view.get_mut(&self.me) {
                mine.beat = self.beat;
            }
        }
        // Anti-entropy: one random peer learns a hash of what we hold; if its own differs, it
        // answers with its digest, and the two push each other what the other lacks.
        if !self.members.is_empty() {
            let i = self.rng.random_range(0..self.members.len());
            let peer = *self.members.keys().nth(i).expect("index in range");
            let hash = self.summary();
            self.send(peer, Message::Summary(hash));
        }
    }

    /// Whether a fresh observation, of a peer we have known for a while, reports this node
    /// unreachable: only then do our observations need signed beats that others can relay.
    fn someone_cannot_hear_us(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started_at) >= RELAY_AFTER
            && self.view.iter().any(|(k, e)| {
                *k != self.me
                    && e.counted
                    && now.saturating_duration_since(e.since) >= RELAY_AFTER
                    && !e.obs.reachable.get(self.my_index)
            })
    }

    /// Publishes a change now, or once a probe interval has passed since the last publication
    /// (a burst of verdict changes, as at start-up, becomes one observation).
    fn request_publish(&mut self, now: Instant) {
        match self.last_publish {
            Some(last) if now < last + self.config.probe_interval => {
                if self.publish_at.is_none() {
                    self.publish_at = Some(last + self.config.probe_interval);
                }
            }
            _ => self.publish(now),
        }
    }

    /// Re-signs this node's observation with the next seq, stores it, and pushes it to every peer.
    fn publish(&mut self, now: Instant) {
        self.seq += 1;
        self.publish_at = None;
        self.last_publish = Some(now);
        let n = self.roster.len();
        let (mut reachable, mut service_probed, mut service_ok) =
            (Bitmap::new(n), Bitmap::new(n), Bitmap::new(n));
        for (key, probe) in &self.probes {
            let verdict = self.service_ok(key);
            reachable.set(probe.index, probe.reachable && verdict != Some(false));
            if let Some(ok) = verdict {
                service_probed.set(probe.index, true);
                service_ok.set(probe.index, ok);
            }
        }
        let obs = Observation {
            cluster: self.cluster.clone(),
            observer: self.me,
            name: self.name.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            healthy: self.healthy,
            addresses: self.addresses.clone(),
            service_check: self.service_check.clone(),
            roster: self.roster.id(),
            reachable,
            service_probed,
            service_ok,
        };
        let signed = obs.sign(&self.key);
        let peers: Vec<PublicKey> = self.members.keys().copied().collect();
        for peer in peers {
            self.send(peer, Message::Push(vec![signed.clone()]));
        }
        let beat = self.beat;
        self.store(now, signed, obs, beat);
    }

    /// Puts a verified observation newer than the one held (if any) into the view and the tally.
    fn store(&mut self, now: Instant, signed: SignedObservation, obs: Observation, beat: u64) {
        let observer = obs.observer;
        let i = self.roster.index(&observer).expect("only members' observations are stored");
        let counts = obs.is_over(&self.roster);
        let old = self.view.remove(&observer);
        let since = match &old {
            Some(old) if old.obs.incarnation == obs.incarnation => old.since,
            _ => now,
        };
        match (old.as_ref().filter(|o| o.counted), counts) {
            (Some(old), true) => self.tally.replace(i, &old.obs.reachable, &obs.reachable),
            (Some(old), false) => self.tally.remove(i, &old.obs.reachable),
            (None, true) => self.tally.add(i, &obs.reachable),
            (None, false) => {}
        }
        self.members_healthy.set(i, obs.healthy);
        if old.as_ref().is_none_or(|o| o.obs.addresses != obs.addresses) {
            self.admitted = None;
        }
        if old
            .as_ref()
            .is_none_or(|o| o.obs.addresses != obs.addresses || o.obs.service_check != obs.service_check)
        {
            self.targets_dirty = true;
        }
        self.view.insert(observer, Entry { signed, obs, received_at: now, beat, since, counted: counts });
        self.summary = None;
        self.dirty = true;
    }

    fn on_push(&mut self, now: Instant, from: PublicKey, list: Vec<SignedObservation>) {
        let mut relay = Vec::new();
        for signed in list {
            match self.accept(now, from, signed) {
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
    /// and only those whose fresh observation says they cannot reach it — and only if we have
    /// heard the observer ourselves for a while. Every node that hears the observer makes the
    /// same choice, so each such peer is picked with a probability that makes about
    /// [`RELAY_REDUNDANCY`] relayers serve it.
    fn relay_targets(&mut self, now: Instant, observer: &PublicKey, from: &PublicKey) -> Vec<PublicKey> {
        let Some(probe) = self.probes.get(observer) else { return Vec::new() };
        if !probe.reachable || now.saturating_duration_since(probe.changed_at) < RELAY_AFTER {
            return Vec::new();
        }
        // Cheap common case: every counted observer sees it, so nobody needs a relay.
        let (yes, voters) = self.tally.on(probe.index);
        if yes == voters {
            return Vec::new();
        }
        let relayers = self.members.len().saturating_sub(1).max(1) as f64;
        let chance = (RELAY_REDUNDANCY / relayers).min(1.0);
        let mut targets = Vec::new();
        for (peer, entry) in &self.view {
            if peer == observer || peer == from || *peer == self.me {
                continue;
            }
            if entry.counted
                && now.saturating_duration_since(entry.since) >= RELAY_AFTER
                && !entry.obs.reachable.get(probe.index)
            {
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
                    self.view.get_mut(&observer).expect("held").beat = signed.beat.beat;
                    self.refresh(now, observer);
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
        let list: Vec<SignedObservation> =
            observers.iter().filter_map(|k| self.view.get(k)).map(|e| e.signed.clone()).collect();
        if !list.is_empty() {
            self.send(from, Message::Push(list));
        }
    }

    fn accept(
        &mut self,
        now: Instant,
        from: PublicKey,
        signed: SignedObservation,
    ) -> Result<PublicKey, Rejection> {
        // Relays deliver each observation once per peer: refuse what is not newer before paying
        // for the signature check. Only refusals take this shortcut; all that is kept is verified.
        if let Some((observer, version)) = signed.claimed_version(&self.cluster)
            && let Some(held) = self.view.get(&observer).filter(|e| version <= e.obs.version())
        {
            // The sender's own observation, older than (or, at an equal version, other than)
            // the one held: it restarted with a lower incarnation. Tell it.
            if observer == *from.as_bytes()
                && (version < held.obs.version() || held.signed.body != signed.body)
            {
                self.tell_superseded(now, from);
            }
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
        if obs.addresses.len() > MAX_SERVICE_ADDRESSES {
            return Err(Rejection::Malformed);
        }
        if obs.is_over(&self.roster) {
            // Canonical form: one encoding per set of reports (votes are read by position).
            if !obs.is_canonical(&self.roster) {
                return Err(Rejection::Malformed);
            }
        } else {
            self.stats.other_roster += 1;
        }
        let observer = obs.observer;
        self.store(now, signed, obs, 0);
        self.stats.accepted += 1;
        Ok(observer)
    }

    /// Sends `peer` the version we hold of its observation (at most once per heartbeat per
    /// peer: a peer cannot make us repeat it faster).
    fn tell_superseded(&mut self, now: Instant, peer: PublicKey) {
        let heartbeat = self.config.heartbeat;
        let Some(held) = self.view.get(&peer).map(|e| e.obs.version()) else { return };
        let Some(probe) = self.probes.get_mut(&peer) else { return };
        if probe.told_superseded_at.is_some_and(|t| now.saturating_duration_since(t) < heartbeat) {
            return;
        }
        probe.told_superseded_at = Some(now);
        let (incarnation, seq) = held;
        self.send(peer, Message::Superseded { incarnation, seq });
    }

    /// A roster peer holds an observation of ours at (`incarnation`, `seq`). If that is not older
    /// than ours, we restarted with a lower incarnation than an earlier run: rise above it,
    /// publish at once and tell the node. Refused, changing nothing: an older version (a late or
    /// repeated tell), or an incarnation of `u64::MAX / 2` or more (a liar cannot pin us at the
    /// top, where we could never rise again).
    fn on_superseded(&mut self, now: Instant, incarnation: u64, seq: u64) {
        if (incarnation, seq) < (self.incarnation, self.seq) || incarnation >= u64::MAX / 2 {
            return;
        }
        self.incarnation = incarnation + 1;
        self.seq = 0;
        self.out.push_back(OutEvent::IncarnationChanged(self.incarnation));
        self.publish(now);
    }

    fn versions(&self) -> Vec<(PublicKey, u64, u64)> {
        self.view.iter().map(|(k, e)| (*k, e.obs.incarnation, e.obs.seq)).collect()
    }

    /// A hash of [`State::versions`] (cached until the view changes).
    fn summary(&mut self) -> u64 {
        if let Some(hash) = self.summary {
            return hash;
        }
        let mut hash = Sha256::new();
        for (k, e) in &self.view {
            hash.update(k.as_bytes());
            hash.update(e.obs.incarnation.to_le_bytes());
            hash.update(e.obs.seq.to_le_bytes());
        }
        let digest = hash.finalize();
        let value = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        self.summary = Some(value);
        value
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

    fn recompute_answer(&mut self) {
        let mine = &self.view[&self.me].obs;
        let admitted = admitted_peers(
            &self.roster,
            mine,
            &self.tally,
            |j| self.members_healthy.get(j),
            self.config.quorum,
        );
        // At hundreds of nodes this runs for every arriving observation: compare 125 bytes, and
        // build the member and address lists only when something changed.
        let key = (admitted, mine.healthy);
        if self.admitted.as_ref() == Some(&key) {
            return;
        }
        let members = members_of(&self.roster, mine, &key.0);
        self.admitted = Some(key);
        let addresses: Vec<IpAddr> = members
            .iter()
            .filter_map(|k| self.observation(k))
            .flat_map(|o| self.served_addresses(o))
            .collect();
        if members != self.answer.members || addresses != self.answer.addresses {
            self.answer = AnswerSet { version: self.answer.version + 1, members, addresses };
            self.out.push_back(OutEvent::AnswerChanged(self.answer.clone()));
        }
    }
}

/// Silent intervals after which a peer is declared unreachable, given the estimated loss of its
/// messages: `down_after` up to [`DESIGN_LOSS`]; beyond it, as many as keep a false verdict as
/// unlikely as `down_after` losses in a row at that rate (so a lossy but working link is not
/// cut), capped at [`MAX_SILENCE_FACTOR`] times `down_after`. The estimate is only updated when
/// messages arrive, so the silence of a dead peer does not stretch its own detection. This is
/// the idea of accrual failure detectors (Hayashibara et al.), reduced to the one case that
/// matters here: independent loss.
fn silence(down_after: u32, loss: f64) -> u32 {
    if loss <= DESIGN_LOSS {
        return down_after;
    }
    let needed = f64::from(down_after) * DESIGN_LOSS.ln() / loss.min(0.99).ln();
    (needed.ceil() as u32).clamp(down_after, down_after.saturating_mul(MAX_SILENCE_FACTOR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Quorum;
    use crate::sim::fixtures::{node_info, observation, public_key, roster, secret_key};
    use crate::snapshot::ViewSnapshot;

    fn node(i: usize, n: usize, incarnation: u64, config: Config, now: Instant) -> (State, Vec<OutEvent>) {
        let mut state = State::new(node_info(i, incarnation), roster(n), config, i as u64, now);
        let out = state.drain();
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
        state.step(now, InEvent::Message { from: public_key(from), message: Message::Push(list) })
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
        let out = b.force_own_health(t0 + Duration::from_secs(1), false);
        push(&mut a, t0, 1, pushed(&out, 0));
        assert_eq!(seq_of(&a, 1), Some((1, 2)));
        // Older: a replay. The view keeps the newer one.
        let before = ViewSnapshot::of(&a, t0).nodes[1].observation.clone().unwrap().signed;
        push(&mut a, t0, 1, first);
        assert_eq!((a.stats().accepted, a.stats().replayed), (2, 2));
        assert_eq!(a.signed_observation(&public_key(1)), Some(&before));
        // Equal version, different content, validly signed: still not newer.
        let mut forged = observation(1, 2, false, &[(0, true)]);
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
            late = pushed(&old.force_own_health(t0 + Duration::from_secs(k), k % 2 == 0), 0);
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
        let mut newer = observation(0, 2, true, &[(1, true)]);
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
        bring_up(&mut a, 1, &mut now, &Config::default());
        assert!(!a.sees_reachable(&public_key(2)));
        assert_eq!(a.answer().members, vec![public_key(0)]);
        let from_2 = observation(2, 3, true, &[(0, false), (1, true)]).sign(&secret_key(2));
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
    fn anti_entropy_fills_in_missing_observations() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 3, 1, Config::default(), t0);
        let (mut b, _) = node(1, 3, 1, Config::default(), t0);
        let from_2 = observation(2, 3, true, &[(0, true), (1, true)]).sign(&secret_key(2));
        push(&mut a, t0, 2, vec![from_2.clone()]);
        assert!(b.observation(&public_key(2)).is_none());
        // a's heartbeat sends a hash of what it holds to a random peer: wait for one to b.
        let mut now = t0;
        let summary = loop {
            now += Duration::from_secs(1);
            let out = a.fire(now, Timer::Heartbeat);
            if let [m @ Message::Summary(_)] = sends(&out, 1)[..] {
                break m.clone();
            }
        };
        // b holds something else: it answers with its digest.
        let out = b.step(now, InEvent::Message { from: public_key(0), message: summary.clone() });
        let Some(digest) =
            sends(&out, 0).into_iter().find(|m| matches!(m, Message::Digest { reply: false, .. }))
        else {
            panic!("a digest in answer to a differing summary")
        };
        // a pushes what b lacks and, since b holds what a lacks, replies with its own digest.
        let out = a.step(now, InEvent::Message { from: public_key(1), message: digest.clone() });
        push(&mut b, now, 0, pushed(&out, 1));
        assert_eq!(b.signed_observation(&public_key(2)), Some(&from_2));
        let reply = sends(&out, 1)
            .into_iter()
            .find(|m| matches!(m, Message::Digest { reply: true, .. }))
            .expect("a reply digest")
            .clone();
        let out = b.step(now, InEvent::Message { from: public_key(0), message: reply });
        // A reply is never answered with another digest.
        assert!(out.iter().all(|e| !matches!(e, OutEvent::Send { message: Message::Digest { .. }, .. })));
        push(&mut a, now, 1, pushed(&out, 0));
        assert!(a.observation(&public_key(1)).is_some());
        // Now both hold the same versions: a summary from one is answered with nothing.
        let out = a.fire(now, Timer::Heartbeat);
        let hash = out.iter().find_map(|e| match e {
            OutEvent::Send { message: Message::Summary(h), .. } => Some(*h),
            _ => None,
        });
        let out =
            b.step(now, InEvent::Message { from: public_key(0), message: Message::Summary(hash.unwrap()) });
        assert!(sends(&out, 0).is_empty(), "equal views: nothing to exchange");
    }

    /// `peer`'s periodic Alive arrives, naming the version `state` holds of it (if any).
    fn alive(state: &mut State, peer: usize, now: Instant) -> Vec<OutEvent> {
        let tag = state.observation(&public_key(peer)).map_or(0, Observation::version_tag);
        state.step(now, InEvent::Message { from: public_key(peer), message: Message::Alive(tag) })
    }

    fn tick(state: &mut State, now: Instant) -> Vec<OutEvent> {
        state.fire(now, Timer::Tick)
    }

    /// Makes `peer` reachable at `state`: `up_after` Alives one interval apart, from `now`.
    fn bring_up(state: &mut State, peer: usize, now: &mut Instant, config: &Config) {
        for _ in 0..config.up_after {
            *now += config.probe_interval;
            alive(state, peer, *now);
        }
        assert!(state.sees_reachable(&public_key(peer)));
    }

    fn sends(out: &[OutEvent], to: usize) -> Vec<&Message> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::Send { to: t, message } if *t == public_key(to) => Some(message),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn liveness_hysteresis() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let step = config.probe_interval;
        let mut now = t0;
        for k in 1..config.up_after {
            now += step;
            alive(&mut a, 1, now);
            assert!(!a.sees_reachable(&b), "up after {k} messages");
        }
        now += step;
        alive(&mut a, 1, now);
        assert!(a.sees_reachable(&b));
        // Silence shorter than `down_after` intervals, even many times over, never flips it.
        for _ in 0..10 {
            for _ in 1..config.down_after {
                now += step;
                tick(&mut a, now);
            }
            alive(&mut a, 1, now);
            assert!(a.sees_reachable(&b));
        }
        for _ in 1..config.down_after {
            now += step;
            tick(&mut a, now);
            assert!(a.sees_reachable(&b));
        }
        now += step;
        tick(&mut a, now);
        assert!(!a.sees_reachable(&b));
        let mine = a.observation(&a.key()).unwrap();
        assert_eq!(mine.report(a.roster(), &b).map(|r| r.reachable), Some(false));
        // A burst of messages at one instant after the outage is one message, not a streak.
        now += step;
        for _ in 0..10 {
            alive(&mut a, 1, now);
        }
        assert!(!a.sees_reachable(&b));
        // A gap of more than two intervals starts the streak again.
        now += 3 * step;
        alive(&mut a, 1, now);
        now += step;
        alive(&mut a, 1, now);
        assert!(!a.sees_reachable(&b), "the streak restarted");
        now += step;
        alive(&mut a, 1, now);
        assert!(a.sees_reachable(&b));
    }

    #[test]
    fn an_observation_over_another_roster_is_kept_but_has_no_vote() {
        let t0 = Instant::now();
        let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
        let (mut a, _) = node(0, 3, 1, config.clone(), t0);
        let (_, out) = node(1, 3, 1, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 0));
        let mut now = t0;
        bring_up(&mut a, 1, &mut now, &config);
        // 2 knows a fourth node: its bitmaps are over a roster of four, not a's three.
        let other = observation(2, 4, true, &[(0, true), (1, true)]);
        push(&mut a, now, 2, vec![other.sign(&secret_key(2))]);
        assert_eq!((a.stats().accepted, a.stats().other_roster), (2, 1));
        assert!(a.observation(&public_key(2)).is_some(), "kept (and shown)");
        assert_eq!(a.answer().members, vec![public_key(0)], "its yes on 1 does not count");
        let view = ViewSnapshot::of(&a, now);
        let shown = view.nodes.iter().find(|n| n.key == public_key(2)).unwrap().observation.as_ref().unwrap();
        assert!(!shown.same_roster && shown.reports.is_empty());
        // The same report over a's roster counts.
        let mut same = observation(2, 3, true, &[(0, true), (1, true)]);
        same.seq = 2;
        push(&mut a, now, 2, vec![same.sign(&secret_key(2))]);
        assert!(a.answer().members.contains(&public_key(1)));
    }

    #[test]
    fn silence_stretches_with_loss_beyond_the_design_rate_only() {
        assert_eq!(silence(8, 0.0), 8);
        assert_eq!(silence(8, 0.1), 8);
        assert_eq!(silence(8, 0.2), 12);
        assert_eq!(silence(8, 0.5), 27);
        assert_eq!(silence(8, 0.9), 32);
        assert_eq!(silence(1, 0.5), 4);
    }

    #[test]
    fn a_lossy_link_is_given_longer_before_its_peer_is_dropped() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let step = config.probe_interval;
        let mut now = t0;
        bring_up(&mut a, 1, &mut now, &config);
        // Every other message lost for a while: the estimate climbs towards 50 %.
        for _ in 0..200 {
            now += 2 * step;
            alive(&mut a, 1, now);
            tick(&mut a, now);
        }
        assert!(a.probes[&b].loss > 0.4, "{}", a.probes[&b].loss);
        // Then silence: the clean-link threshold passes without a verdict...
        let quiet_from = now;
        while now < quiet_from + step * (config.down_after + 2) {
            now += step;
            tick(&mut a, now);
        }
        assert!(a.sees_reachable(&b));
        // ...but the stretched one does not.
        while now < quiet_from + step * (config.down_after * MAX_SILENCE_FACTOR + 1) {
            now += step;
            tick(&mut a, now);
        }
        assert!(!a.sees_reachable(&b));
    }

    #[test]
    fn any_message_keeps_a_peer_alive_but_only_periodic_ones_bring_it_up() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 2, 1, config.clone(), t0);
        let b = public_key(1);
        let mut now = t0;
        for _ in 0..2 * config.up_after {
            now += config.probe_interval;
            a.step(now, InEvent::Message { from: b, message: Message::Summary(7) });
        }
        assert!(!a.sees_reachable(&b), "anti-entropy traffic alone does not bring a peer up");
        bring_up(&mut a, 1, &mut now, &config);
        for _ in 0..3 * config.down_after {
            now += config.probe_interval;
            a.step(now, InEvent::Message { from: b, message: Message::Summary(7) });
            tick(&mut a, now);
        }
        assert!(a.sees_reachable(&b));
    }

    #[test]
    fn every_tick_sends_each_peer_an_alive_or_now_and_then_a_ping() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 3, 1, config.clone(), t0);
        let mut now = t0;
        let (mut alives, mut pings) = (0, Vec::new());
        for _ in 0..PING_EVERY {
            now += config.probe_interval;
            let out = tick(&mut a, now);
            for peer in [1, 2] {
                match sends(&out, peer)[..] {
                    [Message::Alive(tag)] => {
                        assert_eq!(*tag, a.observation(&a.key()).unwrap().version_tag());
                        alives += 1;
                    }
                    [Message::Ping { nonce }] => pings.push((peer, *nonce)),
                    ref other => panic!("one liveness message per peer per tick, got {other:?}"),
                }
            }
        }
        assert_eq!((alives, pings.len() as u64), (2 * PING_EVERY - 2, 2));
        // A pong within the timeout gives the RTT that `spdu peers` shows.
        let (peer, nonce) = pings[1];
        let later = now + Duration::from_millis(30);
        a.step(later, InEvent::Message { from: public_key(peer), message: Message::Pong { nonce } });
        let rtt = ViewSnapshot::of(&a, later)
            .nodes
            .iter()
            .find(|n| n.key == public_key(peer))
            .unwrap()
            .probe
            .as_ref()
            .unwrap()
            .rtt_us;
        assert!(rtt.is_some(), "pong measured");
        // And the receiving side answers a ping with a pong of the same nonce.
        let out = a.step(now, InEvent::Message { from: public_key(1), message: Message::Ping { nonce: 99 } });
        assert!(matches!(sends(&out, 1)[..], [Message::Pong { nonce: 99 }]));
    }

    #[test]
    fn an_alive_keeps_the_observation_it_names_fresh_and_asks_for_one_it_lacks() {
        let t0 = Instant::now();
        let config = Config { quorum: Quorum::AtLeast(2), ..Config::default() };
        let (mut a, _) = node(0, 3, 1, config.clone(), t0);
        let (mut b, out) = node(1, 3, 1, Config::default(), t0);
        push(&mut a, t0, 1, pushed(&out, 0));
        push(&mut a, t0, 2, vec![observation(2, 3, true, &[(1, true)]).sign(&secret_key(2))]);
        let mut now = t0;
        bring_up(&mut a, 1, &mut now, &config);
        assert!(a.answer().members.contains(&public_key(1)));
        // Long past `stale_after`, 1's and 2's observations are still fresh while Alives naming
        // them keep arriving; nothing else is sent.
        let end = now + 3 * config.stale_after;
        while now < end {
            now += config.probe_interval;
            alive(&mut a, 1, now);
            alive(&mut a, 2, now);
            tick(&mut a, now);
        }
        assert!(a.answer().members.contains(&public_key(1)));
        // 1 publishes a new observation that a misses: 1's Alives now name another version.
        let out = b.force_own_health(now, false);
        let newer = pushed(&out, 0);
        let tag = b.observation(&public_key(1)).unwrap().version_tag();
        let from_1 = |message| InEvent::Message { from: public_key(1), message };
        let out = a.step(now, from_1(Message::Alive(tag)));
        assert!(matches!(sends(&out, 1)[..], [Message::Want(k)] if k == &vec![public_key(1)]));
        // Asked once, not on every Alive while the observation is on its way...
        now += config.probe_interval;
        assert!(sends(&a.step(now, from_1(Message::Alive(tag))), 1).is_empty());
        // ...and it does not keep the older one fresh.
        let stale_at = now + config.stale_after;
        while now < stale_at {
            now += config.probe_interval;
            a.step(now, from_1(Message::Alive(tag)));
            alive(&mut a, 2, now);
            tick(&mut a, now);
        }
        let fresh = |a: &State, now| {
            let view = ViewSnapshot::of(a, now);
            let node = view.nodes.iter().find(|n| n.key == public_key(1)).unwrap();
            node.observation.as_ref().unwrap().fresh
        };
        assert!(!fresh(&a, now), "1's observation went stale");
        push(&mut a, now, 1, newer);
        assert_eq!(seq_of(&a, 1), Some((1, 2)));
        assert!(fresh(&a, now));
    }

    #[test]
    fn beats_are_signed_only_while_some_peer_cannot_hear_us() {
        let t0 = Instant::now();
        let config = Config::default();
        let (mut a, _) = node(0, 3, 1, config.clone(), t0);
        let heartbeat = |a: &mut State, now: Instant| {
            let out = a.fire(now, Timer::Heartbeat);
            out.iter().filter(|e| matches!(e, OutEvent::Send { message: Message::Beat(_), .. })).count()
        };
        let mut now = t0 + RELAY_AFTER;
        push(&mut a, now, 1, vec![observation(1, 3, true, &[(0, true), (2, true)]).sign(&secret_key(1))]);
        push(&mut a, now, 2, vec![observation(2, 3, true, &[(0, true), (1, true)]).sign(&secret_key(2))]);
        now += RELAY_AFTER;
        assert_eq!(heartbeat(&mut a, now), 0, "everyone hears us");
        let mut cut = observation(2, 3, true, &[(0, false), (1, true)]);
        cut.seq = 2;
        push(&mut a, now, 2, vec![cut.sign(&secret_key(2))]);
        assert_eq!(heartbeat(&mut a, now), 2, "a beat to each peer");
    }

    #[test]
    fn messages_from_outside_the_roster_are_dropped() {
        let t0 = Instant::now();
        let (mut a, _) = node(0, 2, 1, Config::default(), t0);
        let out = a.step(t0, InEvent::Message { from: public_key(9), message: Message::Alive(1) });
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
        push(&mut a, t0, 2, vec![observation(2, 3, true, &[(1, true)]).sign(&secret_key(2))]);
        let mut now = t0;
        bring_up(&mut a, 1, &mut now, &config);
        assert!(a.answer().members.contains(&public_key(1)));
        // 2 falls silent while 1 keeps talking: 2's vote goes stale with the passing of time.
        let mut changed = false;
        while now < t0 + config.stale_after + config.probe_interval {
            now += config.probe_interval;
            alive(&mut a, 1, now);
            changed |= tick(&mut a, now).iter().any(|e| matches!(e, OutEvent::AnswerChanged(_)));
        }
        assert!(changed);
        assert_eq!(a.answer().members, vec![public_key(0)]);
    }
}
