//! Events and `[[notify]]` hooks end to end: three real nodes on loopback, each with five hooks:
//! a signed webhook to a real HTTP receiver (a small HTTP/1.1 server in this file), a command
//! (`/bin/sh` chosen by the test: the node runs argv, never a shell) that stores its stdin and
//! environment, a receiver that accepts and never answers, a command that hangs, and a URL that
//! refuses connections. A site is killed: both survivors' answer-change and peer events reach the
//! receiver within detection + 1 s, correctly signed, while DNS keeps answering; the hanging and
//! failing hooks' losses are counted in `/metrics`. Another cluster shows `health` and `roster`
//! events through `GET /v1/events`. Blocks 127.0.97.0/24 (receivers at .200) and 127.0.98.0/24.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use spdu_cluster::{LocalCluster, POOL_NAME, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::testing::{ips, run_spdu, spdu};

const CONVERGE: Duration = Duration::from_secs(15);
/// The default timing's detection: 8 probe intervals of 100 ms without a message.
const DETECTION: Duration = Duration::from_millis(800);
const SECRET: &str = "correct horse battery staple";

/// One request the receiver took.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// A webhook receiver on `ip` (random port): records every POST, answers `204`.
async fn receiver(ip: IpAddr) -> (SocketAddr, Inbox, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox = Inbox::default();
    let kept = inbox.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let kept = kept.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), serve(stream, kept)).await;
            });
        }
    });
    (addr, inbox, task)
}

