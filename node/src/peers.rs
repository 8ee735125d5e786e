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

use crate::text::escape;

/// How long `spdu peers` waits for the node.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `/v1/peers` from the control endpoint at `control` and returns the JSON text.
pub async fn fetch_view(control: SocketAddr) -> anyhow::Result<String> {
    let url = format!("http://{control}/v1/peers");
    let (status, body) = fetch(control, reqwest::Url::parse(&url).context("the control address")?).await?;
    if !status.is_success() {
        anyhow::bail!("{url} answered HTTP {}", status.as_u16());
    }
    Ok(body)
}

/// GETs `url` from the control endpoint at `control` (the one HTTP client of the CLI): the
/// status and the body, or an error saying the node cannot be reached.
pub(crate) async fn fetch(
    control: SocketAddr,
    url: reqwest::Url,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let response = client.get(url.clone()).send().await.map_err(|e| {
        anyhow::Error::new(e)
            .context(format!("cannot reach spdu control endpoint at {control}: is `spdu run` running?"))
    })?;
    let status = response.status();
    let body = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
    Ok((status, body))
}

/// `spdu peers`: prints the view of the node whose control endpoint is `control`. Peer-supplied
/// text is escaped in the table ([`crate::text::escape`]); `--json` prints the text as sent once
/// it parses as JSON, with [`escape_json`].
pub async fn print_view(control: SocketAddr, json: bool) -> anyhow::Result<()> {
    let text = fetch_view(control).await?;
    if json {
        serde_json::from_str::<serde_json::Value>(&text).context("the node sent invalid JSON")?;
        print!("{}", escape_json(&text));
    } else {
        print!("{}", render_table(&text)?);
    }
    Ok(())
}

/// Valid JSON `text` with every invisible character inside its strings written as a `\uXXXX`
/// escape: the same JSON value, safe for a terminal. JSON already forbids raw U+0000-U+001F in
/// strings, but allows DEL, C1 controls and bidirectional overrides; between tokens only
/// spaces, tabs and line breaks may stand, and those are kept.
pub fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if crate::text::is_invisible(c) && !matches!(c, '\n' | '\r' | '\t') {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
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
            escape(&node.name),
            escape(&node.fingerprint),
            from_here,
            escape(seen_by.trim_end()),
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
    let mut out = format!("node {} in cluster {}\n", escape(&view.name), escape(&view.cluster));
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
        .map(|(name, value)| format!("{} {value}", escape(name)))
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
    render_policy_disagreement(&mut out, &view);
    Ok(out)
}

/// Warns when sites sign different failover-policy digests: for the same qualifying sites
/// they answer differently. Groups the sites by digest, this node's group first; sites that
/// sign none (older versions) are named apart. Nothing when they all agree.
fn render_policy_disagreement(out: &mut String, view: &View) {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut unsigned = Vec::new();
    let own = view.policy.as_ref().and_then(digest_text);
    let mut nodes: Vec<&Node> = view.nodes.iter().collect();
    nodes.sort_by_key(|n| !n.is_self);
    for node in nodes {
        let signed = node.observation.as_ref().and_then(|o| o.observation.policy.as_ref());
        let digest = if node.is_self {
            own.clone().or_else(|| signed.and_then(digest_text))
        } else {
            signed.and_then(digest_text)
        };
        match digest {
            Some(d) => match groups.iter_mut().find(|(g, _)| *g == d) {
                Some((_, names)) => names.push(escape(&node.name)),
                None => groups.push((d, vec![escape(&node.name)])),
            },
            // No observation yet says nothing; an observation without a digest is an older node.
            None if node.observation.is_some() => unsigned.push(escape(&node.name)),
            None => {}
        }
    }
    if groups.len() > 1 {
        let listed: Vec<String> = groups
            .iter()
            .map(|(d, names)| format!("{}… {}", &d[..d.len().min(12)], names.join(", ")))
            .collect();
        let _ = writeln!(
            out,
            "warning: sites disagree on the failover policies (policy digest: sites): {}; their answers \
             differ for the same qualifying sites: compare [node]/[[peers]] priority and weight and \
             [zone] names and [[zone.record]] in their configs",
            listed.join("; ")
        );
    }
    if !groups.is_empty() && !unsigned.is_empty() {
        let _ = writeln!(
            out,
            "warning: sites without failover policies (an older version: every name answers with every \
             qualifying site): {}",
            unsigned.join(", ")
        );
    }
}

