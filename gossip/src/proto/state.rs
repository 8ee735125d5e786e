//! One node's protocol state: routes inputs, timeouts and outputs between the sub-machines.
//!
//! - [`super::liveness`]: the per-peer failure detector and what this node reports about peers;
//! - [`super::view`]: everyone's newest verified observation, freshness, tally, anti-entropy;
//! - [`super::publisher`]: this node's own observation, version, health and beats;
//! - [`super::limits`]: the bounds on the work each peer can cause;
//! - [`super::answer`]: the answer rule and the cached answer set.
//!
//! Invariants (the sub-machines' own are in their headers):
//! - per-member data is indexed by roster position (the [`Roster`] maps keys to positions); the
//!   only map from keys is the roster's sorted key list;
//! - timers are three slots (tick, heartbeat, a coalesced publication), polled through
//!   [`State::poll_timeout`]; outputs wait in a queue polled through [`State::poll_event`];
//! - a view entry is fresh while something recent vouches that it is current: the observation
//!   arriving, an Alive from its observer naming its version (the transport authenticates the
//!   sender), or a newer signed beat (which can be relayed). So a full mesh needs no beats at
//!   all; a node signs beats only while some peer reports it unreachable, and they, like
//!   observations, are relayed only to such peers;
//! - [`OutEvent::AnswerChanged`] and [`OutEvent::ProbeTargetsChanged`] are emitted only when
//!   the answer or the targets really changed.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use spdu_keys::PublicKey;

use super::answer::AnswerCache;
use super::limits::{Limited, Limits};
use super::liveness::Liveness;
use super::policies::{Policies, SiteView};
use super::publisher::{Publisher, Reports};
use super::sightings::{self, Sightings};
use super::view::{RELAY_AFTER, View};
use super::{
    AnswerSet, Bitmap, CheckResult, Config, InEvent, LinkStatus, Member, Message, NodeInfo, Observation,
    OutEvent, PolicyConfig, ProbeTarget, Roster, SignedObservation, Stats, Verdict, is_special_purpose,
};

/// Probe intervals to wait before asking an observer again for the observation its Alive names.
const WANT_AGAIN: u32 = 3;

/// The core's timers: one slot each (see [`State::poll_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Time to send every peer its Alive (or Ping), check who fell silent, answer owed Wants.
    Tick,
    /// Time to sign a beat (if anyone needs one) and run anti-entropy.
    Heartbeat,
    /// Time to publish a coalesced change of this node's observation.
    Publish,
    /// Time to apply a name's change that its `min_change_interval` held back.
    Policy,
}

/// The protocol state of one node. See the module docs for its invariants.
#[derive(Debug)]
pub struct State {
    config: Config,
    roster: Roster,
    /// This node's roster position.
    me: usize,
    /// The roster entries by position (none at this node's own).
    members: Vec<Option<Member>>,
    started_at: Instant,
    tick_at: Instant,
    heartbeat_at: Instant,
    publisher: Publisher,
    liveness: Liveness,
    view: View,
    limits: Limits,
    sightings: Sightings,
    answer: AnswerCache,
    policies: Policies,
    /// A selection input other than the qualifying sites changed (a latency).
    policy_dirty: bool,
    probe_targets: Vec<ProbeTarget>,
    rng: StdRng,
    stats: Stats,
    /// The answer may have changed.
    dirty: bool,
    /// The probe targets may have changed.
    targets_dirty: bool,
    out: VecDeque<OutEvent>,
}

