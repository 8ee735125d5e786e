//! `spdu exabgp`: the process ExaBGP runs (`process { run ...; encoder text; }`, API 4) to
//! announce this site's `[anycast] prefixes` while the node says so, and withdraw them
//! otherwise.
//!
//! It polls the node's `GET /v1/anycast` every `anycast.poll_ms` (each request bounded by
//! [`REQUEST_TIMEOUT`]) and prints `announce route P next-hop self [med M]` or `withdraw route P
//! next-hop self` for every prefix whenever the decision changes. The decision is the node's
//! (the anycast rule in the protocol core); this process adds only the fail-safe: without a
//! good reply for [`FAIL_AFTER`] (node stopped, hung, or its control endpoint gone) it
//! withdraws, and it announces again once the node says so. It never exits for a lost
//! control connection.
//!
//! Invariants:
//! - on start it prints the full state (every prefix announced or withdrawn) after its first
//!   poll, so when ExaBGP restarts it, ExaBGP's routes follow the node again;
//! - it reads its stdin (ExaBGP's `done` / `error` acknowledgements, logged when `error`) and
//!   exits when stdin closes or ExaBGP writes `shutdown`: nobody reads its lines any more;
//! - a write error on stdout (ExaBGP gone) ends it with an error.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use std::io::{BufRead, Write};

use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{AnycastConfig, Prefix};

/// Without a good reply from the node for this long, the prefixes are withdrawn.
pub const FAIL_AFTER: Duration = Duration::from_secs(1);
/// The longest one request to the node may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);

/// What `/v1/anycast` says (the fields read here; others are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether to announce.
    pub announce: bool,
    /// Why (`reachable`, `unhealthy`, `no_observers`, `no_quorum`).
    pub reason: String,
    /// Live observers other than the node that see it reachable.
    pub yes: usize,
    /// Live observers other than the node that report on it.
    pub voters: usize,
}

/// The ExaBGP API lines that put every prefix of `prefixes` in state `announce`.
pub fn lines(prefixes: &[Prefix], med: Option<u32>, announce: bool) -> String {
    let mut out = String::new();
    for prefix in prefixes {
        if announce {
            out.push_str(&format!("announce route {prefix} next-hop self"));
            if let Some(med) = med {
                out.push_str(&format!(" med {med}"));
            }
        } else {
            out.push_str(&format!("withdraw route {prefix} next-hop self"));
        }
        out.push('\n');
    }
    out
}

/// Runs until stdin closes (or stdout cannot be written): polls the node at `control` and
/// prints the routes `anycast` describes.
pub async fn run(control: SocketAddr, anycast: AnycastConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !anycast.prefixes.is_empty(),
        "anycast.prefixes: no prefixes to announce (add an [anycast] section with prefixes = [...])"
    );
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT.min(anycast.poll * 2))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let url = reqwest::Url::parse(&format!("http://{control}/v1/anycast")).context("the control address")?;
    // A thread, not a task: tokio's stdin is a blocking read on its blocking pool anyway.
    let (closed_tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        read_acks();
        let _ = closed_tx.send(());
    });

    let mut announced: Option<bool> = None;
    let mut last_good: Option<Instant> = None;
    let mut last_error = String::new();
    let mut ticks = tokio::time::interval(anycast.poll);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stdin_closed => {
                eprintln!("spdu exabgp: ExaBGP stopped (shutdown, or stdin closed); exiting");
                return Ok(());
            }
        }
        let reply = poll(&client, &url).await;
        let now = Instant::now();
        let (want, why) = match &reply {
            Ok(reply) => {
                last_good = Some(now);
                last_error.clear();
                let reason = crate::text::escape(&reply.reason);
                (reply.announce, format!("{reason} ({} of {} observers)", reply.yes, reply.voters))
            }
            Err(e) => {
                let error = crate::text::error_chain(e);
                if error != last_error {
                    eprintln!("spdu exabgp: {error}");
                    last_error = error.clone();
                }
                let failing = last_good.is_none_or(|t| now.duration_since(t) >= FAIL_AFTER);
                match announced {
                    // Before the first reply, and after FAIL_AFTER without one: withdraw.
                    Some(current) if !failing => (current, String::new()),
                    _ => (
                        false,
                        format!("no good reply from the node for {} ms: {error}", FAIL_AFTER.as_millis()),
                    ),
                }
            }
        };
        if announced != Some(want) {
            if announced.is_some() || !why.is_empty() {
                eprintln!("spdu exabgp: {}: {why}", if want { "announce" } else { "withdraw" });
            }
            let text = lines(&anycast.prefixes, anycast.med, want);
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).context("writing to ExaBGP (stdout)")?;
            stdout.flush().context("writing to ExaBGP (stdout)")?;
            announced = Some(want);
        }
    }
}

/// Reads ExaBGP's acknowledgements until stdin closes or ExaBGP says `shutdown`; logs anything
/// but `done` (an `error` names a command ExaBGP refused).
fn read_acks() {
    for line in std::io::stdin().lock().split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        match line.trim() {
            "done" | "" => {}
            // ExaBGP is stopping (4.2 writes `shutdown <pid> <ppid>`): it reads no more lines.
            l if l == "shutdown" || l.starts_with("shutdown ") => break,
            other => eprintln!("spdu exabgp: ExaBGP answered: {}", crate::text::escape(other)),
        }
    }
}

/// One `GET /v1/anycast`.
async fn poll(client: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<Reply> {
    let response = client.get(url.clone()).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        // The body is the node's text, or anyone's who listens there: escaped, cut short.
        let body: String = crate::text::escape(body.trim()).chars().take(200).collect();
        anyhow::bail!("{url} answered HTTP {}: {body}", status.as_u16());
    }
    serde_json::from_str(&body).with_context(|| format!("{url} sent an answer this version cannot read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_every_prefix_with_next_hop_self() {
        let prefixes: Vec<Prefix> =
            ["198.18.100.0/24", "2001:db8:5::/48"].iter().map(|p| p.parse().unwrap()).collect();
        assert_eq!(
            lines(&prefixes, Some(110), true),
            "announce route 198.18.100.0/24 next-hop self med 110\n\
             announce route 2001:db8:5::/48 next-hop self med 110\n"
        );
        assert_eq!(lines(&prefixes[..1], None, true), "announce route 198.18.100.0/24 next-hop self\n");
        assert_eq!(
            lines(&prefixes, Some(110), false),
            "withdraw route 198.18.100.0/24 next-hop self\nwithdraw route 2001:db8:5::/48 next-hop self\n"
        );
    }
}
