//! The node's event log: what changed, as this node sees it, numbered and timestamped.
//!
//! [`watch`] is the one producer: it takes a [`ViewSnapshot`] whenever the answer set changes
//! and at least every [`SNAPSHOT_EVERY`], reduces it to what events are about ([`Seen`]), and
//! diffs successive ones ([`Differ`]) into [`Event`]s: a name's answer changed, a peer became
//! unreachable or reachable from here or its votes crossed the quorum, this node's own service
//! check flipped, a peer's roster or policy stopped or started agreeing with this node's.
//!
//! [`EventLog`] keeps the last [`KEPT`] events (`GET /v1/events`) and broadcasts each new one
//! (the notification hooks). Invariants: `seq` starts at 1 for each run of the node and grows by
//! one per event; the first snapshot is the baseline and yields no event except a disagreement
//! or a failing own check that already holds (nothing else is a change yet).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use spdu_gossip::net::Membership;
use spdu_gossip::proto::{PolicyDigest, Quorum};
use spdu_gossip::snapshot::ViewSnapshot;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many events [`EventLog::recent`] keeps.
pub const KEPT: usize = 200;
/// Longest time between two snapshots [`watch`] takes.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// Events a subscriber may fall behind by before it misses some.
const BROADCAST_CAPACITY: usize = 1024;

/// What an event is about (its JSON `event` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A name's answer changed.
    Answer,
    /// A peer became unreachable/reachable from here, or lost/regained quorum.
    Peer,
    /// This node's own service check changed its verdict.
    Health,
    /// A peer's roster or policy disagreement appeared or went away.
    Roster,
}

impl EventKind {
    /// Every kind, in the order the config names them.
    pub const ALL: [EventKind; 4] =
        [EventKind::Answer, EventKind::Peer, EventKind::Health, EventKind::Roster];

    /// Its name in JSON, in the config and in `SPDU_EVENT_KIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Answer => "answer",
            EventKind::Peer => "peer",
            EventKind::Health => "health",
            EventKind::Roster => "roster",
        }
    }

    /// The kind called `name`.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event (the JSON shape is an interface: `/v1/events`, webhooks, command hooks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1 for the first event of this run, then one more per event.
    pub seq: u64,
    /// When it was recorded, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The node that recorded it.
    pub node: String,
    /// Its cluster id.
    pub cluster: String,
    /// What it is about.
    pub event: EventKind,
    /// One line for people.
    pub summary: String,
    /// The kind's details (see docs/design.md, "Events and notifications").
    pub detail: serde_json::Value,
}

/// The last [`KEPT`] events and a broadcast of each new one. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<Inner>,
    /// The quorum [`watch`] judges votes by (the answer rule's).
    quorum: Quorum,
}

#[derive(Debug)]
struct Inner {
    node: String,
    cluster: String,
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Event>,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    events: VecDeque<Event>,
}

impl EventLog {
    /// An empty log for node `node` of cluster `cluster`; quorum judged as `timing.quorum`'s
    /// default ([`Quorum::Half`]) unless set with [`Self::with_quorum`].
    pub fn new(node: String, cluster: String) -> EventLog {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let inner = Inner { node, cluster, ring: Mutex::default(), sender };
        EventLog { inner: Arc::new(inner), quorum: Quorum::default() }
    }

    /// The same log with the answer rule's quorum (`timing.quorum`), for `quorum_*` events.
    pub fn with_quorum(self, quorum: Quorum) -> EventLog {
        EventLog { quorum, ..self }
    }

    /// The quorum `quorum_*` events are judged by.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// Records an event now: numbers it, keeps it, broadcasts it, and returns it.
    pub fn record(&self, kind: EventKind, summary: String, detail: serde_json::Value) -> Event {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let unix_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let mut ring = self.inner.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_seq += 1;
        let event = Event {
            seq: ring.last_seq,
            time: rfc3339_ms(unix_ms),
            unix_ms,
            node: self.inner.node.clone(),
            cluster: self.inner.cluster.clone(),
            event: kind,
            summary,
            detail,
        };
        if ring.events.len() == KEPT {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock so that subscribers see events in `seq` order; no receiver is fine.
        let _ = self.inner.sender.send(event.clone());
        event
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.inner.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.events.iter().cloned().collect()
    }

    /// Every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.sender.subscribe()
    }
}