impl State {
    /// A node that has not heard anyone yet: every peer starts unreachable. Ready at once: its
    /// first observation is published (the pushes wait in [`State::poll_event`]), the first tick
    /// is due at a random point of one interval (so nodes do not tick in step) and the first
    /// heartbeat one heartbeat from now.
    pub fn new(info: NodeInfo, roster: Vec<Member>, config: Config, seed: u64, now: Instant) -> Self {
        let me_key = info.key.public();
        let peers: BTreeMap<PublicKey, Member> =
            roster.into_iter().filter(|m| m.key != me_key).map(|m| (m.key, m)).collect();
        let full = Roster::new(peers.keys().copied().chain([me_key]));
        let policy =
            config.policy.digest(peers.values().map(|m| m.name.as_str()).chain([info.name.as_str()]));
        let me = full.index(&me_key).expect("self is in its roster");
        let mut members: Vec<Option<Member>> = peers.into_values().map(Some).collect();
        members.insert(me, None);
        let mut rng = StdRng::seed_from_u64(seed);
        let first_nonce = rng.random();
        let interval = config.probe_interval.as_micros().max(1) as u64;
        let tick_at = now + Duration::from_micros(rng.random_range(0..interval));
        let mut state = Self {
            heartbeat_at: now + config.heartbeat,
            tick_at,
            started_at: now,
            publisher: Publisher::new(info, policy),
            liveness: Liveness::new(full.len(), me, now, first_nonce),
            view: View::new(full.len()),
            limits: Limits::new(full.len()),
            sightings: Sightings::new(full.len()),
            answer: AnswerCache::default(),
            policies: Policies::new(&config.policy),
            policy_dirty: false,
            probe_targets: Vec::new(),
            members,
            me,
            roster: full,
            config,
            rng,
            stats: Stats::default(),
            dirty: true,
            targets_dirty: false,
            out: VecDeque::new(),
        };
        state.publish(now);
        state.finish(now);
        state
    }

    /// Handles one input at time `now`. `now` may be a little earlier than an earlier call's
    /// (the driver stamps messages with their arrival time): nothing goes back in time.
    pub fn handle(&mut self, now: Instant, event: InEvent) {
        match event {
            InEvent::Message { from, message } => self.on_message(now, from, message),
            InEvent::SelfCheck(result) => {
                if self.publisher.on_self_check(now, result, &self.config.health) {
                    self.request_publish(now);
                }
                self.latency_changed();
            }
            InEvent::ServiceProbe { peer, result } => self.on_service_probe(now, peer, result),
            InEvent::RemoteAddress { peer, addr } => self.on_remote_address(peer, addr),
        }
        self.finish(now);
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer().filter(|(at, _)| *at <= now) {
            self.fire_timer(now.max(at), timer);
        }
        self.finish(now);
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
        let publish = self.publisher.publish_at().map(|at| (at, Timer::Publish));
        let policy = self.policies.due().map(|at| (at, Timer::Policy));
        [Some((self.tick_at, Timer::Tick)), Some((self.heartbeat_at, Timer::Heartbeat)), publish, policy]
            .into_iter()
            .flatten()
            .min()
    }

