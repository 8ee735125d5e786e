//! `spdu peers`: fetches the signed view from a running node's control endpoint and prints it,
//! as received (`--json`) or as a table for operators.
//!
//! The table is rendered from the JSON alone (the types here mirror the fields of
//! `spdu_gossip::snapshot::ViewSnapshot` that it shows), so it works against any node that serves
//! `/v1/peers`, and unknown fields are ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// How long `spdu peers` waits for the node.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `/v1/peers` from the control endpoint at `control` and returns the JSON text.
/// Blocking; call it from a blocking context.
pub fn fetch_view(control: SocketAddr) -> anyhow::Result<String> {
    let url = format!("http://{control}/v1/peers");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(FETCH_TIMEOUT)).build().into();
    let mut response = agent.get(&url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => anyhow::anyhow!("{url} answered HTTP {code}"),
        e => anyhow::Error::new(e)
            .context(format!("cannot reach spdu control endpoint at {control}: is `spdu run` running?")),
    })?;
    response.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))
}

/// `spdu peers`: prints the view of the node whose control endpoint is `control`.
pub fn print_view(control: SocketAddr, json: bool) -> anyhow::Result<()> {
    let text = fetch_view(control)?;
    if json {
        serde_json::from_str::<serde_json::Value>(&text).context("the node sent invalid JSON")?;
        print!("{text}");
    } else {
        print!("{}", render_table(&text)?);
    }
    Ok(())
}

