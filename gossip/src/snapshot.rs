//! What `spdu peers` shows: a snapshot of one node's protocol state, built from the core's
//! accessors ([`ViewSnapshot::of`]). Display only: nothing here feeds back into the protocol.
//!
//! Invariant: the JSON shape (field names and nesting) is an interface (`spdu peers --json`
//! and the tests read it); fields are only ever added.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use spdu_keys::PublicKey;

use crate::proto::{
    AnswerSet, AnycastVerdict, Observation, PeerReport, Policy, PolicyDigest, ServiceCheck,
    SignedObservation, State, Stats, Verdict, votes,
};

impl ViewSnapshot {
    /// Everything `spdu peers` shows of `state`, as of `now`.
    pub fn of(state: &State, now: Instant) -> Self {
        let me = state.key();
        let roster = state.roster();
        let live: Vec<&Observation> = std::iter::once(me)
            .chain(state.members().map(|m| m.key))
            .filter(|k| state.is_fresh(k, now))
            .filter_map(|k| state.observation(&k))
            .collect();
        let all = std::iter::once((me, state.name().to_owned()))
            .chain(state.members().map(|m| (m.key, m.name.clone())));
        let nodes = all
            .map(|(key, name)| {
                let v = votes(roster, &key, live.iter().copied());
                NodeView {
                    key,
                    fingerprint: key.fingerprint(),
                    name,
                    is_self: key == me,
                    probe: state.link(&key).map(|l| ProbeView {
                        reachable: l.reachable,
                        rtt_us: l.rtt.map(|d| d.as_micros() as u64),
                        for_ms: now.saturating_duration_since(l.since).as_millis() as u64,
                    }),
                    seen_reachable_by: v.yes,
                    voters: v.voters,
                    in_answer: state.answer().members.contains(&key),
                    health: if key == me {
                        state.own_health().map(|v| HealthView::of(v, None, now))
                    } else {
                        let check = state.observation(&key).and_then(|o| o.service_check.as_ref());
                        state.peer_health(&key).map(|v| HealthView::of(v, check, now))
                    },
                    observation: state.observation(&key).zip(state.signed_observation(&key)).map(
                        |(obs, signed)| ObservationView {
                            age_ms: state
                                .vouched_at(&key)
                                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                            fresh: state.is_fresh(&key, now),
                            same_roster: obs.is_over(roster),
                            reports: obs.reports(roster),
                            observation: obs.clone(),
                            signed: signed.clone(),
                        },
                    ),
                }
            })
            .collect();
        ViewSnapshot {
            me,
            name: state.name().to_owned(),
            cluster: state.cluster().to_owned(),
            answer: state.answer().clone(),
            nodes,
            stats: state.stats().clone(),
            policy: state.policy_digest(),
            anycast: state.anycast(),
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
    /// The digest of this node's failover policies (each node's own is in its observation).
    pub policy: PolicyDigest,
    /// Whether this site announces its anycast prefixes, and why (`/v1/anycast`).
    pub anycast: AnycastVerdict,
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
    /// Whether its bitmaps are over this node's roster (if not, it has no vote).
    pub same_roster: bool,
    /// Its reports, read with this node's roster (empty if `same_roster` is false).
    pub reports: Vec<PeerReport>,
    /// Decoded.
    pub observation: Observation,
    /// As signed (verifiable with the observer's key, context and cluster id).
    pub signed: SignedObservation,
}

/// A verdict as `spdu peers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HealthView {
    /// The verdict.
    pub ok: bool,
    /// What is checked (the peer's advertised check; `None` for this node's own check).
    pub check: Option<String>,
    /// Consecutive passes (positive) or failures (negative).
    pub streak: i64,
    /// For how long the verdict has held (since start if it never flipped).
    pub for_ms: Option<u64>,
    /// Whether the latest result passed.
    pub last_ok: Option<bool>,
    /// The latest result's latency.
    pub latency_us: Option<u64>,
    /// The latest result's error.
    pub error: Option<String>,
    /// Age of the latest result.
    pub age_ms: Option<u64>,
}

impl HealthView {
    /// Describes `verdict` as of `now`.
    pub fn of(verdict: &Verdict, check: Option<&ServiceCheck>, now: Instant) -> Self {
        let last = verdict.last();
        Self {
            ok: verdict.ok(),
            check: check.map(ServiceCheck::describe),
            streak: verdict.streak(),
            for_ms: verdict.changed_at().map(|t| now.saturating_duration_since(t).as_millis() as u64),
            last_ok: last.map(|(_, r)| r.ok),
            latency_us: last.and_then(|(_, r)| r.latency).map(|d| d.as_micros() as u64),
            error: last.and_then(|(_, r)| r.error.clone()),
            age_ms: last.map(|(t, _)| now.saturating_duration_since(*t).as_millis() as u64),
        }
    }
}

/// Why one name answers with what it does (what `spdu explain` shows): its rule and, for every
/// site, whether it qualifies and why, and the policy step that kept or dropped it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The rule's name as configured.
    pub name: String,
    /// Its policy.
    pub policy: Policy,
    /// At most this many addresses per response (0: no limit).
    pub max_answers: usize,
    /// Its TTL.
    pub ttl: u32,
    /// Its TTL while degraded.
    pub ttl_degraded: u32,
    /// The TTL served now.
    pub ttl_now: u32,
    /// The answer lacks a site it would hold if every site were up.
    pub degraded: bool,
    /// No site of the name qualifies: the answer is the fail-open one.
    pub fail_open: bool,
    /// Least time between two changes that add or reshuffle sites.
    pub min_change_interval_ms: u64,
    /// `fastest`: latencies up to this are ties.
    pub good_enough_ms: u64,
    /// A change held back by `min_change_interval_ms` comes due in this long.
    pub due_in_ms: Option<u64>,
    /// Every roster site: this node first, then peers in key order.
    pub sites: Vec<SiteExplanation>,
}