/// A policy digest as hex: the JSON array of its 16 bytes (or a hex string); `None` for the
/// all-zero digest of a node that signs none, or anything else.
fn digest_text(value: &serde_json::Value) -> Option<String> {
    let hex = match value {
        serde_json::Value::String(text)
            if text.len() <= 64 && text.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            text.to_ascii_lowercase()
        }
        serde_json::Value::Array(bytes) if bytes.len() <= 64 => {
            let bytes: Option<Vec<u8>> =
                bytes.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            bytes?.iter().map(|b| format!("{b:02x}")).collect()
        }
        _ => return None,
    };
    (!hex.is_empty() && hex.chars().any(|c| c != '0')).then_some(hex)
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
    // Names, checks and errors come from peers: each is escaped where it is written.
    let width = view.nodes.iter().map(|n| escape(&n.name).chars().count()).max().unwrap_or(0);
    for node in &view.nodes {
        let mut line = format!("{:width$}  self: ", escape(&node.name));
        match node.observation.as_ref().map(|o| o.observation.healthy) {
            Some(true) => line.push_str("healthy"),
            Some(false) => line.push_str("unhealthy"),
            None => line.push('-'),
        }
        if node.is_self
            && let Some(h) = &node.health
        {
            let _ = write!(line, " ({})", escape(&describe_result(h)));
        }
        if let Some(check) = node.observation.as_ref().and_then(|o| o.observation.service_check.as_ref()) {
            let _ = write!(line, "  [advertises {}]", escape(&describe_check(check)));
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
            let _ = write!(line, "  {}: {verdict}", escape(&observer.name));
            if observer.is_self
                && let Some(h) = &node.health
                && !h.last_ok.unwrap_or(true)
            {
                let _ = write!(line, " ({})", escape(&describe_result(h)));
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
    /// This node's own policy digest.
    #[serde(default)]
    policy: Option<serde_json::Value>,
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
    /// Its observer's policy digest (all zero from older nodes).
    #[serde(default)]
    policy: Option<serde_json::Value>,
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
    fn json_keeps_its_value_and_loses_its_invisible_characters() {
        let text = "{\"name\": \"be\u{9b}ta\u{202e}\", \"e\": \"\\u001b\", \"far\": \"\u{e0041}\"}\n";
        let escaped = escape_json(text);
        assert!(!escaped.trim_end().chars().any(crate::text::is_invisible), "{escaped:?}");
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(text).unwrap(), serde_json::from_str(&escaped).unwrap());
        assert_eq!(a, b);
        assert!(escaped.ends_with('\n'));
    }

    #[test]
    fn peer_supplied_text_is_escaped() {
        let json = r#"{
          "me": "ed25519:A", "name": "alpha", "cluster": "pool\u001b]0;owned\u0007",
          "answer": {"version": 1, "members": [], "addresses": []},
          "nodes": [
            {"key": "ed25519:A", "fingerprint": "aaaa", "name": "alpha", "is_self": true, "probe": null,
             "in_answer": true, "observation": null},
            {"key": "ed25519:B", "fingerprint": "bb\u202ebb", "name": "be\u001b[2Jta", "is_self": false,
             "probe": null, "in_answer": false,
             "health": {"streak": -1, "last_ok": false, "latency_us": null, "age_ms": 5,
                        "error": "http://x/\u001b[31mred\r\nfake line"},
             "observation": {"age_ms": 1, "fresh": true, "signed": {},
               "observation": {"incarnation": 1, "seq": 1, "healthy": true,
                 "service_check": {"Http": {"tls": false, "port": 80, "path": "/\u001b[1mx"}}}}}
          ],
          "stats": {"accepted": 1}
        }"#;
        let table = render_table(json).unwrap();
        assert!(!table.chars().any(|c| c != '\n' && crate::text::is_invisible(c)), "{table:?}");
        assert!(table.contains("be\\u{1b}[2Jta"), "{table}");
        assert!(table.contains("\\u{1b}[31mred\\u{d}\\u{a}fake line"), "{table}");
        assert!(table.contains("bb\\u{202e}bb"), "{table}");
        assert!(table.contains("pool\\u{1b}]0;owned\\u{7}"), "{table}");
    }

    /// A three-node view whose observations sign the given policy digests (JSON values).
    fn view_with_digests(own: &str, alpha: &str, beta: &str, gamma: &str) -> String {
        let node = |key: &str, name: &str, is_self: bool, policy: &str| {
            let observation = if policy.is_empty() {
                "null".to_owned()
            } else {
                format!(
                    r#"{{"age_ms": 1, "fresh": true, "signed": {{}},
                       "observation": {{"incarnation": 1, "seq": 1, "healthy": true{policy}}}}}"#
                )
            };
            format!(
                r#"{{"key": "{key}", "fingerprint": "{key}", "name": "{name}", "is_self": {is_self},
                   "probe": null, "in_answer": true, "observation": {observation}}}"#
            )
        };
        format!(
            r#"{{"me": "A", "name": "alpha", "cluster": "c", {own}
               "answer": {{"version": 1, "members": [], "addresses": []}},
               "nodes": [{}, {}, {}], "stats": {{"accepted": 1}}}}"#,
            node("A", "alpha", true, alpha),
            node("B", "beta", false, beta),
            node("C", "gamma", false, gamma)
        )
    }

    #[test]
    fn disagreeing_policy_digests_are_warned_about() {
        let one = ", \"policy\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]";
        let two = ", \"policy\": [255,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]";
        let zero = ", \"policy\": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]";
        let agree = render_table(&view_with_digests("", one, one, one)).unwrap();
        assert!(!agree.contains("warning"), "{agree}");
        let table = render_table(&view_with_digests("", one, two, one)).unwrap();
        let warning = table.lines().find(|l| l.starts_with("warning: sites disagree")).unwrap();
        assert!(warning.contains("010203040506… alpha, gamma; ff0203040506… beta"), "{warning}");
        assert!(!table.contains("without failover policies"), "{table}");
        // This node's current digest wins over its (older) signed one.
        let own = r#""policy": "FF02030405060708090a0b0c0d0e0f10","#;
        let table = render_table(&view_with_digests(own, one, two, two)).unwrap();
        assert!(!table.contains("warning"), "{table}");
        // An older node signs none: named apart; a node not yet heard from is not.
        let table = render_table(&view_with_digests("", one, zero, "")).unwrap();
        assert!(!table.contains("disagree"), "{table}");
        let older = table.lines().find(|l| l.contains("without failover policies")).unwrap();
        assert!(older.ends_with(": beta"), "{older}");
        let unsigned = render_table(&view_with_digests("", ", \"x\": 1", ", \"x\": 1", "")).unwrap();
        assert!(!unsigned.contains("warning"), "{unsigned}");
    }

    #[tokio::test]
    async fn unreachable_node_gets_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = format!("{:#}", fetch_view(addr).await.unwrap_err());
        assert!(
            e.contains(&format!("cannot reach spdu control endpoint at {addr}: is `spdu run` running?")),
            "{e}"
        );
    }
}
