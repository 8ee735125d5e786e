//! Failover policies end to end: real `spdu run` clusters on loopback, asked with `dig` (content
//! and TTL of single answers) and with the harness's DNS client (counting thousands of answers).
//!
//! One test per behaviour of the `[[zone.record]]` rules: `priority` (failover, failback,
//! `min_change_interval_ms` delaying the failback but never a removal), `weighted` (shares over
//! 10,000 answers, the weight-0 standby), `fastest` (the fastest site, sticky), `all` with
//! `max_answers`, `sites`, `ttl` and `ttl_degraded`, and `spdu explain` (table, JSON and the
//! control endpoint). Every site's config gives every site the same `priority` and `weight`
//! (`LocalCluster::create_with`). Each test has its own 127.0.N.0/24 block, N in 90..=96, and
//! waits only with bounds.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use spdu_cluster::{LocalCluster, Ports, ZONE_ORIGIN};
use spdu_gossip::snapshot::Explanation;
use spdu_policy::Policy;
use tokio::task::JoinHandle;

use crate::testing::{dig, http_service, ips, run_spdu, spdu, wait_until};

/// Longest wait for a cluster to settle on an answer.
const CONVERGE: Duration = Duration::from_secs(15);

/// `name` under the pool's origin.
fn fqdn(name: &str) -> String {
    format!("{name}.{ZONE_ORIGIN}")
}

/// `n` sites at 127.0.`block`.11…, with `extra_toml` in every config and `site_toml(i)` saying
/// site `i`'s attributes everywhere; every config passes `spdu check`; all started and ready.
async fn policy_cluster(
    n: usize,
    block: u8,
    extra_toml: &str,
    site_toml: impl Fn(usize) -> String,
) -> LocalCluster {
    let base = Ipv4Addr::new(127, 0, block, 11);
    let mut cluster = LocalCluster::create_with(spdu(), n, base, Ports::default(), extra_toml, site_toml)
        .expect("cluster config");
    for i in 0..n {
        check_config(&cluster, i);
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    cluster
}

/// Asserts that `spdu check` accepts site `i`'s config.
fn check_config(cluster: &LocalCluster, i: usize) {
    let path = cluster.config_path(i);
    let check = run_spdu(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "spdu check refuses {}:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&check.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// One A answer as dig shows it.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// The addresses, sorted.
    addrs: Vec<IpAddr>,
    /// The records' TTL (every record of the answer has it); None without records.
    ttl: Option<u32>,
}

/// Asks `server` for `name`'s A records with dig and returns the answer section.
fn dig_answer(server: SocketAddr, name: &str) -> Answer {
    let out = dig(server, &["+noall", "+answer", &fqdn(name), "A"]);
    let mut addrs = Vec::new();
    let mut ttls = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, ttl, "IN", "A", addr] = fields[..] {
            ttls.push(ttl.parse::<u32>().unwrap_or_else(|_| panic!("TTL in {line:?}")));
            addrs.push(addr.parse::<IpAddr>().unwrap_or_else(|_| panic!("address in {line:?}")));
        }
    }
    ttls.dedup();
    assert!(ttls.len() <= 1, "records of one answer with different TTLs: {out}");
    addrs.sort();
    Answer { addrs, ttl: ttls.first().copied() }
}

/// The A addresses `server` answers for `name`, sorted (dig).
fn dig_addrs(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    dig_answer(server, name).addrs
}

/// Asks `server` for `name` `count` times with the harness's DNS client (8 at a time) and
/// returns every response's addresses, sorted within a response.
async fn responses(server: SocketAddr, name: &str, count: usize) -> Vec<Vec<IpAddr>> {
    const WORKERS: usize = 8;
    let name = fqdn(name);
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let n = count / WORKERS + usize::from(w < count % WORKERS);
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let mut tries = 0;
                let addrs = loop {
                    match spdu_cluster::query_addresses(server, &name).await {
                        Ok(addrs) => break addrs,
                        Err(e) if tries < 2 => {
                            tries += 1;
                            eprintln!("retrying a query of {name} at {server}: {e}");
                        }
                        Err(e) => panic!("{name} at {server}: {e}"),
                    }
                };
                out.push(addrs);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.expect("query task"));
    }
    all
}

