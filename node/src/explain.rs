//! `spdu explain NAME`: asks a running node why a pool name answers what it does, and prints
//! the answer as sent (`--json`) or as a table for operators.
//!
//! The table is rendered from the JSON alone (the types here mirror the fields of
//! `spdu_gossip::snapshot::Explanation` that it shows), like `spdu peers`, so unknown fields
//! are ignored. Every text the node sends (names, reasons) is escaped before it is printed.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::Context;
use serde::Deserialize;

use crate::peers::{escape_json, fetch};
use crate::text::escape;

/// `GET /v1/explain/{name}` from the control endpoint at `control`: the JSON text. An unknown
/// name is an error carrying the node's message.
pub async fn fetch_explanation(control: SocketAddr, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(&format!("http://{control}/")).context("the control address")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("http://{control}/ cannot take a path"))?
        .extend(["v1", "explain", name]);
    let (status, body) = fetch(control, url).await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        #[derive(Deserialize)]
        struct NotFound {
            error: String,
        }
        let message = serde_json::from_str::<NotFound>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("no pool name \"{}\"", escape(name)));
        anyhow::bail!("{}", escape(&message));
    }
    if !status.is_success() {
        anyhow::bail!("/v1/explain answered HTTP {}: {}", status.as_u16(), escape(body.trim()));
    }
    Ok(body)
}

/// `spdu explain`: prints why `name` answers what it does at the node whose control endpoint
/// is `control`.
pub async fn print_explanation(control: SocketAddr, name: &str, json: bool) -> anyhow::Result<()> {
    let text = fetch_explanation(control, name).await?;
    if json {
        serde_json::from_str::<serde_json::Value>(&text).context("the node sent invalid JSON")?;
        print!("{}", escape_json(&text));
        if !text.ends_with('\n') {
            println!();
        }
    } else {
        print!("{}", render_table(&text)?);
    }
    Ok(())
}

