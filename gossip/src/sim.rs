//! A seeded discrete-event network that drives many protocol cores ([`State`]).
//!
//! Owns a virtual clock (a base [`Instant`] plus a simulated offset; the real clock is read once,
//! for the base, and never for a decision), one event queue ordered by (time, sequence number),
//! the links between nodes (latency, jitter, loss, up or down, each direction on its own),
//! partitions, crashes and restarts, and falsifying ("lying") observers. Every message goes
//! through [`Message::encode`] and [`Message::decode`], so sizes and bounds are the wire's.
//!
//! Invariants: the same [`SimConfig`] and the same calls give the same run bit for bit (one
//! seeded [`StdRng`]; the queue's order is total, and no map's iteration order ever decides
//! anything; [`Sim::trace_hash`] summarises a run). Each node has at most one timer event that
//! counts: the one at its core's [`State::poll_timeout`] (an event left from an earlier due time
//! is skipped). A crashed node receives nothing and its pending timer and in-flight inbound
//! messages are dropped; a restarted node is a new [`State`] with the same key and a higher
//! incarnation (or one chosen by the test, [`Sim::restart_with_incarnation`]).
//!
//! Everything a test may ask afterwards is recorded: every node's answer set over time
//! ([`Sim::changes`], [`Sim::removals`]) and per-node traffic ([`Sim::traffic`]).
//!
//! Layout: `config` (the shape of a run, links, actions, lies), `queue` (the event queue),
//! `history` (what a run records and the questions asked of it), `fixtures` (deterministic
//! identities), and this module, which runs the nodes.

mod config;
pub mod fixtures;
mod history;
#[cfg(test)]
mod policies;
mod queue;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use spdu_keys::{PublicKey, SecretKey};

pub use self::config::{Action, Lie, Link, SimConfig};
pub use self::history::{AnswerChange, Counter, Removal, Traffic};
use self::queue::{EventQueue, FastMap, Queued};
use crate::proto::{
    CheckResult, InEvent, Member, Message, NameAnswer, OutEvent, Pick, ServiceCheck, SignedObservation,
    State, Verdict,
};
use spdu_policy::sample_weighted;

/// A node in the simulation: its index, `0..n`.
pub type NodeId = usize;

/// A node index or generation as an event stores it (events are kept small: at 1000 nodes
/// millions of them are queued at once).
type Small = u32;

#[derive(Debug)]
enum Event {
    Deliver {
        from: Small,
        to: Small,
        generation: Small,
        frame: Box<[u8]>,
    },
    /// Node `node`'s core may have a timeout due (it has, if this is still its armed time).
    Timer {
        node: Small,
        generation: Small,
    },
    /// Node `node` runs its own service check and probes every peer's service.
    Checks {
        node: Small,
        generation: Small,
    },
    Action(Box<Action>),
}

#[derive(Debug)]
struct Node {
    key: SecretKey,
    public: PublicKey,
    state: Option<State>,
    incarnation: u64,
    /// Bumped on every crash: timers and messages addressed to an older generation are dropped.
    generation: Small,
    /// When its core's next timeout is due, as queued (the one timer event that counts).
    timeout: Option<Duration>,
    lie: Option<Lie>,
    answer: Vec<NodeId>,
    /// What each name answers with, as its last answer set said (policies).
    names: Vec<NameAnswer>,
    traffic: Traffic,
    /// Whether its service answers (kept across crashes: the service is not the node).
    service_up: bool,
}

/// The simulated network and its nodes. See the module docs.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    base: Instant,
    now: Duration,
    seq: u64,
    rng: StdRng,
    queue: EventQueue<Event>,
    nodes: Vec<Node>,
    index: FastMap<PublicKey, NodeId>,
    roster: Vec<Member>,
    /// Links that differ from [`SimConfig::link`].
    links: FastMap<(NodeId, NodeId), Link>,
    service_blocked: BTreeSet<(NodeId, NodeId)>,
    /// Each node's service-check latency as its probers measure it (default 1 ms).
    service_latency: Vec<Duration>,
    /// Relative jitter of those latencies: each result is off by up to this share either way.
    service_jitter: f64,
    group: Vec<usize>,
    changes: Vec<AnswerChange>,
    /// When what some name answers with changed at a node (sites, TTL, pick: policies).
    name_changes: Vec<(Duration, NodeId)>,
    removals: Vec<Removal>,
    events: u64,
    trace: u64,
}

