//! `spdu check-health`: a Nagios / Icinga plugin reading a running node's view (`/v1/peers`).
//!
//! Exit code and one status line with performance data, as the Nagios plugin guidelines ask:
//!
//! - `CRITICAL` (2): this site is out of its own answer, or its own service check fails.
//! - `WARNING` (1): a peer is out of the answer or unreachable from here, or a peer runs
//!   another roster or other failover policies.
//! - `OK` (0): none of these.
//! - `UNKNOWN` (3): the node cannot be asked (nothing listening, HTTP error, a reply that is
//!   not a view, a config that does not load).
//!
//! `SPDU OK - alpha in answer, 3/3 sites up | sites_up=3;;;0;3 peers_reachable=2;;;0;2 answer_size=3;;;0`
//!
//! The verdict is computed from the JSON alone ([`assess`]), like `spdu peers`' table. Peer
//! names and errors come from peers: they are escaped and kept on one line without `|` (which
//! starts the performance data).

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::peers::fetch_view;

/// A plugin state; its exit code is the discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Everything as it should be.
    Ok = 0,
    /// Something needs a look: a peer is out or unreachable, or the sites disagree.
    Warning = 1,
    /// This site does not serve: out of its own answer, or its service fails.
    Critical = 2,
    /// The node could not be asked.
    Unknown = 3,
}

impl State {
    /// The exit code (0 to 3).
    pub fn code(self) -> u8 {
        self as u8
    }

    fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The plugin's result: its state and its one output line (no newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The state, hence the exit code.
    pub state: State,
    /// `SPDU <STATE> - <text> | <perfdata>`.
    pub line: String,
}

impl Verdict {
    /// `UNKNOWN` with `why` (e.g. the error that kept the node from being asked).
    pub fn unknown(why: &str) -> Self {
        Self { state: State::Unknown, line: format!("SPDU UNKNOWN - {}", one_line(why)) }
    }
}

