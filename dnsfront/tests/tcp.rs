//! DNS over TCP and oversized answers against a real `DnsServer` on 127.0.0.1:0: RFC 7766
//! framing (several and pipelined queries per connection, idle timeouts), the connection
//! limits, and answers too big for a message, checked with hickory-proto and with dig.

mod testing;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::RecordType,
    serialize::binary::{BinDecodable, BinDecoder},
};
use spdu_dnsfront::{MAX_RECORDS_PER_RRSET, TcpLimits};
use testing::{TIMEOUT, TestServer, addrs, answer_ips, query, udp_raw, zone};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

const API: &str = "api.pool.example.test.";

/// `count` distinct addresses of each family.
fn huge_pool(count: u16) -> Vec<IpAddr> {
    let v6 = (0..count).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i)));
    let v4 = (0..count).map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)));
    v6.chain(v4).collect()
}

/// Decodes `raw` as exactly one message: no bytes may follow it.
fn decode_whole(raw: &[u8]) -> Message {
    let mut decoder = BinDecoder::new(raw);
    let message = Message::read(&mut decoder).expect("response parses");
    assert_eq!(decoder.len(), 0, "{} bytes after the message", decoder.len());
    message
}

fn framed(message: &Message) -> Vec<u8> {
    let bytes = message.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    framed
}

async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    timeout(TIMEOUT, read).await.expect("a TCP response in time")
}

async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    timeout(TIMEOUT, socket.connect(server)).await.expect("connect in time").expect("connect")
}