/// Renders an explanation's JSON as the operator's table: a header line (policy, TTL now,
/// degraded or fail-open, a held change's due time), then one row per site.
pub fn render_table(json: &str) -> anyhow::Result<String> {
    let e: Explanation =
        serde_json::from_str(json).context("the node sent an explanation this version cannot read")?;
    let mut header = format!("{}: policy {}", escape(&e.name), escape(&e.policy));
    if e.max_answers > 0 {
        let _ = write!(header, ", max_answers {}", e.max_answers);
    }
    let _ = write!(header, ", TTL now {} (ttl {}, ttl_degraded {})", e.ttl_now, e.ttl, e.ttl_degraded);
    if e.min_change_interval_ms > 0 {
        let _ = write!(header, ", min_change_interval {}", millis(e.min_change_interval_ms as f64));
    }
    if e.policy == "fastest" {
        let _ = write!(header, ", good_enough {}", millis(e.good_enough_ms as f64));
    }
    let mut state = Vec::new();
    if e.fail_open {
        state.push("FAIL-OPEN: no site of this name qualifies".to_owned());
    }
    if e.degraded {
        state.push("degraded".to_owned());
    }
    if let Some(due) = e.due_in_ms {
        state.push(format!("a held change is due in {}", millis(due as f64)));
    }
    if !state.is_empty() {
        let _ = write!(header, "; {}", state.join("; "));
    }

    let mut rows =
        vec![["SITE", "QUALIFIES", "PRIORITY", "WEIGHT", "LATENCY", "IN ANSWER"].map(String::from)];
    for site in &e.sites {
        let name = if site.is_self { format!("{} (self)", escape(&site.name)) } else { escape(&site.name) };
        let qualifies = format!("{}: {}", yes_no(site.qualifies), escape(&site.why_qualifies));
        let latency = site.latency_ms.map_or_else(|| "-".to_owned(), millis);
        let in_answer = format!("{}: {}", yes_no(site.in_answer), escape(&site.why));
        rows.push([name, qualifies, site.priority.to_string(), site.weight.to_string(), latency, in_answer]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = header;
    out.push('\n');
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// `12.3 ms`, `4.5 s` or `2.0 min`.
fn millis(ms: f64) -> String {
    if ms < 1_000.0 {
        format!("{ms:.1} ms")
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The fields of `spdu_gossip::snapshot::Explanation` the table shows.
#[derive(Deserialize)]
struct Explanation {
    name: String,
    policy: String,
    #[serde(default)]
    max_answers: usize,
    ttl: u32,
    ttl_degraded: u32,
    ttl_now: u32,
    degraded: bool,
    fail_open: bool,
    #[serde(default)]
    min_change_interval_ms: u64,
    #[serde(default)]
    good_enough_ms: u64,
    #[serde(default)]
    due_in_ms: Option<u64>,
    sites: Vec<SiteExplanation>,
}

/// The fields of `spdu_gossip::snapshot::SiteExplanation` the table shows.
#[derive(Deserialize)]
struct SiteExplanation {
    name: String,
    #[serde(default)]
    is_self: bool,
    qualifies: bool,
    #[serde(default)]
    why_qualifies: String,
    priority: u32,
    weight: u32,
    #[serde(default)]
    latency_ms: Option<f64>,
    in_answer: bool,
    #[serde(default)]
    why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY_LOST: &str = r#"{
      "name": "www", "policy": "priority", "max_answers": 0, "ttl": 60, "ttl_degraded": 5,
      "ttl_now": 5, "degraded": true, "fail_open": false, "min_change_interval_ms": 120000,
      "good_enough_ms": 50, "due_in_ms": 81234,
      "sites": [
        {"name": "home", "key": "ed25519:B", "is_self": true, "qualifies": true, "own_probe": null,
         "votes_yes": 1, "voters": 1, "votes_from": ["prod"], "healthy": true,
         "why_qualifies": "own check ok, healthy", "priority": 2, "weight": 100,
         "latency_ms": 1.25, "in_answer": true,
         "why": "priority 2: the best level that qualifies"},
        {"name": "prod", "key": "ed25519:A", "is_self": false, "qualifies": true, "own_probe": true,
         "votes_yes": 1, "voters": 1, "votes_from": ["home"], "healthy": true,
         "why_qualifies": "own probe ok, votes 1/1 (home), healthy", "priority": 1, "weight": 100,
         "latency_ms": null, "in_answer": false,
         "why": "held back by min_change_interval_ms: due in 81234 ms", "future_field": [1, 2]}
      ]
    }"#;

    #[test]
    fn table_has_a_header_and_a_row_per_site() {
        let table = render_table(PRIMARY_LOST).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "www: policy priority, TTL now 5 (ttl 60, ttl_degraded 5), min_change_interval 2.0 min; \
             degraded; a held change is due in 81.2 s"
        );
        assert!(lines[1].starts_with("SITE ") && lines[1].ends_with("IN ANSWER"), "{table}");
        assert!(lines[2].starts_with("home (self)  yes: own check ok, healthy"), "{table}");
        assert!(lines[2].contains("1.2 ms") || lines[2].contains("1.3 ms"), "{table}");
        assert!(lines[2].ends_with("yes: priority 2: the best level that qualifies"), "{table}");
        assert!(lines[3].starts_with("prod "), "{table}");
        assert!(lines[3].contains("yes: own probe ok, votes 1/1 (home), healthy"), "{table}");
        assert!(lines[3].ends_with("no: held back by min_change_interval_ms: due in 81234 ms"), "{table}");
        assert_eq!(lines.len(), 4);
        // Columns line up: every row's IN ANSWER starts where the header's does.
        let column = lines[1].find("IN ANSWER").unwrap();
        assert!(lines[2][column..].starts_with("yes: priority 2"), "{table}");
    }

    #[test]
    fn fail_open_and_fastest_show_in_the_header() {
        let json = r#"{"name": "edge", "policy": "fastest", "max_answers": 3, "ttl": 30,
          "ttl_degraded": 30, "ttl_now": 30, "degraded": true, "fail_open": true,
          "min_change_interval_ms": 0, "good_enough_ms": 20, "due_in_ms": null,
          "sites": [{"name": "a\u001b[2Jb", "key": "k", "is_self": false, "qualifies": false,
            "why_qualifies": "own probe: unreachable", "priority": 1, "weight": 100,
            "in_answer": true, "why": "fail open\u202e"}]}"#;
        let table = render_table(json).unwrap();
        let header = table.lines().next().unwrap();
        assert_eq!(
            header,
            "edge: policy fastest, max_answers 3, TTL now 30 (ttl 30, ttl_degraded 30), good_enough 20.0 ms; \
             FAIL-OPEN: no site of this name qualifies; degraded"
        );
        assert!(!table.chars().any(|c| c != '\n' && crate::text::is_invisible(c)), "{table:?}");
        assert!(table.contains("a\\u{1b}[2Jb") && table.contains("fail open\\u{202e}"), "{table}");
        assert!(table.contains("no: own probe: unreachable"), "{table}");
    }

    #[test]
    fn a_view_that_is_no_explanation_is_refused() {
        let e = format!("{:#}", render_table(r#"{"name": "www"}"#).unwrap_err());
        assert!(e.contains("cannot read"), "{e}");
    }
}