/// How often each address appears over `responses`.
fn tally(responses: &[Vec<IpAddr>]) -> BTreeMap<IpAddr, usize> {
    let mut counts = BTreeMap::new();
    for addr in responses.iter().flatten() {
        *counts.entry(*addr).or_default() += 1;
    }
    counts
}

/// `spdu explain NAME --config <site i> --json`, parsed.
fn explain_json(cluster: &LocalCluster, i: usize, name: &str) -> Value {
    let config = cluster.config_path(i).to_str().unwrap().to_owned();
    let out = run_spdu(&["explain", name, "--config", &config, "--json"]);
    assert!(
        out.status.success(),
        "spdu explain {name} at {} failed: {}",
        cluster.name(i),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("spdu explain --json printed no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

/// The entry of the site called `site` in an explanation.
fn site_of<'a>(explanation: &'a Value, site: &str) -> &'a Value {
    explanation["sites"]
        .as_array()
        .unwrap_or_else(|| panic!("no sites in {explanation:#}"))
        .iter()
        .find(|s| s["name"] == site)
        .unwrap_or_else(|| panic!("{site} missing from {explanation:#}"))
}

/// `priority = P` and `weight = W` for a site's config entries.
fn attrs(priority: u32, weight: u32) -> String {
    format!("priority = {priority}\nweight = {weight}")
}

/// Primary/backup on three sites (alpha priority 1, beta and gamma 2): only alpha while it is
/// up, with the normal TTL; beta and gamma together with the degraded TTL while it is down;
/// alpha alone again once it is back. `api` (`[zone] names`) keeps every site and its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_fails_over_to_the_backups_and_back() {
    let records = "[[zone.record]]\nname = \"www\"\npolicy = \"priority\"\nttl = 30\nttl_degraded = 2\n";
    let mut cluster = policy_cluster(3, 90, records, |i| attrs(if i == 0 { 1 } else { 2 }, 100)).await;
    let primary = ips(&cluster, &[0]);
    let backups = ips(&cluster, &[1, 2]);
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "every site to answer www with the primary alone", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "www") == primary)
    });
    for i in 0..3 {
        let answer = dig_answer(cluster.dns_addr(i), "www");
        assert_eq!(answer, Answer { addrs: primary.clone(), ttl: Some(30) }, "{}", cluster.name(i));
    }
    wait_until(CONVERGE, "api to hold every site", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "api") == all)
    });
    assert_eq!(dig_answer(cluster.dns_addr(0), "api").ttl, Some(5), "api keeps [zone].ttl");

    // The primary is lost: both backups, with the degraded TTL.
    cluster.stop(0).unwrap();
    let failover = wait_until(CONVERGE, "beta and gamma to answer www with the backups", || {
        (1..3).all(|i| dig_addrs(cluster.dns_addr(i), "www") == backups)
    });
    eprintln!("primary lost: backups answer after {failover:?}");
    for _ in 0..5 {
        for i in 1..3 {
            let answer = dig_answer(cluster.dns_addr(i), "www");
            assert_eq!(
                answer,
                Answer { addrs: backups.clone(), ttl: Some(2) },
                "{} while degraded",
                cluster.name(i)
            );
            // api is `all` with ttl_degraded = ttl.
            assert_eq!(
                dig_answer(cluster.dns_addr(i), "api"),
                Answer { addrs: backups.clone(), ttl: Some(5) }
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The primary returns: it alone again, with the normal TTL.
    cluster.restart(0).unwrap();
    cluster.wait_site_ready(0, Duration::from_secs(20)).await.unwrap();
    let failback = wait_until(CONVERGE, "every site to answer www with the primary again", || {
        (0..3).all(|i| {
            dig_answer(cluster.dns_addr(i), "www") == Answer { addrs: primary.clone(), ttl: Some(30) }
        })
    });
    eprintln!("primary back: every site answers with it alone after {failback:?}");
    for i in 0..3 {
        let seen = tally(&responses(cluster.dns_addr(i), "www", 200).await);
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), primary, "{}: {seen:?}", cluster.name(i));
    }
}

