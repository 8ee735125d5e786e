//! Monitoring as the tools see it: `/metrics` of a running node checked by `promtool`, the
//! alert rules file checked by `promtool`, `spdu zone` checked by `kzonecheck` and dig, and the
//! exit codes of `spdu check-health` in every state, on real nodes.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use spdu_cluster::{LocalCluster, POOL_NAME, ZONE_ORIGIN};
use tokio::task::JoinHandle;

use crate::testing::{dig, dig_pool, http_service, ips, run_spdu, spdu, start_cluster, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);
const SERVICE_PORT: u16 = 18080;
const HTTP_CHECK: &str =
    "\n[health]\ncheck = \"http\"\nport = 18080\npath = \"/healthz\"\nexpect_body = \"ok\"\n";

/// Runs a Debian tool with `args`, `stdin` fed to it; `None` (with a loud message) when the tool
/// is not installed, so the test says what it skipped. CI sets `SPDU_REQUIRE_TOOLS=1`, which
/// turns a missing tool into a failure.
fn tool(name: &str, package: &str, args: &[&str], stdin: &str) -> Option<Output> {
    let child = Command::new(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("SPDU_REQUIRE_TOOLS").is_none(),
                "{name} is required (SPDU_REQUIRE_TOOLS is set): apt-get install {package}"
            );
            eprintln!("SKIPPED: {name} is not installed (apt-get install {package})");
            return None;
        }
        Err(e) => panic!("running {name}: {e}"),
    };
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    Some(child.wait_with_output().unwrap())
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// GETs `/metrics` of site `i` with `accept` as the Accept header: (content type, body).
async fn scrape(cluster: &LocalCluster, i: usize, accept: &str) -> (String, String) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}/metrics", cluster.control_addr(i)))
        .header("accept", accept)
        .send()
        .await
        .expect("metrics");
    assert!(response.status().is_success());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

/// Appends `[health]` (an HTTP check on [`SERVICE_PORT`]) to every site's config of a created
/// cluster, starts every site and waits until they serve.
async fn start_with_health(mut cluster: LocalCluster) -> LocalCluster {
    for i in 0..cluster.len() {
        cluster.edit_config(i, |text| text + HTTP_CHECK).unwrap();
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    cluster
}

fn services(cluster: &LocalCluster) -> Vec<JoinHandle<()>> {
    (0..cluster.len()).map(|i| http_service((cluster.ip(i), SERVICE_PORT).into(), Duration::ZERO)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_prometheus_naming_and_pass_promtool() {
    let cluster = LocalCluster::create(spdu(), 2, [127, 0, 141, 11].into(), Default::default(), "")
        .expect("cluster config");
    let cluster = start_with_health(cluster).await;
    let running = services(&cluster);
    let both = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "both sites in alpha's answer", || dig_pool(cluster.dns_addr(0)) == both);
    // Service checks have run on both sides once they are in the answer; wait for a latency.
    let url = format!("http://{}/metrics", cluster.control_addr(0));
    wait_until(CONVERGE, "a service check latency and a peer RTT", || {
        let body = spdu_cluster::http_get(&url).unwrap_or_default();
        body.contains("spdu_health_latency_seconds{site=\"alpha\"}")
            && body.contains("spdu_gossip_peer_rtt_seconds{peer=\"beta\"}")
    });

    let (content_type, body) = scrape(&cluster, 0, "text/plain").await;
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!("/metrics of a 2-site node: {series} series, {} bytes", body.len());
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let Some(out) = tool("promtool", "prometheus", &["check", "metrics"], &body) else { return };
    assert!(out.status.success() && text(&out).is_empty(), "promtool check metrics:\n{}\n{body}", text(&out));

    for series in [
        "spdu_dns_queries_total{rcode=\"noerror\",qtype=\"a\",transport=\"udp\"} ",
        "spdu_gossip_handshakes_refused_total ",
        "spdu_gossip_payload_sent_bytes_total ",
        "spdu_gossip_udp_sent_bytes_total ",
        "spdu_gossip_answer_changes_total ",
        "spdu_gossip_site_in_answer{site=\"alpha\"} 1",
        "spdu_gossip_site_in_answer{site=\"beta\"} 1",
        "spdu_gossip_peer_reachable{peer=\"beta\"} 1",
        "spdu_gossip_peer_roster_agrees{peer=\"beta\"} 1",
        "spdu_gossip_peer_policy_agrees{peer=\"beta\"} 1",
        "spdu_health_ok{site=\"alpha\"} 1",
        "spdu_node_info{site=\"alpha\",cluster=\"pool.example.test\",version=\"",
        "# TYPE spdu_dns_queries_total counter",
        "# TYPE spdu_health_latency_seconds gauge",
    ] {
        assert!(body.lines().any(|l| l.starts_with(series)), "no {series:?} in:\n{body}");
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("spdu_"), "not prefixed: {line}");
    }
    // The alert rules use only series that exist (or that the reload and notify parts own).
    let rules = std::fs::read_to_string(alerts_path()).unwrap();
    for name in metric_names(&rules) {
        let elsewhere = ["spdu_reloads_total", "spdu_notify_dropped_total"].contains(&name.as_str());
        assert!(
            elsewhere || body.contains(&format!("# TYPE {name} ")),
            "alerts.yml uses {name}, which /metrics does not have"
        );
    }
    // Seconds, not microseconds: a loopback check takes well under a second.
    let latency: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("spdu_health_latency_seconds{site=\"alpha\"} "))
        .and_then(|v| v.parse().ok())
        .expect("a latency");
    assert!(latency > 0.0 && latency < 5.0, "latency {latency} s");

    // Prometheus asks for OpenMetrics, and gets it (same series, `# EOF` at the end).
    let (content_type, om) =
        scrape(&cluster, 0, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
            .await;
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE spdu_dns_queries counter"), "{om}");
    assert!(om.contains("# UNIT spdu_health_latency_seconds seconds"), "{om}");
    running.iter().for_each(JoinHandle::abort);
}

fn alerts_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/alerts.yml")
}

