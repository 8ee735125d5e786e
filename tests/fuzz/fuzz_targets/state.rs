//! The protocol core under arbitrary input: message sequences from any roster member (and from
//! outsiders), forged, replayed, wrong-cluster and garbage observations and beats, spurious and
//! timeouts, health checks, and the passing of time (the harness keeps no timers: it fires the
//! core's timeout whenever `poll_timeout` comes due), into one `proto::State`.
//!
//! Checks after every event: nothing panics; the view holds only observations that verify, one
//! per roster member, never going back in version; outsiders change nothing; messages go only
//! to roster peers, stay within the frame limits and relay only valid observations; the answer
//! set follows the answer rule's hard guarantees (never empty, only roster members, only peers
//! this node's own current observation reports reachable — a peer its probing dropped since
//! stays at most one probe interval, until the coalesced publication — and addresses those of
//! the members' observations inside their pins).
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spdu_fuzz::{KEYS, ROSTER, check_observation, keys, roster_has};
use spdu_gossip::proto::{
    AnswerSet, BEAT_CONTEXT, Beat, CheckResult, Config, InEvent, MAX_ENTRIES, MAX_FRAME_BYTES, Message,
    OBSERVATION_CONTEXT, OutEvent, SignedBeat, SignedObservation, State, is_special_purpose,
};
use spdu_gossip::sim::fixtures::{CLUSTER, node_info, observation, roster, secret_key};
use spdu_keys::PublicKey;

/// The node under test restarted a few times already, so replays of older incarnations exist.
const INCARNATION: u64 = 3;