/// `min_change_interval_ms` holds the failback to the primary until the interval since the last
/// change has passed (and `spdu explain` says so), but never delays the primary's removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_failback_waits_for_the_change_interval_but_removal_does_not() {
    const INTERVAL: Duration = Duration::from_millis(6_000);
    let records = format!(
        "[[zone.record]]\nname = \"www\"\npolicy = \"priority\"\nttl = 10\nttl_degraded = 1\n\
         min_change_interval_ms = {}\n",
        INTERVAL.as_millis()
    );
    let mut cluster = policy_cluster(2, 91, &records, |i| attrs(i as u32 + 1, 100)).await;
    let (alpha, beta) = (ips(&cluster, &[0]), ips(&cluster, &[1]));
    let backup = cluster.dns_addr(1);
    // Beta's first choice may have been itself (before alpha qualified): the change to alpha
    // can then be held for up to one interval.
    wait_until(CONVERGE + INTERVAL, "both sites to answer www with alpha", || {
        (0..2).all(|i| dig_addrs(cluster.dns_addr(i), "www") == alpha)
    });

    cluster.stop(0).unwrap();
    let lost = Instant::now();
    wait_until(CONVERGE, "beta to answer www with itself", || dig_addrs(backup, "www") == beta);
    let removed = Instant::now();
    eprintln!("alpha removed at beta after {:?}", removed - lost);

    // Alpha returns at once; beta must keep answering with itself until the interval since the
    // removal has passed, and explain shows the held change meanwhile.
    cluster.restart(0).unwrap();
    cluster.wait_site_ready(0, Duration::from_secs(20)).await.unwrap();
    let mut held_seen = false;
    let failback = loop {
        let addrs = dig_addrs(backup, "www");
        if addrs == alpha {
            break Instant::now();
        }
        assert_eq!(addrs, beta, "beta answers itself until the failback");
        let explanation = explain_json(&cluster, 1, "www");
        let alpha_site = site_of(&explanation, "alpha");
        if alpha_site["qualifies"] == true && alpha_site["in_answer"] == false {
            assert!(
                explanation["due_in_ms"].as_u64().is_some(),
                "alpha qualifies but is not in the answer, so a change is held: {explanation:#}"
            );
            assert!(
                explanation["due_in_ms"].as_u64().unwrap() <= INTERVAL.as_millis() as u64,
                "{explanation:#}"
            );
            assert_eq!(explanation["min_change_interval_ms"], INTERVAL.as_millis() as u64);
            assert!(
                alpha_site["why"].as_str().unwrap_or("").contains("held"),
                "alpha's why names the held change: {alpha_site:#}"
            );
            if !held_seen {
                let config = cluster.config_path(1).to_str().unwrap().to_owned();
                let table = run_spdu(&["explain", "www", "--config", &config]);
                let table = String::from_utf8_lossy(&table.stdout).into_owned();
                let header = table.lines().next().unwrap_or("");
                assert!(header.contains("held change"), "the table's header names the held change:\n{table}");
                eprintln!("{table}");
            }
            held_seen = true;
        }
        assert!(removed.elapsed() < INTERVAL + CONVERGE, "alpha never came back at beta");
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = failback - removed;
    eprintln!("failback at beta {waited:?} after the removal (interval {INTERVAL:?})");
    // The node changed at most one poll before we saw the removal: allow 500 ms for that.
    assert!(
        waited + Duration::from_millis(500) >= INTERVAL,
        "the failback came {waited:?} after the removal, before min_change_interval_ms"
    );
    assert!(held_seen, "alpha was never seen qualifying while held back (explain at beta)");

    // The failback was a change: a removal right after it must not wait for the interval.
    cluster.stop(0).unwrap();
    let removal =
        wait_until(INTERVAL - Duration::from_millis(1_000), "beta to drop alpha again at once", || {
            dig_addrs(backup, "www") == beta
        });
    eprintln!("alpha removed again {removal:?} after the stop, {:?} after the failback", failback.elapsed());
    assert!(failback.elapsed() < INTERVAL, "the second removal came after the interval anyway");
}