/// Every `spdu_…` word in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("spdu_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = alerts_path();
    assert!(metric_names(&std::fs::read_to_string(&rules).unwrap()).len() >= 5);
    let Some(out) = tool("promtool", "prometheus", &["check", "rules", rules.to_str().unwrap()], "") else {
        return;
    };
    assert!(out.status.success(), "promtool check rules:\n{}", text(&out));
    assert!(text(&out).contains("SUCCESS: 8 rules found"), "{}", text(&out));
    // Each alert fires on the series it is about, and not on the others (alerts.test.yml).
    let tests = rules.with_file_name("alerts.test.yml");
    let out = tool("promtool", "prometheus", &["test", "rules", tests.to_str().unwrap()], "").unwrap();
    assert!(out.status.success() && text(&out).contains("SUCCESS"), "promtool test rules:\n{}", text(&out));
}

/// `spdu zone` against site `i`'s config: its stdout (asserting success).
fn spdu_zone(cluster: &LocalCluster, i: usize) -> String {
    let out = run_spdu(&["zone", "--config", cluster.config_path(i).to_str().unwrap()]);
    assert!(out.status.success(), "spdu zone: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The record lines of a master file (or of dig's answer section) with blanks normalised, for
/// `owner` and `rtype` (e.g. `"A"`, `"SOA"`), sorted.
fn records(text: &str, owner: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.starts_with('$'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            fields.len() > 4 && fields[0].eq_ignore_ascii_case(owner) && fields[3] == rtype
        })
        .collect();
    lines.sort();
    lines
}

/// Checks `zone_text` with kzonecheck (false when it is not installed).
fn kzonecheck(dir: &Path, zone_text: &str) -> bool {
    let file = dir.join("pool.zone");
    std::fs::write(&file, zone_text).unwrap();
    let Some(out) =
        tool("kzonecheck", "knot-dnssecutils", &["-v", "-o", ZONE_ORIGIN, file.to_str().unwrap()], "")
    else {
        return false;
    };
    assert!(out.status.success(), "kzonecheck refused the zone:\n{}\n{zone_text}", text(&out));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_export_passes_kzonecheck_and_matches_what_dns_answers() {
    // `www` answers one address per response, drawn by weight: the file lists every address.
    let www_rule = "[[zone.record]]\nname = \"www\"\npolicy = \"weighted\"\nmax_answers = 1\nttl = 30\n";
    let mut cluster = start_cluster(3, 142, www_rule).await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let api = format!("{POOL_NAME}.");
    let apex = format!("{ZONE_ORIGIN}.");
    let www = format!("www.{ZONE_ORIGIN}.");

    // What dig gets and what the file says agree (read until no change came in between).
    let mut zone = String::new();
    wait_until(CONVERGE, "the zone file to match dig", || {
        zone = spdu_zone(&cluster, 0);
        let answer = dig(cluster.dns_addr(0), &["+noall", "+answer", POOL_NAME, "A"]);
        let soa = dig(cluster.dns_addr(0), &["+noall", "+answer", ZONE_ORIGIN, "SOA"]);
        let ns = dig(cluster.dns_addr(0), &["+noall", "+answer", ZONE_ORIGIN, "NS"]);
        records(&zone, &api, "A") == records(&answer, &api, "A")
            && records(&zone, &apex, "SOA") == records(&soa, &apex, "SOA")
            && records(&zone, &apex, "NS") == records(&ns, &apex, "NS")
    });
    eprintln!("{zone}");
    for ip in &all {
        assert!(zone.contains(&format!("{api} 5 IN A {ip}\n")), "{ip} missing:\n{zone}");
        assert!(zone.contains(&format!("{www} 30 IN A {ip}\n")), "{ip} missing for www:\n{zone}");
    }
    let one = dig(cluster.dns_addr(0), &["+noall", "+answer", &www, "A"]);
    let one = records(&one, &www, "A");
    assert_eq!(one.len(), 1, "dig gets one of www's addresses: {one:?}");
    assert!(records(&zone, &www, "A").contains(&one[0]), "{one:?} is in the file:\n{zone}");
    assert_eq!(records(&zone, &apex, "SOA").len(), 1, "{zone}");
    assert_eq!(records(&zone, &apex, "NS").len(), 3, "{zone}");
    let dir = tempfile::tempdir().unwrap();
    if !kzonecheck(dir.path(), &zone) {
        return;
    }
    let serial =
        |zone: &str| -> u64 { records(zone, &apex, "SOA")[0].split(' ').nth(6).unwrap().parse().unwrap() };

    // gamma stops: the next export has no gamma, a newer serial, and still passes.
    cluster.stop(2).unwrap();
    let survivors = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "alpha to drop gamma", || dig_pool(cluster.dns_addr(0)) == survivors);
    let after = spdu_zone(&cluster, 0);
    assert!(!after.contains(&cluster.ip(2).to_string()), "{after}");
    assert!(serial(&after) > serial(&zone), "serial grows:\n{zone}\n{after}");
    assert!(kzonecheck(dir.path(), &after));

    // `--control` names the endpoint directly; nothing listening is a clear error.
    let out = run_spdu(&["zone", "--control", &cluster.control_addr(1).to_string()]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" IN SOA "));
    let out = run_spdu(&["zone", "--control", &cluster.control_addr(2).to_string()]);
    assert!(!out.status.success(), "gamma is stopped");
    assert!(text(&out).contains("cannot reach spdu control endpoint"), "{}", text(&out));
}

