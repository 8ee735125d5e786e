//! Hostile gossip traffic against real nodes, aimed at the QUIC driver: floods of unfinished
//! handshakes from strangers, a roster member that takes no stream from its victim while asking
//! for thousands of replies, pushes of thousands of bogus entries, and a slow stream next to a
//! peer's liveness datagrams. Each attack must leave live sites in the answer, keep memory and
//! the control endpoint bounded, and be counted in the node's `/metrics`.
//!
//! A stranger is this test process sending real QUIC Initials (built with quinn-proto, never
//! finished) from many loopback sources. A roster member gone bad is this test process holding a
//! real site's key (the cluster writes keys to `<dir>/<name>.key`), with a quinn client.
//! Blocks 127.0.60–64.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, ZONE_ORIGIN};
use spdu_gossip::proto::{MAX_FRAME_BYTES, Message, OBSERVATION_CONTEXT, Observation, SignedObservation};
use spdu_keys::{SecretKey, tls};

use crate::testing::{dig_pool, ips, start_cluster, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);
/// The cluster id of a local cluster: the zone origin (no `[cluster] id` set).
const CLUSTER: &str = ZONE_ORIGIN;

// ---- fixtures ----------------------------------------------------------------------------

/// The current value of `series` (a full OpenMetrics line prefix) on site `i`.
fn metric(cluster: &LocalCluster, i: usize, series: &str) -> u64 {
    let url = format!("http://{}/metrics", cluster.control_addr(i));
    let text = spdu_cluster::http_get(&url).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

/// Site `i`'s view as `spdu peers --json` prints it.
fn view(cluster: &LocalCluster, i: usize) -> serde_json::Value {
    let text = spdu_cluster::fetch_view(cluster.control_addr(i)).expect("view");
    serde_json::from_str(&text).expect("json")
}

fn node_in<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["nodes"].as_array().expect("nodes").iter().find(|n| n["name"] == name).expect("node in view")
}

/// Whether site `i`'s own probing sees `name` reachable.
fn sees_reachable(cluster: &LocalCluster, i: usize, name: &str) -> bool {
    node_in(&view(cluster, i), name)["probe"]["reachable"] == true
}

fn signed_of(cluster: &LocalCluster, i: usize, name: &str) -> SignedObservation {
    serde_json::from_value(node_in(&view(cluster, i), name)["observation"]["signed"].clone())
        .expect("a signed observation")
}

fn decode(signed: &SignedObservation) -> Observation {
    signed.verify(CLUSTER, |_| true).expect("a valid observation")
}

fn key_of(cluster: &LocalCluster, i: usize) -> SecretKey {
    SecretKey::load_file(&cluster.dir().join(format!("{}.key", cluster.name(i)))).expect("site key")
}

/// Signs `obs` with `key` whoever it claims to be from.
fn sign_as(obs: &Observation, key: &SecretKey) -> SignedObservation {
    let body = postcard::to_stdvec(obs).unwrap();
    SignedObservation { signature: key.sign(OBSERVATION_CONTEXT, CLUSTER, &body), body }
}

fn block(cluster: &LocalCluster) -> u8 {
    match cluster.ip(0) {
        IpAddr::V4(v4) => v4.octets()[2],
        IpAddr::V6(_) => unreachable!("local clusters are IPv4"),
    }
}

/// The pid of site `i`'s `spdu run` process, found by its config path in /proc.
fn pid_of(cluster: &LocalCluster, i: usize) -> u32 {
    let config = cluster.config_path(i).as_os_str().as_encoded_bytes().to_vec();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("/proc entry");
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&b"run".as_slice()) && args.contains(&config.as_slice()) {
            return pid;
        }
    }
    panic!("no process runs {}", cluster.config_path(i).display());
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).expect("a value").parse().expect("a number")
}

