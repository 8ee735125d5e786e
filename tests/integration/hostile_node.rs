//! Hostile input at the node's own doors, against real `spdu run` processes: strangers and slow,
//! idle or too many clients at the control endpoint; a roster member whose advertised check
//! tries to make the other sites fetch from somewhere else (server-side request forgery); a
//! member that claims service addresses that are not its own.
//!
//! The member is played by this test holding a real site's key (as in `adversarial`): the site
//! is stopped, and a quinn client with its key pushes observations signed with it and sends the
//! liveness datagrams that keep it reachable. Blocks 127.0.80–89 (the benchmarks use 70 and 71).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, POOL_NAME};
use spdu_gossip::proto::{Message, Observation, ServiceCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::adversarial::{CLUSTER, Impostor, decode, key_of, sign_as, signed_of, view};
use crate::testing::{dig, dig_pool, ips, run_spdu, spdu, start_cluster, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);

// ---- the control endpoint -------------------------------------------------------------------

/// A TCP connection to `to` from the address `from` (so that tests can play several sources).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (or resets) the connection; how long that took, or `None` if it
/// was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buffer = [0; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET path` on a kept-alive connection; the status line of the answer.
async fn get_keep_alive(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: spdu\r\nConnection: keep-alive\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    // /healthz answers "ok\n": the whole answer ends with it.
    while !answer.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

fn healthz(control: SocketAddr) -> anyhow::Result<String> {
    spdu_cluster::http_get(&format!("http://{control}/healthz"))
}

/// Slow, idle and excess connections are closed within a few seconds while the node keeps
/// serving DNS and, once they are gone, the control endpoint again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoint_closes_slow_idle_and_excess_connections() {
    let cluster = start_cluster(1, 80, "").await;
    let control = cluster.control_addr(0);
    let own = ips(&cluster, &[0]);
    assert_eq!(healthz(control).unwrap(), "ok\n");
    let source = |host: u8| Ipv4Addr::new(127, 0, 80, host);
    // Well past the node's timeouts (seconds), far below "minutes".
    let bound = Duration::from_secs(12);

    // Half a request, then nothing.
    let mut partial = connect_from(source(100), control).await;
    partial.write_all(b"GET /v1/peers HTTP/1.1\r\nHost: sp").await.unwrap();
    // A byte every 300 ms: never a whole header (slowloris).
    let slow_task = {
        let mut writer = connect_from(source(100), control).await;
        tokio::spawn(async move {
            let request =
                b"GET /v1/peers HTTP/1.1\r\nHost: spdu\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in request.iter().cycle().take(200) {
                if writer.write_all(&[*byte]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            false
        })
    };
    // One request, then an idle kept-alive connection.
    let mut idle = connect_from(source(100), control).await;
    assert!(get_keep_alive(&mut idle, "/healthz").await.contains("200"));

    let (partial_closed, idle_closed) =
        tokio::join!(closed_within(&mut partial, bound), closed_within(&mut idle, bound));
    let partial_closed = partial_closed.expect("partial headers: connection still open");
    let idle_closed = idle_closed.expect("idle kept-alive connection still open");
    assert!(
        tokio::time::timeout(bound, slow_task).await.expect("slow client still connected").unwrap(),
        "the slow client was never cut off"
    );
    eprintln!("closed: partial headers after {partial_closed:?}, idle keep-alive after {idle_closed:?}");

    // The connection caps: one source may hold 16, everyone together 64; one more is closed at
    // once, unread, while DNS keeps answering.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect_from(source(101), control).await);
    }
    let mut excess = connect_from(source(101), control).await;
    assert!(
        closed_within(&mut excess, Duration::from_secs(2)).await.is_some(),
        "a 17th connection from one source was kept"
    );
    let mut other = connect_from(source(102), control).await;
    assert!(get_keep_alive(&mut other, "/healthz").await.contains("200"), "another source is served");
    drop(other);
    for host in 103..106 {
        for _ in 0..16 {
            held.push(connect_from(source(host), control).await);
        }
    }
    let mut excess = connect_from(source(106), control).await;
    assert!(closed_within(&mut excess, Duration::from_secs(2)).await.is_some(), "a 65th connection was kept");
    assert_eq!(dig_pool(cluster.dns_addr(0)), own, "DNS answers while the control endpoint is full");
    drop(held);
    wait_until(Duration::from_secs(10), "the control endpoint to serve again", || {
        healthz(control).is_ok_and(|body| body == "ok\n")
    });
}

/// Off loopback the control endpoint serves only `node.control_allow`; anyone else is closed
/// at once, before a byte is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoint_serves_only_allowed_networks() {
    let mut cluster =
        LocalCluster::create(spdu(), 1, Ipv4Addr::new(127, 0, 81, 11), spdu_cluster::Ports::default(), "")
            .unwrap();
    let path = cluster.config_path(0).to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let control = cluster.control_addr(0);
    let text = text.replace(
        &format!("control = \"{control}\""),
        &format!("control = \"{control}\"\ncontrol_allow = [\"127.0.81.200/30\"]"),
    );
    std::fs::write(&path, text).unwrap();
    let check = run_spdu(&["check", "--config", path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    cluster.start_site(0).unwrap();
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();

    let mut allowed = connect_from(Ipv4Addr::new(127, 0, 81, 201), control).await;
    assert!(get_keep_alive(&mut allowed, "/healthz").await.contains("200"));
    for stranger in [Ipv4Addr::new(127, 0, 81, 50), Ipv4Addr::new(127, 0, 81, 204), Ipv4Addr::LOCALHOST] {
        let mut conn = connect_from(stranger, control).await;
        let _ = conn.write_all(b"GET /v1/peers HTTP/1.1\r\nHost: spdu\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{stranger}: connection kept open");
        assert!(answer.is_empty(), "{stranger} got an answer: {:?}", String::from_utf8_lossy(&answer));
    }
    assert!(get_keep_alive(&mut allowed, "/healthz").await.contains("200"), "still serving the allowed");
}

// ---- a member's advertised check --------------------------------------------------------------

/// A TCP and UDP listener at `addr` that counts whatever reaches it (requests, connections,
/// datagrams) and answers HTTP requests with a secret.
struct Recorder {
    hits: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    async fn start(addr: SocketAddr) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
        let (tcp_hits, udp_hits) = (hits.clone(), hits.clone());
        let tasks = vec![
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, from)) = tcp.accept().await else { continue };
                    tcp_hits.fetch_add(1, Ordering::SeqCst);
                    eprintln!("recorder: TCP connection from {from}");
                    tokio::spawn(async move {
                        let mut buffer = [0; 2048];
                        let _ = stream.read(&mut buffer).await;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\nconnection: close\r\n\r\nsecret-content")
                            .await;
                    });
                }
            }),
            tokio::spawn(async move {
                let mut buffer = [0; 2048];
                while let Ok((_, from)) = udp.recv_from(&mut buffer).await {
                    udp_hits.fetch_add(1, Ordering::SeqCst);
                    eprintln!("recorder: UDP datagram from {from}");
                }
            }),
        ];
        Self { hits, tasks }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The member (site 1, played by the test) in front of every other site.