impl Sim {
    /// `n` nodes (keys from [`fixtures`]), all started at time zero, each with the full roster.
    pub fn new(n: usize, config: SimConfig) -> Self {
        assert!(Small::try_from(n).is_ok(), "at most {} nodes", Small::MAX);
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let key = fixtures::secret_key(i);
                Node {
                    public: key.public(),
                    key,
                    state: None,
                    incarnation: 0,
                    generation: 0,
                    timeout: None,
                    lie: None,
                    answer: Vec::new(),
                    names: Vec::new(),
                    traffic: Traffic::default(),
                    service_up: true,
                }
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, node)| (node.public, i)).collect();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            queue: EventQueue::default(),
            nodes,
            index,
            roster: fixtures::roster(n),
            links: FastMap::default(),
            service_blocked: BTreeSet::new(),
            service_latency: vec![Duration::from_millis(1); n],
            service_jitter: 0.0,
            group: (0..n).map(|_| 0).collect(),
            changes: Vec::new(),
            name_changes: Vec::new(),
            removals: Vec::new(),
            events: 0,
            trace: TRACE_START,
        };
        for i in 0..n {
            sim.boot(i, 1);
        }
        sim
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The running nodes.
    pub fn up_nodes(&self) -> Vec<NodeId> {
        (0..self.nodes.len()).filter(|i| self.is_up(*i)).collect()
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: NodeId) -> bool {
        self.nodes[i].state.is_some()
    }

    /// Node `i`'s protocol state, while it runs.
    pub fn state(&self, i: NodeId) -> Option<&State> {
        self.nodes[i].state.as_ref()
    }

    /// Node `i`'s key.
    pub fn key(&self, i: NodeId) -> PublicKey {
        self.nodes[i].public
    }

    /// The node with key `key`.
    pub fn node_of(&self, key: &PublicKey) -> Option<NodeId> {
        self.index.get(key).copied()
    }

    /// Node `i`'s current answer, sorted (empty while crashed).
    pub fn answer(&self, i: NodeId) -> &[NodeId] {
        &self.nodes[i].answer
    }

    /// Every answer change so far, in order.
    pub fn changes(&self) -> &[AnswerChange] {
        &self.changes
    }

    /// Every time a running node stopped answering with a node, in order.
    pub fn removals(&self) -> &[Removal] {
        &self.removals
    }

    /// Removals at or after `since`.
    pub fn removals_since(&self, since: Duration) -> impl Iterator<Item = &Removal> {
        self.removals.iter().filter(move |r| r.at >= since)
    }

    /// Node `i`'s traffic so far.
    pub fn traffic(&self, i: NodeId) -> Traffic {
        self.nodes[i].traffic
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// A hash of everything that happened so far: equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Changes one direction of the link `from` → `to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: Link) {
        self.links.insert((from, to), link);
    }

    /// One direction of the link `from` → `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> Link {
        self.links.get(&(from, to)).copied().unwrap_or(self.config.link)
    }

    /// Sets the loss of every link, both directions.
    pub fn set_loss_everywhere(&mut self, loss: f64) {
        self.config.link.loss = loss;
        for link in self.links.values_mut() {
            link.loss = loss;
        }
    }

    /// Makes `falsifier` lie in every observation of its own it sends from now on.
    pub fn set_lie(&mut self, falsifier: NodeId, lie: Lie) {
        self.nodes[falsifier].lie = Some(lie);
    }

    /// Runs `action` at simulated time `at` (or now, if that has passed).
    pub fn schedule(&mut self, at: Duration, action: Action) {
        self.push(at.max(self.now), Event::Action(Box::new(action)));
    }

    /// Runs `action` now.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Crash(i) => self.crash(i),
            Action::Restart(i) => self.restart(i),
            Action::SetLinkUp { from, to, up } => {
                let link = Link { up, ..self.link(from, to) };
                self.set_link(from, to, link);
            }
            Action::Partition(groups) => self.partition(&groups),
            Action::Heal => self.group.iter_mut().for_each(|g| *g = 0),
            Action::Reconfigure(i, roster) => self.reconfigure(i, &roster),
            Action::SetService(i, up) => self.nodes[i].service_up = up,
            Action::BlockService { from, to, blocked } => {
                if blocked {
                    self.service_blocked.insert((from, to));
                } else {
                    self.service_blocked.remove(&(from, to));
                }
            }
            Action::SetHealthy(i, healthy) => {
                let policy = &self.config.protocol.health;
                let result = if healthy {
                    CheckResult::pass(Duration::from_millis(1))
                } else {
                    CheckResult::fail("set unhealthy")
                };
                for _ in 0..policy.down_after.max(policy.up_after) {
                    let Some(state) = self.nodes[i].state.as_mut() else { return };
                    if state.own_health().is_none_or(Verdict::ok) == healthy {
                        break;
                    }
                    state.handle(self.base + self.now, InEvent::SelfCheck(result.clone()));
                    self.process(i);
                }
            }
        }
    }

    /// Every other running node now sees node `i`'s connections come from `addr` (as its QUIC
    /// driver would report a new or migrated connection) and tells it so.
    pub fn see_at(&mut self, i: NodeId, addr: std::net::SocketAddr) {
        let now = self.base + self.now;
        let peer = self.nodes[i].public;
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            let Some(state) = self.nodes[j].state.as_mut() else { continue };
            state.handle(now, InEvent::RemoteAddress { peer, addr });
            self.process(j);
        }
    }

    /// Node `i`'s service address becomes the one its peers see it at (`addresses = "observed"`).
    pub fn use_observed_address(&mut self, i: NodeId) {
        let now = self.base + self.now;
        let Some(state) = self.nodes[i].state.as_mut() else { return };
        state.set_observed_address(now, true);
        self.process(i);
    }

    /// Reloads node `i` with the roster of the nodes `roster` (it keeps running; see
    /// [`State::reconfigure`]). Messages between nodes that are not in each other's rosters
    /// are still delivered, and refused by the cores. No-op on a crashed node.
    pub fn reconfigure(&mut self, i: NodeId, roster: &[NodeId]) {
        let now = self.base + self.now;
        let members: Vec<Member> = roster.iter().map(|j| fixtures::member(*j)).collect();
        let addresses = vec![fixtures::address(i)];
        let check = self.config.services.map(|_| ServiceCheck::Tcp { port: 80 });
        let protocol = self.config.protocol.clone();
        let Some(state) = self.nodes[i].state.as_mut() else { return };
        state.reconfigure(now, members, protocol, addresses, check, true);
        self.mix(&[Trace::Reconfigure as u64, i as u64, roster.len() as u64]);
        self.process(i);
    }

    /// Stops node `i`: it receives nothing more, its timers are dropped, it answers nothing.
    pub fn crash(&mut self, i: NodeId) {
        let node = &mut self.nodes[i];
        if node.state.take().is_none() {
            return;
        }
        node.generation += 1;
        node.timeout = None;
        node.answer.clear();
        node.names.clear();
        self.changes.push(AnswerChange { at: self.now, node: i, members: Vec::new() });
        self.mix(&[Trace::Crash as u64, i as u64]);
    }

    /// Starts a crashed node `i` again: same key, higher incarnation, empty view.
    pub fn restart(&mut self, i: NodeId) {
        let incarnation = self.nodes[i].incarnation + 1;
        self.restart_with_incarnation(i, incarnation);
    }

    /// Starts a crashed node `i` again with the given incarnation (lower than its last one plays
    /// a node that lost its incarnation file, or whose clock is behind).
    pub fn restart_with_incarnation(&mut self, i: NodeId, incarnation: u64) {
        if self.nodes[i].state.is_none() {
            self.boot(i, incarnation);
        }
    }

    /// Nodes in different groups cannot talk; unlisted nodes are each alone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let n = self.nodes.len();
        self.group = (0..n).map(|i| groups.len() + i).collect();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.group[i] = g;
            }
        }
    }

    /// Processes the next event; false if there is none.
    pub fn step(&mut self) -> bool {
        let Some(Queued { at, event, .. }) = self.queue.pop() else { return false };
        self.now = Duration::from_nanos(at);
        self.events += 1;
        match event {
            Event::Deliver { from, to, generation, frame } => {
                self.deliver(from as NodeId, to as NodeId, generation, &frame)
            }
            Event::Timer { node, generation } => {
                let i = node as NodeId;
                let node = &mut self.nodes[i];
                if node.generation == generation
                    && node.timeout == Some(self.now)
                    && let Some(state) = node.state.as_mut()
                {
                    node.timeout = None;
                    state.handle_timeout(self.base + self.now);
                    self.process(i);
                }
            }
            Event::Checks { node, generation } => self.run_checks(node as NodeId, generation),
            Event::Action(action) => self.apply(*action),
        }
        true
    }

    /// Whether a service probe from `from` reaches `to`'s service now: the service is up, its
    /// node runs, both directions of the link are up, they share a partition group, and nothing
    /// blocks the service. Random loss is left out (a TCP or HTTP check retransmits).
    fn service_reachable(&self, from: NodeId, to: NodeId) -> bool {
        let node = &self.nodes[to];
        node.service_up
            && node.state.is_some()
            && self.group[from] == self.group[to]
            && self.link(from, to).up
            && self.link(to, from).up
            && !self.service_blocked.contains(&(from, to))
    }

    /// One measurement of `of`'s service latency: its set latency, off by the jitter.
    fn service_latency(&mut self, of: NodeId) -> Duration {
        let base = self.service_latency[of];
        if self.service_jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 + self.rng.random_range(-self.service_jitter..self.service_jitter))
    }

    /// Sets the latency node `of`'s service checks take (from any prober, itself included).
    pub fn set_service_latency(&mut self, of: NodeId, latency: Duration) {
        self.service_latency[of] = latency;
    }

    /// Makes every service-check latency vary by up to `share` either way (0.2: ±20 %).
    pub fn set_service_jitter(&mut self, share: f64) {
        self.service_jitter = share;
    }

    /// Every change of what some name answers with at some node (its sites, TTL or pick): when,
    /// and which node.
    pub fn name_changes(&self) -> &[(Duration, NodeId)] {
        &self.name_changes
    }

    /// What node `i` answers for each name (its policies), as of its last answer change.
    pub fn names(&self, i: NodeId) -> &[NameAnswer] {
        &self.nodes[i].names
    }

    /// The sites (as node indices) name `rule` of node `i` answers with, in answer order.
    pub fn name_sites(&self, i: NodeId, rule: usize) -> Vec<NodeId> {
        self.nodes[i]
            .names
            .get(rule)
            .map_or_else(Vec::new, |n| n.sites.iter().map(|s| self.index[&s.key]).collect())
    }

    /// Asks node `i` for name `rule` `queries` times as DNS would (each response takes from the
    /// name's sites what its pick says: [`spdu_policy::sample_weighted`] for weighted names) and
    /// counts, per node, the responses it appears in.
    pub fn count_responses(&mut self, i: NodeId, rule: usize, queries: usize) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        let Some(name) = self.nodes[i].names.get(rule).cloned() else { return counts };
        let weights: Vec<u32> = name.sites.iter().map(|s| s.weight).collect();
        let mut drawn = Vec::new();
        for q in 0..queries {
            drawn.clear();
            match name.pick {
                Pick::Weighted { max } => sample_weighted(&weights, max, &mut self.rng, &mut drawn),
                Pick::Rotate { max } => {
                    drawn.extend((0..max.min(weights.len())).map(|k| (q + k) % weights.len()))
                }
                Pick::All => drawn.extend(0..weights.len()),
            }
            for d in &drawn {
                counts[self.index[&name.sites[*d].key]] += 1;
            }
        }
        counts
    }

    fn run_checks(&mut self, i: NodeId, generation: Small) {
        let Some(interval) = self.config.services else { return };
        if self.nodes[i].generation != generation || self.nodes[i].state.is_none() {
            return;
        }
        let now = self.base + self.now;
        let result = |ok: bool, latency: Duration| CheckResult {
            ok,
            latency: Some(latency),
            error: (!ok).then(|| "refused".to_owned()),
            unknown: false,
        };
        let own = self.service_latency(i);
        let mut inputs = vec![InEvent::SelfCheck(result(self.nodes[i].service_up, own))];
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            let peer = self.nodes[j].public;
            let ok = self.service_reachable(i, j);
            inputs.push(InEvent::ServiceProbe { peer, result: result(ok, self.service_latency(j)) });
        }
        for input in inputs {
            let Some(state) = self.nodes[i].state.as_mut() else { return };
            state.handle(now, input);
            self.process(i);
        }
        self.push(self.now + interval, Event::Checks { node: i as Small, generation });
    }

    /// Runs every event up to and including simulated time `until`; the clock ends at `until`.
    pub fn run_until(&mut self, until: Duration) {
        while self.next_at().is_some_and(|at| at <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `done` holds (checked now and after every answer change) or `deadline` passes.
    /// Returns the simulated time at which it held.
    pub fn run_until_cond(&mut self, deadline: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        if done(self) {
            return Some(self.now);
        }
        while self.next_at().is_some_and(|at| at <= deadline) {
            let changes = self.changes.len();
            self.step();
            if self.changes.len() != changes && done(self) {
                return Some(self.now);
            }
        }
        self.now = self.now.max(deadline);
        None
    }

    /// The time of the next queued event.
    fn next_at(&mut self) -> Option<Duration> {
        self.queue.peek_at().map(Duration::from_nanos)
    }

    fn boot(&mut self, i: NodeId, incarnation: u64) {
        let seed = self.rng.random();
        let node = &mut self.nodes[i];
        node.incarnation = incarnation;
        let now = self.base + self.now;
        let mut info = fixtures::node_info(i, node.incarnation);
        if self.config.services.is_some() {
            info.service_check = Some(ServiceCheck::Tcp { port: 80 });
        }
        node.state = Some(State::new(info, self.roster.clone(), self.config.protocol.clone(), seed, now));
        let generation = node.generation;
        self.mix(&[Trace::Boot as u64, i as u64, incarnation]);
        self.process(i);
        if let Some(interval) = self.config.services {
            // Spread the nodes' checks over the interval.
            let offset = Duration::from_micros(self.rng.random_range(0..interval.as_micros().max(1) as u64));
            self.push(self.now + offset, Event::Checks { node: i as Small, generation });
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, generation: Small, frame: &[u8]) {
        let sender = self.nodes[from].public;
        let node = &mut self.nodes[to];
        if node.generation != generation {
            return;
        }
        let Some(state) = node.state.as_mut() else { return };
        node.traffic.received.add(frame.len());
        let message = Message::decode(frame).expect("the simulator only sends encoded messages");
        state.handle(self.base + self.now, InEvent::Message { from: sender, message });
        self.process(to);
    }

    /// Carries out node `i`'s pending outputs and queues its next timeout if that moved.
    fn process(&mut self, i: NodeId) {
        let Some(state) = self.nodes[i].state.as_mut() else { return };
        let out: Vec<OutEvent> = std::iter::from_fn(|| state.poll_event()).collect();
        let timeout = state.poll_timeout().map(|at| at.saturating_duration_since(self.base).max(self.now));
        if timeout != self.nodes[i].timeout {
            self.nodes[i].timeout = timeout;
            if let Some(at) = timeout {
                let generation = self.nodes[i].generation;
                self.push(at, Event::Timer { node: i as Small, generation });
            }
        }
        for event in out {
            match event {
                OutEvent::Send { to, message } => {
                    let to = self.index[&to];
                    let message = self.falsify(i, message);
                    self.send(i, to, &message);
                }
                OutEvent::ProbeTargetsChanged(_) | OutEvent::PeerAddressChanged { .. } => {}
                OutEvent::IncarnationChanged(incarnation) => {
                    self.nodes[i].incarnation = incarnation;
                    self.mix(&[Trace::Incarnation as u64, i as u64, incarnation]);
                }
                OutEvent::AnswerChanged(set) => {
                    if set.names != self.nodes[i].names {
                        self.name_changes.push((self.now, i));
                    }
                    self.nodes[i].names = set.names;
                    let mut members: Vec<NodeId> = set.members.iter().map(|k| self.index[k]).collect();
                    members.sort_unstable();
                    let old = std::mem::replace(&mut self.nodes[i].answer, members.clone());
                    for dropped in old.into_iter().filter(|m| !members.contains(m)) {
                        self.removals.push(Removal { at: self.now, node: i, dropped });
                    }
                    let mut words = vec![Trace::Answer as u64, i as u64, self.now.as_nanos() as u64];
                    words.extend(members.iter().map(|m| *m as u64));
                    self.mix(&words);
                    self.changes.push(AnswerChange { at: self.now, node: i, members });
                }
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: &Message) {
        let frame = message.encode();
        self.nodes[from].traffic.sent.add(frame.len());
        if matches!(message, Message::Push(_)) {
            self.nodes[from].traffic.sent_push.add(frame.len());
        }
        let link = self.link(from, to);
        if !link.up || self.group[from] != self.group[to] {
            return;
        }
        if link.loss > 0.0 && self.rng.random_bool(link.loss) {
            return;
        }
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.random_range(0..link.jitter.as_nanos() as u64))
        };
        let generation = self.nodes[to].generation;
        let (from, to, frame) = (from as Small, to as Small, frame.into_boxed_slice());
        self.push(self.now + link.latency + jitter, Event::Deliver { from, to, generation, frame });
    }

    /// Rewrites a falsifier's own observations in a push and re-signs them with its key.
    fn falsify(&self, i: NodeId, message: Message) -> Message {
        if let (Some(fake), Message::Observed(_)) =
            (self.nodes[i].lie.as_ref().and_then(|l| l.observed), &message)
        {
            return Message::Observed(fake);
        }
        let (Some(lie), Message::Push(list)) = (&self.nodes[i].lie, &message) else { return message };
        let node = &self.nodes[i];
        let list = list
            .iter()
            .map(|signed| {
                let Ok(mut obs) = signed.verify(fixtures::CLUSTER, |k| *k == node.public) else {
                    return signed.clone();
                };
                // The liar's own roster: the one its bitmaps are over.
                let Some(roster) = node.state.as_ref().map(State::roster) else { return signed.clone() };
                let claims =
                    lie.reachable.iter().map(|p| (p, true)).chain(lie.unreachable.iter().map(|p| (p, false)));
                for (&peer, reachable) in claims {
                    if let Some(at) = roster.index(&self.nodes[peer].public) {
                        obs.reachable.set(at, reachable && peer != i);
                    }
                }
                obs.sign(&node.key)
            })
            .collect::<Vec<SignedObservation>>();
        Message::Push(list)
    }

    fn push(&mut self, at: Duration, event: Event) {
        let at = u64::try_from(at.as_nanos()).expect("simulated time fits 584 years");
        let (kind, a, b) = match &event {
            Event::Deliver { from, to, .. } => (Trace::Deliver, u64::from(*from), u64::from(*to)),
            Event::Timer { node, .. } => (Trace::Timer, u64::from(*node), 0),
            Event::Action(_) => (Trace::Action, 0, 0),
            Event::Checks { node, .. } => (Trace::Checks, u64::from(*node), 0),
        };
        self.mix(&[at, kind as u64, a, b]);
        self.seq += 1;
        self.queue.push(Queued { at, seq: self.seq, event });
    }

    /// Folds `words` into the trace hash: one multiply-xor per word (a byte-wise FNV here cost
    /// eight multiplications per word on every queued event).
    fn mix(&mut self, words: &[u64]) {
        for &word in words {
            let t = (self.trace ^ word).wrapping_mul(TRACE_K);
            self.trace = t ^ (t >> 29);
        }
    }
}

/// What a word sequence folded into the trace hash records: one tag per kind, so two kinds of
/// event can never hash alike (a discriminant given twice does not compile).
#[derive(Clone, Copy)]
#[repr(u64)]
enum Trace {
    Deliver = 0,
    Timer = 1,
    Action = 2,
    Crash = 3,
    Boot = 4,
    Answer = 5,
    Checks = 6,
    Incarnation = 7,
    Reconfigure = 8,
}

const TRACE_START: u64 = 0xcbf2_9ce4_8422_2325;
/// An odd 64-bit constant with well-spread bits (the golden ratio's).
const TRACE_K: u64 = 0x9e37_79b9_7f4a_7c15;