/// Whether the server closes `stream` within `within` (EOF or reset, no data).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(timeout(within, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// Thousands of addresses: over TCP the answer is one valid message (no trailing bytes) with
/// at most MAX_RECORDS_PER_RRSET records and no TC; over UDP it does not fit, so it is TC with
/// no records, no bigger than the query plus an OPT (no amplification). Before, TCP got a
/// 65,535-byte message with a partial record after its end, and UDP 1,232 bytes of records.
#[tokio::test]
async fn thousands_of_addresses_give_valid_bounded_messages() {
    let pool = huge_pool(3000);
    let server = TestServer::start(zone(&["api"]), 1, pool.clone()).await;
    for (qtype, family) in [(RecordType::AAAA, 6), (RecordType::A, 4)] {
        let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
        stream.write_all(&framed(&query(API, qtype))).await.unwrap();
        let raw = read_response(&mut stream).await;
        let response = decode_whole(&raw);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(!response.metadata.truncation, "{qtype}: everything served fits");
        let ips = answer_ips(&response);
        assert_eq!(ips.len(), MAX_RECORDS_PER_RRSET, "{qtype}");
        assert_eq!(ips.iter().collect::<HashSet<_>>().len(), ips.len(), "distinct");
        assert!(ips.iter().all(|ip| pool.contains(ip) && (ip.is_ipv6() == (family == 6))));
        eprintln!("{qtype} over TCP: {} bytes, {} records", raw.len(), ips.len());

        for payload in [None, Some(512), Some(1232), Some(4096)] {
            let mut message = query(API, qtype);
            if let Some(payload) = payload {
                let mut edns = Edns::new();
                edns.set_max_payload(payload);
                message.set_edns(edns);
            }
            let bytes = message.to_vec().unwrap();
            let raw = udp_raw(server.addr, &bytes).await.expect("a UDP response");
            let response = decode_whole(&raw);
            assert!(response.metadata.truncation, "{qtype} {payload:?}: TC");
            assert!(
                response.answers.is_empty() && response.authorities.is_empty(),
                "whole records only: none"
            );
            assert_eq!(response.queries.len(), 1);
            assert!(
                raw.len() <= bytes.len() + 11,
                "{qtype} {payload:?}: {} -> {} bytes",
                bytes.len(),
                raw.len()
            );
            eprintln!("{qtype} over UDP, EDNS {payload:?}: {} -> {} bytes", bytes.len(), raw.len());
        }
    }

    // An independent client agrees: dig reads the whole answer over TCP and sees no junk.
    let port = server.addr.port().to_string();
    let dig = move || {
        Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+tcp", "+time=2", "+tries=1", API, "AAAA"])
            .output()
    };
    // On a blocking thread: the server runs on this test's runtime.
    let out = tokio::task::spawn_blocking(dig)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("dig is needed for this test (apt-get install dnsutils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("ANSWER: {MAX_RECORDS_PER_RRSET},")), "{text}");
    assert!(!text.to_lowercase().contains("malformed") && !text.contains("bad packet"), "{text}");
    assert!(server.metrics_text().contains("dns_truncated_responses_total 8"), "{}", server.metrics_text());
    server.stop().await;
}

/// Several queries on one connection, written at once (pipelined) or a byte at a time, are
/// answered in order on that connection.
#[tokio::test]
async fn pipelined_and_trickled_queries_are_answered_in_order() {
    let server = TestServer::start(zone(&["api"]), 1, addrs(&["192.0.2.1", "2001:db8::1"])).await;
    let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
    let mut batch = Vec::new();
    for id in 1..=5u16 {
        let mut message = query(API, if id % 2 == 0 { RecordType::AAAA } else { RecordType::A });
        message.metadata.id = id;
        batch.extend(framed(&message));
    }
    stream.write_all(&batch).await.unwrap();
    for id in 1..=5u16 {
        let response = decode_whole(&read_response(&mut stream).await);
        assert_eq!(response.metadata.id, id);
        assert_eq!(response.answers.len(), 1);
    }
    let mut message = query("nope.pool.example.test.", RecordType::A);
    message.metadata.id = 99;
    for byte in framed(&message) {
        stream.write_all(&[byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = decode_whole(&read_response(&mut stream).await);
    assert_eq!((response.metadata.id, response.metadata.response_code), (99, ResponseCode::NXDomain));
    assert!(
        server.metrics_text().contains(r#"dns_queries_total{rcode="noerror",qtype="a",transport="tcp"} 3"#),
        "{}",
        server.metrics_text()
    );
    server.stop().await;
}

/// A connection that sends nothing, or half a message, is closed after the idle timeout.
#[tokio::test]
async fn idle_and_stalled_connections_are_closed() {
    let limits = TcpLimits { idle_timeout: Duration::from_millis(300), ..TcpLimits::default() };
    let server =
        TestServer::start_with(zone(&["api"]), 1, addrs(&["192.0.2.1"]), |s| s.with_tcp_limits(limits)).await;
    let mut silent = connect_from([127, 0, 0, 1], server.addr).await;
    let mut stalled = connect_from([127, 0, 0, 1], server.addr).await;
    stalled.write_all(&framed(&query(API, RecordType::A))[..7]).await.unwrap();
    let mut active = connect_from([127, 0, 0, 1], server.addr).await;
    // Queries keep a connection open past the idle timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        active.write_all(&framed(&query(API, RecordType::A))).await.unwrap();
        assert_eq!(decode_whole(&read_response(&mut active).await).answers.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_within(&mut silent, TIMEOUT).await, "a silent connection is closed");
    assert!(closed_within(&mut stalled, TIMEOUT).await, "a stalled message is not waited for forever");
    server.stop().await;
}

/// Over the per-source or the total limit, a new connection is closed at once and counted;
/// others keep being served; a freed slot is reused. Near the total limit idle connections
/// are closed sooner.
#[tokio::test]
async fn connection_limits_refuse_and_count() {
    let limits = TcpLimits {
        max_connections: 4,
        max_per_source: 2,
        idle_timeout: Duration::from_secs(30),
        busy_idle_timeout: Duration::from_millis(300),
    };
    let server =
        TestServer::start_with(zone(&["api"]), 1, addrs(&["192.0.2.1"]), |s| s.with_tcp_limits(limits)).await;
    let ask = |mut stream: TcpStream| async move {
        stream.write_all(&framed(&query(API, RecordType::A))).await.unwrap();
        assert_eq!(decode_whole(&read_response(&mut stream).await).answers.len(), 1);
        stream
    };
    let a1 = ask(connect_from([127, 0, 0, 1], server.addr).await).await;
    let _a2 = ask(connect_from([127, 0, 0, 1], server.addr).await).await;
    let mut a3 = connect_from([127, 0, 0, 1], server.addr).await;
    assert!(closed_within(&mut a3, TIMEOUT).await, "third connection from one source");
    let b1 = ask(connect_from([127, 0, 0, 2], server.addr).await).await;
    // Three of four in use: busy, so idle connections now close after 300 ms, not 30 s.
    let mut b1 = b1;
    assert!(closed_within(&mut b1, TIMEOUT).await, "idle connections close sooner when busy");
    drop(a1);
    let _c = ask(connect_from([127, 0, 0, 3], server.addr).await).await;
    let text = server.metrics_text();
    assert!(text.contains(r#"dns_tcp_refused_connections_total{reason="per_source"} 1"#), "{text}");

    // The total limit, with a fresh server whose connections stay open.
    let limits = TcpLimits { max_connections: 2, max_per_source: 2, ..TcpLimits::default() };
    let server =
        TestServer::start_with(zone(&["api"]), 1, addrs(&["192.0.2.1"]), |s| s.with_tcp_limits(limits)).await;
    let x = ask(connect_from([127, 0, 0, 1], server.addr).await).await;
    let _y = ask(connect_from([127, 0, 0, 2], server.addr).await).await;
    let mut z = connect_from([127, 0, 0, 3], server.addr).await;
    assert!(closed_within(&mut z, TIMEOUT).await, "over the total limit");
    assert!(server.metrics_text().contains(r#"dns_tcp_refused_connections_total{reason="total"} 1"#));
    // A closed connection gives its slot back.
    drop(x);
    let start = Instant::now();
    loop {
        let mut stream = connect_from([127, 0, 0, 3], server.addr).await;
        stream.write_all(&framed(&query(API, RecordType::A))).await.unwrap();
        let mut len = [0u8; 2];
        if timeout(TIMEOUT, stream.read_exact(&mut len)).await.is_ok_and(|r| r.is_ok()) {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "the freed slot is never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