/// `spdu check-health` against `args`: its exit code and its one output line.
fn check_health_with(args: &[&str]) -> (i32, String) {
    let out = run_spdu(&[&["check-health"], args].concat());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one status line: {stdout:?}");
    (out.status.code().expect("an exit code"), stdout.trim_end().to_owned())
}

/// `spdu check-health --config` of site `i`.
fn check_health(cluster: &LocalCluster, i: usize) -> (i32, String) {
    check_health_with(&["--config", cluster.config_path(i).to_str().unwrap()])
}

/// The value of `series` (name and labels, as exposed) on site `i`'s `/metrics`.
fn series(cluster: &LocalCluster, i: usize, series: &str) -> Option<String> {
    let text = spdu_cluster::http_get(&format!("http://{}/metrics", cluster.control_addr(i))).ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

/// Waits until site `i`'s check-health exits `code`; returns its line.
fn wait_state(cluster: &LocalCluster, i: usize, code: i32, what: &str) -> String {
    let mut line = String::new();
    wait_until(CONVERGE, what, || {
        let (got, text) = check_health(cluster, i);
        line = text;
        got == code
    });
    eprintln!("{}: {line}", cluster.name(i));
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_health_exit_codes_follow_the_sites_state() {
    let cluster = LocalCluster::create(spdu(), 3, [127, 0, 143, 11].into(), Default::default(), "")
        .expect("cluster config");
    let mut cluster = start_with_health(cluster).await;
    let mut running = services(&cluster);

    // OK: all three up and serving.
    let line = wait_state(&cluster, 0, 0, "alpha OK");
    assert!(line.starts_with("SPDU OK - alpha in answer, 3/3 sites up | "), "{line}");
    assert!(line.contains("sites_up=3;;;0;3 peers_reachable=2;;;0;2 answer_size=3;;;0"), "{line}");
    wait_until(CONVERGE, "round-trip times in the performance data", || {
        let (code, line) = check_health(&cluster, 0);
        code == 0 && line.contains(" rtt_beta=") && line.contains(" rtt_gamma=")
    });

    // gamma's service fails: gamma is CRITICAL (own check failing, out of its own answer),
    // alpha WARNING (gamma out of the answer).
    running[2].abort();
    let line = wait_state(&cluster, 2, 2, "gamma CRITICAL");
    assert!(line.starts_with("SPDU CRITICAL - gamma out of its own answer, 2/3 sites up"), "{line}");
    assert!(line.contains("own service check failing ("), "{line}");
    // What the alert rules read says the same.
    assert_eq!(series(&cluster, 2, "spdu_health_ok{site=\"gamma\"}").as_deref(), Some("0"));
    assert_eq!(series(&cluster, 2, "spdu_gossip_site_in_answer{site=\"gamma\"}").as_deref(), Some("0"));
    let line = wait_state(&cluster, 0, 1, "alpha WARNING");
    assert!(
        line.starts_with("SPDU WARNING - alpha in answer, 2/3 sites up; gamma out of the answer"),
        "{line}"
    );
    assert!(!line.contains("unreachable"), "gamma still runs: {line}");

    running[2] = http_service((cluster.ip(2), SERVICE_PORT).into(), Duration::ZERO);
    wait_state(&cluster, 2, 0, "gamma OK again");
    wait_state(&cluster, 0, 0, "alpha OK again");

    // beta's node stops: WARNING at alpha, beta unreachable.
    cluster.stop(1).unwrap();
    let line = wait_state(&cluster, 0, 1, "alpha WARNING for beta");
    assert!(line.contains("beta unreachable"), "{line}");
    assert!(line.contains("peers_reachable=1;;;0;2") && !line.contains("rtt_beta"), "{line}");
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_reachable{peer=\"beta\"}").as_deref(), Some("0"));
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_reachable{peer=\"gamma\"}").as_deref(), Some("1"));

    // Nothing listening: UNKNOWN (3), with the reason; so is a config that does not load.
    let (code, line) = check_health(&cluster, 1);
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("SPDU UNKNOWN - cannot reach spdu control endpoint at 127.0.143.12:"), "{line}");
    let (code, line) = check_health_with(&["--config", "/nonexistent/spdu.toml"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("SPDU UNKNOWN - ") && line.contains("/nonexistent/spdu.toml"), "{line}");
    let out = run_spdu(&["check-health", "--bogus"]);
    assert_eq!(out.status.code(), Some(3), "a usage error is UNKNOWN too");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SPDU UNKNOWN - usage"));
    running.iter().for_each(JoinHandle::abort);
}

