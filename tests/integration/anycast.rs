//! Anycast end to end on loopback: real `spdu run` nodes (the cluster harness, 127.0.200.x) and
//! a real `spdu exabgp` child, talked to as ExaBGP does (its stdout read line by line, its
//! stdin holding ExaBGP's acknowledgements). The routes it prints must follow the node: announced
//! while healthy and vouched for, withdrawn when the service fails, when every peer is gone
//! (nobody vouches for the site), and within about a second when the node itself dies; it keeps
//! running through all of it and announces again when the node returns.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, Ports, http_get};
use tokio::task::JoinHandle;

use crate::testing::{http_service, run_spdu, spdu, wait_until};

const CONVERGE: Duration = Duration::from_secs(20);
const SERVICE_PORT: u16 = 18080;
const V4: &str = "198.18.100.0/24";
const V6: &str = "2001:db8:5::/48";
/// `[health]` and `[anycast]` for every site: base MED 100 (plus the default priority, 1).
const EXTRA: &str = "[health]\ncheck = \"http\"\nport = 18080\npath = \"/\"\n\n\
                     [anycast]\nprefixes = [\"198.18.100.0/24\", \"2001:db8:5::/48\"]\nmed = 100\npoll_ms = 200\n";

/// A running `spdu exabgp`: killed and reaped when dropped.
struct Exabgp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Instant, String)>,
    /// The last verb printed for each prefix ([`V4`], [`V6`]).
    state: [Option<bool>; 2],
}

impl Drop for Exabgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exabgp {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(spdu())
            .args(["exabgp", "--config", config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spdu exabgp starts");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines, state: [None; 2] }
    }

    /// Reads lines (acknowledging each with `done`, as ExaBGP does) until both prefixes are in
    /// state `announce`; returns when the last of them arrived. Every line must be well formed.
    fn wait_for(&mut self, announce: bool, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        let want = Some(announce);
        let mut at = Instant::now();
        while self.state != [want; 2] {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, line) = match self.lines.recv_timeout(left) {
                Ok(got) => got,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {} of both prefixes within {timeout:?} (state {:?})",
                        verb(announce),
                        self.state
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!("spdu exabgp closed its stdout"),
            };
            eprintln!("exabgp: {line}");
            let (i, up) = parse(&line);
            self.state[i] = Some(up);
            at = t;
            if let Some(stdin) = self.stdin.as_mut() {
                let _ = stdin.write_all(b"done\n");
            }
        }
        at
    }