/// Renders the `/v1/peers` JSON as the operator's table.
pub fn render_table(json: &str) -> anyhow::Result<String> {
    let view: View = serde_json::from_str(json).context("the node sent a view this version cannot read")?;
    let names: BTreeMap<&str, &str> = view.nodes.iter().map(|n| (n.key.as_str(), n.name.as_str())).collect();
    let name_of = |key: &String| names.get(key.as_str()).copied().unwrap_or("?").to_owned();

    let mut rows = vec![
        ["NAME", "KEY", "FROM HERE", "SEEN BY", "IN DNS", "AGE", "INC/SEQ", "HEALTHY"].map(String::from),
    ];
    for node in &view.nodes {
        let from_here = match (&node.probe, node.is_self) {
            (_, true) => "self".to_owned(),
            (Some(p), false) if p.reachable => match p.rtt_us {
                Some(us) => format!("yes ({:.1} ms)", us as f64 / 1000.0),
                None => "yes".to_owned(),
            },
            (Some(_), false) => "no".to_owned(),
            (None, false) => "-".to_owned(),
        };
        let seen_by = format!(
            "{}/{} {}",
            node.seen_reachable_by.len(),
            node.voters.len(),
            node.seen_reachable_by.iter().map(name_of).collect::<Vec<_>>().join(",")
        );
        let (age, version, healthy) = match &node.observation {
            Some(o) => (
                format!("{:.1}s{}", o.age_ms as f64 / 1000.0, if o.fresh { "" } else { " stale" }),
                format!("{}/{}", o.observation.incarnation, o.observation.seq),
                yes_no(o.observation.healthy).to_owned(),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        rows.push([
            node.name.clone(),
            node.fingerprint.clone(),
            from_here,
            seen_by.trim_end().to_owned(),
            yes_no(node.in_answer).to_owned(),
            age,
            version,
            healthy,
        ]);
    }

    let mut widths = [0; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = format!("node {} in cluster {}\n", view.name, view.cluster);
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    render_health(&mut out, &view);
    let addresses: Vec<String> = view.answer.addresses.iter().map(IpAddr::to_string).collect();
    let _ = writeln!(out, "answer (version {}): {}", view.answer.version, addresses.join(" "));
    let rejected: Vec<String> = view
        .stats
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "accepted" | "other_roster"))
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    let _ = writeln!(
        out,
        "observations accepted {}; rejected: {}",
        view.stats.get("accepted").copied().unwrap_or(0),
        rejected.join(", ")
    );
    if let Some(n) = view.stats.get("other_roster").copied().filter(|n| *n > 0) {
        let _ = writeln!(out, "observations over another roster (no vote): {n}");
    }
    Ok(out)
}

/// The health section: per site, its own verdict (as it signed it; with the latest result when it
/// is this node), then what every observer's probing of its service says, this node's with the
/// latest latency or error.
fn render_health(out: &mut String, view: &View) {
    let probed = view.nodes.iter().any(|n| n.health.is_some())
        || view.nodes.iter().filter_map(|n| n.observation.as_ref()).any(|o| {
            o.observation.service_check.is_some() || o.reports.iter().any(|r| r.service_ok.is_some())
        });
    if !probed {
        return;
    }
    out.push_str(
        "service health (own check; probes by each observer):
",
    );
    let width = view.nodes.iter().map(|n| n.name.chars().count()).max().unwrap_or(0);
    for node in &view.nodes {
        let mut line = format!("{:width$}  self: ", node.name);
        match node.observation.as_ref().map(|o| o.observation.healthy) {
            Some(true) => line.push_str("healthy"),
            Some(false) => line.push_str("unhealthy"),
            None => line.push('-'),
        }
        if node.is_self
            && let Some(h) = &node.health
        {
            let _ = write!(line, " ({})", describe_result(h));
        }
        if let Some(check) = node.observation.as_ref().and_then(|o| o.observation.service_check.as_ref()) {
            let _ = write!(line, "  [advertises {}]", describe_check(check));
        }
        for observer in view.nodes.iter().filter(|o| o.key != node.key) {
            let report =
                observer.observation.as_ref().and_then(|o| o.reports.iter().find(|r| r.key == node.key));
            // Latency is known for this node's own probes only.
            let latency = node.health.as_ref().filter(|_| observer.is_self).and_then(|h| h.latency_us);
            let verdict = match report.and_then(|r| r.service_ok) {
                Some(true) => match latency {
                    Some(us) => format!("ok {:.1} ms", us as f64 / 1000.0),
                    None => "ok".to_owned(),
                },
                Some(false) => "down".to_owned(),
                None => "-".to_owned(),
            };
            let _ = write!(line, "  {}: {verdict}", observer.name);
            if observer.is_self
                && let Some(h) = &node.health
                && !h.last_ok.unwrap_or(true)
            {
                let _ = write!(line, " ({})", describe_result(h));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn describe_result(h: &Health) -> String {
    let mut text = match (h.last_ok, &h.error, h.latency_us) {
        (Some(true), _, Some(us)) => format!("passed in {:.1} ms", us as f64 / 1000.0),
        (Some(false), Some(e), _) => format!("failed: {e}"),
        (Some(false), None, _) => "failed".to_owned(),
        _ => "no result yet".to_owned(),
    };
    let _ = write!(text, ", streak {}", h.streak);
    if let Some(age) = h.age_ms {
        let _ = write!(text, ", {:.1}s ago", age as f64 / 1000.0);
    }
    text
}

fn describe_check(check: &serde_json::Value) -> String {
    // The check travels as an externally tagged enum: {"Http": {"port": 443, …}}.
    let Some((kind, fields)) = check.as_object().and_then(|o| o.iter().next()) else { return "?".into() };
    let port = fields.get("port").and_then(serde_json::Value::as_u64).unwrap_or(0);
    match kind.as_str() {
        "Http" => {
            let tls = fields.get("tls").and_then(serde_json::Value::as_bool).unwrap_or(false);
            let path = fields.get("path").and_then(serde_json::Value::as_str).unwrap_or("/");
            format!("{}:{port}{path}", if tls { "https" } else { "http" })
        }
        other => format!("{}:{port}", other.to_ascii_lowercase()),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

#[derive(Deserialize)]
struct View {
    name: String,
    cluster: String,
    answer: Answer,
    nodes: Vec<Node>,
    #[serde(default)]
    stats: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Answer {
    version: u64,
    addresses: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct Node {
    key: String,
    fingerprint: String,
    name: String,
    is_self: bool,
    probe: Option<Probe>,
    #[serde(default)]
    seen_reachable_by: Vec<String>,
    #[serde(default)]
    voters: Vec<String>,
    in_answer: bool,
    observation: Option<ObservationEntry>,
    #[serde(default)]
    health: Option<Health>,
}

/// This node's service check verdict on a node (`spdu_gossip::snapshot::HealthView`).
#[derive(Deserialize)]
struct Health {
    streak: i64,
    last_ok: Option<bool>,
    latency_us: Option<u64>,
    error: Option<String>,
    age_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Probe {
    reachable: bool,
    rtt_us: Option<u64>,
}

#[derive(Deserialize)]
struct ObservationEntry {
    age_ms: u64,
    fresh: bool,
    observation: Observation,
    #[serde(default)]
    reports: Vec<Report>,
}

#[derive(Deserialize)]
struct Observation {
    incarnation: u64,
    seq: u64,
    healthy: bool,
    #[serde(default)]
    service_check: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Report {
    key: String,
    #[serde(default)]
    service_ok: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_every_node_and_the_answer() {
        let json = r#"{
          "me": "ed25519:A", "name": "alpha", "cluster": "pool.example.test",
          "answer": {"version": 3, "members": ["ed25519:A", "ed25519:B"], "addresses": ["127.0.0.11", "127.0.0.12"]},
          "nodes": [
            {"key": "ed25519:A", "fingerprint": "aaaa", "name": "alpha", "is_self": true, "probe": null,
             "seen_reachable_by": ["ed25519:B"], "voters": ["ed25519:B", "ed25519:C"], "in_answer": true,
             "observation": {"age_ms": 120, "fresh": true, "signed": {},
               "observation": {"incarnation": 7, "seq": 42, "healthy": true}}},
            {"key": "ed25519:B", "fingerprint": "bbbb", "name": "beta", "is_self": false,
             "probe": {"reachable": true, "rtt_us": 250, "for_ms": 9000},
             "seen_reachable_by": ["ed25519:A"], "voters": ["ed25519:A"], "in_answer": true, "observation": null},
            {"key": "ed25519:C", "fingerprint": "cccc", "name": "gamma", "is_self": false,
             "probe": {"reachable": false, "rtt_us": null, "for_ms": 9000},
             "seen_reachable_by": [], "voters": ["ed25519:A"], "in_answer": false, "observation": null}
          ],
          "stats": {"accepted": 10, "replayed": 2, "bad_signature": 0}
        }"#;
        let table = render_table(json).unwrap();
        assert!(table.contains("alpha  aaaa"), "{table}");
        assert!(table.contains("1/2 beta"), "{table}");
        assert!(table.contains("yes (0.2 ms)") || table.contains("yes (0.3 ms)"), "{table}");
        assert!(table.contains("7/42"), "{table}");
        assert!(table.contains("answer (version 3): 127.0.0.11 127.0.0.12"), "{table}");
        assert!(table.contains("replayed 2"), "{table}");
        let gamma = table.lines().find(|l| l.starts_with("gamma")).unwrap();
        assert!(gamma.contains(" no "), "{gamma}");
    }

    #[test]
    fn unreachable_node_gets_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = format!("{:#}", fetch_view(addr).unwrap_err());
        assert!(
            e.contains(&format!("cannot reach spdu control endpoint at {addr}: is `spdu run` running?")),
            "{e}"
        );
    }
}
