//! End-to-end tests: a real `DnsServer` on 127.0.0.1:0, queried over real UDP and TCP sockets
//! with messages built and parsed by hickory-proto (the wire client lives in `testing`).

mod testing;

use std::{collections::HashSet, net::IpAddr, time::Duration};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    },
};
use spdu_dnsfront::{
    AnswerPublisher, DnsError, DnsMetrics, DnsServer, MAX_RECORDS_PER_RRSET, NameAnswers, Pick, PoolAnswers,
    SiteAddrs, ZoneConfig,
    offline::{self, Responder},
};
use testing::{TestServer, addrs, answer_ips, query, signer, soa_of, tcp, udp, udp_raw, zone};
use tokio_util::sync::CancellationToken;

const API: &str = "api.pool.example.test.";
const APEX: &str = "pool.example.test.";

fn pool() -> Vec<IpAddr> {
    addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"])
}

#[tokio::test]
async fn a_and_aaaa_answer_with_the_pool_and_rotate() {
    let server = TestServer::start(zone(&["api"]), 7, pool()).await;

    let mut orders = HashSet::new();
    for _ in 0..6 {
        let response = udp(server.addr, &query(API, RecordType::A)).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert!(!response.metadata.truncation);
        assert!(response.authorities.is_empty(), "positive answers stay small");
        assert!(response.answers.iter().all(|r| r.ttl == 5));
        let ips = answer_ips(&response);
        let set: HashSet<_> = ips.iter().copied().collect();
        assert_eq!(set, addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]).into_iter().collect());
        orders.insert(ips);
    }
    assert!(orders.len() >= 2, "order should rotate between queries: {orders:?}");

    let response = tcp(server.addr, &query(API, RecordType::AAAA)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    let set: HashSet<_> = answer_ips(&response).into_iter().collect();
    assert_eq!(set, addrs(&["2001:db8::1", "2001:db8::2"]).into_iter().collect());
    server.stop().await;
}

#[tokio::test]
async fn answers_and_serial_follow_the_watch_channel() {
    let server = TestServer::start(zone(&["api"]), 1, addrs(&["192.0.2.1"])).await;
    assert_eq!(soa_of(&udp(server.addr, &query(APEX, RecordType::SOA)).await).serial, 1);

    server.publish(2, addrs(&["198.51.100.7", "2001:db8::9"]));
    let response = udp(server.addr, &query(API, RecordType::A)).await;
    assert_eq!(answer_ips(&response), addrs(&["198.51.100.7"]));
    let response = udp(server.addr, &query(APEX, RecordType::SOA)).await;
    assert_eq!(soa_of(&response).serial, 2);

    // An empty pool: NODATA with the new serial in the SOA.
    server.publish(3, vec![]);
    let response = udp(server.addr, &query(API, RecordType::A)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(soa_of(&response).serial, 3);
    server.stop().await;
}

#[tokio::test]
async fn a_new_zone_is_served_on_the_same_sockets() {
    let server = TestServer::start(zone(&["api"]), 1, addrs(&["192.0.2.1"])).await;
    const WWW: &str = "www.pool.example.test.";
    let response = udp(server.addr, &query(WWW, RecordType::A)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);

    // A reload: a second name, another TTL, one nameserver less.
    let mut new = zone(&["api", "www"]);
    new.ttl = 30;
    new.nameservers.pop();
    let answers = PoolAnswers::same_for_all(2, 2, 30, addrs(&["198.51.100.7"]));
    server.replace_zone(&new, answers).unwrap();
    for response in [
        udp(server.addr, &query(WWW, RecordType::A)).await,
        tcp(server.addr, &query(WWW, RecordType::A)).await,
    ] {
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_ips(&response), addrs(&["198.51.100.7"]));
        assert!(response.answers.iter().all(|r| r.ttl == 30));
    }
    let response = udp(server.addr, &query(APEX, RecordType::NS)).await;
    assert_eq!(response.answers.len(), 1);
    let soa = soa_of(&udp(server.addr, &query(APEX, RecordType::SOA)).await);
    assert_eq!((soa.serial, soa.minimum), (2, 30));
    // Later answers are built for the new zone.
    server.publish_answers(PoolAnswers::same_for_all(3, 2, 30, addrs(&["198.51.100.8"])));
    assert_eq!(answer_ips(&udp(server.addr, &query(WWW, RecordType::A)).await), addrs(&["198.51.100.8"]));

    // A zone that does not compile is refused and changes nothing.
    let bad = ZoneConfig { origin: "".into(), ..new.clone() };
    assert!(server.replace_zone(&bad, PoolAnswers::same_for_all(4, 2, 30, vec![])).is_err());
    assert_eq!(answer_ips(&udp(server.addr, &query(WWW, RecordType::A)).await), addrs(&["198.51.100.8"]));
    server.stop().await;
}

