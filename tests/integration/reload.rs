//! Reloading the config of running `spdu` processes with SIGHUP (`kill -HUP`, as systemd's
//! `ExecReload` does): a site added to every config joins with no restart and no answer gap for
//! the others; a broken config or a restart-only change is refused, logged with the file, line
//! and field, counted in `/metrics`, and the node keeps answering; a removed peer is
//! disconnected and stops counting.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, POOL_NAME, Ports, http_get};

use crate::testing::{dig, dig_pool, ips, spdu, start_cluster, wait_until};

/// Sends SIGHUP to site `i`'s process with `kill`.
pub(crate) fn sighup(cluster: &LocalCluster, i: usize) {
    let pid = cluster.pid(i).expect("the site runs");
    let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -HUP {pid}");
}

/// Site `i`'s config without the `[[peers]]` entry naming `peer` (peers come last).
fn without_peer(text: &str, peer: &str) -> String {
    let mut blocks = text.split("\n[[peers]]\n");
    let head = blocks.next().unwrap_or_default().to_owned();
    blocks
        .filter(|b| !b.contains(&format!("name = \"{peer}\"")))
        .fold(head, |text, block| format!("{text}\n[[peers]]\n{block}"))
}

/// The value of the counter line starting with `series` (any prefix, e.g. `spdu_`) in site
/// `i`'s `/metrics`.
pub(crate) fn counter(cluster: &LocalCluster, i: usize, series: &str) -> u64 {
    let text = http_get(&format!("http://{}/metrics", cluster.control_addr(i))).expect("metrics");
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series || name.ends_with(&format!("_{series}"))).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Site `i`'s log (everything so far).
pub(crate) fn log(cluster: &LocalCluster, i: usize) -> String {
    std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default()
}

/// Waits until site `i`'s log has one more line containing `needle` than `before` (at most 10 s)
/// and returns that line.
fn wait_for_log(cluster: &LocalCluster, i: usize, needle: &str, before: usize) -> String {
    wait_until(Duration::from_secs(10), needle, || log(cluster, i).matches(needle).count() > before);
    log(cluster, i).lines().filter(|l| l.contains(needle)).nth(before).unwrap().to_owned()
}

/// Site `i`'s incarnation, as its own view shows it.
fn incarnation(cluster: &LocalCluster, i: usize) -> u64 {
    let view: serde_json::Value =
        serde_json::from_str(&spdu_cluster::fetch_view(cluster.control_addr(i)).unwrap()).unwrap();
    let me = view["nodes"].as_array().unwrap().iter().find(|n| n["is_self"] == true).unwrap().clone();
    let obs = &me["observation"]["observation"];
    obs["incarnation"].as_u64().unwrap_or_else(|| panic!("no incarnation in {me}"))
}

/// Waits until each of `sites` answers with exactly `expected` (at most 15 s each).
fn wait_answers(cluster: &LocalCluster, sites: &[usize], expected: &[IpAddr], what: &str) {
    for i in sites {
        wait_until(Duration::from_secs(15), what, || dig_pool(cluster.dns_addr(*i)) == expected);
    }
}

/// `n` sites at 127.0.`block`.11…, started, each answering with all of them (their addresses).
async fn answering_cluster(n: usize, block: u8) -> (LocalCluster, Vec<IpAddr>) {
    let cluster = start_cluster(n, block, "").await;
    let sites: Vec<usize> = (0..n).collect();
    let all = ips(&cluster, &sites);
    wait_answers(&cluster, &sites, &all, "every site in every answer");
    (cluster, all)
}

/// The nodes of site `i`'s view (`/v1/peers`).
fn view_nodes(cluster: &LocalCluster, i: usize) -> Vec<serde_json::Value> {
    let view: serde_json::Value =
        serde_json::from_str(&spdu_cluster::fetch_view(cluster.control_addr(i)).unwrap()).unwrap();
    view["nodes"].as_array().unwrap().clone()
}