/// `weighted`, one address per response, weights 100/50/50 and a weight-0 standby: over
/// 10,000 responses the shares match the weights; the standby never appears while a
/// positive-weight site of the name qualifies, and is the answer once none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_shares_follow_the_weights_and_the_standby_waits() {
    let records = "[[zone.record]]\nname = \"w\"\npolicy = \"weighted\"\nmax_answers = 1\n\n\
                   [[zone.record]]\nname = \"spare\"\npolicy = \"weighted\"\nmax_answers = 1\n\
                   sites = [\"beta\", \"gamma\", \"delta\"]\nttl = 20\nttl_degraded = 3\n\n\
                   [dns]\nrrl_rate = 0\n";
    // Response rate limiting off: 5,000 queries from one client in a few seconds are a sample
    // of the weights here, not a flood.
    let weights = [100, 50, 50, 0];
    let mut cluster = policy_cluster(4, 92, records, |i| attrs(1, weights[i])).await;
    let all = ips(&cluster, &[0, 1, 2, 3]);
    wait_until(CONVERGE, "alpha and beta to see every site qualify", || {
        (0..2).all(|i| dig_addrs(cluster.dns_addr(i), "api") == all)
    });

    // 5,000 responses from each of alpha and beta (each samples on its own).
    let started = Instant::now();
    let mut answers = responses(cluster.dns_addr(0), "w", 5_000).await;
    answers.extend(responses(cluster.dns_addr(1), "w", 5_000).await);
    eprintln!("10,000 weighted answers in {:?}", started.elapsed());
    assert!(answers.iter().all(|a| a.len() == 1), "max_answers = 1: every response holds one address");
    assert_eq!(dig_answer(cluster.dns_addr(0), "w").addrs.len(), 1, "dig sees one address too");
    let counts = tally(&answers);
    let total = answers.len() as f64;
    // Each site's count is binomial(N = 10,000, p = w / 200). Allowing 5 standard deviations,
    // sqrt(p (1 - p) / N): ±0.025 for p = 0.5 and ±0.0217 for p = 0.25 (a false alarm has odds
    // below 1e-6 per share), while equal shares (1/3 each: 19 sigma off for the 0.25 sites) or
    // any weight ignored fail.
    for (i, weight) in weights.iter().enumerate() {
        let p = f64::from(*weight) / 200.0;
        let share = counts.get(&cluster.ip(i)).copied().unwrap_or(0) as f64 / total;
        let tolerance = 5.0 * (p * (1.0 - p) / total).sqrt();
        eprintln!(
            "{}: weight {weight}, share {share:.4} (expected {p:.3} ± {tolerance:.4})",
            cluster.name(i)
        );
        assert!((share - p).abs() <= tolerance, "{}: share {share} of {counts:?}", cluster.name(i));
    }
    assert_eq!(counts.get(&cluster.ip(3)), None, "the weight-0 standby never appears: {counts:?}");

    // `spare` (beta, gamma, delta): beta and gamma share it, the standby waits.
    let spare = tally(&responses(cluster.dns_addr(0), "spare", 400).await);
    assert_eq!(spare.keys().copied().collect::<Vec<_>>(), ips(&cluster, &[1, 2]), "{spare:?}");
    assert_eq!(dig_answer(cluster.dns_addr(0), "spare").ttl, Some(20));

    // Beta and gamma lost: the standby is spare's answer (not a fail-open: delta qualifies);
    // `w` still never gives it, alpha qualifies.
    cluster.stop(1).unwrap();
    cluster.stop(2).unwrap();
    let stopped = Instant::now();
    let standby = ips(&cluster, &[3]);
    let left = ips(&cluster, &[0, 3]);
    wait_until(CONVERGE, "alpha and delta to drop beta and gamma", || {
        [0, 3].iter().all(|i| dig_addrs(cluster.dns_addr(*i), "api") == left)
    });
    wait_until(CONVERGE, "alpha and delta to answer spare with the standby", || {
        [0, 3].iter().all(|i| dig_addrs(cluster.dns_addr(*i), "spare") == standby)
    });
    eprintln!("standby in spare's answer {:?} after beta and gamma stopped", stopped.elapsed());
    for i in [0, 3] {
        let spare = tally(&responses(cluster.dns_addr(i), "spare", 300).await);
        assert_eq!(spare.keys().copied().collect::<Vec<_>>(), standby, "{}: {spare:?}", cluster.name(i));
        let w = tally(&responses(cluster.dns_addr(i), "w", 300).await);
        assert_eq!(w.keys().copied().collect::<Vec<_>>(), ips(&cluster, &[0]), "{}: {w:?}", cluster.name(i));
    }
    let explanation = explain_json(&cluster, 0, "spare");
    assert_eq!(explanation["fail_open"], false, "delta qualifies: no fail-open: {explanation:#}");
    assert_eq!(explanation["degraded"], true, "{explanation:#}");
    assert_eq!(dig_answer(cluster.dns_addr(0), "spare").ttl, Some(3), "degraded TTL");
    let delta = site_of(&explanation, "delta");
    assert_eq!(delta["in_answer"], true, "{delta:#}");
    assert!(delta["why"].as_str().unwrap_or("").contains("standby"), "{delta:#}");
}