#[tokio::test]
async fn soa_and_ns_at_the_apex() {
    let server = TestServer::start(zone(&["api"]), 9, pool()).await;
    let response = udp(server.addr, &query(APEX, RecordType::SOA)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(response.answers.len(), 1);
    let soa = soa_of(&response);
    assert_eq!(soa.mname, Name::from_ascii("alpha.example.test.").unwrap());
    assert_eq!(soa.rname, Name::from_ascii("hostmaster.pool.example.test.").unwrap());
    assert_eq!(soa.serial, 9);
    assert_eq!(soa.minimum, 5);
    assert!(soa.refresh > 0 && soa.retry > 0 && soa.expire > soa.refresh);

    let response = tcp(server.addr, &query(APEX, RecordType::NS)).await;
    assert!(response.metadata.authoritative);
    let targets: HashSet<String> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::NS(ns) => ns.0.to_string(),
            other => panic!("not NS: {other:?}"),
        })
        .collect();
    let expected: HashSet<String> = ["alpha.example.test.", "beta.example.test."].map(String::from).into();
    assert_eq!(targets, expected);
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let server = TestServer::start(zone(&["api", "www.deep"]), 4, addrs(&["192.0.2.1"])).await;
    let negative = |name: &'static str, qtype: RecordType, rcode: ResponseCode| {
        let addr = server.addr;
        async move {
            let response = udp(addr, &query(name, qtype)).await;
            assert_eq!(response.metadata.response_code, rcode, "{name} {qtype}");
            assert!(response.metadata.authoritative, "{name} {qtype}: AA");
            assert!(response.answers.is_empty(), "{name} {qtype}");
            assert_eq!(response.authorities.len(), 1, "{name} {qtype}");
            let soa = &response.authorities[0];
            assert_eq!(soa.name, Name::from_ascii(APEX).unwrap());
            assert_eq!(soa.ttl, 5, "negative TTL = min(SOA TTL, minimum)");
            assert_eq!(soa_of(&response).serial, 4);
        }
    };
    negative("nope.pool.example.test.", RecordType::A, ResponseCode::NXDomain).await;
    negative("x.api.pool.example.test.", RecordType::A, ResponseCode::NXDomain).await;
    negative("www.pool.example.test.", RecordType::AAAA, ResponseCode::NXDomain).await;
    negative(API, RecordType::TXT, ResponseCode::NoError).await;
    negative(API, RecordType::AAAA, ResponseCode::NoError).await; // no v6 in the pool
    negative(API, RecordType::MX, ResponseCode::NoError).await;
    negative(APEX, RecordType::A, ResponseCode::NoError).await;
    negative(APEX, RecordType::TXT, ResponseCode::NoError).await;
    // Empty non-terminal: deep exists because www.deep does.
    negative("deep.pool.example.test.", RecordType::A, ResponseCode::NoError).await;
    let response = udp(server.addr, &query("www.deep.pool.example.test.", RecordType::A)).await;
    assert_eq!(answer_ips(&response), addrs(&["192.0.2.1"]));
    server.stop().await;
}

#[tokio::test]
async fn outside_the_zone_is_refused() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    for name in ["example.test.", "test.", ".", "api.other.test.", "xpool.example.test."] {
        let response = udp(server.addr, &query(name, RecordType::A)).await;
        assert_eq!(response.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!response.metadata.authoritative, "{name}");
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
    // Other classes are not served.
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(udp(server.addr, &chaos).await.metadata.response_code, ResponseCode::Refused);
    let mut chaos = query(API, RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(udp(server.addr, &chaos).await.metadata.response_code, ResponseCode::Refused);
    // Zone transfers are not offered.
    let response = tcp(server.addr, &query(APEX, RecordType::AXFR)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    server.stop().await;
}

#[tokio::test]
async fn names_compare_case_insensitively() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    let response = udp(server.addr, &query("ApI.PoOl.ExAmPlE.TeSt.", RecordType::A)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(response.answers.len(), 3);
    // The question is echoed as asked.
    assert_eq!(response.queries[0].name().to_string(), "ApI.PoOl.ExAmPlE.TeSt.");
    let response = udp(server.addr, &query("POOL.EXAMPLE.TEST.", RecordType::SOA)).await;
    assert_eq!(response.answers.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn edns_is_echoed_and_versions_checked() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;

    let response = udp(server.addr, &query(API, RecordType::A)).await;
    assert!(response.edns.is_none(), "no OPT without one in the query");

    let mut with_edns = query(API, RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let response = udp(server.addr, &with_edns).await;
    let echoed = response.edns.as_ref().expect("OPT echoed");
    assert_eq!(echoed.max_payload(), 1232);
    assert_eq!(echoed.version(), 0);
    assert_eq!(response.answers.len(), 3);

    // NXDOMAIN keeps the OPT too.
    let mut nx = query("nope.pool.example.test.", RecordType::A);
    nx.set_edns(Edns::new());
    let response = udp(server.addr, &nx).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.edns.is_some());

    let mut v1 = query(API, RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    let response = udp(server.addr, &v1).await;
    // BADVERS and BADSIG share code 16; hickory decodes it as BADSIG.
    assert_eq!(u16::from(response.metadata.response_code), u16::from(ResponseCode::BADVERS));
    assert!(response.edns.is_some());
    server.stop().await;
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let many: Vec<IpAddr> =
        (1..=60u16).map(|i| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))).collect();
    let server = TestServer::start(zone(&["api"]), 1, many.clone()).await;

    let request = query(API, RecordType::AAAA);
    let raw = udp_raw(server.addr, &request.to_vec().unwrap()).await.expect("a UDP response");
    assert!(raw.len() <= 512, "UDP response without EDNS is {} bytes", raw.len());
    let response = Message::from_vec(&raw).unwrap();
    assert!(response.metadata.truncation, "TC must be set");
    assert!(response.answers.len() < 60);

    let mut with_edns = query(API, RecordType::AAAA);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let raw = udp_raw(server.addr, &with_edns.to_vec().unwrap()).await.expect("a UDP response");
    assert!(raw.len() <= 1232, "UDP response with EDNS is {} bytes", raw.len());
    assert!(Message::from_vec(&raw).unwrap().metadata.truncation);

    let response = tcp(server.addr, &request).await;
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 60);
    let got: HashSet<_> = answer_ips(&response).into_iter().collect();
    assert_eq!(got, many.into_iter().collect());
    assert!(server.metrics_text().contains("dns_truncated_responses_total 2"));
    server.stop().await;
}

#[tokio::test]
async fn other_opcodes_are_not_implemented() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    for op_code in [OpCode::Notify, OpCode::Update, OpCode::Status] {
        let mut message = Message::new(4242, MessageType::Query, op_code);
        message.add_query(Query::query(Name::from_ascii(APEX).unwrap(), RecordType::SOA));
        let response = udp(server.addr, &message).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NotImp, "{op_code:?}");
        assert_eq!(response.metadata.id, 4242);
    }
    server.stop().await;
}