struct Member {
    key: spdu_keys::SecretKey,
    base: Observation,
    links: Vec<Impostor>,
    next_seq: u64,
}

impl Member {
    /// Stops site `site` and plays it towards every other site.
    async fn take_over(cluster: &mut LocalCluster, site: usize) -> Self {
        let base = decode(&signed_of(cluster, 0, cluster.name(site)));
        cluster.stop(site).unwrap();
        let mut links = Vec::new();
        for to in (0..cluster.len()).filter(|&i| i != site) {
            links.push(Impostor::as_site(cluster, site, to).await);
        }
        let next_seq = base.seq + 1_000;
        Self { key: key_of(cluster, site), base, links, next_seq }
    }

    /// Publishes an observation made from the site's last one by `change`, signed with its key,
    /// then keeps it current (liveness datagrams with its tag) for `hold`.
    async fn publish(&mut self, hold: Duration, change: impl FnOnce(&mut Observation)) {
        let mut obs = self.base.clone();
        obs.seq = self.next_seq;
        self.next_seq += 1;
        obs.healthy = true;
        change(&mut obs);
        let frame = Message::Push(vec![sign_as(&obs, &self.key, CLUSTER)]).encode();
        for link in &self.links {
            // A site that was stopped meanwhile takes nothing: its link is dead.
            let push = async {
                let mut stream = link.conn.open_uni().await?;
                stream.write_all(&frame).await?;
                stream.finish()?;
                anyhow::Ok(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), push).await;
        }
        let alive = Message::Alive(obs.version_tag()).encode();
        let start = Instant::now();
        while start.elapsed() < hold {
            for link in &self.links {
                let _ = link.conn.send_datagram(alive.clone().into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn http_check(host: &str, port: u16, path: &str) -> ServiceCheck {
    ServiceCheck::Http {
        tls: false,
        port,
        host: host.into(),
        path: path.into(),
        expect_status: 200,
        expect_body: Some("secret".into()),
    }
}

/// What `spdu peers` shows on site `i`.
fn peers_table(cluster: &LocalCluster, i: usize) -> String {
    let out = run_spdu(&["peers", "--config", cluster.config_path(i).to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A member advertises an HTTP check whose `host` is another address (with and without a port,
/// as an IPv4-mapped IPv6 literal): no other site connects there, and what they show of the
/// member names only its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_check_host_is_never_a_destination() {
    let mut cluster = start_cluster(3, 82, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let internal: SocketAddr = "127.0.82.50:18090".parse().unwrap();
    let recorder = Recorder::start(internal).await;
    let beta_ip = cluster.ip(1);
    let mut beta = Member::take_over(&mut cluster, 1).await;

    for (i, host) in ["127.0.82.50", "127.0.82.50:18090", "[::ffff:127.0.82.50]", "::ffff:7f00:4832"]
        .into_iter()
        .enumerate()
    {
        let path = format!("/forged-{i}");
        beta.publish(Duration::from_secs(3), |obs| {
            obs.addresses = vec![beta_ip];
            obs.service_check = Some(http_check(host, internal.port(), &path));
        })
        .await;
        assert_eq!(recorder.hits(), 0, "host {host:?}: a site connected to {internal}");
    }
    // The sites did probe the member: at its own address, where nothing listens.
    for i in [0, 2] {
        let view = view(&cluster, i);
        let node = view["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "beta").unwrap().clone();
        let error = node["health"]["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(&beta_ip.to_string()), "site {i} probed beta elsewhere: {node}");
        let table = peers_table(&cluster, i);
        assert!(!table.contains("127.0.82.50") && !table.contains("secret-content"), "site {i}:\n{table}");
    }
    assert_eq!(recorder.hits(), 0);
}

/// A member's observation lists another address first (HTTP, TCP and DNS checks): the sites
/// probe it only at the address pinned for it in their rosters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_probed_only_at_its_pinned_address() {
    let mut cluster = start_cluster(3, 83, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let internal: SocketAddr = "127.0.83.50:18090".parse().unwrap();
    let recorder = Recorder::start(internal).await;
    let beta_ip = cluster.ip(1);
    let mut beta = Member::take_over(&mut cluster, 1).await;
    let checks = [
        http_check("api.pool.example.test", internal.port(), "/forged"),
        ServiceCheck::Tcp { port: internal.port() },
        ServiceCheck::Dns { port: internal.port(), name: POOL_NAME.into(), record_type: "A".into() },
    ];
    for check in checks {
        let what = check.describe();
        beta.publish(Duration::from_secs(3), |obs| {
            obs.addresses = vec![internal.ip(), beta_ip];
            obs.service_check = Some(check);
        })
        .await;
        assert_eq!(recorder.hits(), 0, "{what}: a site probed {internal}");
    }
    for i in [0, 2] {
        let table = peers_table(&cluster, i);
        assert!(!table.contains("127.0.83.50"), "site {i}:\n{table}");
    }
}

// ---- self-asserted service addresses ------------------------------------------------------------

/// A member claims another site's address, 0.0.0.0, an address nobody pinned, multicast and then
/// 3,000 addresses: no site serves any of them, and once the other site dies its address is
/// not answered through the liar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_addresses_are_never_served() {
    let mut cluster = start_cluster(3, 84, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in every answer", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    let (alpha_ip, beta_ip, gamma_ip) = (cluster.ip(0), cluster.ip(1), cluster.ip(2));
    let mut beta = Member::take_over(&mut cluster, 1).await;
    let claimed: Vec<IpAddr> = vec![
        gamma_ip,
        "0.0.0.0".parse().unwrap(),
        "10.66.66.66".parse().unwrap(),
        "224.0.0.1".parse().unwrap(),
        beta_ip,
    ];
    let served = |cluster: &LocalCluster, i: usize| dig_pool(cluster.dns_addr(i));
    for _ in 0..3 {
        beta.publish(Duration::from_secs(1), |obs| obs.addresses = claimed.clone()).await;
        for i in [0, 2] {
            let answer = served(&cluster, i);
            assert!(
                answer.iter().all(|ip| [alpha_ip, beta_ip, gamma_ip].contains(ip)),
                "site {i} serves a claimed address: {answer:?}"
            );
        }
    }

    // gamma dies; the liar keeps claiming its address.
    cluster.stop(2).unwrap();
    let deadline = Instant::now() + CONVERGE;
    loop {
        beta.publish(Duration::from_millis(500), |obs| obs.addresses = claimed.clone()).await;
        let answer = served(&cluster, 0);
        if !answer.contains(&gamma_ip) {
            break;
        }
        assert!(Instant::now() < deadline, "the dead gamma is still answered through the liar: {answer:?}");
    }
    for _ in 0..5 {
        beta.publish(Duration::from_millis(500), |obs| obs.addresses = claimed.clone()).await;
        let answer = served(&cluster, 0);
        assert!(!answer.contains(&gamma_ip), "gamma back through the liar: {answer:?}");
    }

    // 3,000 addresses: refused as malformed; no AAAA of them is answered, over UDP or TCP.
    let many: Vec<IpAddr> =
        (1..=3000u32).map(|n| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16])).collect();
    beta.publish(Duration::from_secs(2), |obs| obs.addresses = many.clone()).await;
    for transport in ["+notcp", "+tcp"] {
        let out = dig(cluster.dns_addr(0), &["+short", transport, POOL_NAME, "AAAA"]);
        assert!(!out.contains("2001:db8"), "{transport}: {out}");
    }
}

// ---- process limits ---------------------------------------------------------------------------

/// Started with a soft open-files limit of 256 (as a service manager might), `spdu run` raises it
/// to the hard limit before it opens anything, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_to_the_hard_limit() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit is needed for this test (apt-get install util-linux)");
    }
    let cluster =
        LocalCluster::create(spdu(), 1, Ipv4Addr::new(127, 0, 85, 11), spdu_cluster::Ports::default(), "")
            .unwrap();
    let log = std::fs::File::create(cluster.dir().join("limited.log")).unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg(spdu())
        .args(["run", "--config", cluster.config_path(0).to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // prlimit execs spdu: same pid.
    let pid = child.id();
    let limits = || std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let open_files = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| l.split_whitespace().skip(3).take(2).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let ready = Instant::now();
    while tokio::net::TcpStream::connect(cluster.control_addr(0)).await.is_err() {
        assert!(ready.elapsed() < Duration::from_secs(20), "the node did not start");
        assert!(child.try_wait().unwrap().is_none(), "the node exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = open_files(&limits());
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(cluster.dir().join("limited.log")).unwrap();
    assert_eq!(seen, "4096 4096", "soft and hard open-files limits of the running node");
    assert!(log.contains("raised the open-files limit"), "{log}");
}

// ---- incarnation rollback -----------------------------------------------------------------------

/// The incarnation site `by` holds for node `name`, and whether that observation is current.
fn observation_seen(cluster: &LocalCluster, by: usize, name: &str) -> Option<(u64, bool)> {
    let view = view(cluster, by);
    let node = view["nodes"].as_array()?.iter().find(|n| n["name"] == name)?.clone();
    Some((
        node["observation"]["observation"]["incarnation"].as_u64()?,
        node["observation"]["fresh"].as_bool()?,
    ))
}

/// A site restored with its key but without its incarnation file, on a clock a day behind (no
/// battery-backed clock, before NTP), starts below the incarnation its peers hold for it. Within
/// a few seconds the peers' replies raise it above that: they show its new observation current,
/// answer with it, and withdraw it as soon as its own check fails; the raised value is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_restored_with_its_clock_behind_is_a_full_member_within_seconds() {
    // libfaketime preloaded into spdu itself, as `faketime -f -1d` does (the `faketime` program
    // forks, so its pid is not the node's, which the harness must be able to kill).
    let libfaketime = crate::testing::libfaketime();
    let mut cluster =
        LocalCluster::create(spdu(), 3, Ipv4Addr::new(127, 0, 87, 11), spdu_cluster::Ports::default(), "")
            .unwrap();
    // gamma's own check: healthy while the marker file exists; peers do not probe it, so only
    // gamma's own signed word can withdraw it.
    let marker = cluster.dir().join("gamma-healthy");
    std::fs::write(&marker, "").unwrap();
    let path = cluster.config_path(2).to_owned();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[health]\ncheck = \"command\"\ncommand = [\"test\", \"-e\", \"{}\"]\ninterval_ms = 200\n",
        marker.display()
    ));
    std::fs::write(&path, text).unwrap();
    for i in 0..3 {
        cluster.start_site(i).unwrap();
    }
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in every answer", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    let (old, _) = observation_seen(&cluster, 0, "gamma").expect("alpha holds gamma's observation");

    // Restored: same key, no incarnation file, the wall clock a day behind.
    cluster.stop(2).unwrap();
    let file = cluster.dir().join("gamma.key.incarnation");
    std::fs::remove_file(&file).unwrap();
    let preload = libfaketime.to_str().unwrap();
    let env = [("LD_PRELOAD", preload), ("FAKETIME", "-1d"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    cluster.start_site_under(2, &[], &env).unwrap();
    cluster.wait_site_ready(2, Duration::from_secs(20)).await.unwrap();
    // What it started with (its log says; the file may already hold the raised value).
    let log = std::fs::read_to_string(cluster.log_path(2)).unwrap();
    let started: u64 = log
        .lines()
        .rev()
        .find_map(|l| l.contains("starting").then(|| l.split("incarnation=").nth(1)).flatten())
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the start line names the incarnation");
    assert!(started < old, "the faked clock starts gamma below its old incarnation ({started} vs {old})");

    let took = wait_until(
        Duration::from_secs(10),
        "alpha and beta to hold gamma's new observation, current",
        || {
            (0..2).all(|i| {
                observation_seen(&cluster, i, "gamma").is_some_and(|(inc, fresh)| inc > old && fresh)
            })
        },
    );
    eprintln!("gamma is a full member again {took:?} after it was ready");
    wait_until(Duration::from_secs(10), "every site to answer with gamma", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    // Its own verdict counts again: its check fails, everyone withdraws it.
    std::fs::remove_file(&marker).unwrap();
    let survivors = ips(&cluster, &[0, 1]);
    let withdrawn =
        wait_until(Duration::from_secs(10), "alpha and beta to withdraw the unhealthy gamma", || {
            (0..2).all(|i| dig_pool(cluster.dns_addr(i)) == survivors)
        });
    eprintln!("gamma's self-withdrawal reached its peers after {withdrawn:?}");
    let stored: u64 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    assert!(stored > old, "the raised incarnation is stored ({stored} vs {old})");
}