/// `fastest` with one answer: every site's service is checked over HTTP; alpha's answers at
/// once, beta's and gamma's after 200 ms. Every site answers with alpha and keeps doing so;
/// without alpha's service each site settles on one of the others and keeps it; alpha's return
/// (clearly faster) takes the answer back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastest_picks_the_fastest_site_and_keeps_it() {
    const PORT: u16 = 18080;
    const SLOW: Duration = Duration::from_millis(200);
    let extra = format!(
        "[[zone.record]]\nname = \"fast\"\npolicy = \"fastest\"\nmax_answers = 1\ngood_enough_ms = 50\n\n\
         [health]\ncheck = \"http\"\nport = {PORT}\npath = \"/\"\nexpect_body = \"ok\"\n"
    );
    let base = Ipv4Addr::new(127, 0, 93, 11);
    let delay = |i: usize| if i == 0 { Duration::ZERO } else { SLOW };
    let service_addr =
        |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from(base) + i as u32)), PORT);
    let mut services: Vec<JoinHandle<()>> = (0..3).map(|i| http_service(service_addr(i), delay(i))).collect();
    let cluster = policy_cluster(3, 93, &extra, |_| String::new()).await;
    let alpha = ips(&cluster, &[0]);
    let took = wait_until(CONVERGE, "every site to answer fast with alpha", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "fast") == alpha)
    });
    eprintln!("fastest chose alpha everywhere after {took:?}");
    for i in 0..3 {
        let seen = responses(cluster.dns_addr(i), "fast", 500).await;
        assert!(seen.iter().all(|a| *a == alpha), "{}: {:?}", cluster.name(i), tally(&seen));
    }
    // Latencies show once settled (a few checks each): wait until beta has all three.
    let mut explanation = Value::Null;
    wait_until(CONVERGE, "beta to have a settled latency for every site", || {
        explanation = explain_json(&cluster, 1, "fast");
        ["alpha", "beta", "gamma"].iter().all(|s| site_of(&explanation, s)["latency_ms"].is_f64())
    });
    assert_eq!(explanation["policy"], "fastest", "{explanation:#}");
    let latency = |site: &str| site_of(&explanation, site)["latency_ms"].as_f64();
    assert!(latency("alpha").is_some_and(|l| l < 50.0), "alpha is fast: {explanation:#}");
    for site in ["beta", "gamma"] {
        assert!(latency(site).is_some_and(|l| l >= 150.0), "{site} is slow: {explanation:#}");
    }
    assert_eq!(site_of(&explanation, "alpha")["in_answer"], true);

    // Alpha's service stops: each site moves to beta or gamma and stays there.
    services[0].abort();
    let others = ips(&cluster, &[1, 2]);
    let moved = wait_until(CONVERGE, "every site to drop alpha from fast", || {
        (0..3).all(|i| {
            let a = dig_addrs(cluster.dns_addr(i), "fast");
            a.len() == 1 && others.contains(&a[0])
        })
    });
    eprintln!("fast moved off alpha after {moved:?}");
    let chosen: Vec<Vec<IpAddr>> = (0..3).map(|i| dig_addrs(cluster.dns_addr(i), "fast")).collect();
    for round in 0..3 {
        for (i, chosen) in chosen.iter().enumerate() {
            let seen = responses(cluster.dns_addr(i), "fast", 200).await;
            assert!(
                seen.iter().all(|a| a == chosen),
                "{} round {round}: {:?}",
                cluster.name(i),
                tally(&seen)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Alpha's service returns, clearly faster: it takes the answer back everywhere.
    services[0] = http_service(service_addr(0), Duration::ZERO);
    let back = wait_until(CONVERGE, "every site to answer fast with alpha again", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "fast") == alpha)
    });
    eprintln!("alpha back in fast after {back:?}");
    services.iter().for_each(JoinHandle::abort);
}