/// Reads HTTP/1.1 requests (Content-Length bodies) from `stream` until it closes.
async fn serve(mut stream: TcpStream, inbox: Inbox) {
    let mut buffer = Vec::new();
    loop {
        let Some(end) = find(&buffer, b"\r\n\r\n") else {
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            assert!(buffer.len() < 1 << 20, "request head too long");
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        while buffer.len() < end + 4 + length {
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buffer[end + 4..end + 4 + length].to_vec();
        buffer.drain(..end + 4 + length);
        assert!(request_line.starts_with("POST /hook "), "{request_line}");
        inbox.lock().unwrap().push(Received { at: Instant::now(), headers, body });
        if stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A receiver that accepts connections and never answers (holds them open).
async fn black_hole(ip: IpAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// `sha256=<hex>` of `body` under [`SECRET`], computed here independently of the node.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// `/metrics` of site `i`.
fn metrics(cluster: &LocalCluster, i: usize) -> String {
    spdu_cluster::http_get(&format!("http://{}/metrics", cluster.control_addr(i))).unwrap_or_default()
}

/// The value of the counter line starting with `name{labels}` (any prefix before it).
fn counter(text: &str, series: &str) -> Option<f64> {
    let line =
        text.lines().find(|l| l.split_whitespace().next().is_some_and(|name| name.ends_with(series)))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `inbox` holds, from `node`, an answer event dropping `gone` and a peer event saying
/// `gone` became unreachable; returns when the later of the two arrived.
fn failover_events(inbox: &[Received], node: &str, gone: &str) -> Option<Instant> {
    let from = |r: &&Received| r.json()["node"] == node;
    let answer = inbox.iter().filter(from).find(|r| {
        let e = r.json();
        let names = |side: &str| -> Vec<String> {
            let sites = e["detail"][side].as_array().cloned().unwrap_or_default();
            sites.iter().filter_map(|s| s["site"].as_str().map(str::to_owned)).collect()
        };
        e["event"] == "answer"
            && names("old").iter().any(|s| s == gone)
            && !names("new").iter().any(|s| s == gone)
    })?;
    let peer = inbox.iter().filter(from).find(|r| {
        let e = r.json();
        e["event"] == "peer" && e["detail"]["peer"] == gone && e["detail"]["change"] == "unreachable"
    })?;
    Some(answer.at.max(peer.at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_reaches_the_hooks_of_both_survivors_in_time_and_slow_hooks_hold_nothing_up() {
    let hooks_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 97, 200));
    let (url, inbox, _receiver) = receiver(hooks_ip).await;
    let (hole, _hole) = black_hole(hooks_ip).await;
    let refused = {
        let listener = std::net::TcpListener::bind((hooks_ip, 0)).unwrap();
        listener.local_addr().unwrap()
    };

    let base = Ipv4Addr::new(127, 0, 97, 11);
    let mut cluster = LocalCluster::create(spdu(), 3, base, Ports::default(), "").expect("cluster config");
    let dir = cluster.dir().to_owned();
    let secret = dir.join("hook.secret");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&secret).unwrap();
        std::io::Write::write_all(&mut file, format!("{SECRET}\n").as_bytes()).unwrap();
    }
    let events_dir = dir.join("events");
    std::fs::create_dir(&events_dir).unwrap();
    let script = format!(
        "cat > {d}/$SPDU_EVENT_NODE-$SPDU_EVENT_SEQ.json && env | grep ^SPDU_EVENT_ | sort > {d}/$SPDU_EVENT_NODE-$SPDU_EVENT_SEQ.env",
        d = events_dir.display()
    );
    let hooks = format!(
        r#"
[[notify]]
url = "http://{url}/hook"
secret_file = "hook.secret"

[[notify]]
command = ["/bin/sh", "-c", {script:?}]
events = ["answer", "peer"]

[[notify]]
url = "http://{hole}/hook"
timeout_ms = 60000
retries = 0
queue = 1

[[notify]]
command = ["/bin/sleep", "20"]
timeout_ms = 60000
queue = 1

[[notify]]
url = "http://{refused}/hook"
retries = 1
timeout_ms = 1000
"#
    );
    for i in 0..3 {
        cluster.edit_config(i, |text| text + &hooks).unwrap();
        let check = run_spdu(&["check", "--config", cluster.config_path(i).to_str().unwrap()]);
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    let all = ips(&cluster, &[0, 1, 2]);
    let start = Instant::now();
    while !all_answer(&cluster, &all).await {
        assert!(start.elapsed() < CONVERGE, "every site to answer with all three");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the start-up events drain (the hanging hooks' queues are full from here on).
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.stop(2).unwrap();
    let killed = Instant::now();
    let survivors = ips(&cluster, &[0, 1]);
    let bound = DETECTION + Duration::from_secs(1);
    let mut dns_moved = [None, None];
    let mut queries = 0;
    let arrived = loop {
        // DNS keeps answering at both survivors while the hooks hang or fail.
        for (i, moved) in dns_moved.iter_mut().enumerate() {
            let answer = spdu_cluster::query_addresses(cluster.dns_addr(i), POOL_NAME).await;
            let mut answer = answer.unwrap_or_else(|e| panic!("site {i} did not answer DNS: {e:#}"));
            answer.sort();
            queries += 1;
            assert!(!answer.is_empty(), "site {i} answered no address");
            if answer == survivors && moved.is_none() {
                *moved = Some(killed.elapsed());
            }
        }
        let seen = {
            let inbox = inbox.lock().unwrap();
            [failover_events(&inbox, "alpha", "gamma"), failover_events(&inbox, "beta", "gamma")]
        };
        if let [Some(a), Some(b)] = seen
            && dns_moved.iter().all(Option::is_some)
        {
            break [a.duration_since(killed), b.duration_since(killed)];
        }
        assert!(
            killed.elapsed() < bound,
            "within detection + 1 s: events {seen:?}, DNS moved {dns_moved:?}; received: {:?}",
            inbox.lock().unwrap().iter().map(|r| r.json()["summary"].clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "site killed: events at the receiver after {:?} (alpha) and {:?} (beta); DNS moved after \
         {dns_moved:?}; {queries} DNS queries all answered meanwhile",
        arrived[0], arrived[1]
    );

    // Once the other survivor's observation says so too, gamma's votes fall below the quorum.
    let quorum_lost = |r: &Received, node: &str| {
        let e = r.json();
        e["node"] == node && e["detail"]["peer"] == "gamma" && e["detail"]["change"] == "quorum_lost"
    };
    loop {
        let inbox = inbox.lock().unwrap().clone();
        let lost: Vec<Option<&Received>> =
            ["alpha", "beta"].iter().map(|n| inbox.iter().find(|r| quorum_lost(r, n))).collect();
        if let [Some(a), Some(b)] = lost[..] {
            let after = [a.at.duration_since(killed), b.at.duration_since(killed)];
            eprintln!("gamma's quorum lost at both survivors after {after:?}");
            break;
        }
        assert!(killed.elapsed() < CONVERGE, "quorum_lost events from both survivors");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every webhook request is signed over its exact body, names itself, and numbers events
    // from 1 per node without gaps (the receiver took every event: nothing dropped or failed).
    let received = inbox.lock().unwrap().clone();
    let mut by_node: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &received {
        assert_eq!(r.headers.get("x-spdu-signature"), Some(&expected_signature(&r.body)), "{r:?}");
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        let e = r.json();
        assert_eq!(r.headers.get("x-spdu-event").map(String::as_str), e["event"].as_str());
        assert_eq!(r.headers.get("x-spdu-seq"), Some(&e["seq"].to_string()));
        assert_eq!(e["cluster"], "pool.example.test");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')) && e["unix_ms"].as_u64().is_some());
        by_node.entry(e["node"].as_str().unwrap().to_owned()).or_default().push(e["seq"].as_u64().unwrap());
    }
    for (node, seqs) in &by_node {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "{node}'s events in order, none lost");
    }
    // The README's python3 check accepts the signature, and refuses it for another body.
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, &received[0].body).unwrap();
    let signature = received[0].headers["x-spdu-signature"].clone();
    assert_eq!(readme_signature_check(&secret, &body_file, &signature), "True");
    std::fs::write(&body_file, [&received[0].body[..], b" "].concat()).unwrap();
    assert_eq!(readme_signature_check(&secret, &body_file, &signature), "False");
    // A tampered body does not verify.
    let mut forged = received[0].body.clone();
    forged[0] ^= 1;
    assert_ne!(received[0].headers.get("x-spdu-signature"), Some(&expected_signature(&forged)));

    // The answer event says what changed and why.
    let answer = received
        .iter()
        .map(Received::json)
        .find(|e| {
            e["node"] == "alpha"
                && e["event"] == "answer"
                && e["detail"]["why"].as_str().unwrap_or("").contains("gamma left:")
        })
        .expect("alpha's answer event");
    assert_eq!(answer["detail"]["name"], "api");
    assert!(answer["detail"]["why"].as_str().unwrap().contains("unreachable from here"), "{answer}");
    assert!(
        answer["summary"].as_str().unwrap().starts_with("api: gamma left the answer (unreachable from here"),
        "{answer}"
    );
    let new: Vec<&str> =
        answer["detail"]["new"].as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap()).collect();
    assert_eq!(new, ["alpha", "beta"]);

    // /v1/events holds the same events the webhook got.
    let listed: Value = serde_json::from_str(
        &spdu_cluster::http_get(&format!("http://{}/v1/events", cluster.control_addr(0))).unwrap(),
    )
    .unwrap();
    let listed = listed["events"].as_array().unwrap();
    let posted: Vec<Value> = received.iter().map(Received::json).filter(|e| e["node"] == "alpha").collect();
    assert!(listed.len() >= posted.len());
    assert_eq!(&listed[..posted.len()], &posted[..]);

    // The command hook got the same JSON on stdin and the event in its environment.
    let start = Instant::now();
    let env_file = events_dir.join(format!("alpha-{}.env", answer["seq"]));
    while !env_file.exists() {
        assert!(start.elapsed() < CONVERGE, "{} to appear", env_file.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stdin: Value = serde_json::from_slice(
        &std::fs::read(events_dir.join(format!("alpha-{}.json", answer["seq"]))).unwrap(),
    )
    .unwrap();
    assert_eq!(stdin, answer);
    let env = std::fs::read_to_string(&env_file).unwrap();
    for line in [
        format!("SPDU_EVENT_SEQ={}", answer["seq"]),
        "SPDU_EVENT_KIND=answer".to_owned(),
        "SPDU_EVENT_NODE=alpha".to_owned(),
        "SPDU_EVENT_CLUSTER=pool.example.test".to_owned(),
        format!("SPDU_EVENT_TIME={}", answer["time"].as_str().unwrap()),
        format!("SPDU_EVENT_SUMMARY={}", answer["summary"].as_str().unwrap()),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from:\n{env}");
    }
    let json = env.lines().find_map(|l| l.strip_prefix("SPDU_EVENT_JSON=")).expect("SPDU_EVENT_JSON");
    assert_eq!(serde_json::from_str::<Value>(json).unwrap(), answer);
    // It asked for answer and peer events only.
    for entry in std::fs::read_dir(&events_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let e: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert!(e["event"] == "answer" || e["event"] == "peer", "{e}");
        }
    }

    // The hanging hooks' overflow and the refused hook's failures are counted.
    let start = Instant::now();
    loop {
        let text = metrics(&cluster, 0);
        let value = |series: &str| counter(&text, series).unwrap_or(0.0);
        let hole_dropped = value(r#"notify_dropped_total{hook="notify[2]"}"#);
        let sleep_dropped = value(r#"notify_dropped_total{hook="notify[3]"}"#);
        let refused_failed = value(r#"notify_failed_total{hook="notify[4]"}"#);
        let delivered = value(r#"notify_delivered_total{hook="notify[0]"}"#);
        if hole_dropped >= 1.0 && sleep_dropped >= 1.0 && refused_failed >= 1.0 && delivered >= 2.0 {
            assert_eq!(value(r#"notify_dropped_total{hook="notify[0]"}"#), 0.0, "{text}");
            assert_eq!(value(r#"notify_failed_total{hook="notify[0]"}"#), 0.0, "{text}");
            eprintln!(
                "metrics: hole dropped {hole_dropped}, sleep dropped {sleep_dropped}, refused failed {refused_failed}"
            );
            break;
        }
        assert!(start.elapsed() < CONVERGE, "hook counters in /metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The log names each hook and each loss, never the secret nor a webhook's path.
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(
        log.contains(&format!("notify: POST http://{url}")) && log.contains("notify: command /bin/sleep"),
        "{log}"
    );
    assert!(
        log.contains("notify: not delivered after 2 attempts") && log.contains("queue full, event dropped"),
        "{log}"
    );
    assert!(!log.contains(SECRET) && !log.contains("/hook"), "{log}");
}

/// Whether every running site answers the pool name with exactly `expected`.
async fn all_answer(cluster: &LocalCluster, expected: &[IpAddr]) -> bool {
    for i in 0..cluster.len() {
        let mut answer =
            spdu_cluster::query_addresses(cluster.dns_addr(i), POOL_NAME).await.unwrap_or_default();
        answer.sort();
        if answer != expected {
            return false;
        }
    }
    true
}

/// Runs the README's python3 one-liner that checks a webhook signature; returns what it prints.
fn readme_signature_check(secret: &std::path::Path, body: &std::path::Path, signature: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("python3 -c '")).expect("README's signature check");
    let script = line.strip_prefix("python3 -c '").and_then(|l| l.split_once("' ")).expect("quoted script").0;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(secret)
        .arg(body)
        .arg(signature)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for this test: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `GET /v1/events` of site `i`.
fn events(cluster: &LocalCluster, i: usize) -> Vec<Value> {
    let text =
        spdu_cluster::http_get(&format!("http://{}/v1/events", cluster.control_addr(i))).unwrap_or_default();
    let listed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    listed["events"].as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until site `i` lists an event `matches` accepts, and returns it.
async fn wait_event(cluster: &LocalCluster, i: usize, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let listed = events(cluster, i);
        if let Some(e) = listed.iter().find(|e| matches(e)) {
            return e.clone();
        }
        assert!(start.elapsed() < CONVERGE, "{what}: not in {listed:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_health_flips_and_a_differing_policy_are_events() {
    let base = Ipv4Addr::new(127, 0, 98, 11);
    let mut cluster = LocalCluster::create(spdu(), 2, base, Ports::default(), "").expect("cluster config");
    let up = cluster.dir().join("up");
    std::fs::write(&up, "").unwrap();
    let check = format!(
        "\n[health]\ncheck = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"test -e {} || {{ echo service down >&2; exit 3; }}\"]\n\
         interval_ms = 100\n",
        up.display()
    );
    // alpha checks its own service; beta serves `api` with another TTL: its policies differ.
    cluster.edit_config(0, |text| text.replace("[[peers]]", &format!("{check}\n[[peers]]"))).unwrap();
    cluster.edit_config(1, |text| text.replace("ttl = 5", "ttl = 6")).unwrap();
    for i in 0..2 {
        let check = run_spdu(&["check", "--config", cluster.config_path(i).to_str().unwrap()]);
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");

    for (i, peer) in [(0, "beta"), (1, "alpha")] {
        let e = wait_event(&cluster, i, "policy disagreement", |e| e["event"] == "roster").await;
        assert_eq!(e["detail"], serde_json::json!({"peer": peer, "change": "policy_differs"}), "{e}");
    }

    std::fs::remove_file(&up).unwrap();
    let down = wait_event(&cluster, 0, "own check failing", |e| e["event"] == "health").await;
    assert_eq!(down["detail"]["site"], "alpha");
    assert_eq!(down["detail"]["healthy"], false);
    let detail = down["detail"]["detail"].as_str().unwrap();
    assert!(detail.contains("exit status: 3") && detail.ends_with("service down"), "{down}");
    assert!(down["summary"].as_str().unwrap().starts_with("alpha: own service check fails"), "{down}");

    std::fs::write(&up, "").unwrap();
    let back = wait_event(&cluster, 0, "own check passing", |e| {
        e["event"] == "health" && e["seq"].as_u64() > down["seq"].as_u64()
    })
    .await;
    assert_eq!(back["detail"]["healthy"], true, "{back}");
    // beta has no check of its own: no health event there.
    assert!(events(&cluster, 1).iter().all(|e| e["event"] != "health"));
}

#[test]
fn bad_hooks_are_refused_at_start_naming_file_line_and_field() {
    let cluster = LocalCluster::create(spdu(), 1, Ipv4Addr::new(127, 0, 98, 100), Ports::default(), "")
        .expect("config");
    let path = cluster.config_path(0).to_str().unwrap().to_owned();
    let original = std::fs::read_to_string(&path).unwrap();
    let readable = cluster.dir().join("open.secret");
    std::fs::write(&readable, SECRET).unwrap();
    std::fs::set_permissions(&readable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let first = original.lines().count() + 2;
    for (hook, command, line, expected) in [
        (
            "url = \"ftp://hooks.example.test/\"",
            "check",
            first + 1,
            "notify[0].url: scheme \"ftp\" is not http or https",
        ),
        (
            "command = [\"/bin/true\"]\nevents = [\"answers\"]",
            "check",
            first + 2,
            "notify[0].events: \"answers\" is not one of",
        ),
        (
            "command = [\"/bin/true\"]\nsecret_file = \"open.secret\"",
            "run",
            first + 2,
            "notify[0].secret_file:",
        ),
    ] {
        std::fs::write(&path, format!("{original}\n[[notify]]\n{hook}\n")).unwrap();
        let out = run_spdu(&[command, "--config", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{hook}: accepted");
        assert!(err.contains(&format!("{path}:{line}:")) && err.contains(expected), "{hook}: {err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}
