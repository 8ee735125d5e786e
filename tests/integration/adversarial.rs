//! Hostile input against real nodes: a roster member gone bad (forged, replayed, foreign,
//! oversize and truncated gossip, floods of connections and streams), strangers, garbage UDP,
//! odd DNS queries, amplification, and restarts. Each attack must be dropped and counted (the
//! node's `/metrics`) or answered with the right response code, and the node must keep
//! answering DNS correctly and keep its view.
//!
//! The "roster member" is this test process holding a real site's key (the cluster writes keys to
//! `<dir>/<name>.key`): the site is stopped and impersonated with a quinn client, sending
//! `Message` frames as datagrams and uni streams like `gossip/src/net.rs` does.
//! Blocks 127.0.30–39.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message as DnsMessage, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use spdu_cluster::{LocalCluster, POOL_NAME, ZONE_ORIGIN};
use spdu_gossip::proto::{MAX_FRAME_BYTES, Message, OBSERVATION_CONTEXT, Observation, SignedObservation};
use spdu_keys::{PublicKey, SecretKey, tls};
use tokio::net::UdpSocket;

use crate::testing::{dig_pool, ips, start_cluster, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);
/// The cluster id of a local cluster: the zone origin (no `[cluster] id` set).
pub(crate) const CLUSTER: &str = ZONE_ORIGIN;

// ---- fixtures ----------------------------------------------------------------------------