/// `all` with `max_answers = 2` on three sites: every response holds exactly two addresses and
/// every site shows up; with a site down, two of the survivors with the degraded TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_with_max_answers_rotates_a_subset() {
    let records =
        "[[zone.record]]\nname = \"rr\"\npolicy = \"all\"\nmax_answers = 2\nttl = 20\nttl_degraded = 3\n";
    let mut cluster = policy_cluster(3, 94, records, |_| String::new()).await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "every site to qualify everywhere", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "api") == all)
    });
    for i in 0..3 {
        let seen = responses(cluster.dns_addr(i), "rr", 300).await;
        for response in &seen {
            assert_eq!(response.len(), 2, "{}: {response:?}", cluster.name(i));
            assert_ne!(response[0], response[1], "no address twice: {response:?}");
        }
        let counts = tally(&seen);
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), all, "{}: {counts:?}", cluster.name(i));
        // A rotating window spreads evenly (each in 2 of 3); allow a wide margin.
        assert!(counts.values().all(|c| *c >= 150), "{}: {counts:?}", cluster.name(i));
        let answer = dig_answer(cluster.dns_addr(i), "rr");
        assert_eq!((answer.addrs.len(), answer.ttl), (2, Some(20)), "{}: {answer:?}", cluster.name(i));
    }

    cluster.stop(2).unwrap();
    let survivors = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "alpha and beta to drop gamma", || {
        (0..2).all(|i| dig_addrs(cluster.dns_addr(i), "api") == survivors)
    });
    for i in 0..2 {
        for response in responses(cluster.dns_addr(i), "rr", 100).await {
            assert_eq!(response, survivors, "{}", cluster.name(i));
        }
        assert_eq!(dig_answer(cluster.dns_addr(i), "rr"), Answer { addrs: survivors.clone(), ttl: Some(3) });
    }

    cluster.restart(2).unwrap();
    cluster.wait_site_ready(2, Duration::from_secs(20)).await.unwrap();
    wait_until(CONVERGE, "the normal TTL once gamma is back", || {
        (0..3).all(|i| dig_answer(cluster.dns_addr(i), "rr").ttl == Some(20))
    });
    let counts = tally(&responses(cluster.dns_addr(0), "rr", 60).await);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), all, "{counts:?}");
}