/// `unix_ms` as `2026-12-07T19:01:02.345Z`.
fn rfc3339_ms(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The producer: records the events between successive snapshots of `membership` until
/// `shutdown` is cancelled or membership stops. A snapshot is taken at once when the answer set
/// changes, and at least every [`SNAPSHOT_EVERY`].
pub async fn watch(membership: Membership, log: EventLog, shutdown: CancellationToken) {
    let mut answers = membership.answers();
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut differ = Differ::default();
    let quorum = log.quorum();
    loop {
        let snapshot = tokio::select! {
            () = shutdown.cancelled() => break,
            snapshot = membership.snapshot() => snapshot,
        };
        let Some(snapshot) = snapshot else { break };
        for change in differ.next(Seen::of(&snapshot, quorum)) {
            log.record(change.kind, change.summary, change.detail);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = answers.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        answers.borrow_and_update();
    }
}

/// What events are about, reduced from one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    /// Per pool name, what it answers with.
    pub names: Vec<NameSeen>,
    /// This node: its own service check verdict and latest error.
    pub me: SiteSeen,
    /// Every roster peer, by name.
    pub peers: BTreeMap<String, SiteSeen>,
}

/// One name's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameSeen {
    /// The rule's name.
    pub name: String,
    /// Its sites and their addresses, in answer order.
    pub sites: Vec<(String, Vec<String>)>,
    /// Its TTL.
    pub ttl: u32,
}

/// One site as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteSeen {
    /// Its name.
    pub name: String,
    /// This node's probing of it (none for this node, or before any probe).
    pub reachable: Option<bool>,
    /// Smoothed probe round-trip time.
    pub rtt_us: Option<u64>,
    /// Live observers other than it that see it reachable.
    pub votes_yes: usize,
    /// Live observers other than it that report on it.
    pub voters: usize,
    /// Whether those votes reach the answer rule's quorum.
    pub quorum: bool,
    /// Its service: for this node its own check's verdict, for a peer what it says of itself.
    pub healthy: Option<bool>,
    /// The latest error of this node's own check (this node only).
    pub health_error: Option<String>,
    /// Its newest observation is over this node's roster (none without an observation).
    pub same_roster: Option<bool>,
    /// Its newest observation carries this node's policy digest (none without an observation
    /// or from a node that signs no digest).
    pub same_policy: Option<bool>,
}

impl Seen {
    /// Reduces `snapshot`, judging votes by `quorum`.
    pub fn of(snapshot: &ViewSnapshot, quorum: Quorum) -> Seen {
        let names = (snapshot.answer.names.iter())
            .map(|n| NameSeen {
                name: n.name.clone(),
                sites: (n.sites.iter())
                    .map(|s| (s.name.clone(), s.addresses.iter().map(ToString::to_string).collect()))
                    .collect(),
                ttl: n.ttl,
            })
            .collect();
        let mut me = SiteSeen { name: snapshot.name.clone(), ..SiteSeen::default() };
        let mut peers = BTreeMap::new();
        for node in &snapshot.nodes {
            let observation = node.observation.as_ref();
            let site = SiteSeen {
                name: node.name.clone(),
                reachable: node.probe.as_ref().map(|p| p.reachable),
                rtt_us: node.probe.as_ref().and_then(|p| p.rtt_us),
                votes_yes: node.seen_reachable_by.len(),
                voters: node.voters.len(),
                quorum: quorum.reached(node.seen_reachable_by.len(), node.voters.len()),
                healthy: if node.is_self {
                    node.health.as_ref().map(|h| h.ok)
                } else {
                    observation.map(|o| o.observation.healthy)
                },
                health_error: node.health.as_ref().and_then(|h| h.error.clone()),
                same_roster: observation.map(|o| o.same_roster),
                same_policy: observation
                    .map(|o| o.observation.policy)
                    .filter(|p| *p != PolicyDigest::default())
                    .map(|p| p == snapshot.policy),
            };
            if node.is_self {
                me = site;
            } else {
                peers.insert(node.name.clone(), site);
            }
        }
        Seen { names, me, peers }
    }
}

