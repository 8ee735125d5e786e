//! What `spdu peers` shows: a snapshot of one node's protocol state, built from the core's
//! accessors ([`ViewSnapshot::of`]). Display only: nothing here feeds back into the protocol.
//!
//! Invariant: the JSON shape (field names and nesting) is an interface (`spdu peers --json`
//! and the tests read it); fields are only ever added.

use std::time::Instant;

use serde::Serialize;
use spdu_keys::PublicKey;

use crate::proto::{
    AnswerSet, Observation, PeerReport, ServiceCheck, SignedObservation, State, Stats, Verdict, votes,
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