/// `sites` limits a name to some sites: `admin` only at alpha, `static` at beta and gamma,
/// `api` everywhere. With alpha down, no site of `admin` qualifies: it fails open to what it
/// would answer if every site were up (alpha), with the degraded TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_limit_a_name_to_some_sites() {
    let records = "[[zone.record]]\nname = \"admin\"\npolicy = \"priority\"\nsites = [\"alpha\"]\nttl = 10\nttl_degraded = 2\n\n\
                   [[zone.record]]\nname = \"static\"\npolicy = \"all\"\nsites = [\"beta\", \"gamma\"]\n";
    let mut cluster = policy_cluster(3, 95, records, |_| String::new()).await;
    let all = ips(&cluster, &[0, 1, 2]);
    let (alpha, bg) = (ips(&cluster, &[0]), ips(&cluster, &[1, 2]));
    wait_until(CONVERGE, "every site to qualify everywhere", || {
        (0..3).all(|i| dig_addrs(cluster.dns_addr(i), "api") == all)
    });
    for i in 0..3 {
        let server = cluster.dns_addr(i);
        assert_eq!(
            dig_answer(server, "admin"),
            Answer { addrs: alpha.clone(), ttl: Some(10) },
            "{}",
            cluster.name(i)
        );
        assert_eq!(
            dig_answer(server, "static"),
            Answer { addrs: bg.clone(), ttl: Some(5) },
            "{}",
            cluster.name(i)
        );
        for response in responses(server, "static", 100).await {
            assert_eq!(response, bg);
        }
    }
    let explanation = explain_json(&cluster, 0, "static");
    let alpha_site = site_of(&explanation, "alpha");
    assert_eq!(alpha_site["in_answer"], false, "{alpha_site:#}");
    assert!(!alpha_site["why"].as_str().unwrap_or("").is_empty(), "{alpha_site:#}");

    // Gamma lost: static shrinks to beta; admin is untouched.
    cluster.stop(2).unwrap();
    let beta = ips(&cluster, &[1]);
    wait_until(CONVERGE, "alpha and beta to answer static with beta", || {
        (0..2).all(|i| dig_addrs(cluster.dns_addr(i), "static") == beta)
    });
    for i in 0..2 {
        assert_eq!(dig_answer(cluster.dns_addr(i), "admin"), Answer { addrs: alpha.clone(), ttl: Some(10) });
    }

    // Alpha lost too: admin has no qualifying site; beta fails open to alpha, degraded.
    cluster.stop(0).unwrap();
    wait_until(CONVERGE, "beta to drop alpha from api", || dig_addrs(cluster.dns_addr(1), "api") == beta);
    assert_eq!(dig_answer(cluster.dns_addr(1), "admin"), Answer { addrs: alpha.clone(), ttl: Some(2) });
    let explanation = explain_json(&cluster, 1, "admin");
    assert_eq!(explanation["fail_open"], true, "{explanation:#}");
    assert_eq!(explanation["ttl_now"], 2, "{explanation:#}");
    assert_eq!(site_of(&explanation, "alpha")["qualifies"], false, "{explanation:#}");
}