/// A QUIC client holding a roster site's key, connected to another site's gossip port.
struct Member {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Member {
    /// Connects as site `site` to site `to`; `transport` replaces the client's transport settings.
    async fn connect(
        cluster: &LocalCluster,
        site: usize,
        to: usize,
        transport: Option<quinn::TransportConfig>,
    ) -> Self {
        let mut config =
            tls::client_config(&key_of(cluster, site), tls::PinnedKeys::new([key_of(cluster, to).public()]))
                .expect("client config");
        if let Some(t) = transport {
            config.transport_config(Arc::new(t));
        }
        let from = SocketAddr::new(IpAddr::from([127, 0, block(cluster), 99]), 0);
        let mut endpoint = quinn::Endpoint::client(from).expect("client endpoint");
        endpoint.set_default_client_config(config);
        let conn =
            endpoint.connect(cluster.gossip_addr(to), "spdu").expect("connect").await.expect("handshake");
        Self { _endpoint: endpoint, conn }
    }

    async fn stream(&self, frame: &[u8]) {
        let mut stream = self.conn.open_uni().await.expect("stream");
        let _ = stream.write_all(frame).await;
        let _ = stream.finish();
    }

    /// Sends an Alive naming `tag` every 100 ms until `stop` is set.
    fn keep_alive(&self, tag: u8, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = conn.send_datagram(Message::Alive(tag).encode().into());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }
}

/// Initials made ahead per target: replayed in a cycle longer than a handshake may last, each is a
/// new attempt every time round.
const INITIALS_PER_TARGET: usize = 2800;

/// Sends unfinished QUIC Initials (distinct connection ids, a stranger's key) to each of
/// `targets` at about `per_second` each, from two sockets on each of `sources` (one socket per
/// Initial), until `stop` is set; never reads a reply. Counts what it sent in `sent`.
async fn flood_initials(
    targets: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
    per_second: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut sockets = Vec::new();
    for ip in sources {
        for _ in 0..2 {
            sockets.push(tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await.expect("flood socket"));
        }
    }
    // Made ahead: building an Initial costs far more than sending one (this is a debug build).
    let ring_targets = targets.clone();
    let initials = tokio::task::spawn_blocking(move || {
        let client =
            tls::client_config(&SecretKey::generate(), tls::PinnedKeys::new([])).expect("client config");
        let mut initials = Vec::new();
        for chunk in 0..INITIALS_PER_TARGET.div_ceil(500) {
            // A fresh endpoint per chunk: each one tracks its (abandoned) connections.
            let mut endpoint = quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            );
            for _ in 0..500.min(INITIALS_PER_TARGET - chunk * 500) {
                for target in &ring_targets {
                    let now = Instant::now();
                    let (_, mut conn) =
                        endpoint.connect(now, client.clone(), *target, "spdu").expect("connect");
                    let mut buf = Vec::new();
                    let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
                    buf.truncate(t.size);
                    initials.push((*target, buf));
                }
            }
        }
        initials
    })
    .await
    .expect("Initials made");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (per_second * targets.len() as u64).div_ceil(100) as usize;
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for _ in 0..per_tick {
            let i = next % initials.len();
            next += 1;
            let (target, initial) = &initials[i];
            if sockets[i % sockets.len()].send_to(initial, *target).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// ---- strangers ------------------------------------------------------------------------------

/// A flood of unfinished handshakes from many sources, at two sites, does not keep one of them
/// out of the other's answer after it restarts (neither can reach the other unless a handshake
/// gets through), and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_does_not_keep_a_restarted_peer_out() {
    let mut cluster = start_cluster(3, 60, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let refused = |cluster: &LocalCluster| {
        metric(cluster, 0, "spdu_gossip_handshakes_refused_total")
            + metric(cluster, 0, "spdu_gossip_handshakes_retried_total")
    };
    let turned_away = refused(&cluster);

    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sources: Vec<IpAddr> = (100..=199).map(|h| IpAddr::from([127, 0, block(&cluster), h])).collect();
    let targets = vec![cluster.gossip_addr(0), cluster.gossip_addr(1)];
    let flood = tokio::spawn(flood_initials(targets, sources, 800, stop.clone(), sent.clone()));
    let result = async {
        // The flood fills alpha's handshake slots, then beta is lost and comes back.
        for _ in 0..600 {
            if sent.load(Ordering::Relaxed) >= 400 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.stop(1).unwrap();
        let survivors = ips(&cluster, &[0, 2]);
        wait_until(CONVERGE, "alpha to drop beta", || dig_pool(cluster.dns_addr(0)) == survivors);
        cluster.start_site(1).unwrap();
        cluster.wait_site_ready(1, Duration::from_secs(20)).await.unwrap();
        let back =
            wait_until(Duration::from_secs(12), "beta back in alpha's answer during the flood", || {
                dig_pool(cluster.dns_addr(0)) == all
            });
        eprintln!("beta back in alpha's answer {back:?} after its restart, under the flood");
        assert!(!flood.is_finished(), "the flood ran throughout");
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = sent.load(Ordering::Relaxed);
    let turned_away = refused(&cluster) - turned_away;
    eprintln!("{sent} Initials sent; alpha turned away or retried {turned_away}");
    assert!(sent >= 1000, "only {sent} Initials sent");
    assert!(turned_away >= sent / 4, "{turned_away} of {sent} Initials (half at alpha) counted at alpha");
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap_or_default();
    assert!(
        log.contains("WARN") && log.contains("handshakes under pressure"),
        "the refusals are logged at warn"
    );
    result
}

// ---- a roster member gone bad -----------------------------------------------------------------

/// A member that grants no stream credit and asks for its own big observation thousands of times
/// does not make its victim buffer the replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_want_flood_without_stream_credit_keeps_memory_bounded() {
    const GROWTH_LIMIT_KIB: u64 = 48 * 1024;
    let mut cluster = start_cluster(3, 61, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let mut big = decode(&signed_of(&cluster, 0, "beta"));
    cluster.stop(1).unwrap();
    let beta_key = key_of(&cluster, 1);

    // Beta's key advertises an observation of about 50 KB (a long name), so every reply to a Want
    // for it needs a stream.
    let pusher = Member::connect(&cluster, 1, 0, None).await;
    big.seq += 1000;
    big.name = "b".repeat(50_000);
    let accepted = metric(&cluster, 0, "spdu_gossip_observations_accepted_total");
    pusher.stream(&Message::Push(vec![sign_as(&big, &beta_key)]).encode()).await;
    wait_until(Duration::from_secs(5), "the big observation accepted", || {
        metric(&cluster, 0, "spdu_gossip_observations_accepted_total") > accepted
    });

    // The flood: a connection that grants no stream credit, and thousands of 34-byte Wants.
    let mut stingy = quinn::TransportConfig::default();
    stingy.max_concurrent_uni_streams(0u32.into());
    let wanting = Member::connect(&cluster, 1, 0, Some(stingy)).await;
    let pid = pid_of(&cluster, 0);
    let before = rss_kib(pid);
    let dropped = || {
        metric(&cluster, 0, "spdu_gossip_send_queue_dropped_total")
            + metric(&cluster, 0, "spdu_gossip_send_coalesced_total")
    };
    let dropped_before = dropped();
    let want = Message::Want(vec![beta_key.public()]).encode();
    assert_eq!(want.len(), 34);
    let mut peak = before;
    for _ in 0..40 {
        for _ in 0..100 {
            let _ = wanting.conn.send_datagram(want.clone().into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_kib(pid));
    }
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid));
    }
    let dropped = dropped() - dropped_before;
    eprintln!(
        "alpha RSS {before} KiB before 4,000 Wants, peak {peak} KiB; {dropped} replies dropped or coalesced"
    );
    assert!(peak - before < GROWTH_LIMIT_KIB, "alpha grew from {before} KiB to {peak} KiB");
    assert!(dropped > 0, "the replies that could not be sent were counted");
    // And alpha still serves gamma and itself.
    assert!(dig_pool(cluster.dns_addr(0)).contains(&cluster.ip(2)));
    drop((pusher, wanting));
}

/// A member pushing thousands of bogus entries (claimed newer versions of a live site's
/// observation, signatures that do not verify) does not get the live site dropped, and the
/// control endpoint keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_pushes_do_not_drop_a_live_site_or_stall_the_node() {
    let mut cluster = start_cluster(3, 62, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let gamma = decode(&signed_of(&cluster, 0, "gamma"));
    cluster.stop(1).unwrap();
    let survivors = ips(&cluster, &[0, 2]);
    wait_until(CONVERGE, "alpha to drop beta", || dig_pool(cluster.dns_addr(0)) == survivors);

    // 4,096 claims of newer gamma observations, each signed by beta (so none verifies as gamma's).
    let beta_key = key_of(&cluster, 1);
    let bogus: Vec<SignedObservation> = (1..=4096u64)
        .map(|i| {
            let mut obs = gamma.clone();
            obs.seq += 1000 + i;
            sign_as(&obs, &beta_key)
        })
        .collect();
    let frame = Message::Push(bogus).encode();
    assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
    let member = Member::connect(&cluster, 1, 0, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let conn = member.conn.clone();
    let (pushes, stop_pushing) = (Arc::new(AtomicU64::new(0)), stop.clone());
    let pushed = pushes.clone();
    let pusher = tokio::spawn(async move {
        while !stop_pushing.load(Ordering::Relaxed) {
            let Ok(mut s) = conn.open_uni().await else { return };
            let _ = s.write_all(&frame).await;
            let _ = s.finish();
            pushed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(8) {
        assert_eq!(dig_pool(cluster.dns_addr(0)), survivors, "gamma stays in alpha's answer");
        let asked = Instant::now();
        let url = format!("http://{}/v1/peers", cluster.control_addr(0));
        // http_get gives up after 5 s.
        spdu_cluster::http_get(&url).expect("the control endpoint answers within 5 s under the flood");
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = pusher.await;
    eprintln!(
        "{} bogus pushes of 4,096 entries; slowest /v1/peers {slowest:?}",
        pushes.load(Ordering::Relaxed)
    );
    assert!(pushes.load(Ordering::Relaxed) >= 5, "the pushes went out");
    assert!(sees_reachable(&cluster, 0, "gamma"));
}

// ---- head of line -----------------------------------------------------------------------------

/// A peer trickling a 1 MiB frame over a stream while its Alives keep flowing on the same
/// connection is never declared down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_does_not_hide_the_senders_liveness() {
    let mut cluster = start_cluster(3, 63, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    let beta = decode(&signed_of(&cluster, 0, "beta"));
    cluster.stop(1).unwrap();
    wait_until(CONVERGE, "alpha to see beta unreachable", || !sees_reachable(&cluster, 0, "beta"));

    // Beta's key comes back as this test: Alives every 100 ms, naming the observation alpha holds.
    let member = Member::connect(&cluster, 1, 0, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let alive = member.keep_alive(beta.version_tag(), stop.clone());
    wait_until(CONVERGE, "alpha to see beta reachable again", || sees_reachable(&cluster, 0, "beta"));

    // A 1 MiB push, trickled in 64 KiB pieces over about four seconds.
    let body_len = MAX_FRAME_BYTES - 200;
    let frame = Message::Push(vec![SignedObservation {
        signature: key_of(&cluster, 1).sign(OBSERVATION_CONTEXT, CLUSTER, &[0; 8]),
        body: vec![0; body_len],
    }])
    .encode();
    assert!(frame.len() <= MAX_FRAME_BYTES && frame.len() > MAX_FRAME_BYTES - 1024);
    let conn = member.conn.clone();
    let trickle = tokio::spawn(async move {
        let mut stream = conn.open_uni().await.expect("stream");
        for piece in frame.chunks(64 * 1024) {
            stream.write_all(piece).await.expect("piece written");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = stream.finish();
    });
    let started = Instant::now();
    let mut checks = 0;
    while !trickle.is_finished() || started.elapsed() < Duration::from_secs(5) {
        assert!(
            sees_reachable(&cluster, 0, "beta"),
            "alpha declared beta down {:?} into the slow stream, though its Alives kept arriving",
            started.elapsed()
        );
        checks += 1;
        assert!(started.elapsed() < Duration::from_secs(30), "the trickle ends");
        std::thread::sleep(Duration::from_millis(200));
    }
    trickle.await.expect("trickle");
    assert!(checks >= 20, "watched throughout ({checks} checks)");
    stop.store(true, Ordering::Relaxed);
    let _ = alive.await;
}