/// One event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Its kind.
    pub kind: EventKind,
    /// Its summary.
    pub summary: String,
    /// Its detail.
    pub detail: serde_json::Value,
}

/// Turns successive [`Seen`]s into [`Change`]s.
#[derive(Debug, Default)]
pub struct Differ {
    last: Option<Seen>,
}

impl Differ {
    /// The changes from the previous `Seen` to `seen` (the first one is the baseline).
    pub fn next(&mut self, seen: Seen) -> Vec<Change> {
        let mut changes = Vec::new();
        let before = self.last.take();
        let old = before.as_ref();
        if let Some(old) = old {
            answer_changes(old, &seen, &mut changes);
        }
        health_changes(old.map(|o| &o.me), &seen.me, &mut changes);
        for (name, peer) in &seen.peers {
            let was = old.and_then(|o| o.peers.get(name));
            peer_changes(was, peer, &mut changes);
            roster_changes(was, peer, &mut changes);
        }
        self.last = Some(seen);
        changes
    }
}

fn sites_json(sites: &[(String, Vec<String>)]) -> serde_json::Value {
    (sites.iter()).map(|(site, addresses)| json!({"site": site, "addresses": addresses})).collect()
}

fn answer_changes(old: &Seen, new: &Seen, changes: &mut Vec<Change>) {
    for name in &new.names {
        // Only names answered before and after: the first answer and a removed rule are no change.
        let Some(was) = old.names.iter().find(|n| n.name == name.name) else { continue };
        if was == name {
            continue;
        }
        // Each reason twice: for `why` ("beta left: …") and for the summary ("beta left the
        // answer (…)").
        let mut why: Vec<(String, String)> = Vec::new();
        let left = was.sites.iter().filter(|(s, _)| !name.sites.iter().any(|(n, _)| n == s));
        for (site, _) in left {
            let reason = new.why_out(site);
            why.push((format!("{site} left: {reason}"), format!("{site} left the answer ({reason})")));
        }
        let joined = name.sites.iter().filter(|(s, _)| !was.sites.iter().any(|(n, _)| n == s));
        for (site, _) in joined {
            let reason = new.why_in(site);
            why.push((format!("{site} joined: {reason}"), format!("{site} joined the answer ({reason})")));
        }
        let mut plain = |text: String| why.push((text.clone(), text));
        for (site, addresses) in &name.sites {
            let before = was.sites.iter().find(|(s, _)| s == site);
            if before.is_some_and(|(_, a)| a != addresses) {
                plain(format!("{site}'s addresses changed"));
            }
        }
        let membership_same = was.sites.len() == name.sites.len()
            && was.sites.iter().all(|(s, _)| name.sites.iter().any(|(n, _)| n == s));
        let order_changed =
            membership_same && was.sites.iter().map(|(s, _)| s).ne(name.sites.iter().map(|(s, _)| s));
        if order_changed {
            plain("the policy reordered the sites".to_owned());
        }
        if was.ttl != name.ttl {
            plain(format!("TTL {} -> {}", was.ttl, name.ttl));
        }
        let summary = why.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; ");
        let why = why.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join("; ");
        changes.push(Change {
            kind: EventKind::Answer,
            summary: format!("{}: {summary}", name.name),
            detail: json!({
                "name": name.name,
                "old": sites_json(&was.sites),
                "new": sites_json(&name.sites),
                "ttl": name.ttl,
                "why": why,
            }),
        });
    }
}

impl Seen {
    fn site(&self, name: &str) -> Option<&SiteSeen> {
        if self.me.name == name { Some(&self.me) } else { self.peers.get(name) }
    }