/// `spdu explain`: JSON with every field of the contract, the table, `--control`, the HTTP
/// endpoint, names in any case, unknown names refused, and the picture after the primary is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_why_each_site_is_in_or_out() {
    let records = "[[zone.record]]\nname = \"www\"\npolicy = \"priority\"\nttl = 30\nttl_degraded = 2\n";
    let site_attrs = [(1, 100), (2, 50), (2, 0)];
    let mut cluster = policy_cluster(3, 96, records, |i| attrs(site_attrs[i].0, site_attrs[i].1)).await;
    let alpha = ips(&cluster, &[0]);
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "every site to qualify and www to hold alpha", || {
        (0..3).all(|i| {
            dig_addrs(cluster.dns_addr(i), "api") == all && dig_addrs(cluster.dns_addr(i), "www") == alpha
        })
    });

    let e = explain_json(&cluster, 0, "www");
    // Every field of the contract is there, with its type.
    let typed: Explanation = serde_json::from_value(e.clone()).unwrap_or_else(|err| panic!("{err}: {e:#}"));
    assert_eq!((typed.policy, typed.sites.len()), (Policy::Priority, 3));
    assert_eq!(e["name"], "www", "{e:#}");
    assert_eq!(e["policy"], "priority", "{e:#}");
    assert_eq!(e["max_answers"], 0, "{e:#}");
    assert_eq!(
        (&e["ttl"], &e["ttl_degraded"], &e["ttl_now"]),
        (&Value::from(30), &Value::from(2), &Value::from(30))
    );
    assert_eq!((&e["degraded"], &e["fail_open"]), (&Value::from(false), &Value::from(false)), "{e:#}");
    assert_eq!(e["min_change_interval_ms"], 0, "{e:#}");
    assert_eq!(e["good_enough_ms"], 50, "{e:#}");
    assert!(e["due_in_ms"].is_null(), "{e:#}");
    let sites = e["sites"].as_array().expect("sites");
    let names: Vec<&str> = sites.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{e:#}");
    assert_eq!(names[0], "alpha", "this node first: {e:#}");
    for (i, (priority, weight)) in site_attrs.iter().enumerate() {
        let s = site_of(&e, cluster.name(i));
        assert_eq!(s["is_self"], i == 0, "{s:#}");
        assert!(s["key"].as_str().is_some_and(|k| !k.is_empty()), "{s:#}");
        assert_eq!(s["qualifies"], true, "{s:#}");
        assert!(!s["why_qualifies"].as_str().unwrap_or("").is_empty(), "{s:#}");
        assert_eq!((&s["priority"], &s["weight"]), (&Value::from(*priority), &Value::from(*weight)), "{s:#}");
        let (yes, voters) = (s["votes_yes"].as_u64().unwrap(), s["voters"].as_u64().unwrap());
        assert!(yes >= 1 && yes == voters, "every live voter says yes: {s:#}");
        let from = s["votes_from"].as_array().expect("votes_from");
        assert_eq!(from.len() as u64, yes, "{s:#}");
        assert!(!from.contains(&Value::from(cluster.name(i))), "a site does not vote for itself: {s:#}");
        if i == 0 {
            assert!(s["own_probe"].is_null(), "no own probe of itself: {s:#}");
        } else {
            assert_eq!(s["own_probe"], true, "{s:#}");
        }
        assert_ne!(s["healthy"], false, "{s:#}");
        assert!(s.get("latency_ms").is_some(), "{s:#}");
        assert_eq!(s["in_answer"], i == 0, "{s:#}");
        let why = s["why"].as_str().unwrap_or("");
        assert!(why.contains(&format!("priority {priority}")), "the policy step names the level: {s:#}");
    }

    // The same through --control, in capitals, and through the HTTP endpoint.
    let control = cluster.control_addr(0).to_string();
    let out = run_spdu(&["explain", "WWW", "--control", &control, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let upper: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(upper["policy"], "priority");
    assert_eq!(upper["sites"].as_array().map(Vec::len), Some(3));
    let http = spdu_cluster::http_get(&format!("http://{control}/v1/explain/www")).expect("explain endpoint");
    let http: Value = serde_json::from_str(&http).expect("JSON");
    assert_eq!(http["name"], "www");
    assert_eq!(http["sites"].as_array().map(Vec::len), Some(3));

    // The table: a header with the policy and TTL, one row per site with its verdicts.
    let config = cluster.config_path(0).to_str().unwrap().to_owned();
    let out = run_spdu(&["explain", "www", "--config", &config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    eprintln!("{table}");
    assert!(table.contains("priority") && table.contains("30"), "header with policy and TTL:\n{table}");
    for (i, (priority, weight)) in site_attrs.iter().enumerate() {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(cluster.name(i)))
            .unwrap_or_else(|| panic!("no row for {}:\n{table}", cluster.name(i)));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells.contains(&priority.to_string().as_str()), "{row}");
        assert!(cells.contains(&weight.to_string().as_str()), "{row}");
        assert!(row.contains(&format!("priority {priority}")), "the row gives the policy step: {row}");
    }

    // Unknown names are refused, by the command and by the endpoint.
    let out = run_spdu(&["explain", "nope", "--config", &config]);
    assert!(!out.status.success(), "an unknown name is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = spdu_cluster::http_get(&format!("http://{control}/v1/explain/nope")).unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");

    // Alpha lost: beta explains why it and gamma stand in, degraded.
    cluster.stop(0).unwrap();
    wait_until(CONVERGE, "beta to answer www with beta and gamma", || {
        dig_addrs(cluster.dns_addr(1), "www") == ips(&cluster, &[1, 2])
    });
    let e = explain_json(&cluster, 1, "www");
    assert_eq!(e["sites"][0]["name"], "beta", "this node first: {e:#}");
    assert_eq!((&e["degraded"], &e["ttl_now"]), (&Value::from(true), &Value::from(2)), "{e:#}");
    let a = site_of(&e, "alpha");
    assert_eq!((&a["qualifies"], &a["in_answer"]), (&Value::from(false), &Value::from(false)), "{a:#}");
    assert_eq!(a["own_probe"], false, "{a:#}");
    assert!(!a["why_qualifies"].as_str().unwrap_or("").is_empty(), "{a:#}");
    for site in ["beta", "gamma"] {
        let s = site_of(&e, site);
        assert_eq!(s["in_answer"], true, "{s:#}");
        assert!(s["why"].as_str().unwrap_or("").contains("priority 2"), "{s:#}");
    }
}