/// The observers whose votes on `peer` site `i` counts (keys, as its view shows them).
fn voters(cluster: &LocalCluster, i: usize, peer: &str) -> Vec<serde_json::Value> {
    let nodes = view_nodes(cluster, i);
    let node = nodes.iter().find(|n| n["name"] == peer).unwrap_or_else(|| panic!("no {peer} in {nodes:?}"));
    node["voters"].as_array().unwrap().clone()
}

/// Every answer of a [`query_loop`], with the site asked.
type Answers = Vec<(usize, Result<Vec<IpAddr>, String>)>;

/// Queries each of `sites` over and over (the real client, UDP) until `stop`, at most 10 000
/// rounds, and returns every answer with the site asked.
fn query_loop(
    cluster: &LocalCluster,
    sites: &[usize],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Answers> {
    let targets: Vec<(usize, std::net::SocketAddr)> =
        sites.iter().map(|i| (*i, cluster.dns_addr(*i))).collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for (i, addr) in &targets {
                let answer = runtime.block_on(spdu_cluster::query_addresses(*addr, POOL_NAME));
                seen.push((*i, answer.map_err(|e| e.to_string())));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_site_joins_three_running_nodes_with_no_restart_and_no_gap() {
    let mut cluster =
        LocalCluster::create(spdu(), 4, Ipv4Addr::new(127, 0, 150, 11), Ports::default(), "").unwrap();
    let full: Vec<String> =
        (0..4).map(|i| std::fs::read_to_string(cluster.config_path(i)).unwrap()).collect();
    for (i, text) in full.iter().enumerate().take(3) {
        cluster.edit_config(i, |_| without_peer(text, "delta")).unwrap();
        cluster.start_site(i).unwrap();
    }
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    let three = ips(&cluster, &[0, 1, 2]);
    wait_answers(&cluster, &[0, 1, 2], &three, "three sites in every answer");
    let pids: Vec<Option<u32>> = (0..3).map(|i| cluster.pid(i)).collect();
    let incarnations: Vec<u64> = (0..3).map(|i| incarnation(&cluster, i)).collect();

    // While the three answer queries without pause, each operator adds delta to its config,
    // delta starts, and the three get SIGHUP.
    let stop = Arc::new(AtomicBool::new(false));
    let queries = query_loop(&cluster, &[0, 1, 2], stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    cluster.start_site(3).unwrap();
    for (i, text) in full.iter().enumerate().take(3) {
        cluster.edit_config(i, |_| text.clone()).unwrap();
        sighup(&cluster, i);
    }
    for i in 0..3 {
        let line = wait_for_log(&cluster, i, "reload applied", 0);
        assert!(line.contains("added delta"), "{line}");
    }
    cluster.wait_site_ready(3, Duration::from_secs(20)).await.unwrap();
    let four = ips(&cluster, &[0, 1, 2, 3]);
    wait_answers(&cluster, &[0, 1, 2, 3], &four, "delta in every answer");
    let joined = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = queries.join().unwrap();

    // No restart: same processes, same incarnations; the reload is counted.
    for i in 0..3 {
        assert_eq!(cluster.pid(i), pids[i]);
        assert!(cluster.is_running(i));
        assert_eq!(incarnation(&cluster, i), incarnations[i], "{} kept its incarnation", cluster.name(i));
        assert_eq!(counter(&cluster, i, "reloads_total{result=\"ok\"}"), 1);
        assert_eq!(counter(&cluster, i, "reloads_total{result=\"refused\"}"), 0);
    }
    // No gap: every answer during the change held all three, and delta appeared.
    assert!(seen.len() >= 30, "too few queries to tell: {}", seen.len());
    for (i, answer) in &seen {
        let answer = answer.as_ref().unwrap_or_else(|e| panic!("site {i} did not answer: {e}"));
        assert!(three.iter().all(|ip| answer.contains(ip)), "site {i} answered {answer:?} during the reload");
    }
    assert!(seen.iter().any(|(_, a)| a.as_ref().is_ok_and(|a| *a == four)), "delta seen in the loop");
    eprintln!(
        "delta in every answer {joined:?} after it started; {} queries, none without the three",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_or_a_restart_only_change_is_refused_and_the_node_keeps_answering() {
    let (mut cluster, both) = answering_cluster(2, 151).await;
    let good = std::fs::read_to_string(cluster.config_path(0)).unwrap();
    let path = cluster.config_path(0).display().to_string();
    let key_path = cluster.dir().join("alpha.key");
    let pid = cluster.pid(0);

    // Each broken or restart-only config: refused, named in the log, counted; alpha answers.
    let new_key = cluster.dir().join("other.key");
    let out = Command::new(spdu()).args(["keygen", "--out", new_key.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "a field out of range",
            good.replace("[zone]", "[timing]\nprobe_interval_ms = 1\n\n[zone]"),
            vec![format!("{path}:"), "timing.probe_interval_ms".into()],
        ),
        ("a TOML mistake", good.replace("ttl = 5", "ttl = five"), vec![format!("{path}:")]),
        (
            "another key file",
            good.replace("key = \"alpha.key\"", "key = \"other.key\""),
            vec![format!("{path}: node.key: changed from "), "needs a restart".into()],
        ),
        (
            "another gossip address",
            good.replace(":17946\"\ndns", ":17950\"\ndns"),
            vec![format!("{path}: node.gossip: changed from "), "needs a restart".into()],
        ),
    ];
    for (n, (case, text, expected)) in cases.iter().enumerate() {
        cluster.edit_config(0, |_| text.clone()).unwrap();
        assert_ne!(text, &good, "{case}: the edit changed nothing");
        sighup(&cluster, 0);
        let line = wait_for_log(&cluster, 0, "reload refused", n);
        for e in expected {
            assert!(line.contains(e.as_str()), "{case}: {e:?} not in: {line}");
        }
        assert!(line.contains("still running the previous config"), "{line}");
        assert_eq!(counter(&cluster, 0, "reloads_total{result=\"refused\"}"), n as u64 + 1);
        assert_eq!(dig_pool(cluster.dns_addr(0)), both, "{case}: alpha still answers as before");
    }
    // The key file itself replaced (same path, another key): refused too.
    let saved = std::fs::read(&key_path).unwrap();
    std::fs::copy(&new_key, &key_path).unwrap();
    cluster.edit_config(0, |_| good.clone()).unwrap();
    sighup(&cluster, 0);
    let line = wait_for_log(&cluster, 0, "reload refused", cases.len());
    assert!(line.contains("node.key: changed from key "), "{line}");
    std::fs::write(&key_path, saved).unwrap();

    // The same process all along, still answering; then a valid change (the TTL) applies.
    assert_eq!(cluster.pid(0), pid);
    assert!(cluster.is_running(0));
    assert!(dig(cluster.dns_addr(0), &["+noall", "+answer", POOL_NAME, "A"]).contains("\t5\tIN\tA\t"));
    cluster.edit_config(0, |_| good.replace("ttl = 5", "ttl = 7")).unwrap();
    sighup(&cluster, 0);
    wait_for_log(&cluster, 0, "reload applied", 0);
    let answer = dig(cluster.dns_addr(0), &["+noall", "+answer", POOL_NAME, "A"]);
    assert!(answer.contains("\t7\tIN\tA\t"), "the new TTL is served: {answer}");
    assert_eq!(counter(&cluster, 0, "reloads_total{result=\"ok\"}"), 1);
    assert_eq!(counter(&cluster, 0, "reloads_total{result=\"refused\"}"), cases.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_is_disconnected_and_stops_counting() {
    let (cluster, _) = answering_cluster(3, 152).await;
    wait_until(Duration::from_secs(10), "a full mesh", || {
        counter(&cluster, 0, "gossip_connections_open") == 4
    });
    let refused = counter(&cluster, 0, "gossip_handshakes_refused_total");
    let gamma_key = view_nodes(&cluster, 0).iter().find(|n| n["name"] == "gamma").unwrap()["key"].clone();
    wait_until(Duration::from_secs(5), "gamma votes on beta at alpha", || {
        voters(&cluster, 0, "beta").contains(&gamma_key)
    });

    // alpha and beta drop gamma from their rosters.
    for i in 0..2 {
        let text = std::fs::read_to_string(cluster.config_path(i)).unwrap();
        cluster.edit_config(i, |_| without_peer(&text, "gamma")).unwrap();
        sighup(&cluster, i);
        let line = wait_for_log(&cluster, i, "reload applied", 0);
        assert!(line.contains("removed gamma"), "{line}");
    }
    let two = ips(&cluster, &[0, 1]);
    wait_answers(&cluster, &[0, 1], &two, "gamma gone from the answer");
    // Its connections are closed and its redials refused by the handshake.
    wait_until(Duration::from_secs(10), "only beta's connections", || {
        counter(&cluster, 0, "gossip_connections_open") == 2
    });
    wait_until(Duration::from_secs(10), "gamma's redials refused", || {
        counter(&cluster, 0, "gossip_handshakes_refused_total") > refused
    });
    // It is gone from alpha's view (the view is cached for up to 250 ms), and so are its votes.
    wait_until(Duration::from_secs(5), "gamma gone from alpha's view", || {
        view_nodes(&cluster, 0).iter().all(|n| n["name"] != "gamma")
    });
    assert_eq!(view_nodes(&cluster, 0).len(), 2);
    let beta_voters = voters(&cluster, 0, "beta");
    assert_eq!(beta_voters.len(), 1, "alpha's own vote only: {beta_voters:?}");
    assert!(!beta_voters.contains(&gamma_key));
    // gamma hears nobody any more.
    let gamma = vec![cluster.ip(2)];
    wait_until(Duration::from_secs(15), "gamma alone", || dig_pool(cluster.dns_addr(2)) == gamma);
    // And alpha still answers beta: beta's votes over the new roster count.
    assert_eq!(dig_pool(cluster.dns_addr(0)), two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_a_reload() {
    let (cluster, both) = answering_cluster(2, 153).await;
    // alpha's operator adds a TCP check of a service that is not running: once reloaded, the
    // check runs, alpha's service is down, and both sites answer beta only.
    let good = std::fs::read_to_string(cluster.config_path(0)).unwrap();
    let checked =
        good.replace("[zone]", "[health]\ncheck = \"tcp\"\nport = 18143\ninterval_ms = 200\n\n[zone]");
    cluster.edit_config(0, |_| checked).unwrap();
    sighup(&cluster, 0);
    let line = wait_for_log(&cluster, 0, "reload applied", 0);
    assert!(line.contains("health changed"), "{line}");
    let beta = vec![cluster.ip(1)];
    wait_answers(&cluster, &[0, 1], &beta, "alpha out");
    // The service starts: alpha is back.
    let service = std::net::TcpListener::bind((cluster.ip(0), 18143)).unwrap();
    wait_answers(&cluster, &[0, 1], &both, "alpha back");
    // The service stops again (alpha out), then the check is removed by a reload: the old
    // verdict goes with it and alpha is back, checked by nothing.
    drop(service);
    wait_answers(&cluster, &[0, 1], &beta, "alpha out again");
    cluster.edit_config(0, |_| good).unwrap();
    sighup(&cluster, 0);
    wait_for_log(&cluster, 0, "reload applied", 1);
    wait_answers(&cluster, &[0, 1], &both, "alpha back unchecked");
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..2 {
        assert_eq!(dig_pool(cluster.dns_addr(i)), both);
    }
}