    fn fire_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Tick => self.on_tick(now),
            Timer::Heartbeat => self.on_heartbeat(now),
            Timer::Publish => self.publish(now),
            Timer::Policy => {
                // Selects at once, so that the slot moves on before the next look at the timers.
                self.policy_dirty = true;
                self.recompute_answer(now);
            }
        }
    }

    /// Runs one timer's work now, whether due or not, and returns the outputs (tests drive the
    /// timers by hand). A publication runs only if one waits.
    #[cfg(test)]
    pub(crate) fn fire(&mut self, now: Instant, timer: Timer) -> Vec<OutEvent> {
        if timer != Timer::Publish || self.publisher.publish_at().is_some() {
            self.fire_timer(now, timer);
        }
        self.finish(now);
        self.drain()
    }

    /// Handles `event` and returns the outputs (for tests).
    #[cfg(test)]
    pub(crate) fn step(&mut self, now: Instant, event: InEvent) -> Vec<OutEvent> {
        self.handle(now, event);
        self.drain()
    }

    /// Feeds own check results until the verdict is `healthy` (as many as the thresholds need)
    /// and returns the outputs (for tests).
    #[cfg(test)]
    pub(crate) fn force_own_health(&mut self, now: Instant, healthy: bool) -> Vec<OutEvent> {
        let result =
            if healthy { CheckResult::pass(Duration::from_millis(1)) } else { CheckResult::fail("down") };
        let mut out = Vec::new();
        for _ in 0..self.config.health.down_after.max(self.config.health.up_after) {
            if self.publisher.healthy() == healthy {
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
        self.publisher.key()
    }

    /// This node's incarnation (it rises when a peer shows it held a newer one).
    pub fn incarnation(&self) -> u64 {
        self.publisher.incarnation()
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        self.publisher.name()
    }

    /// The cluster id.
    pub fn cluster(&self) -> &str {
        self.publisher.cluster()
    }

    /// The roster peers (this node excluded), in key order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().flatten()
    }

    /// The peers' services to probe (empty unless the config probes peers), in key order.
    pub fn probe_targets(&self) -> &[ProbeTarget] {
        &self.probe_targets
    }

    /// This node's probing of `peer`: reachable, smoothed RTT, and since when the verdict holds.
    pub fn link(&self, peer: &PublicKey) -> Option<LinkStatus> {
        let link = self.liveness.link(self.roster.index(peer)?)?;
        Some(LinkStatus { reachable: link.reachable, rtt: link.rtt, since: link.changed_at })
    }

    /// When something last vouched that `observer`'s observation in the view is current.
    pub fn vouched_at(&self, observer: &PublicKey) -> Option<Instant> {
        self.entry(observer).map(|e| e.received_at)
    }

    /// Whether `observer`'s observation in the view is fresh (counts) as of `now`.
    pub fn is_fresh(&self, observer: &PublicKey, now: Instant) -> bool {
        self.entry(observer).is_some_and(|e| e.is_fresh(now, self.config.stale_after))
    }

    /// The verdict of this node's own service check, once it reported a result.
    pub fn own_health(&self) -> Option<&Verdict> {
        self.publisher.own_health()
    }

    /// This node's verdict on `peer`'s advertised service, once probed.
    pub fn peer_health(&self, peer: &PublicKey) -> Option<&Verdict> {
        self.liveness.link(self.roster.index(peer)?)?.service.as_ref()
    }

    /// The roster as observations index it (this node included).
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The digest of this node's failover policies (signed in its observations).
    pub fn policy_digest(&self) -> super::PolicyDigest {
        self.publisher.policy()
    }

    /// Why the name `name` answers with what it does, as of `now` (none: no rule has that name).
    pub fn explain(&self, now: Instant, name: &str) -> Option<crate::snapshot::Explanation> {
        crate::snapshot::Explanation::of(self, now, name)
    }

    /// The current answer set.
    pub fn answer(&self) -> &AnswerSet {
        self.answer.answer()
    }

    /// Whether this site should announce its anycast prefixes now ([`super::anycast_verdict`]
    /// over its own current observation and the live votes).
    pub fn anycast(&self) -> super::AnycastVerdict {
        let mine = &self.view.get(self.me).expect("this node's own observation is always held").obs;
        super::anycast_verdict(self.me, mine, self.view.tally(), self.config.quorum)
    }

    /// Counters of accepted and refused input.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether this node's probing currently sees `peer` reachable.
    pub fn sees_reachable(&self, peer: &PublicKey) -> bool {
        self.roster.index(peer).is_some_and(|i| self.liveness.is_reachable(i))
    }

    /// The newest observation of `observer` in the view.
    pub fn observation(&self, observer: &PublicKey) -> Option<&Observation> {
        self.entry(observer).map(|e| &e.obs)
    }

    /// The signed newest observation of `observer` in the view.
    pub fn signed_observation(&self, observer: &PublicKey) -> Option<&SignedObservation> {
        self.entry(observer).map(|e| &e.signed)
    }

    fn entry(&self, observer: &PublicKey) -> Option<&super::view::Entry> {
        self.view.get(self.roster.index(observer)?)
    }

    fn send(&mut self, to: usize, message: Message) {
        self.out.push_back(OutEvent::Send { to: self.roster.key(to), message });
    }

    /// The peers' positions (every position but this node's).
    fn peers(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.me;
        (0..self.roster.len()).filter(move |i| *i != me)
    }

    fn finish(&mut self, now: Instant) {
        if self.dirty {
            self.dirty = false;
            self.recompute_answer(now);
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

    /// Routes a message from a roster peer. Refused, changing nothing but `unknown_sender`: a
    /// sender outside the roster (or this node's own key).
    fn on_message(&mut self, now: Instant, from: PublicKey, message: Message) {
        let Some(i) = self.roster.index(&from).filter(|i| *i != self.me) else {
            self.stats.unknown_sender += 1;
            return;
        };
        let periodic = matches!(message, Message::Alive(_) | Message::Ping { .. } | Message::Pong { .. });
        if self.liveness.heard(i, now, periodic, &self.config) {
            self.request_publish(now);
            self.readopt(now);
        }
        match message {
            Message::Alive(tag) => self.on_alive(now, i, tag),
            Message::Ping { nonce } => self.send(i, Message::Pong { nonce }),
            Message::Pong { nonce } => self.liveness.on_pong(i, now, nonce, self.config.probe_timeout),
            Message::Push(list) => self.on_push(now, i, list),
            Message::Digest { versions, reply } => self.on_digest(now, i, versions, reply),
            Message::Beat(beats) => self.on_beat(now, i, beats),
            Message::Want(observers) => self.on_want(now, i, observers),
            Message::Summary(hash) => self.on_summary(now, i, hash),
            Message::Superseded { incarnation, seq } => self.on_superseded(now, incarnation, seq),
            Message::Observed(addr) => {
                let gap = self.config.probe_interval / 2;
                if !self.limits.allow(i, Limited::Observed, now, gap) {
                    self.stats.observed_dropped += 1;
                } else if self.sightings.report(i, addr) {
                    self.readopt(now);
                }
            }
        }
    }

    /// A peer's connection to us comes from `addr` (a new connection, or one that migrated):
    /// tell it at once (a restarted peer has forgotten what it was told).
    fn on_remote_address(&mut self, peer: PublicKey, addr: SocketAddr) {
        let Some(i) = self.roster.index(&peer).filter(|i| *i != self.me) else { return };
        self.sightings.saw(i, addr);
        self.send(i, Message::Observed(addr));
    }

    /// Adopts the address a quorum of reachable peers see this node at, if it changed
    /// (`proto::sightings`), and re-signs the observation with it.
    fn readopt(&mut self, now: Instant) {
        let liveness = &self.liveness;
        if self.sightings.adopt(|i| liveness.is_reachable(i), self.roster.len() - 1) {
            self.publisher.set_observed(self.sightings.adopted());
            self.request_publish(now);
        }
    }

    /// Where to dial `peer`: its configured gossip address, or for a dynamic peer the address
    /// its newest observation signs, if usable and inside its pins (none: not dialled yet).
    pub fn dial_address(&self, peer: &PublicKey) -> Option<SocketAddr> {
        let i = self.roster.index(peer)?;
        let member = self.members[i].as_ref()?;
        member.gossip.or_else(|| self.signed_dial_address(i, &self.view.get(i)?.obs))
    }

    /// The address `obs` (of the dynamic member at `i`) signs, if usable and inside the member's
    /// pins: a member cannot aim its peers' dialling outside the prefixes its operator pinned.
    fn signed_dial_address(&self, i: usize, obs: &Observation) -> Option<SocketAddr> {
        let member = self.members[i].as_ref().filter(|m| m.gossip.is_none())?;
        obs.observed
            .filter(|a| sightings::is_usable(*a) && member.addresses.iter().any(|p| p.contains(a.ip())))
    }

    /// The address this node's peers agreed they see it at, once they did.
    pub fn observed_address(&self) -> Option<SocketAddr> {
        self.sightings.adopted()
    }

    /// Whether this node's service address is the observed one (a reload may switch it).
    pub fn set_observed_address(&mut self, now: Instant, observed_address: bool) {
        if self.publisher.set_observed_address(observed_address) {
            self.request_publish(now);
        }
        self.finish(now);
    }

    fn on_tick(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        self.tick_at = now + interval;
        let tag = self.view.get(self.me).map_or(0, |e| e.obs.version_tag());
        let (messages, flipped) = self.liveness.tick(now, tag, &self.config);
        for (i, message) in messages {
            self.send(i, message);
        }
        if flipped {
            self.request_publish(now);
            self.readopt(now);
        }
        // Our own observation is always current; then the others' that went stale stop counting.
        let refreshed = self.view.refresh(self.me, now, &self.roster);
        if self.view.sweep(now, self.config.stale_after) || refreshed {
            self.dirty = true;
        }
        for (peer, owed) in self.limits.due_wants(now, interval) {
            self.push_to(peer, &owed);
        }
    }

    /// An Alive naming the version of the observation that `from` holds current: it vouches
    /// for ours if that is the one; else we ask for it (not again while the answer is on its
    /// way).
    fn on_alive(&mut self, now: Instant, from: usize, tag: u8) {
        if self.view.get(from).is_some_and(|e| e.obs.version_tag() == tag) {
            if self.view.refresh(from, now, &self.roster) {
                self.dirty = true;
            }
            return;
        }
        if self.limits.allow(from, Limited::Ask, now, self.config.probe_interval * WANT_AGAIN) {
            self.send(from, Message::Want(vec![self.roster.key(from)]));
        }
    }

    /// Whether the member at `i` advertises a service check (in its newest observation).
    fn advertises(&self, i: usize) -> bool {
        self.view.get(i).is_some_and(|e| e.obs.service_check.is_some())
    }

    /// A probe of `peer`'s service. Refused, changing nothing: a peer outside the roster.
    fn on_service_probe(&mut self, now: Instant, peer: PublicKey, result: CheckResult) {
        let Some(i) = self.roster.index(&peer).filter(|i| *i != self.me) else { return };
        self.liveness.on_service_probe(i, now, result, &self.config.health);
        self.latency_changed();
        // Publish whenever the report would differ from the published one: a flip, but also a
        // peer that started advertising a check since (its service is down until proven).
        self.publish_if_report_differs(now, i);
    }

    /// Publishes if this node's report on the peer at `i` would differ from the published one.
    fn publish_if_report_differs(&mut self, now: Instant, i: usize) {
        let (reachable, service_ok) =
            self.liveness.reports_reachable(i, self.advertises(i), &self.config.health);
        let published = self.view.get(self.me).and_then(|e| e.obs.report_at(&self.roster, i));
        if published.is_none_or(|r| r.reachable != reachable || r.service_ok != service_ok) {
            self.request_publish(now);
        }
    }

    /// The peers' services to probe: each roster peer whose latest observation advertises a
    /// check, at its first exact pin or else the first address of its observation inside its
    /// pins (none: not probed). Empty unless the config probes peers.
    fn compute_probe_targets(&self) -> Vec<ProbeTarget> {
        if !self.config.health.probe_peers {
            return Vec::new();
        }
        self.members
            .iter()
            .zip(0..)
            .filter_map(|(m, i)| {
                let m = m.as_ref()?;
                let obs = &self.view.get(i)?.obs;
                let check = obs.service_check.clone()?;
                let addr =
                    m.addresses.iter().find_map(|p| p.exact()).or_else(|| self.served(i, obs).next())?;
                Some(ProbeTarget { peer: m.key, name: m.name.clone(), addr, check })
            })
            .collect()
    }

    /// The addresses of `obs`, the observation of the member at `i`, that this node serves:
    /// inside one of its pins and not special-purpose (this node's own: as configured).
    fn served<'a>(&'a self, i: usize, obs: &'a Observation) -> impl Iterator<Item = IpAddr> + 'a {
        let pins = self.members[i].as_ref().map(|m| &m.addresses[..]);
        obs.addresses.iter().copied().filter(move |a| {
            pins.is_none_or(|pins| !is_special_purpose(*a) && pins.iter().any(|p| p.contains(*a)))
        })
    }

    fn on_heartbeat(&mut self, now: Instant) {
        self.heartbeat_at = now + self.config.heartbeat;
        debug_assert_eq!(
            *self.view.tally(),
            super::Tally::of(
                &self.roster,
                self.view.entries().filter(|(i, _)| self.view.is_counted(*i)).map(|(_, e)| &e.obs)
            ),
            "the tally counts exactly the counted entries"
        );
        if now.saturating_duration_since(self.started_at) >= RELAY_AFTER
            && self.view.someone_cannot_reach(self.me, now)
        {
            let (signed, beat) = self.publisher.next_beat();
            for peer in self.peers() {
                self.send(peer, Message::Beat(vec![signed.clone()]));
            }
            self.view.set_beat(self.me, beat);
        }
        // Where we see each peer from: datagrams get lost, so it is told again every heartbeat
        // until the peer signs that address (once it does, idle traffic is as before).
        let view = &self.view;
        let seen: Vec<(usize, SocketAddr)> = (self.sightings.seen())
            .filter(|(i, addr)| view.get(*i).is_none_or(|e| e.obs.observed != Some(*addr)))
            .collect();
        for (peer, addr) in seen {
            self.send(peer, Message::Observed(addr));
        }
        // Anti-entropy: one random peer learns a hash of what we hold; if its own differs, it
        // answers with its digest, and the two push each other what the other lacks.
        if self.roster.len() > 1 {
            let mut peer = self.rng.random_range(0..self.roster.len() - 1);
            if peer >= self.me {
                peer += 1;
            }
            let hash = self.view.summary();
            self.send(peer, Message::Summary(hash));
        }
    }

    /// Publishes a change now, or once a probe interval has passed since the last publication
    /// (a burst of verdict changes, as at start-up, becomes one observation).
    fn request_publish(&mut self, now: Instant) {
        if self.publisher.request(now, self.config.probe_interval) {
            self.publish(now);
        }
    }

    /// Re-signs this node's observation with the next seq, stores it, and pushes it to every peer.
    fn publish(&mut self, now: Instant) {
        let n = self.roster.len();
        let mut reports =
            Reports { reachable: Bitmap::new(n), service_probed: Bitmap::new(n), service_ok: Bitmap::new(n) };
        for i in self.peers() {
            let (reachable, service_ok) =
                self.liveness.reports_reachable(i, self.advertises(i), &self.config.health);
            reports.reachable.set(i, reachable);
            if let Some(ok) = service_ok {
                reports.service_probed.set(i, true);
                reports.service_ok.set(i, ok);
            }
        }
        let (signed, obs) = self.publisher.sign(now, &self.roster, reports);
        for peer in self.peers() {
            self.send(peer, Message::Push(vec![signed.clone()]));
        }
        let beat = self.publisher.beat();
        self.store(self.me, now, signed, obs, beat);
    }

    /// Puts a verified observation newer than the one held into the view.
    fn store(&mut self, i: usize, now: Instant, signed: SignedObservation, obs: Observation, beat: u64) {
        let before = self.view.get(i).and_then(|e| self.signed_dial_address(i, &e.obs));
        if let Some(addr) = self.signed_dial_address(i, &obs).filter(|a| Some(*a) != before) {
            self.out.push_back(OutEvent::PeerAddressChanged { peer: self.roster.key(i), addr });
        }
        let stored = self.view.store(i, now, signed, obs, beat, &self.roster);
        if stored.addresses {
            self.answer.addresses_changed();
        }
        self.targets_dirty |= stored.addresses || stored.check;
        self.dirty = true;
        // A peer that stopped (or started) advertising a check: the report on it changes now,
        // not at a probe result that may never come (its probing stops with its check).
        if stored.check && i != self.me {
            self.publish_if_report_differs(now, i);
        }
    }

    /// A service-check latency may have changed: `fastest` rules select again.
    fn latency_changed(&mut self) {
        if self.policies.uses_latency() {
            self.policy_dirty = true;
            self.dirty = true;
        }
    }

    fn recompute_answer(&mut self, now: Instant) {
        // The cache and the selectors are taken out while the rules read the rest of the state.
        let mut cache = std::mem::take(&mut self.answer);
        let mut policies = std::mem::take(&mut self.policies);
        let policy_dirty = std::mem::take(&mut self.policy_dirty);
        let view = &self.view;
        let mine = &view.get(self.me).expect("own observation published at start").obs;
        let served =
            |i: usize| view.get(i).map(|e| self.served(i, &e.obs).collect::<Vec<_>>()).unwrap_or_default();
        let mut changed = cache.update(
            &self.roster,
            mine,
            view.tally(),
            |j| view.get(j).is_some_and(|e| e.obs.healthy),
            self.config.quorum,
            |k| served(self.roster.index(k).expect("answer members are members")),
        );
        let due = policies.due().is_some_and(|at| at <= now);
        if changed || policy_dirty || due {
            let admitted = cache.admitted().expect("updated above");
            let sites = self.site_views(admitted);
            if policies.update(now, &self.config.policy, &sites, served) {
                cache.set_names(policies.names().to_vec());
                changed = true;
            }
        }
        self.policies = policies;
        if changed {
            let answer = cache.changed();
            self.out.push_back(OutEvent::AnswerChanged(answer));
        }
        self.answer = cache;
    }

    /// Every site as the selectors see it, in answer order (this node first, then peers in key
    /// order), from the admitted peers and own health of the last answer-rule pass.
    pub(crate) fn site_views(&self, admitted: &(Bitmap, bool)) -> Vec<SiteView<'_>> {
        let own = SiteView {
            position: self.me,
            name: self.publisher.name(),
            key: self.roster.key(self.me),
            qualifies: admitted.1,
            latency: self.publisher.own_health().and_then(Verdict::latency),
            settling: self.publisher.own_health().is_some_and(|v| v.latency().is_none()),
            is_self: true,
        };
        let peers = self.members.iter().enumerate().filter_map(|(j, m)| {
            let m = m.as_ref()?;
            let service = self.liveness.link(j).and_then(|l| l.service.as_ref());
            Some(SiteView {
                position: j,
                name: &m.name,
                key: m.key,
                qualifies: admitted.0.get(j),
                latency: service.and_then(Verdict::latency),
                // Probed (it advertises a check) but not settled: a site that advertises none
                // has no latency and holds nothing back.
                settling: self.advertises(j) && service.is_none_or(|v| v.latency().is_none()),
                is_self: false,
            })
        });
        std::iter::once(own).chain(peers).collect()
    }

    /// The selectors, their config and the sites they see now (for `spdu explain`).
    pub(crate) fn policy_inputs(&self) -> (&Policies, &PolicyConfig, Vec<SiteView<'_>>) {
        let admitted =
            self.answer.admitted().cloned().unwrap_or_else(|| (Bitmap::new(self.roster.len()), true));
        let sites = self.site_views(&admitted);
        (&self.policies, &self.config.policy, sites)
    }
}

#[cfg(test)]
mod dynamic_tests;
mod exchange;
#[cfg(test)]
mod hostile_tests;
mod intake;
mod reconfigure;
#[cfg(test)]
mod tests;

pub use reconfigure::Reconfigured;