#[derive(Arbitrary, Debug)]
enum Op {
    Advance(u16),
    /// Calls `handle_timeout` now, due or not (nothing not due may fire).
    Timeout,
    SelfCheck(bool),
    /// A check that could not run (neither pass nor fail).
    SelfCheckUnknown,
    ServiceProbe {
        peer: u8,
        ok: bool,
    },
    Alive {
        from: u8,
        tag: u8,
    },
    Ping {
        from: u8,
        nonce: u32,
    },
    /// Answers an outstanding ping to `from` (or a made-up nonce if none is outstanding).
    Pong {
        from: u8,
        pick: u8,
    },
    Push {
        from: u8,
        list: Vec<ObsSpec>,
    },
    /// Sends back an observation seen earlier (replay).
    Replay {
        from: u8,
        pick: u16,
    },
    Beat {
        from: u8,
        beats: Vec<BeatSpec>,
    },
    Want {
        from: u8,
        who: Vec<u8>,
    },
    Digest {
        from: u8,
        versions: Vec<(u8, u8, u8)>,
        reply: bool,
    },
    Summary {
        from: u8,
        hash: u64,
    },
    /// The same Want many times at one instant: answered at most once.
    WantFlood {
        from: u8,
        who: u8,
        times: u16,
    },
    /// Differing summaries many times at one instant: one digest at most.
    SummaryFlood {
        from: u8,
        times: u16,
    },
    /// Digests many times at one instant: one push and one reply at most.
    DigestFlood {
        from: u8,
        times: u16,
        reply: bool,
    },
    /// One observation (often a forged newer claim) repeated up to the frame's entry limit.
    BigPush {
        from: u8,
        spec: ObsSpec,
        copies: u16,
    },
    /// A peer says it sees our connections come from 198.18.0.`ip`:`port` (0 is unusable).
    Observed {
        from: u8,
        ip: u8,
        port: u16,
    },
    /// The driver reports where a peer's connection comes from.
    RemoteAddress {
        peer: u8,
        ip: u8,
        port: u16,
    },
    /// A peer says it holds our observation at this version (near the top of the range when
    /// `huge`).
    Superseded {
        from: u8,
        incarnation: u8,
        seq: u8,
        huge: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct ObsSpec {
    observer: u8,
    signer: u8,
    other_cluster: bool,
    incarnation: u8,
    seq: u8,
    healthy: bool,
    addresses: Vec<[u8; 4]>,
    reports: Vec<(u8, bool)>,
    /// Over the node's roster (else over all fixture keys, which has another id).
    same_roster: bool,
    /// Raw bytes for the reachable bitmap (often not canonical).
    raw_bits: Option<Vec<u8>>,
    garbage: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct BeatSpec {
    observer: u8,
    signer: u8,
    other_cluster: bool,
    incarnation: u8,
    seq: u8,
    beat: u8,
}

fn key(i: u8) -> PublicKey {
    keys()[usize::from(i) % KEYS]
}

impl ObsSpec {
    fn build(&self) -> SignedObservation {
        let observer = usize::from(self.observer) % KEYS;
        let signer = secret_key(usize::from(self.signer) % KEYS);
        let cluster = if self.other_cluster { "elsewhere" } else { CLUSTER };
        let n = if self.same_roster { ROSTER } else { KEYS };
        let reports: Vec<(usize, bool)> = self
            .reports
            .iter()
            .take(8)
            .map(|(p, r)| (usize::from(*p) % n, *r))
            .filter(|(p, _)| *p != observer)
            .collect();
        // The fixture needs the observer in the roster its bitmaps are over.
        let mut obs = observation(observer, n.max(observer + 1), self.healthy, &reports);
        if let Some(bits) = &self.raw_bits {
            obs.reachable.0 = bits.iter().take(8).copied().collect();
        }
        obs.cluster = cluster.to_owned();
        obs.incarnation = u64::from(self.incarnation % 8);
        obs.seq = u64::from(self.seq);
        if !self.addresses.is_empty() {
            obs.addresses = self.addresses.iter().take(4).map(|a| IpAddr::V4(Ipv4Addr::from(*a))).collect();
        }
        let body = match &self.garbage {
            Some(garbage) => garbage.clone(),
            None => postcard::to_stdvec(&obs).expect("encodes"),
        };
        // Signed by hand: `Observation::sign` asserts signer == observer, forging must not.
        let signature = signer.sign(OBSERVATION_CONTEXT, cluster, &body);
        SignedObservation { body, signature }
    }
}

impl BeatSpec {
    fn build(&self) -> SignedBeat {
        let beat = Beat {
            observer: key(self.observer),
            incarnation: u64::from(self.incarnation % 8),
            seq: u64::from(self.seq),
            beat: u64::from(self.beat),
        };
        let signer = secret_key(usize::from(self.signer) % KEYS);
        let cluster = if self.other_cluster { "elsewhere" } else { CLUSTER };
        let payload = postcard::to_stdvec(&beat).expect("encodes");
        SignedBeat { signature: signer.sign(BEAT_CONTEXT, cluster, &payload), beat }
    }
}

struct Harness {
    state: State,
    me: PublicKey,
    now: Instant,
    pings: BTreeMap<PublicKey, Vec<u32>>,
    seen: Vec<SignedObservation>,
    versions: BTreeMap<PublicKey, (u64, u64)>,
    answer: AnswerSet,
    /// Pushes and digests sent to each peer so far.
    pushes: BTreeMap<PublicKey, usize>,
    digests: BTreeMap<PublicKey, usize>,
    incarnation: u64,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let config = Config::default();
        let state = State::new(node_info(0, INCARNATION), roster(ROSTER), config, 7, now);
        let me = state.key();
        let mut h = Harness {
            state,
            me,
            now,
            pings: BTreeMap::new(),
            seen: Vec::new(),
            versions: BTreeMap::new(),
            answer: AnswerSet::default(),
            pushes: BTreeMap::new(),
            digests: BTreeMap::new(),
            incarnation: INCARNATION,
        };
        h.apply();
        h
    }

    fn handle(&mut self, event: InEvent) {
        let from_outsider = match &event {
            InEvent::Message { from, .. } => !roster_has(from) || *from == self.me,
            _ => false,
        };
        let before = self.state.stats().clone();
        let timeout = self.state.poll_timeout();
        self.state.handle(self.now, event);
        if from_outsider {
            let out: Vec<OutEvent> = std::iter::from_fn(|| self.state.poll_event()).collect();
            assert!(out.is_empty(), "a message from a non-member had effects: {out:?}");
            assert_eq!(self.state.stats().accepted, before.accepted);
            assert_eq!(self.state.poll_timeout(), timeout, "a message from a non-member moved a timer");
        }
        self.apply();
    }

    fn apply(&mut self) {
        while let Some(event) = self.state.poll_event() {
            match event {
                OutEvent::Send { to, message } => self.check_send(to, message),
                OutEvent::AnswerChanged(answer) => {
                    assert!(answer.version > self.answer.version, "answer version went back");
                    self.answer = answer;
                }
                OutEvent::ProbeTargetsChanged(targets) => {
                    assert_eq!(self.state.probe_targets(), &targets[..]);
                    for t in &targets {
                        assert!(roster_has(&t.peer) && t.peer != self.me, "probe target not a peer");
                        assert!(!is_special_purpose(t.addr), "probe target at a special-purpose address");
                    }
                }
                OutEvent::IncarnationChanged(incarnation) => {
                    assert!(incarnation > self.incarnation && incarnation <= u64::MAX / 2, "incarnation {incarnation}");
                    assert_eq!(incarnation, self.state.incarnation());
                    self.incarnation = incarnation;
                }
                OutEvent::PeerAddressChanged { peer, addr } => {
                    assert!(roster_has(&peer) && peer != self.me, "address of a non-member");
                    assert!(addr.port() != 0 && !is_special_purpose(addr.ip()), "unusable address {addr}");
                }
            }
        }
        assert!(
            self.state.poll_timeout().is_some_and(|at| at > self.now),
            "no timeout armed, or one left overdue"
        );
        self.check_state();
    }

    fn check_send(&mut self, to: PublicKey, message: Message) {
        assert!(to != self.me && roster_has(&to), "message to a non-member");
        let frame = message.encode();
        assert!(frame.len() <= MAX_FRAME_BYTES, "sent a {}-byte frame no peer accepts", frame.len());
        assert_eq!(Message::decode(&frame).as_ref(), Ok(&message), "sent a frame peers cannot decode");
        match message {
            Message::Ping { nonce } => self.pings.entry(to).or_default().push(nonce),
            Message::Digest { .. } => *self.digests.entry(to).or_default() += 1,
            Message::Push(_) => *self.pushes.entry(to).or_default() += 1,
            _ => {}
        }
        match message {
            Message::Ping { .. } => {}
            Message::Push(list) => {
                assert!(list.len() <= MAX_ENTRIES);
                let mut observers = Vec::new();
                for signed in &list {
                    let obs = check_observation(signed, CLUSTER, roster_has)
                        .expect("relayed an observation that does not verify");
                    observers.push(obs.observer);
                    if self.seen.len() < 256 {
                        self.seen.push(signed.clone());
                    }
                }
                observers.sort();
                let n = observers.len();
                observers.dedup();
                assert_eq!(observers.len(), n, "one push carries an observer twice");
            }
            Message::Beat(beats) => {
                assert!(beats.len() <= MAX_ENTRIES);
                for b in &beats {
                    assert!(roster_has(&b.beat.observer), "relayed a beat of a non-member");
                    assert_eq!(b.verify(CLUSTER), Ok(()), "relayed a beat that does not verify");
                }
            }
            Message::Want(list) => assert!(list.len() <= MAX_ENTRIES),
            Message::Digest { versions, .. } => assert!(versions.len() <= MAX_ENTRIES),
            _ => {}
        }
    }

    fn check_state(&mut self) {
        let state = &self.state;
        for (i, k) in keys().iter().enumerate() {
            let Some(signed) = state.signed_observation(k) else { continue };
            assert!(i < ROSTER, "view holds an outsider");
            let obs =
                check_observation(signed, CLUSTER, roster_has).expect("view holds an invalid observation");
            assert_eq!(obs.observer, *k, "view entry under the wrong key");
            assert_eq!(Some(&obs), state.observation(k));
            if *k == self.me {
                assert_eq!(obs.incarnation, state.incarnation(), "own observation replaced");
                let usable = |a: SocketAddr| a.port() != 0 && !is_special_purpose(a.ip());
                assert!(obs.observed.is_none_or(usable), "signed an unusable observed address");
            }
            let last = self.versions.entry(*k).or_insert(obs.version());
            assert!(obs.version() >= *last, "view went back in version for node {i}");
            *last = obs.version();
        }
        let answer = state.answer();
        assert_eq!(*answer, self.answer, "answer() differs from the last AnswerChanged");
        assert!(!answer.members.is_empty(), "empty answer (must fail open)");
        let mut unique = answer.members.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), answer.members.len(), "a member twice in the answer");
        let mine = state.observation(&self.me).expect("own observation");
        let interval = Config::default().probe_interval;
        for m in &answer.members {
            assert!(roster_has(m), "non-member in the answer");
            if *m == self.me {
                continue;
            }
            // The answer follows this node's published observation, which follows its probing
            // within one probe interval (changes are coalesced into one publication).
            let report = mine.report(state.roster(), m).expect("a report on every peer");
            assert!(report.reachable, "answer has a peer this node's observation does not report reachable");
            let link = state.link(m).expect("a peer");
            assert!(
                link.reachable || self.now < link.since + interval,
                "answer still has a peer this node dropped more than one interval ago"
            );
        }
        if state.observation(&self.me).is_some_and(|o| o.healthy) {
            assert_eq!(answer.members[0], self.me, "healthy node left out of its own answer");
        }
        let addresses: Vec<IpAddr> = answer
            .members
            .iter()
            .filter_map(|k| state.observation(k))
            .flat_map(|o| {
                let pins = state.members().find(|m| m.key == o.observer).map(|m| m.addresses.clone());
                o.addresses.iter().copied().filter(move |a| match &pins {
                    None => true,
                    Some(pins) => !is_special_purpose(*a) && pins.iter().any(|p| p.contains(*a)),
                })
            })
            .collect();
        assert_eq!(answer.addresses, addresses, "answer addresses do not match the members' pinned ones");
    }