/// The current value of `series` (a full OpenMetrics line prefix, labels included) on site `i`.
pub(crate) fn metric(cluster: &LocalCluster, i: usize, series: &str) -> u64 {
    let url = format!("http://{}/metrics", cluster.control_addr(i));
    let text = spdu_cluster::http_get(&url).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

fn rejected(cluster: &LocalCluster, i: usize, reason: &str) -> u64 {
    metric(cluster, i, &format!("spdu_gossip_observations_rejected_total{{reason=\"{reason}\"}}"))
}

/// Site `i`'s view as `spdu peers --json` prints it.
pub(crate) fn view(cluster: &LocalCluster, i: usize) -> serde_json::Value {
    let text = spdu_cluster::fetch_view(cluster.control_addr(i)).expect("view");
    serde_json::from_str(&text).expect("json")
}

/// The signed observation of node `name` in site `i`'s view.
pub(crate) fn signed_of(cluster: &LocalCluster, i: usize, name: &str) -> SignedObservation {
    let view = view(cluster, i);
    let node = view["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).expect("node in view");
    serde_json::from_value(node["observation"]["signed"].clone()).expect("a signed observation")
}

pub(crate) fn decode(signed: &SignedObservation) -> Observation {
    signed.verify(CLUSTER, |_| true).expect("a valid observation")
}

pub(crate) fn key_of(cluster: &LocalCluster, i: usize) -> SecretKey {
    SecretKey::load_file(&cluster.dir().join(format!("{}.key", cluster.name(i)))).expect("site key")
}

/// Signs `obs` with `key` whoever it claims to be from (`Observation::sign` refuses to forge).
pub(crate) fn sign_as(obs: &Observation, key: &SecretKey, cluster: &str) -> SignedObservation {
    let body = postcard::to_stdvec(obs).unwrap();
    SignedObservation { signature: key.sign(OBSERVATION_CONTEXT, cluster, &body), body }
}

/// A QUIC client holding `key`, connected to site `to`'s gossip port.
pub(crate) struct Impostor {
    _endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
}

impl Impostor {
    async fn connect(
        key: &SecretKey,
        server: PublicKey,
        to: SocketAddr,
        from_ip: IpAddr,
    ) -> anyhow::Result<Self> {
        let config = tls::client_config(key, tls::PinnedKeys::new([server]))?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(from_ip, 0))?;
        endpoint.set_default_client_config(config);
        let conn = endpoint.connect(to, "spdu")?.await?;
        Ok(Self { _endpoint: endpoint, conn })
    }

    pub(crate) async fn as_site(cluster: &LocalCluster, site: usize, to: usize) -> Self {
        let from = IpAddr::from([127, 0, ip_block(cluster), 99]);
        let server = key_of(cluster, to).public();
        Self::connect(&key_of(cluster, site), server, cluster.gossip_addr(to), from)
            .await
            .expect("roster key is accepted")
    }

    pub(crate) fn datagram(&self, frame: Vec<u8>) {
        self.conn.send_datagram(frame.into()).expect("datagram");
    }

    pub(crate) async fn stream(&self, frame: &[u8]) {
        let mut stream = self.conn.open_uni().await.expect("stream");
        // The node may stop reading an oversize frame early: that is the point.
        let _ = stream.write_all(frame).await;
        let _ = stream.finish();
    }
}

fn ip_block(cluster: &LocalCluster) -> u8 {
    match cluster.ip(0) {
        IpAddr::V4(v4) => v4.octets()[2],
        IpAddr::V6(_) => unreachable!("local clusters are IPv4"),
    }
}

/// Waits until counter `read` has grown past `before`.
fn wait_counted(what: &str, before: u64, read: impl Fn() -> u64) {
    wait_until(Duration::from_secs(5), what, || read() > before);
}

/// Sends `query` over UDP to `server`; the response bytes, or `None` after `wait`.
async fn udp_exchange(server: SocketAddr, query: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).await.unwrap();
    socket.send_to(query, server).await.unwrap();
    let mut buf = vec![0; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await.ok()?.unwrap();
    buf.truncate(len);
    Some(buf)
}

async fn ask(server: SocketAddr, query: &DnsMessage) -> DnsMessage {
    let bytes =
        udp_exchange(server, &query.to_vec().unwrap(), Duration::from_secs(2)).await.expect("a response");
    DnsMessage::from_vec(&bytes).expect("response decodes")
}

fn query(name: &str, qtype: RecordType) -> DnsMessage {
    let mut msg = DnsMessage::query();
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg
}

// ---- a roster member gone bad ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_foreign_and_malformed_gossip_is_refused_and_counted() {
    let mut cluster = start_cluster(3, 30, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    // gamma's observation while it still sees beta: replayed later, it would vote beta back in.
    let old_gamma = signed_of(&cluster, 0, "gamma");

    // beta goes down; the attacker takes its key.
    cluster.stop(1).unwrap();
    let survivors = ips(&cluster, &[0, 2]);
    wait_until(CONVERGE, "alpha to drop beta", || dig_pool(cluster.dns_addr(0)) == survivors);
    // gamma notices beta's loss on its own clock: wait until its new observation reached alpha.
    let old_version = decode(&old_gamma).version();
    wait_until(CONVERGE, "gamma's observation without beta at alpha", || {
        decode(&signed_of(&cluster, 0, "gamma")).version() > old_version
    });
    let gamma_now = decode(&signed_of(&cluster, 0, "gamma"));
    let beta_key = key_of(&cluster, 1);
    let beta = Impostor::as_site(&cluster, 1, 0).await;

    // Forged: gamma's observation, saying alpha is unreachable, signed with beta's key.
    let mut forged = gamma_now.clone();
    forged.seq += 1000;
    forged.reachable.0.iter_mut().for_each(|b| *b = 0);
    let before = rejected(&cluster, 0, "bad_signature");
    beta.datagram(Message::Push(vec![sign_as(&forged, &beta_key, CLUSTER)]).encode());
    wait_counted("the forgery to be counted", before, || rejected(&cluster, 0, "bad_signature"));

    // Replayed: gamma's genuine but old observation.
    let before = rejected(&cluster, 0, "replayed");
    beta.stream(&Message::Push(vec![old_gamma]).encode()).await;
    wait_counted("the replay to be counted", before, || rejected(&cluster, 0, "replayed"));

    // Another cluster: beta's own, validly signed, for a cluster of the same keys elsewhere.
    let mut foreign = decode(&signed_of(&cluster, 0, "beta"));
    foreign.cluster = "pool.elsewhere.test".into();
    foreign.seq += 1000;
    let before = rejected(&cluster, 0, "wrong_cluster");
    beta.datagram(Message::Push(vec![sign_as(&foreign, &beta_key, &foreign.cluster)]).encode());
    wait_counted("the foreign observation to be counted", before, || rejected(&cluster, 0, "wrong_cluster"));

    // Truncated datagram, then an oversize stream.
    let malformed = || metric(&cluster, 0, "spdu_gossip_malformed_frames_total");
    let frame = Message::Push(vec![sign_as(&forged, &beta_key, CLUSTER)]).encode();
    let before = malformed();
    beta.datagram(frame[..frame.len() / 2].to_vec());
    wait_counted("the truncated frame to be counted", before, malformed);
    let before = malformed();
    beta.stream(&vec![0x02; MAX_FRAME_BYTES + 1]).await;
    wait_counted("the oversize frame to be counted", before, malformed);

    // Nothing of it got in: gamma's entry is gamma's own, and the answers are unchanged.
    let gamma_after = decode(&signed_of(&cluster, 0, "gamma"));
    assert_eq!(gamma_after.observer, gamma_now.observer);
    assert!(gamma_after.version() >= gamma_now.version() && gamma_after.seq < forged.seq, "{gamma_after:?}");
    assert_eq!(decode(&signed_of(&cluster, 0, "beta")).cluster, CLUSTER);
    assert_eq!(rejected(&cluster, 0, "self_conflict"), 0);
    for _ in 0..10 {
        assert_eq!(dig_pool(cluster.dns_addr(0)), survivors);
        assert_eq!(dig_pool(cluster.dns_addr(2)), survivors);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_connections_and_streams_stay_bounded() {
    let mut cluster = start_cluster(3, 31, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in alpha's answer", || dig_pool(cluster.dns_addr(0)) == all);
    cluster.stop(1).unwrap();
    let survivors = ips(&cluster, &[0, 2]);
    wait_until(CONVERGE, "alpha to drop beta", || dig_pool(cluster.dns_addr(0)) == survivors);

    // Strangers: handshakes with a key outside the roster, many at once.
    let refused = metric(&cluster, 0, "spdu_gossip_handshakes_refused_total");
    let (alpha_key, alpha_gossip) = (key_of(&cluster, 0).public(), cluster.gossip_addr(0));
    let mut strangers = tokio::task::JoinSet::new();
    for _ in 0..100 {
        strangers.spawn(async move {
            let from = IpAddr::from([127, 0, 31, 98]);
            if let Ok(imp) = Impostor::connect(&SecretKey::generate(), alpha_key, alpha_gossip, from).await {
                // The refusal arrives as a close right after the client's handshake ends.
                let _ = tokio::time::timeout(Duration::from_secs(2), imp.conn.closed()).await;
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(30), strangers.join_all()).await.expect("strangers done");
    assert!(
        metric(&cluster, 0, "spdu_gossip_handshakes_refused_total") >= refused + 50,
        "strangers refused and counted"
    );

    // A roster member: many connections, each with every stream it may open left unfinished.
    let (mut floods, mut impostors) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let imp = Impostor::as_site(&cluster, 1, 0).await;
        for _ in 0..16 {
            if let Ok(mut s) = imp.conn.open_uni().await {
                let _ = s.write_all(&[2, 1]).await;
                floods.push(s);
            }
        }
        imp.datagram(vec![0xff; 100]);
        impostors.push(imp);
    }
    // The node keeps answering and keeps gamma, and holds a bounded number of connections.
    for _ in 0..15 {
        assert_eq!(dig_pool(cluster.dns_addr(0)), survivors, "alpha's answer under the flood");
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = metric(&cluster, 0, "spdu_gossip_connections_open");
    assert!(open <= 8, "{open} connections open: one peer may hold only a few");
    let view = view(&cluster, 0);
    let gamma = view["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "gamma").unwrap();
    assert_eq!(gamma["observation"]["fresh"], true, "gamma still fresh in alpha's view");
    drop((floods, impostors));
}

// ---- garbage and odd DNS ----------------------------------------------------------------

/// A small deterministic generator (xorshift), so a failure reproduces.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_udp_on_dns_and_gossip_ports_is_dropped() {
    let cluster = start_cluster(2, 32, "").await;
    let both = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "both in alpha's answer", || dig_pool(cluster.dns_addr(0)) == both);

    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::from([127, 0, 32, 99]), 0)).await.unwrap();
    let mut seed = 0x5eed_u64;
    let mut sent = 0usize;
    for i in 0..2000 {
        let len = [0, 1, 11, 12, 13, 40, 512, 1400][i % 8];
        let mut bytes = garbage(&mut seed, len);
        if i % 3 == 0 && len >= 12 {
            bytes[2] &= 0x7f; // QR=0: looks like a query, reaches the message parser
        }
        let target = if i % 2 == 0 { cluster.dns_addr(0) } else { cluster.gossip_addr(0) };
        socket.send_to(&bytes, target).await.unwrap();
        if i % 2 == 0 {
            sent += bytes.len();
        }
    }
    // Whatever came back is no bigger than what was sent (no amplification), and decodes.
    let mut received = 0usize;
    let mut buf = vec![0; 65535];
    while let Ok(Ok((len, from))) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
    {
        assert_eq!(from, cluster.dns_addr(0), "only DNS answers garbage");
        assert!(len <= 512, "{len}-byte answer to garbage");
        received += len;
    }
    assert!(received <= sent, "{received} bytes answered to {sent} bytes of garbage");

    for i in 0..2 {
        assert_eq!(dig_pool(cluster.dns_addr(i)), both, "site {i} still answers both");
    }
    let view = view(&cluster, 0);
    assert!(view["nodes"].as_array().unwrap().iter().all(|n| n["observation"]["fresh"] == true), "view kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_dns_queries_get_the_right_response_code() {
    let cluster = start_cluster(1, 33, "").await;
    let server = cluster.dns_addr(0);
    let counted = |rcode: &str| -> u64 {
        ["a", "aaaa", "soa", "ns", "any", "other", "none"]
            .iter()
            .map(|q| {
                metric(
                    &cluster,
                    0,
                    &format!("spdu_dns_queries_total{{rcode=\"{rcode}\",qtype=\"{q}\",transport=\"udp\"}}"),
                )
            })
            .sum()
    };

    // QCLASS CH and HS: not served here.
    for class in [DNSClass::CH, DNSClass::HS] {
        let mut q = query(POOL_NAME, RecordType::A);
        q.queries[0].set_query_class(class);
        assert_eq!(ask(server, &q).await.metadata.response_code, ResponseCode::Refused, "{class:?}");
    }
    // QCLASS * matches IN.
    let mut q = query(POOL_NAME, RecordType::A);
    q.queries[0].set_query_class(DNSClass::ANY);
    let r = ask(server, &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);

    // Opcodes other than QUERY.
    for opcode in [OpCode::Status, OpCode::Notify, OpCode::Update, OpCode::Unknown(3)] {
        let mut q = query(POOL_NAME, RecordType::A);
        q.metadata.op_code = opcode;
        assert_eq!(ask(server, &q).await.metadata.response_code, ResponseCode::NotImp, "{opcode:?}");
    }

    // ANY: one synthesized HINFO (RFC 8482), whatever the name holds.
    for name in [POOL_NAME, ZONE_ORIGIN] {
        let r = ask(server, &query(name, RecordType::ANY)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1, "{name}: {:?}", r.answers);
        assert!(matches!(&r.answers[0].data, RData::HINFO(h) if &*h.cpu == b"RFC8482"), "{:?}", r.answers);
    }

    // Not exactly one question.
    let formerr = counted("formerr");
    let mut two = query(POOL_NAME, RecordType::A);
    two.add_query(Query::query(Name::from_ascii(ZONE_ORIGIN).unwrap(), RecordType::SOA));
    assert_eq!(ask(server, &two).await.metadata.response_code, ResponseCode::FormErr);
    let none = DnsMessage::query();
    assert_eq!(ask(server, &none).await.metadata.response_code, ResponseCode::FormErr);
    wait_until(Duration::from_secs(5), "FORMERR counted", || counted("formerr") >= formerr + 2);

    // EDNS: a huge buffer is capped at ours; an unknown version gets BADVERS.
    let mut q = query(POOL_NAME, RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(65535);
    q.set_edns(edns);
    let r = ask(server, &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.edns.as_ref().is_some_and(|e| e.max_payload() <= 1232), "{:?}", r.edns);
    let mut q = query(POOL_NAME, RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    q.set_edns(edns);
    // BADVERS is extended RCODE 16, which hickory decodes under its other name, BADSIG.
    let r = ask(server, &q).await;
    assert_eq!(u16::from(r.metadata.response_code), u16::from(ResponseCode::BADVERS), "{r:?}");

    // A response is never answered (reflection loops); nor is less than a header.
    let mut r = query(POOL_NAME, RecordType::A);
    r.metadata.message_type = MessageType::Response;
    assert_eq!(udp_exchange(server, &r.to_vec().unwrap(), Duration::from_millis(500)).await, None);
    assert_eq!(udp_exchange(server, &[0; 11], Duration::from_millis(500)).await, None);

    assert!(counted("refused") >= 2 && counted("notimp") >= 4 && counted("badvers") >= 1, "counted by rcode");
    // And the pool still answers right.
    assert_eq!(dig_pool(server), ips(&cluster, &[0]));
}

/// Response / query size over UDP without EDNS, for every kind of query, stays small: spdu is no
/// amplifier. (With EDNS a client can ask for up to 1232 bytes; without, 512 is the cap anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_responses_without_edns_are_barely_larger_than_queries() {
    const MAX_RATIO: f64 = 4.0;
    let cluster = start_cluster(3, 34, "").await;
    let server = cluster.dns_addr(0);
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in the answer", || dig_pool(server) == all);

    let names =
        [POOL_NAME, ZONE_ORIGIN, "nope.pool.example.test", "example.org", "a.b.c.api.pool.example.test"];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::NS,
        RecordType::SOA,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::MX,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::DNSKEY,
        RecordType::AXFR,
        RecordType::IXFR,
        RecordType::Unknown(65280),
    ];
    let mut worst = (0.0f64, String::new());
    for name in names {
        for qtype in types {
            let q = query(name, qtype).to_vec().unwrap();
            let r = udp_exchange(server, &q, Duration::from_secs(2)).await.expect("a response");
            assert!(r.len() <= 512, "{name} {qtype}: {} bytes without EDNS", r.len());
            let ratio = r.len() as f64 / q.len() as f64;
            eprintln!("{name} {qtype}: {} -> {} bytes ({ratio:.2})", q.len(), r.len());
            if ratio > worst.0 {
                worst = (ratio, format!("{name} {qtype}"));
            }
        }
    }
    eprintln!("worst response/query ratio: {:.2} ({})", worst.0, worst.1);
    assert!(worst.0 <= MAX_RATIO, "{} amplifies {:.2}x", worst.1, worst.0);
}

// ---- restarts ---------------------------------------------------------------------------------

fn incarnation_seen(cluster: &LocalCluster, by: usize, name: &str) -> Option<u64> {
    let out =
        crate::testing::run_spdu(&["peers", "--config", cluster.config_path(by).to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = view["nodes"].as_array()?.iter().find(|n| n["name"] == name)?;
    node["observation"]["observation"]["incarnation"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_with_a_higher_incarnation_that_peers_accept() {
    let mut cluster = start_cluster(3, 35, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "all three in every answer", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    let first = incarnation_seen(&cluster, 0, "gamma").expect("alpha holds gamma's observation");
    assert_eq!(incarnation_seen(&cluster, 1, "gamma"), Some(first));

    for round in 1..=2 {
        cluster.restart(2).unwrap();
        cluster.wait_site_ready(2, Duration::from_secs(20)).await.unwrap();
        wait_until(CONVERGE, "peers to accept gamma's new incarnation", || {
            (0..2).all(|i| incarnation_seen(&cluster, i, "gamma").is_some_and(|inc| inc > first + round - 1))
        });
        wait_until(CONVERGE, "gamma back in every answer", || {
            (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
        });
    }
    // Its old observations, still circulating, were replays, never a conflict.
    for i in 0..3 {
        assert_eq!(rejected(&cluster, i, "self_conflict"), 0, "site {i}");
    }
}