    /// Asserts that nothing is printed for `quiet`.
    fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok((_, line)) = self.lines.recv_timeout(quiet) {
            panic!("unexpected line while nothing changed: {line}");
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn verb(announce: bool) -> &'static str {
    if announce { "announce" } else { "withdraw" }
}

/// (prefix index, announced) of one output line; panics on anything ExaBGP would not take.
fn parse(line: &str) -> (usize, bool) {
    for (i, prefix) in [V4, V6].iter().enumerate() {
        if line == format!("announce route {prefix} next-hop self med 101") {
            return (i, true);
        }
        if line == format!("withdraw route {prefix} next-hop self") {
            return (i, false);
        }
    }
    panic!("not an expected ExaBGP command: {line:?}");
}

/// `/v1/anycast` of site `i`, as JSON.
fn anycast_json(cluster: &LocalCluster, i: usize) -> serde_json::Value {
    let body = http_get(&format!("http://{}/v1/anycast", cluster.control_addr(i))).expect("/v1/anycast");
    serde_json::from_str(&body).expect("JSON")
}

fn service(cluster: &LocalCluster, i: usize) -> JoinHandle<()> {
    http_service(SocketAddr::new(cluster.ip(i), SERVICE_PORT), Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exabgp_routes_follow_health_votes_and_the_node_itself() {
    let base = Ipv4Addr::new(127, 0, 200, 11);
    let mut cluster = LocalCluster::create(spdu(), 3, base, Ports::default(), EXTRA).expect("cluster config");
    let mut services: Vec<JoinHandle<()>> = (0..3).map(|i| service(&cluster, i)).collect();
    for i in 0..3 {
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(CONVERGE).await.expect("all sites ready");
    wait_until(CONVERGE, "alpha to be vouched for by both peers", || {
        let v = anycast_json(&cluster, 0);
        v["announce"] == true && v["yes"] == 2 && v["voters"] == 2
    });
    assert_eq!(anycast_json(&cluster, 0)["reason"], "reachable");
    assert_eq!(anycast_json(&cluster, 0)["name"], cluster.name(0));

    // Start: the full state at once, then nothing while nothing changes.
    let mut exabgp = Exabgp::start(cluster.config_path(0));
    exabgp.wait_for(true, Duration::from_secs(5));
    exabgp.assert_quiet(Duration::from_secs(1));

    // alpha's service stops: withdrawn (the node's health verdict), then back.
    services[0].abort();
    exabgp.wait_for(false, CONVERGE);
    assert_eq!(anycast_json(&cluster, 0)["reason"], "unhealthy");
    services[0] = service(&cluster, 0);
    exabgp.wait_for(true, CONVERGE);

    // Both peers gone: alpha's own check still passes, but nobody vouches for it any more.
    cluster.stop(1).unwrap();
    cluster.stop(2).unwrap();
    let stopped = Instant::now();
    let at = exabgp.wait_for(false, CONVERGE);
    eprintln!("withdrawn {:?} after both peers died", at - stopped);
    let v = anycast_json(&cluster, 0);
    assert_eq!(
        (v["reason"].as_str(), v["healthy"].as_bool(), v["voters"].as_u64()),
        (Some("no_observers"), Some(true), Some(0))
    );
    cluster.start_site(1).unwrap();
    cluster.start_site(2).unwrap();
    exabgp.wait_for(true, CONVERGE);

    // The node hangs (SIGSTOP): its control endpoint accepts but never answers. Withdrawn
    // within about a second plus one request timeout; announced again once it runs on.
    let pid = cluster.pid(0).expect("alpha runs").to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let hung = Instant::now();
    let at = exabgp.wait_for(false, Duration::from_secs(5));
    let after = at - hung;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    eprintln!("withdrawn {after:?} after the node hung");
    assert!(after < Duration::from_secs(3), "withdrawn only after {after:?}");
    exabgp.wait_for(true, CONVERGE);

    // The node itself dies: withdrawn within about a second, and spdu exabgp keeps running.
    cluster.stop(0).unwrap();
    let killed = Instant::now();
    let at = exabgp.wait_for(false, Duration::from_secs(5));
    let after = at - killed;
    eprintln!("withdrawn {after:?} after the node was killed");
    assert!(after >= Duration::from_millis(500), "withdrawn before the fail-safe delay: {after:?}");
    assert!(after < Duration::from_secs(3), "withdrawn only after {after:?}");
    exabgp.assert_quiet(Duration::from_secs(2));
    assert!(exabgp.is_running(), "spdu exabgp exited without its node");
    cluster.start_site(0).unwrap();
    exabgp.wait_for(true, CONVERGE);

    // ExaBGP restarts the process: the new one re-sends the whole state at once.
    drop(exabgp);
    let mut again = Exabgp::start(cluster.config_path(0));
    again.wait_for(true, Duration::from_secs(5));

    // ExaBGP stops: it says `shutdown`, and the process ends by itself.
    // (ExaBGP 4.2's words: `shutdown <its pid> <its parent's pid>`.)
    again.stdin.as_mut().unwrap().write_all(b"shutdown 4242 1\n").unwrap();
    wait_until(Duration::from_secs(5), "spdu exabgp to exit after shutdown", || !again.is_running());
    assert_eq!(again.child.wait().unwrap().code(), Some(0));

    // ExaBGP goes away without a word (stdin closed): the process ends too.
    let mut third = Exabgp::start(cluster.config_path(0));
    third.wait_for(true, Duration::from_secs(5));
    third.stdin.take();
    wait_until(Duration::from_secs(5), "spdu exabgp to exit after stdin closed", || !third.is_running());
    assert_eq!(third.child.wait().unwrap().code(), Some(0));
    services.iter().for_each(JoinHandle::abort);
    cluster.stop_all();
}

/// A config for one site whose control endpoint is `control`, with `anycast` appended.
fn lone_config(control: SocketAddr, anycast: &str) -> String {
    format!(
        "[node]\nname = \"a\"\nkey = \"node.key\"\ngossip = \"127.0.201.11:7946\"\n\
         dns = [\"127.0.201.11:5353\"]\ncontrol = \"{control}\"\naddresses = [\"127.0.201.11\"]\n\n\
         [zone]\norigin = \"pool.example.test\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"a.example.test\"]\n\n{anycast}"
    )
}

/// A control endpoint played by test code: the first `good` requests get `{"announce":true,...}`,
/// every later one `bad` (a whole HTTP response, or nothing at all when empty: the connection
/// is closed unanswered).
fn fake_control(addr: SocketAddr, good: usize, bad: &'static str) -> SocketAddr {
    let listener = std::net::TcpListener::bind(addr).expect("fake control address free");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let announce =
            r#"{"announce":true,"reason":"reachable","healthy":true,"yes":2,"voters":2,"name":"a"}"#;
        for (n, stream) in listener.incoming().enumerate().take(10_000) {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buffer);
            let reply = if n < good {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{announce}",
                    announce.len()
                )
            } else {
                bad.to_owned()
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

/// Whatever a broken or hostile control endpoint answers (garbage, an error, a JSON of another
/// shape, nothing), `spdu exabgp` withdraws within about a second of the last good answer and
/// keeps running.
#[test]
fn exabgp_withdraws_on_bad_answers_and_keeps_running() {
    let bad_answers: [&'static str; 4] = [
        "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\nconnection: close\r\n\r\nmembership stopped\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"announce\":\"y\"}",
        "",
    ];
    for (i, bad) in bad_answers.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let control = fake_control(SocketAddr::new([127, 0, 201, 21 + i as u8].into(), 0), 5, bad);
        let path = dir.path().join("spdu.toml");
        std::fs::write(
            &path,
            lone_config(control, &format!("[anycast]\nprefixes = [\"{V4}\", \"{V6}\"]\nmed = 100\n")),
        )
        .unwrap();
        let mut exabgp = Exabgp::start(&path);
        exabgp.wait_for(true, Duration::from_secs(5));
        // 5 good answers (about a second of polls), then only bad ones: withdrawn, for good.
        exabgp.wait_for(false, Duration::from_secs(5));
        exabgp.assert_quiet(Duration::from_secs(1));
        assert!(exabgp.is_running(), "answer {i}: spdu exabgp exited");
    }
}

#[test]
fn exabgp_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    assert!(run_spdu(&["keygen", "--out", key.to_str().unwrap()]).status.success());
    let control: SocketAddr = "127.0.201.11:7947".parse().unwrap();
    let config = |anycast: &str| lone_config(control, anycast);
    let path = dir.path().join("spdu.toml");
    for (anycast, line, says) in [
        (
            "[anycast]\nprefixes = [\"198.18.100.1/24\"]\n",
            16,
            "anycast.prefixes[0]: 198.18.100.1/24 has host bits set",
        ),
        (
            "[anycast]\nprefixes = [\"198.18.0.0/16\", \"0.0.0.0/0\"]\n",
            16,
            "anycast.prefixes[1]: 0.0.0.0/0 holds the special-purpose",
        ),
        (
            "[anycast]\nprefixes = [\"ff00::/8\"]\n",
            16,
            "anycast.prefixes[0]: ff00::/8 holds the special-purpose",
        ),
        ("[anycast]\nprefixes = [\"198.18.0.0/16\", \"198.18.0.0/16\"]\n", 16, "is listed twice"),
        ("[anycast]\nprefixes = [\"198.18.0.0/16\"]\nmed = -1\n", 17, "expected u32"),
        (
            "[anycast]\nprefixes = [\"198.18.0.0/16\"]\nmed = 4294967295\n",
            17,
            "anycast.med: 4294967295 is out of bounds",
        ),
        (
            "[anycast]\nprefixes = [\"198.18.0.0/16\"]\npoll_ms = 10\n",
            17,
            "anycast.poll_ms: 10 is out of bounds",
        ),
        ("[anycast]\nprefix = [\"198.18.0.0/16\"]\n", 16, "unknown field `prefix`"),
    ] {
        std::fs::write(&path, config(anycast)).unwrap();
        for command in ["check", "exabgp"] {
            let out = run_spdu(&[command, "--config", path.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} accepted {anycast:?}");
            assert!(stderr.contains(&format!("spdu.toml:{line}:")), "{command} {anycast:?}: {stderr}");
            assert!(stderr.contains(says), "{command} {anycast:?}: {stderr}");
        }
    }
    // Valid, but nothing to announce: `check` is fine, `exabgp` refuses to start.
    std::fs::write(&path, config("")).unwrap();
    assert!(run_spdu(&["check", "--config", path.to_str().unwrap()]).status.success());
    let out = run_spdu(&["exabgp", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("anycast.prefixes: no prefixes"), "{out:?}");
}