    /// Why `site` is not in an answer (as of this view).
    fn why_out(&self, site: &str) -> String {
        let Some(s) = self.site(site) else { return "no longer in the roster".to_owned() };
        let votes = format!("seen by {} of {} live observers", s.votes_yes, s.voters);
        if s.name == self.me.name {
            return match s.healthy {
                Some(false) => format!("its own service check fails{}", error_suffix(&s.health_error)),
                _ => "the policy chose other sites".to_owned(),
            };
        }
        match (s.reachable, s.healthy, s.quorum) {
            (Some(false) | None, _, _) => format!("unreachable from here: {votes}"),
            (_, Some(false), _) => "reports its own service unhealthy".to_owned(),
            (_, None, _) => "no observation of it".to_owned(),
            (_, _, false) => format!("short of the quorum: {votes}"),
            _ => "the policy chose other sites".to_owned(),
        }
    }

    /// Why `site` is in an answer (as of this view).
    fn why_in(&self, site: &str) -> String {
        match self.site(site) {
            Some(s) if s.name == self.me.name => "this node, its own check passes".to_owned(),
            Some(s) => format!("reachable, healthy, seen by {} of {} live observers", s.votes_yes, s.voters),
            None => "not in the roster".to_owned(),
        }
    }
}

fn error_suffix(error: &Option<String>) -> String {
    error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

fn health_changes(old: Option<&SiteSeen>, new: &SiteSeen, changes: &mut Vec<Change>) {
    let was = old.and_then(|o| o.healthy);
    let Some(healthy) = new.healthy else { return };
    // The first verdict is news only when it is a failure.
    if was == Some(healthy) || (was.is_none() && healthy) {
        return;
    }
    let detail = new.health_error.clone().unwrap_or_default();
    let summary = if healthy {
        format!("{}: own service check passes again", new.name)
    } else {
        format!("{}: own service check fails{}", new.name, error_suffix(&new.health_error))
    };
    changes.push(Change {
        kind: EventKind::Health,
        summary,
        detail: json!({"site": new.name, "healthy": healthy, "detail": detail}),
    });
}

fn peer_changes(old: Option<&SiteSeen>, new: &SiteSeen, changes: &mut Vec<Change>) {
    let Some(old) = old else { return };
    let votes = format!("seen by {} of {} live observers", new.votes_yes, new.voters);
    let mut push = |change: &str, summary: String| {
        changes.push(Change {
            kind: EventKind::Peer,
            summary,
            detail: json!({"peer": new.name, "change": change, "rtt_us": new.rtt_us}),
        });
    };
    match (old.reachable, new.reachable) {
        (Some(true), Some(false)) => {
            push("unreachable", format!("{} became unreachable from here", new.name))
        }
        (Some(false) | None, Some(true)) => {
            let rtt = new.rtt_us.map(|us| format!(" (rtt {:.1} ms)", us as f64 / 1000.0)).unwrap_or_default();
            push("reachable", format!("{} became reachable from here{rtt}", new.name));
        }
        _ => {}
    }
    match (old.quorum, new.quorum) {
        (true, false) => push("quorum_lost", format!("{} lost quorum: {votes}", new.name)),
        (false, true) => push("quorum_regained", format!("{} regained quorum: {votes}", new.name)),
        _ => {}
    }
}

fn roster_changes(old: Option<&SiteSeen>, new: &SiteSeen, changes: &mut Vec<Change>) {
    let mut push = |change: &str, summary: String| {
        changes.push(Change {
            kind: EventKind::Roster,
            summary,
            detail: json!({"peer": new.name, "change": change}),
        });
    };
    let was = old.and_then(|o| o.same_roster);
    match (was, new.same_roster) {
        (Some(true) | None, Some(false)) => {
            push(
                "roster_differs",
                format!("{}'s roster differs from this node's (it has no vote)", new.name),
            );
        }
        (Some(false), Some(true)) => push("roster_agrees", format!("{}'s roster agrees again", new.name)),
        _ => {}
    }
    let was = old.and_then(|o| o.same_policy);
    match (was, new.same_policy) {
        (Some(true) | None, Some(false)) => {
            push("policy_differs", format!("{}'s failover policies differ from this node's", new.name));
        }
        (Some(false), Some(true)) => {
            push("policy_agrees", format!("{}'s failover policies agree again", new.name))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> SiteSeen {
        SiteSeen {
            name: name.into(),
            reachable: Some(true),
            rtt_us: Some(1500),
            votes_yes: 2,
            voters: 2,
            quorum: true,
            healthy: Some(true),
            health_error: None,
            same_roster: Some(true),
            same_policy: Some(true),
        }
    }

    fn api(sites: &[(&str, &str)], ttl: u32) -> NameSeen {
        NameSeen {
            name: "api".into(),
            sites: sites.iter().map(|(s, a)| ((*s).to_owned(), vec![(*a).to_owned()])).collect(),
            ttl,
        }
    }

    /// alpha's view of a healthy three-site cluster answering `api` with all three.
    fn healthy() -> Seen {
        let me = SiteSeen { reachable: None, rtt_us: None, ..peer("alpha") };
        let all = api(&[("alpha", "127.0.0.1"), ("beta", "127.0.0.2"), ("gamma", "127.0.0.3")], 5);
        Seen {
            names: vec![all],
            me,
            peers: [("beta".to_owned(), peer("beta")), ("gamma".to_owned(), peer("gamma"))].into(),
        }
    }

    fn kinds(changes: &[Change]) -> Vec<(EventKind, String)> {
        let change = |c: &Change| c.detail.get("change").and_then(|v| v.as_str()).unwrap_or("").to_owned();
        changes.iter().map(|c| (c.kind, change(c))).collect()
    }

    #[test]
    fn the_first_view_is_the_baseline_and_an_unchanged_one_says_nothing() {
        let mut differ = Differ::default();
        assert!(differ.next(healthy()).is_empty());
        assert!(differ.next(healthy()).is_empty());
    }

    #[test]
    fn a_site_that_goes_unreachable_leaves_the_answer_with_why_and_loses_quorum() {
        let mut differ = Differ::default();
        differ.next(healthy());
        let mut down = healthy();
        let beta = down.peers.get_mut("beta").unwrap();
        (beta.reachable, beta.votes_yes, beta.quorum) = (Some(false), 0, false);
        down.names = vec![api(&[("alpha", "127.0.0.1"), ("gamma", "127.0.0.3")], 1)];
        let changes = differ.next(down);
        assert_eq!(
            kinds(&changes),
            vec![
                (EventKind::Answer, String::new()),
                (EventKind::Peer, "unreachable".into()),
                (EventKind::Peer, "quorum_lost".into())
            ]
        );
        let answer = &changes[0];
        let why = "beta left: unreachable from here: seen by 0 of 2 live observers; TTL 5 -> 1";
        assert_eq!(
            answer.summary,
            "api: beta left the answer (unreachable from here: seen by 0 of 2 live observers); TTL 5 -> 1"
        );
        assert_eq!(
            answer.detail,
            json!({
                "name": "api",
                "old": [{"site": "alpha", "addresses": ["127.0.0.1"]},
                        {"site": "beta", "addresses": ["127.0.0.2"]},
                        {"site": "gamma", "addresses": ["127.0.0.3"]}],
                "new": [{"site": "alpha", "addresses": ["127.0.0.1"]},
                        {"site": "gamma", "addresses": ["127.0.0.3"]}],
                "ttl": 1,
                "why": why,
            })
        );
        assert_eq!(changes[1].detail, json!({"peer": "beta", "change": "unreachable", "rtt_us": 1500}));

        // Back: reachable, quorum regained, joined.
        let changes = differ.next(healthy());
        assert_eq!(
            kinds(&changes),
            vec![
                (EventKind::Answer, String::new()),
                (EventKind::Peer, "reachable".into()),
                (EventKind::Peer, "quorum_regained".into())
            ]
        );
        assert_eq!(
            changes[0].summary,
            "api: beta joined the answer (reachable, healthy, seen by 2 of 2 live observers); TTL 1 -> 5"
        );
    }

    #[test]
    fn why_a_reachable_site_left_names_its_health_or_the_quorum() {
        let mut differ = Differ::default();
        differ.next(healthy());
        let mut sick = healthy();
        sick.peers.get_mut("beta").unwrap().healthy = Some(false);
        let short = sick.peers.get_mut("gamma").unwrap();
        (short.votes_yes, short.quorum) = (0, false);
        sick.names = vec![api(&[("alpha", "127.0.0.1")], 1)];
        let changes = differ.next(sick);
        assert_eq!(
            changes[0].detail["why"],
            "beta left: reports its own service unhealthy; \
             gamma left: short of the quorum: seen by 0 of 2 live observers; TTL 5 -> 1"
        );
        assert_eq!(kinds(&changes[1..]), vec![(EventKind::Peer, "quorum_lost".into())]);
    }

    #[test]
    fn own_health_flips_are_events_and_explain_this_node_leaving() {
        let mut differ = Differ::default();
        differ.next(healthy());
        let mut failing = healthy();
        failing.me.healthy = Some(false);
        failing.me.health_error = Some("http: connection refused".into());
        failing.names = vec![api(&[("beta", "127.0.0.2"), ("gamma", "127.0.0.3")], 5)];
        let changes = differ.next(failing);
        assert_eq!(
            changes[0].detail["why"],
            "alpha left: its own service check fails: http: connection refused"
        );
        assert_eq!(
            changes[1].detail,
            json!({"site": "alpha", "healthy": false, "detail": "http: connection refused"})
        );
        assert_eq!(changes[1].summary, "alpha: own service check fails: http: connection refused");
        let changes = differ.next(healthy());
        assert_eq!(changes[0].detail["why"], "alpha joined: this node, its own check passes");
        assert_eq!(changes[1].detail["healthy"], true);

        // A node that starts failing says so at once; one that starts healthy says nothing.
        let mut differ = Differ::default();
        let mut failing = healthy();
        failing.me.healthy = Some(false);
        assert_eq!(kinds(&differ.next(failing)), vec![(EventKind::Health, String::new())]);
    }

    #[test]
    fn roster_and_policy_disagreements_appear_and_go_away() {
        let mut differ = Differ::default();
        let mut differs = healthy();
        differs.peers.get_mut("gamma").unwrap().same_policy = Some(false);
        // A disagreement that holds from the start is news.
        assert_eq!(kinds(&differ.next(differs.clone())), vec![(EventKind::Roster, "policy_differs".into())]);
        assert!(differ.next(differs.clone()).is_empty());
        differs.peers.get_mut("beta").unwrap().same_roster = Some(false);
        differs.peers.get_mut("gamma").unwrap().same_policy = Some(true);
        assert_eq!(
            kinds(&differ.next(differs)),
            vec![(EventKind::Roster, "roster_differs".into()), (EventKind::Roster, "policy_agrees".into())]
        );
        assert_eq!(kinds(&differ.next(healthy())), vec![(EventKind::Roster, "roster_agrees".into())]);
    }

    #[tokio::test]
    async fn the_log_numbers_from_one_keeps_the_last_200_and_broadcasts() {
        let log = EventLog::new("alpha".into(), "pool.example.test".into());
        let mut rx = log.subscribe();
        for i in 0..205 {
            log.record(EventKind::Peer, format!("e{i}"), json!({}));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!((recent[0].seq, recent[199].seq), (6, 205));
        let first = rx.recv().await.unwrap();
        assert_eq!((first.seq, first.summary.as_str(), first.node.as_str()), (1, "e0", "alpha"));
        let text = serde_json::to_value(&first).unwrap();
        assert_eq!(text["event"], "peer");
        assert_eq!(text["cluster"], "pool.example.test");
        assert_eq!(text["time"].as_str().unwrap().len(), "2026-12-07T19:01:02.345Z".len());
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_670_062_345), "2026-12-07T19:01:02.345Z");
        assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
    }
}