/// The fields of `/v1/peers` the verdict reads.
#[derive(Deserialize)]
struct View {
    answer: Answer,
    nodes: Vec<Node>,
    #[serde(default)]
    policy: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Answer {
    addresses: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Node {
    name: String,
    is_self: bool,
    in_answer: bool,
    probe: Option<Probe>,
    health: Option<Health>,
    observation: Option<ObservationView>,
}

#[derive(Deserialize)]
struct Probe {
    reachable: bool,
    rtt_us: Option<u64>,
}

#[derive(Deserialize)]
struct Health {
    ok: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ObservationView {
    same_roster: bool,
    observation: Observation,
}

#[derive(Deserialize)]
struct Observation {
    #[serde(default)]
    policy: Option<serde_json::Value>,
}

/// Asks the node at `control` and judges its view; every failure to ask is `UNKNOWN`.
pub async fn check(control: SocketAddr) -> Verdict {
    match fetch_view(control).await {
        Ok(json) => assess(&json),
        Err(e) => Verdict::unknown(&crate::text::error_chain(&e)),
    }
}

/// The verdict on one `/v1/peers` JSON text.
pub fn assess(json: &str) -> Verdict {
    let view: View = match serde_json::from_str(json) {
        Ok(view) => view,
        Err(e) => return Verdict::unknown(&format!("the node sent no view this version can read: {e}")),
    };
    let Some(me) = view.nodes.iter().find(|n| n.is_self) else {
        return Verdict::unknown("the node's view does not list the node itself");
    };
    let peers: Vec<&Node> = view.nodes.iter().filter(|n| !n.is_self).collect();
    let sites_up = view.nodes.iter().filter(|n| n.in_answer).count();
    let reachable = peers.iter().filter(|n| n.probe.as_ref().is_some_and(|p| p.reachable)).count();
    let name = one_line(&me.name);

    let mut state = State::Ok;
    let mut problems = Vec::new();
    let own_failure = me.health.as_ref().filter(|h| !h.ok);
    if let Some(health) = own_failure {
        state = State::Critical;
        let error = health.error.as_deref().map(one_line).unwrap_or_else(|| "failing".to_owned());
        problems.push(format!("own service check failing ({error})"));
    }
    let summary = if me.in_answer {
        format!("{name} in answer")
    } else {
        state = State::Critical;
        format!("{name} out of its own answer")
    };
    let own_digest = view.policy.as_ref().filter(|d| is_digest(d));
    for peer in &peers {
        let peer_name = one_line(&peer.name);
        let mut flagged = |what: String| {
            state = state.max(State::Warning);
            problems.push(what);
        };
        match &peer.probe {
            Some(probe) if !probe.reachable => flagged(format!("{peer_name} unreachable")),
            None => flagged(format!("{peer_name} not probed yet")),
            Some(_) => {}
        }
        if !peer.in_answer {
            flagged(format!("{peer_name} out of the answer"));
        }
        if let Some(o) = &peer.observation {
            if !o.same_roster {
                flagged(format!("{peer_name} on another roster"));
            }
            let digest = o.observation.policy.as_ref().filter(|d| is_digest(d));
            if let (Some(own), Some(theirs)) = (own_digest, digest)
                && own != theirs
            {
                flagged(format!("{peer_name} has other failover policies"));
            }
        }
    }

    let mut line = format!("SPDU {} - {summary}, {sites_up}/{} sites up", state.label(), view.nodes.len());
    if !problems.is_empty() {
        let _ = write!(line, "; {}", problems.join(", "));
    }
    let _ = write!(
        line,
        " | sites_up={sites_up};;;0;{} peers_reachable={reachable};;;0;{} answer_size={};;;0",
        view.nodes.len(),
        peers.len(),
        view.answer.addresses.len()
    );
    for peer in &peers {
        // A peer's last RTT says nothing once it is unreachable.
        if let Some(us) = peer.probe.as_ref().filter(|p| p.reachable).and_then(|p| p.rtt_us) {
            let _ = write!(line, " rtt_{}={:.6}s;;;0", perf_label(&peer.name), us as f64 / 1e6);
        }
    }
    Verdict { state, line }
}

/// A policy digest that says something: not null, not all zeros (an older node signs zeros).
fn is_digest(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Array(bytes) => bytes.iter().any(|b| b.as_u64() != Some(0)),
        serde_json::Value::String(text) => text.chars().any(|c| c != '0'),
        _ => false,
    }
}

/// `text` escaped, on one line, without `|`.
fn one_line(text: &str) -> String {
    crate::text::escape(text).replace('|', "/")
}

/// A name as a performance-data label: letters, digits, `_`, `-` and `.` kept, others `_`.
fn perf_label(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, is_self: bool, in_answer: bool, reachable: bool) -> serde_json::Value {
        json!({
            "name": name, "is_self": is_self, "in_answer": in_answer,
            "probe": if is_self { json!(null) } else { json!({"reachable": reachable, "rtt_us": 1500}) },
            "health": null,
            "observation": {"same_roster": true, "observation": {"policy": "0102030405060708090a0b0c0d0e0f10"}},
        })
    }

    fn view(nodes: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"name": "alpha", "answer": {"addresses": ["192.0.2.1", "192.0.2.2"]}, "nodes": nodes, "policy": "0102030405060708090a0b0c0d0e0f10"})
    }

    #[test]
    fn states_from_views() {
        let ok = view(vec![node("alpha", true, true, true), node("beta", false, true, true)]);
        let v = assess(&ok.to_string());
        assert_eq!(v.state, State::Ok);
        assert_eq!(
            v.line,
            "SPDU OK - alpha in answer, 2/2 sites up | sites_up=2;;;0;2 peers_reachable=1;;;0;1 \
             answer_size=2;;;0 rtt_beta=0.001500s;;;0"
        );

        let mut other_policy = ok.clone();
        other_policy["nodes"][1]["observation"]["observation"]["policy"] =
            json!("09090909090909090909090909090909");
        let v = assess(&other_policy.to_string());
        assert_eq!(v.state, State::Warning, "{}", v.line);
        assert!(v.line.contains("beta has other failover policies"), "{}", v.line);
        // An older peer (all-zero digest) is no disagreement.
        other_policy["nodes"][1]["observation"]["observation"]["policy"] =
            json!("00000000000000000000000000000000");
        assert_eq!(assess(&other_policy.to_string()).state, State::Ok);

        let mut sick = ok.clone();
        sick["nodes"][0]["in_answer"] = json!(false);
        sick["nodes"][0]["health"] = json!({"ok": false, "error": "http: refused | x\n"});
        let v = assess(&sick.to_string());
        assert_eq!(v.state, State::Critical);
        assert!(v.line.starts_with("SPDU CRITICAL - alpha out of its own answer, 1/2 sites up; own service check failing (http: refused / x\\u{a})"), "{}", v.line);
        assert_eq!(v.line.matches('|').count(), 1, "one perfdata separator: {}", v.line);

        for bad in ["", "{}", "[1]", r#"{"name": "a", "answer": {"addresses": []}, "nodes": []}"#] {
            assert_eq!(assess(bad).state, State::Unknown, "{bad}");
        }
    }
}