/// Removes the `[[peers]]` entry named `peer` from a config's text.
fn without_peer(config: &str, peer: &str) -> String {
    let mut blocks: Vec<&str> = config.split("\n[[peers]]\n").collect();
    let head = blocks.remove(0);
    let kept: Vec<&str> =
        blocks.into_iter().filter(|b| !b.starts_with(&format!("name = \"{peer}\"\n"))).collect();
    assert!(kept.len() < config.matches("[[peers]]").count(), "no peer {peer} in:\n{config}");
    std::iter::once(head.to_owned()).chain(kept.iter().map(|b| format!("\n[[peers]]\n{b}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_health_warns_when_sites_disagree_on_policy_or_roster() {
    let mut cluster = start_cluster(3, 144, "").await;
    wait_state(&cluster, 0, 0, "alpha OK");

    // beta gives itself another priority than its peers give it: another policy digest.
    cluster.stop(1).unwrap();
    cluster.edit_config(1, |text| text.replacen("\n[zone]\n", "priority = 5\n\n[zone]\n", 1)).unwrap();
    cluster.start_site(1).unwrap();
    let line = wait_state(&cluster, 0, 1, "alpha WARNING for beta's policy");
    assert!(line.contains("beta has other failover policies"), "{line}");
    assert!(line.contains("3/3 sites up") && !line.contains("gamma"), "only beta differs: {line}");
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_policy_agrees{peer=\"beta\"}").as_deref(), Some("0"));
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_policy_agrees{peer=\"gamma\"}").as_deref(), Some("1"));

    // Back to the same policy, then gamma drops beta from its roster.
    cluster.stop(1).unwrap();
    cluster.edit_config(1, |text| text.replacen("priority = 5\n", "", 1)).unwrap();
    cluster.start_site(1).unwrap();
    wait_state(&cluster, 0, 0, "alpha OK with beta's policy restored");
    cluster.stop(2).unwrap();
    cluster.edit_config(2, |text| without_peer(&text, "beta")).unwrap();
    cluster.start_site(2).unwrap();
    let line = wait_state(&cluster, 0, 1, "alpha WARNING for gamma's roster");
    assert!(line.contains("gamma on another roster"), "{line}");
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_roster_agrees{peer=\"gamma\"}").as_deref(), Some("0"));
    assert_eq!(series(&cluster, 0, "spdu_gossip_peer_roster_agrees{peer=\"beta\"}").as_deref(), Some("1"));
}