#[tokio::test]
async fn zero_or_two_questions_are_formerr() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    let mut two = query(API, RecordType::A);
    two.add_query(Query::query(Name::from_ascii(APEX).unwrap(), RecordType::SOA));
    let response = udp(server.addr, &two).await;
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert!(response.answers.is_empty());

    let mut none = query(API, RecordType::A);
    none.queries.clear();
    let response = tcp(server.addr, &none).await;
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    server.stop().await;
}

#[tokio::test]
async fn garbage_does_not_stop_the_server() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;

    // Shorter than a header: dropped silently.
    assert!(udp_raw(server.addr, b"\x01\x02\x03").await.is_none());
    // A readable header announcing a question that is not there: FORMERR with the same id.
    let header_only = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let raw = udp_raw(server.addr, &header_only).await.expect("FORMERR for a parseable header");
    let response = Message::from_vec(&raw).unwrap();
    assert_eq!(response.metadata.id, 0xabcd);
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    // Pseudo-random junk of every length up to 600 bytes.
    let mut seed: u32 = 0x1234_5678;
    for len in (0..600).step_by(7) {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        testing::udp_send(server.addr, &junk).await;
    }
    // Garbage on a TCP connection closes that connection only.
    testing::tcp_garbage(server.addr, &[0x00, 0x05, 1, 2, 3, 4, 5, 0xff]).await;

    let response = udp(server.addr, &query(API, RecordType::A)).await;
    assert_eq!(response.answers.len(), 3);
    let response = tcp(server.addr, &query(API, RecordType::A)).await;
    assert_eq!(response.answers.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn any_gets_a_minimal_answer() {
    let server = TestServer::start(zone(&["api", "www.deep"]), 1, pool()).await;
    for name in [API, APEX] {
        let response = udp(server.addr, &query(name, RecordType::ANY)).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers.len(), 1, "{name}");
        match &response.answers[0].data {
            RData::HINFO(hinfo) => assert_eq!(&*hinfo.cpu, b"RFC8482"),
            other => panic!("{name}: expected HINFO, got {other:?}"),
        }
    }
    let response = udp(server.addr, &query("deep.pool.example.test.", RecordType::ANY)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
    let response = udp(server.addr, &query("nope.pool.example.test.", RecordType::ANY)).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn queries_are_counted() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    udp(server.addr, &query(API, RecordType::A)).await;
    udp(server.addr, &query(API, RecordType::A)).await;
    tcp(server.addr, &query("nope.pool.example.test.", RecordType::AAAA)).await;
    udp(server.addr, &query("other.test.", RecordType::MX)).await;
    let text = server.metrics_text();
    for line in [
        r#"dns_queries_total{rcode="noerror",qtype="a",transport="udp"} 2"#,
        r#"dns_queries_total{rcode="nxdomain",qtype="aaaa",transport="tcp"} 1"#,
        r#"dns_queries_total{rcode="refused",qtype="other",transport="udp"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bind_errors_name_the_problem() {
    let answers = AnswerPublisher::new(
        &zone(&["api"]),
        PoolAnswers::same_for_all(1, 1, 5, pool()),
        DnsMetrics::default(),
    )
    .unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = DnsServer::bind(&answers, &[addr]).await.unwrap_err();
    assert!(matches!(error, DnsError::Bind { .. }), "{error}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");

    // A second server on an address a running one holds is refused, although our UDP sockets
    // use SO_REUSEPORT: the TCP listener guards the address.
    let first = DnsServer::bind(&answers, &["127.0.0.1:0".parse().unwrap()]).await.unwrap();
    let held = first.local_addrs()[0];
    let error = DnsServer::bind(&answers, &[held]).await.unwrap_err();
    assert!(error.to_string().contains(&held.to_string()), "{error}");
    drop(first);

    let error = DnsServer::bind(&answers, &[]).await.unwrap_err();
    assert!(matches!(error, DnsError::NoListenAddress), "{error}");

    // The zone is checked when answers are first published.
    let bad = ZoneConfig { names: vec!["bad name".into()], ..zone(&["api"]) };
    let error = AnswerPublisher::new(&bad, PoolAnswers::same_for_all(1, 1, 5, pool()), DnsMetrics::default())
        .unwrap_err();
    assert!(error.to_string().contains("bad name"), "{error}");
}

#[tokio::test]
async fn several_listen_addresses_and_clean_shutdown() {
    let answers = AnswerPublisher::new(
        &zone(&["api"]),
        PoolAnswers::same_for_all(1, 1, 5, pool()),
        DnsMetrics::default(),
    )
    .unwrap();
    let listen = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    let listen = if v6 { &listen[..] } else { &listen[..1] };
    let server = DnsServer::bind(&answers, listen).await.unwrap();
    let bound = server.local_addrs();
    assert_eq!(bound.len(), listen.len());
    assert!(bound.iter().all(|a| a.port() != 0));

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    for &addr in &bound {
        assert_eq!(udp(addr, &query(API, RecordType::A)).await.answers.len(), 3);
        assert_eq!(tcp(addr, &query(API, RecordType::A)).await.answers.len(), 3);
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    // The ports are free again.
    for addr in bound {
        std::net::UdpSocket::bind(addr).expect("UDP port released");
        std::net::TcpListener::bind(addr).expect("TCP port released");
    }
}

// ---- The UDP fast path ----
//
// Plain UDP queries are answered from responses encoded once per answer version; the tests
// below hold it to the slow path (hickory's decoding and the handler), byte for byte.

/// A responder (the served request path, without sockets) for `zone(["api", "www.deep"])`.
fn responder(addrs: Vec<IpAddr>) -> Responder {
    Responder::new(&zone(&["api", "www.deep"]), PoolAnswers::same_for_all(3, 2, 5, addrs)).unwrap()
}

/// Asserts that the served UDP response to `query` is the slow path's for the same selection:
/// the same rotation (the slow path is asked until it reaches it; both advance the same
/// counter) and the same weighted draw (both draw after the same seed). Served twice: by the
/// request path alone and through the UDP loop's batch code (`recvmmsg`/`sendmmsg` batches).
/// Returns whether the fast path answered.
fn assert_same_as_slow(r: &Responder, query: &[u8], what: &str) -> bool {
    const SEED: u64 = 0x5eed;
    let fast = r.is_fast(query);
    r.seed(SEED);
    let served = r.answer(query, true);
    assert_reaches_slow(r, query, &served, what);
    let src = std::net::SocketAddr::from(([127, 0, 0, 1], 5353));
    r.seed(SEED);
    let batched = r.answer_udp_batch(&[(query, src)]);
    assert!(batched.iter().all(|(to, _)| *to == src), "{what}: batched reply to another address");
    let batched = batched.into_iter().next().map(|(_, reply)| reply);
    assert_reaches_slow(r, query, &batched, &format!("{what} (batched)"));
    fast
}

/// Asserts that the slow path gives `served` within a full rotation.
fn assert_reaches_slow(r: &Responder, query: &[u8], served: &Option<Vec<u8>>, what: &str) {
    const SEED: u64 = 0x5eed;
    let mut slow = Vec::new();
    for _ in 0..=MAX_RECORDS_PER_RRSET {
        r.seed(SEED);
        let answer = r.answer_slow(query, true);
        if answer == *served {
            return;
        }
        slow.push(answer);
    }
    panic!("{what}: served {served:02x?}\nslow gives {:02x?}", slow.first());
}

fn with_edns(mut message: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    message.set_edns(edns);
    message
}

#[test]
fn fast_path_is_byte_identical_to_the_slow_path() {
    let mut big: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    big.extend((1..=20u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])));
    let names = [
        API,
        "ApI.PoOl.ExAmPlE.TeSt.",
        APEX,
        "POOL.EXAMPLE.TEST.",
        "www.deep.pool.example.test.",
        "deep.pool.example.test.",
        "nope.pool.example.test.",
        "x.api.pool.example.test.",
        "a-b_c.NoPe.pool.example.test.",
        "example.test.",
        "api.other.test.",
        "xpool.example.test.",
        ".",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::MX,
        RecordType::CNAME,
        RecordType::CAA,
        RecordType::HINFO,
        RecordType::AXFR,
        RecordType::IXFR,
        RecordType::OPT,
        RecordType::Unknown(0),
        RecordType::Unknown(65280),
    ];
    let mut fast = 0;
    let mut signed_fast = 0;
    let mut total = 0;
    // Unsigned, then signed (DNSSEC on): each with and without the DO bit.
    for (signed, addrs) in [
        (false, pool()),
        (false, addrs(&["192.0.2.1"])),
        (false, vec![]),
        (false, big.clone()),
        (true, pool()),
        (true, big),
    ] {
        let r = responder(addrs);
        if signed {
            r.set_signer(Some(signer()));
        }
        for name in names {
            for qtype in types {
                for edns in [None, Some(0), Some(511), Some(512), Some(1232), Some(4096)] {
                    for dnssec_ok in [false, true] {
                        let mut message = query(name, qtype);
                        message.metadata.id = 0x5a5a;
                        message.metadata.recursion_desired = true;
                        match edns {
                            Some(payload) => {
                                message = with_edns(message, payload);
                                message.edns.as_mut().unwrap().set_dnssec_ok(dnssec_ok);
                            }
                            None if dnssec_ok => continue,
                            None => {}
                        }
                        let what = format!("{name} {qtype} edns {edns:?} do {dnssec_ok} signed {signed}");
                        let answered = assert_same_as_slow(&r, &message.to_vec().unwrap(), &what);
                        signed_fast += usize::from(answered && signed && dnssec_ok);
                        fast += usize::from(answered);
                        total += 1;
                    }
                }
            }
        }
    }
    assert!(fast > total / 3, "the fast path answered only {fast} of {total}");
    // Signed positive answers (A, AAAA, SOA, NS, ANY of existing names) come precomputed too.
    assert!(signed_fast > 100, "the fast path answered only {signed_fast} signed DO queries");
}

/// `api` and `www.deep` answer with `addrs` in sites of `per_site` addresses (weights 100, 50,
/// 0, 100, 50, 0, …), `api` with `pick`, `www.deep` with a rotating window of 2.
fn picking(addrs: &[IpAddr], per_site: usize, pick: Pick) -> Responder {
    let sites: Vec<SiteAddrs> = addrs
        .chunks(per_site)
        .zip([100, 50, 0].into_iter().cycle())
        .map(|(addrs, weight)| SiteAddrs { addrs: addrs.to_vec(), weight })
        .collect();
    let names = vec![
        NameAnswers { ttl: 30, sites: sites.clone(), pick },
        NameAnswers { ttl: 2, sites, pick: Pick::Rotate { max: 2 } },
    ];
    Responder::new(&zone(&["api", "www.deep"]), PoolAnswers { serial: 4, names }).unwrap()
}

/// Every pick (all, rotating windows, weighted draws with and without a limit), over sites of
/// one and of several addresses: the fast path sends what the slow path sends for the same
/// rotation or draw, and it takes every rotation and every weighted pick its first draw
/// decides.
#[test]
fn fast_path_matches_the_slow_path_for_every_pick() {
    let mut big: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    big.extend((1..=20u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])));
    let picks = [
        Pick::All,
        Pick::Rotate { max: 1 },
        Pick::Rotate { max: 3 },
        Pick::Rotate { max: 100 },
        Pick::Weighted { max: 0 },
        Pick::Weighted { max: 1 },
        Pick::Weighted { max: 2 },
    ];
    let mut fast = 0;
    let mut total = 0;
    for addrs in [pool(), addrs(&["192.0.2.1"]), vec![], big] {
        for per_site in [1, 2] {
            for pick in picks {
                let r = picking(&addrs, per_site, pick);
                for name in [API, "ApI.PoOl.ExAmPlE.TeSt.", "www.deep.pool.example.test."] {
                    for qtype in [RecordType::A, RecordType::AAAA, RecordType::ANY] {
                        for edns in [None, Some(512), Some(1232)] {
                            let mut message = query(name, qtype);
                            message.metadata.id = 0xa5a5;
                            if let Some(payload) = edns {
                                message = with_edns(message, payload);
                            }
                            let bytes = message.to_vec().unwrap();
                            let what = format!(
                                "{} addrs, {per_site} per site, {pick:?}: {name} {qtype} edns {edns:?}",
                                addrs.len()
                            );
                            // Several times: rotations advance, draws differ.
                            for _ in 0..3 {
                                fast += usize::from(assert_same_as_slow(&r, &bytes, &what));
                                total += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(fast > total / 2, "the fast path answered only {fast} of {total}");

    // What the fast path takes and leaves, for the pool of three A and two AAAA addresses.
    let a = with_edns(query(API, RecordType::A), 1232).to_vec().unwrap();
    let aaaa = with_edns(query(API, RecordType::AAAA), 1232).to_vec().unwrap();
    for (pick, per_site, fast_a) in [
        (Pick::All, 1, true),
        (Pick::Rotate { max: 2 }, 1, true),
        (Pick::Weighted { max: 1 }, 1, true),
        (Pick::Weighted { max: 1 }, 2, true),
        // Sites of two addresses (one of one): the first site decides, except the last.
        (Pick::Weighted { max: 2 }, 2, false),
        (Pick::Weighted { max: 2 }, 1, false),
        (Pick::Weighted { max: 0 }, 1, false),
    ] {
        let r = picking(&pool(), per_site, pick);
        assert_eq!(r.is_fast(&a), fast_a, "{pick:?} {per_site} per site");
    }
    // No limit: fast where one site holds every address of the family (sites of four: the
    // three A addresses and one AAAA, then the other AAAA), else drawn per query.
    let r = picking(&pool(), 4, Pick::Weighted { max: 0 });
    assert!(r.is_fast(&a), "one site of A addresses");
    assert!(!r.is_fast(&aaaa), "two sites of AAAA addresses, no limit");
}

#[test]
fn fast_path_covers_the_common_cases_and_leaves_the_rest() {
    let r = responder(pool());
    let fast = |message: &Message| r.is_fast(&message.to_vec().unwrap());
    for (name, qtype) in [
        (API, RecordType::A),
        (API, RecordType::AAAA),
        (APEX, RecordType::SOA),
        (APEX, RecordType::NS),
        (API, RecordType::ANY),
        (API, RecordType::TXT),
        (API, RecordType::CAA),
        ("nope.pool.example.test.", RecordType::A),
        ("ApI.PoOl.ExAmPlE.TeSt.", RecordType::A),
        ("example.test.", RecordType::A),
    ] {
        assert!(fast(&query(name, qtype)), "{name} {qtype}");
        for payload in [512, 1232, 4096] {
            assert!(fast(&with_edns(query(name, qtype), payload)), "{name} {qtype} {payload}");
        }
        let mut flags = with_edns(query(name, qtype), 1232);
        flags.metadata.recursion_desired = true;
        flags.metadata.checking_disabled = true;
        flags.metadata.authentic_data = true;
        flags.edns.as_mut().unwrap().set_dnssec_ok(true);
        flags.edns.as_mut().unwrap().options_mut().insert(EdnsOption::Unknown(10, vec![7; 8]));
        assert!(fast(&flags), "{name} {qtype} with RD CD AD DO and a cookie");
    }

    let mut slow = vec![query(APEX, RecordType::AXFR), query(APEX, RecordType::IXFR)];
    let mut chaos = query(API, RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    slow.push(chaos);
    let mut any_class = query(API, RecordType::A);
    any_class.queries[0].set_query_class(DNSClass::ANY);
    slow.push(any_class);
    let mut notify = query(APEX, RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    slow.push(notify);
    let mut v1 = with_edns(query(API, RecordType::A), 1232);
    v1.edns.as_mut().unwrap().set_version(1);
    slow.push(v1);
    let mut ecs = with_edns(query(API, RecordType::A), 1232);
    ecs.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::Subnet("192.0.2.0/24".parse::<ClientSubnet>().unwrap()));
    slow.push(ecs);
    let mut two = query(API, RecordType::A);
    two.add_query(Query::query(Name::from_ascii(APEX).unwrap(), RecordType::SOA));
    slow.push(two);
    let mut response = query(API, RecordType::A);
    response.metadata.message_type = MessageType::Response;
    slow.push(response);
    let long = format!("{}.pool.example.test.", vec!["a".repeat(60); 3].join("."));
    slow.push(query(&long, RecordType::A));
    slow.push(query("*.pool.example.test.", RecordType::A));
    for message in &slow {
        assert!(!fast(message), "{message:?}");
        assert_same_as_slow(&r, &message.to_vec().unwrap(), &format!("{message:?}"));
    }

    // Answers that do not fit are truncated by the slow path.
    let many: Vec<IpAddr> = (1..=60u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])).collect();
    let r = responder(many);
    assert!(!r.is_fast(&query(API, RecordType::AAAA).to_vec().unwrap()));
    assert!(!r.is_fast(&with_edns(query(API, RecordType::AAAA), 4096).to_vec().unwrap()));
    let medium: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    let r = responder(medium);
    assert!(!r.is_fast(&query(API, RecordType::A).to_vec().unwrap()), "over 512 without EDNS");
    assert!(!r.is_fast(&with_edns(query(API, RecordType::A), 512).to_vec().unwrap()));
    assert!(r.is_fast(&with_edns(query(API, RecordType::A), 1232).to_vec().unwrap()));
}

#[test]
fn nxdomain_of_every_name_length_matches_the_slow_path() {
    let r = responder(pool());
    for len in 1..=70 {
        // One label of `len` bytes (split when over 63), below the origin.
        let label = "n".repeat(len);
        let name = if len > 63 {
            format!("{}.{}.pool.example.test.", &label[..63], &label[63..])
        } else {
            format!("{label}.pool.example.test.")
        };
        for message in [query(&name, RecordType::A), with_edns(query(&name, RecordType::AAAA), 1232)] {
            assert!(r.is_fast(&message.to_vec().unwrap()), "{name}");
            assert_same_as_slow(&r, &message.to_vec().unwrap(), &name);
        }
    }
}

/// `message` with a COOKIE option holding `cookie`.
fn with_cookie(mut message: Message, cookie: &[u8]) -> Message {
    message.edns.as_mut().expect("EDNS first").options_mut().insert(EdnsOption::Unknown(10, cookie.to_vec()));
    message
}

/// With cookies on, the fast path answers a client cookie alone or with a valid server cookie
/// byte for byte as the slow path does (the same fresh server cookie appended to the OPT), and
/// leaves every bad server cookie to the slow path, which answers BADCOOKIE with a fresh cookie.
#[test]
fn fast_path_with_cookies_is_byte_identical_to_the_slow_path() {
    let r = responder(pool());
    let src = "127.0.0.1:5353".parse().unwrap();
    let client = [0xc1, 0x1e, 0x47, 0, 1, 2, 3, 4];
    let valid = r.issue_cookie(client, src).expect("cookies are on");
    assert_eq!(valid.len(), 24);
    let for_other_ip = r.issue_cookie(client, "127.0.0.2:5353".parse().unwrap()).unwrap();
    let flipped = {
        let mut c = valid.clone();
        c[23] ^= 0x80;
        c
    };
    let version_2 = {
        let mut c = valid.clone();
        c[8] = 2;
        c
    };
    let longer = [valid.as_slice(), &[0; 8]].concat();
    let stale = r.issue_cookie(client, src).map(|mut c| {
        // Two hours before the responder's clock, re-hashed or not it is too old.
        let stamp = offline::DEFAULT_NOW - 7200;
        c[12..16].copy_from_slice(&stamp.to_be_bytes());
        c
    });
    let good: [&[u8]; 2] = [&client, &valid];
    let bad: [&[u8]; 5] = [&for_other_ip, &flipped, &version_2, &longer, stale.as_deref().unwrap()];
    let names = [API, "ApI.PoOl.ExAmPlE.TeSt.", APEX, "nope.pool.example.test.", "example.test."];
    let types = [RecordType::A, RecordType::AAAA, RecordType::SOA, RecordType::NS, RecordType::TXT];
    let mut fast = 0;
    for name in names {
        for qtype in types {
            for payload in [512, 1232, 4096] {
                let base = with_edns(query(name, qtype), payload);
                for cookie in good {
                    let bytes = with_cookie(base.clone(), cookie).to_vec().unwrap();
                    let what = format!("{name} {qtype} {payload} cookie {cookie:02x?}");
                    fast += usize::from(assert_same_as_slow(&r, &bytes, &what));
                    let served = Message::from_vec(&r.answer(&bytes, true).unwrap()).unwrap();
                    let option =
                        served.edns.as_ref().and_then(|e| e.options().get(EdnsCode::Cookie)).cloned();
                    let Some(EdnsOption::Unknown(10, sent)) = option else { panic!("{what}: no COOKIE") };
                    assert_eq!(sent, valid, "{what}: the fresh cookie (same clock, same secret)");
                }
                for cookie in bad {
                    let bytes = with_cookie(base.clone(), cookie).to_vec().unwrap();
                    let what = format!("{name} {qtype} {payload} bad cookie {cookie:02x?}");
                    assert!(!assert_same_as_slow(&r, &bytes, &what), "{what}: the slow path's");
                    let served = Message::from_vec(&r.answer(&bytes, true).unwrap()).unwrap();
                    assert_eq!(served.metadata.response_code, ResponseCode::BADCOOKIE, "{what}");
                    assert!(served.answers.is_empty() && served.authorities.is_empty(), "{what}");
                    let tcp = Message::from_vec(&r.answer(&bytes, false).unwrap()).unwrap();
                    assert_ne!(tcp.metadata.response_code, ResponseCode::BADCOOKIE, "{what} over TCP");
                }
            }
        }
    }
    assert!(fast > 100, "the fast path answered only {fast} queries with cookies");
    // Cookies off: no cookie back, bad ones answered; the fast path still matches.
    let mut r = responder(pool());
    r.set_cookies(None);
    let bytes = with_cookie(with_edns(query(API, RecordType::A), 1232), &flipped).to_vec().unwrap();
    assert!(assert_same_as_slow(&r, &bytes, "cookies off"));
    let served = Message::from_vec(&r.answer(&bytes, true).unwrap()).unwrap();
    assert_eq!(served.metadata.response_code, ResponseCode::NoError);
    assert!(served.edns.unwrap().options().get(EdnsCode::Cookie).is_none());
}

#[test]
fn mutated_queries_get_the_slow_path_answer() {
    let r = responder(pool());
    let mut cookie = with_edns(query("Api.pool.example.test.", RecordType::A), 1232);
    cookie.metadata.recursion_desired = true;
    cookie.edns.as_mut().unwrap().options_mut().insert(EdnsOption::Unknown(10, vec![1; 8]));
    let valid = r.issue_cookie([1; 8], "127.0.0.1:5353".parse().unwrap()).unwrap();
    let seeds = [
        cookie.to_vec().unwrap(),
        with_cookie(with_edns(query(API, RecordType::AAAA), 1232), &valid).to_vec().unwrap(),
        query("nope.pool.example.test.", RecordType::AAAA).to_vec().unwrap(),
        with_edns(query(APEX, RecordType::SOA), 4096).to_vec().unwrap(),
    ];
    let mut state: u32 = 0x2545_f491;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut fast = 0;
    for i in 0..30_000 {
        let mut packet = seeds[i % seeds.len()].clone();
        for _ in 0..=next() % 3 {
            let at = next() as usize % packet.len();
            match next() % 4 {
                0 => packet[at] ^= 1 << (next() % 8),
                1 => packet[at] = next() as u8,
                2 => packet.truncate(at.max(1)),
                _ => packet.insert(at, next() as u8),
            }
        }
        fast += usize::from(assert_same_as_slow(&r, &packet, &format!("mutant {i}: {packet:02x?}")));
    }
    assert!(fast > 1_000, "only {fast} mutants took the fast path");
}

#[tokio::test]
async fn fast_path_echoes_id_case_flags_and_edns() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    let name = "aPi.PoOl.eXaMpLe.TeSt.";
    for (id, payload) in [(0u16, None), (0xffff, Some(512u16)), (0xbeef, Some(1232)), (1, Some(4096))] {
        let mut message = query(name, RecordType::A);
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        message.metadata.checking_disabled = id % 2 == 1;
        message.metadata.authentic_data = true;
        if let Some(payload) = payload {
            message = with_edns(message, payload);
        }
        let bytes = message.to_vec().unwrap();
        let raw = udp_raw(server.addr, &bytes).await.expect("a response");
        assert_eq!(raw[..2], id.to_be_bytes(), "ID echoed");
        let question = 12..12 + name.len() + 1 + 4;
        assert_eq!(raw[question.clone()], bytes[question], "question echoed byte for byte (0x20 case)");
        let response = Message::from_vec(&raw).unwrap();
        assert_eq!(response.queries[0].name().to_string(), name);
        assert!(response.metadata.authoritative);
        assert!(response.metadata.recursion_desired, "RD echoed");
        assert_eq!(response.metadata.checking_disabled, id % 2 == 1, "CD echoed");
        assert!(!response.metadata.authentic_data && !response.metadata.recursion_available);
        assert_eq!(response.answers.len(), 3);
        assert!(response.answers.iter().all(|r| r.name.to_string() == API), "owner names stay lower case");
        match payload {
            None => assert!(response.edns.is_none()),
            Some(payload) => {
                let edns = response.edns.as_ref().expect("OPT echoed");
                assert_eq!(edns.max_payload(), payload.clamp(512, 1232));
                assert_eq!(edns.version(), 0);
                assert!(!edns.flags().dnssec_ok);
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn fast_path_queries_are_counted() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    for _ in 0..3 {
        udp(server.addr, &with_edns(query(API, RecordType::A), 1232)).await;
    }
    udp(server.addr, &query("nope.pool.example.test.", RecordType::AAAA)).await;
    udp(server.addr, &query(APEX, RecordType::TXT)).await;
    udp(server.addr, &query("other.test.", RecordType::A)).await;
    udp(server.addr, &query(APEX, RecordType::SOA)).await;
    let text = server.metrics_text();
    for line in [
        r#"dns_queries_total{rcode="noerror",qtype="a",transport="udp"} 3"#,
        r#"dns_queries_total{rcode="nxdomain",qtype="aaaa",transport="udp"} 1"#,
        r#"dns_queries_total{rcode="nodata",qtype="other",transport="udp"} 1"#,
        r#"dns_queries_total{rcode="refused",qtype="a",transport="udp"} 1"#,
        r#"dns_queries_total{rcode="noerror",qtype="soa",transport="udp"} 1"#,
        "dns_truncated_responses_total 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    server.stop().await;
}

/// What is served for an answer set (records, encoded responses) is built when the node
/// publishes it, once, and never on the query path.
#[tokio::test]
async fn answers_are_built_when_published_not_when_queried() {
    let server = TestServer::start(zone(&["api"]), 1, pool()).await;
    assert!(server.metrics_text().contains("dns_answer_snapshots_total 1"), "{}", server.metrics_text());
    server.publish(2, addrs(&["192.0.2.7"]));
    server.publish(3, addrs(&["192.0.2.8"]));
    assert!(server.metrics_text().contains("dns_answer_snapshots_total 3"), "{}", server.metrics_text());
    for _ in 0..3 {
        assert_eq!(answer_ips(&udp(server.addr, &query(API, RecordType::A)).await), addrs(&["192.0.2.8"]));
        assert_eq!(soa_of(&tcp(server.addr, &query(APEX, RecordType::SOA)).await).serial, 3);
    }
    assert!(server.metrics_text().contains("dns_answer_snapshots_total 3"), "{}", server.metrics_text());
    server.stop().await;
}