    /// Lets time pass, firing the core's timeouts as they come due (each at its own time).
    fn advance(&mut self, ms: u16) {
        let until = self.now + Duration::from_millis(u64::from(ms % 3000));
        while let Some(at) = self.state.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.state.handle_timeout(self.now);
            self.apply();
        }
        self.now = until;
    }

    /// (pushes, digests) sent to `from` so far.
    fn sent(&self, from: u8) -> (usize, usize) {
        let k = key(from);
        (self.pushes.get(&k).copied().unwrap_or(0), self.digests.get(&k).copied().unwrap_or(0))
    }

    fn message(&mut self, from: u8, message: Message) {
        self.handle(InEvent::Message { from: key(from), message });
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Advance(ms) => self.advance(ms),
            Op::Timeout => {
                let due = self.state.poll_timeout();
                self.state.handle_timeout(self.now);
                assert_eq!(self.state.poll_timeout(), due, "a timeout fired before it was due");
                self.apply();
            }
            Op::SelfCheck(ok) => self.handle(InEvent::SelfCheck(check(ok))),
            Op::SelfCheckUnknown => self.handle(InEvent::SelfCheck(CheckResult::unknown("EMFILE"))),
            Op::ServiceProbe { peer, ok } => {
                self.handle(InEvent::ServiceProbe { peer: key(peer), result: check(ok) })
            }
            Op::Alive { from, tag } => self.message(from, Message::Alive(tag)),
            Op::Ping { from, nonce } => self.message(from, Message::Ping { nonce }),
            Op::Pong { from, pick } => {
                let pings = self.pings.entry(key(from)).or_default();
                let nonce = if pings.is_empty() {
                    u32::from(pick)
                } else {
                    pings.remove(usize::from(pick) % pings.len())
                };
                self.message(from, Message::Pong { nonce });
            }
            Op::Push { from, list } => {
                let list = list.iter().take(8).map(ObsSpec::build).collect();
                self.message(from, Message::Push(list));
            }
            Op::Replay { from, pick } => {
                if !self.seen.is_empty() {
                    let signed = self.seen[usize::from(pick) % self.seen.len()].clone();
                    self.message(from, Message::Push(vec![signed]));
                }
            }
            Op::Beat { from, beats } => {
                let beats = beats.iter().take(8).map(BeatSpec::build).collect();
                self.message(from, Message::Beat(beats));
            }
            Op::Want { from, who } => {
                let who = who.iter().take(64).map(|i| key(*i)).collect();
                self.message(from, Message::Want(who));
            }
            Op::Digest { from, versions, reply } => {
                let versions = versions
                    .iter()
                    .take(8)
                    .map(|(k, inc, seq)| (key(*k), u64::from(*inc % 8), u64::from(*seq)))
                    .collect();
                self.message(from, Message::Digest { versions, reply });
            }
            Op::Summary { from, hash } => self.message(from, Message::Summary(hash)),
            Op::WantFlood { from, who, times } => {
                let sent = self.sent(from);
                for _ in 0..times % 512 {
                    self.message(from, Message::Want(vec![key(who)]));
                }
                assert!(self.sent(from).0 - sent.0 <= 1, "a Want flood answered more than once");
            }
            Op::SummaryFlood { from, times } => {
                let sent = self.sent(from);
                for k in 0..times % 512 {
                    self.message(from, Message::Summary(u64::from(k)));
                }
                assert!(self.sent(from).1 - sent.1 <= 1, "a summary flood answered more than once");
            }
            Op::DigestFlood { from, times, reply } => {
                let sent = self.sent(from);
                let versions: Vec<_> = (0..ROSTER).map(|i| (key(i as u8), 0, 0)).collect();
                for _ in 0..times % 512 {
                    self.message(from, Message::Digest { versions: versions.clone(), reply });
                }
                let now = self.sent(from);
                assert!(now.0 - sent.0 <= 1 && now.1 - sent.1 <= 1, "a digest flood answered more than once");
            }
            Op::BigPush { from, spec, copies } => {
                let signed = spec.build();
                let list = vec![signed; usize::from(copies) % (MAX_ENTRIES + 1)];
                let before = self.state.stats().clone();
                self.message(from, Message::Push(list));
                let after = self.state.stats();
                let checked = |s: &spdu_gossip::proto::Stats| s.accepted + s.bad_signature + s.self_conflict;
                assert!(checked(after) - checked(&before) <= 1, "one observer's claims verified more than once");
            }
            Op::Observed { from, ip, port } => {
                self.message(from, Message::Observed(SocketAddr::from(([198, 18, 0, ip], port))));
            }
            Op::RemoteAddress { peer, ip, port } => {
                let addr = SocketAddr::from(([198, 18, 0, ip], port));
                self.handle(InEvent::RemoteAddress { peer: key(peer), addr });
            }
            Op::Superseded { from, incarnation, seq, huge } => {
                let base = if huge { u64::MAX / 2 - 1 } else { 0 };
                let incarnation = base + u64::from(incarnation % 8);
                self.message(from, Message::Superseded { incarnation, seq: u64::from(seq) });
            }
        }
    }
}

fn check(ok: bool) -> CheckResult {
    if ok { CheckResult::pass(Duration::from_millis(1)) } else { CheckResult::fail("down") }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut h = Harness::new();
    for op in ops.into_iter().take(256) {
        h.op(op);
    }
});