/// One site in an [`Explanation`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteExplanation {
    /// Its roster name.
    pub name: String,
    /// Its key's fingerprint.
    pub key: String,
    /// Whether it is the node explaining.
    pub is_self: bool,
    /// The answer rule admits it (for this node: its own service is healthy).
    pub qualifies: bool,
    /// This node's probing sees it reachable (none for this node itself).
    pub own_probe: Option<bool>,
    /// Live observers other than the site that see it reachable.
    pub votes_yes: usize,
    /// Live observers other than the site that report on it.
    pub voters: usize,
    /// The names of those that see it reachable.
    pub votes_from: Vec<String>,
    /// Its own health verdict, from its latest observation.
    pub healthy: Option<bool>,
    /// Why it qualifies or not.
    pub why_qualifies: String,
    /// Its priority as this node's config gives it.
    pub priority: u32,
    /// Its weight as this node's config gives it.
    pub weight: u32,
    /// Its smoothed service-check latency as this node measures it.
    pub latency_ms: Option<f64>,
    /// In the name's answer.
    pub in_answer: bool,
    /// The policy step that kept or dropped it.
    pub why: String,
}

impl Explanation {
    /// The explanation of the rule called `name` (case-insensitive; `@` is the apex) in `state`
    /// as of `now`; none if no rule has that name.
    pub fn of(state: &State, now: Instant, name: &str) -> Option<Self> {
        let (policies, config, sites) = state.policy_inputs();
        let index = policies.find(name)?;
        let selector = policies.selector(index);
        let rule = selector.rule();
        let answer = state.answer().names.get(index);
        let verdicts = policies.explain(now, config, index, &sites);
        let roster = state.roster();
        let live: Vec<&Observation> = sites
            .iter()
            .map(|s| s.key)
            .filter(|k| state.is_fresh(k, now))
            .filter_map(|k| state.observation(&k))
            .collect();
        let name_of = |key: &PublicKey| {
            sites.iter().find(|s| s.key == *key).map_or_else(|| key.fingerprint(), |s| s.name.to_owned())
        };
        let sites = sites
            .iter()
            .zip(verdicts)
            .map(|(site, verdict)| {
                let v = votes(roster, &site.key, live.iter().copied());
                let own_probe = (!site.is_self).then(|| state.sees_reachable(&site.key));
                let healthy = state.observation(&site.key).map(|o| o.healthy);
                let (yes, voters) = (v.yes.len(), v.voters.len());
                let why_qualifies = match (site.is_self, own_probe, healthy) {
                    (true, _, _) if site.qualifies => "this node: its own service check passes".to_string(),
                    (true, _, _) => "this node: its own service check fails".to_string(),
                    (false, Some(false), _) => "not reachable from here (own probe)".to_string(),
                    (false, _, Some(false)) => "reports its own service unhealthy".to_string(),
                    (false, _, None) => "no observation of it yet".to_string(),
                    _ if site.qualifies => format!("reachable from here, healthy, votes {yes}/{voters}"),
                    _ => format!("votes {yes}/{voters}: short of the quorum"),
                };
                let attrs = config.attrs(site.name);
                SiteExplanation {
                    name: site.name.to_owned(),
                    key: site.key.fingerprint(),
                    is_self: site.is_self,
                    qualifies: site.qualifies,
                    own_probe,
                    votes_yes: yes,
                    voters,
                    votes_from: v.yes.iter().map(name_of).collect(),
                    healthy,
                    why_qualifies,
                    priority: attrs.priority,
                    weight: attrs.weight,
                    latency_ms: site.latency.map(|l| l.as_secs_f64() * 1000.0),
                    in_answer: verdict.in_answer,
                    why: verdict.why,
                }
            })
            .collect();
        Some(Explanation {
            name: rule.name.clone(),
            policy: rule.policy,
            max_answers: rule.max_answers,
            ttl: rule.ttl,
            ttl_degraded: rule.ttl_degraded,
            ttl_now: answer.map_or(rule.ttl, |a| a.ttl),
            degraded: answer.is_some_and(|a| a.degraded),
            fail_open: answer.is_some_and(|a| a.fail_open),
            min_change_interval_ms: rule.min_change_interval.as_millis() as u64,
            good_enough_ms: rule.good_enough.as_millis() as u64,
            due_in_ms: selector.due().map(|t| t.saturating_duration_since(now).as_millis() as u64),
            sites,
        })
    }
}
