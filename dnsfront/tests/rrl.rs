//! Response rate limiting on real sockets: a flood from one /24 gets the configured rate and
//! the configured share of slipped (TC) responses, while a client in another /24 is answered
//! in full all along, and TCP from the flooded prefix too. Counted in the metrics.
//!
//! The clients are blocking std sockets on threads of their own, paced by the clock; every
//! wait is bounded. No assertion is on speed: the flood is five times the rate, far below what
//! the server answers, and what is checked is how many responses of each kind come back.

mod testing;

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use spdu_dnsfront::RrlConfig;
use testing::{TestServer, addrs, cookie_of, query, query_with_cookie, tcp, zone};

const API: &str = "api.pool.example.test.";
/// The configured rate (responses per second per prefix and kind).
const RATE: u32 = 200;
/// The flood: five times the rate, for this long.
const FLOOD_QPS: u32 = 5 * RATE;
const FLOOD: Duration = Duration::from_secs(4);
/// Responses are counted from here to the end of the flood: the burst (one second's worth,
/// used up in the first quarter second) is behind by then.
const STEADY_FROM: Duration = Duration::from_secs(1);

/// What a flooding client got back.
#[derive(Debug, Default)]
struct Flood {
    sent: u32,
    /// Whole answers (records, no TC), and how many of them came in the steady window.
    whole: u32,
    whole_steady: u32,
    /// TC responses without records.
    slipped: u32,
    /// Anything else (wrong ID, unexpected form).
    unexpected: u32,
}

/// Sends `FLOOD_QPS` queries a second for `FLOOD` from `socket` to `server` and sorts what
/// comes back until a second after the last query.
fn flood(socket: UdpSocket, server: SocketAddr) -> Flood {
    let receiver = socket.try_clone().unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let total = FLOOD_QPS * FLOOD.as_secs() as u32;
    let receiving = thread::spawn(move || {
        let mut got = Flood::default();
        let mut buf = [0u8; 2048];
        while start.elapsed() < FLOOD + Duration::from_secs(1) {
            let Ok(len) = receiver.recv(&mut buf) else { continue };
            let at = start.elapsed();
            let message = Message::from_vec(&buf[..len]).unwrap();
            let meta = &message.metadata;
            let ours = u32::from(meta.id) < total && meta.response_code == ResponseCode::NoError;
            match (ours, meta.truncation, message.answers.len()) {
                (true, false, 1..) => {
                    got.whole += 1;
                    if (STEADY_FROM..FLOOD).contains(&at) {
                        got.whole_steady += 1;
                    }
                }
                (true, true, 0) if message.queries.len() == 1 => got.slipped += 1,
                _ => got.unexpected += 1,
            }
        }
        got
    });
    let mut message = query(API, RecordType::A);
    for i in 0..total {
        let due = start + FLOOD * i / total;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        message.metadata.id = i as u16;
        socket.send_to(&message.to_vec().unwrap(), server).unwrap();
    }
    let mut got = receiving.join().unwrap();
    got.sent = total;
    got
}

/// Asks `server` for the pool every 25 ms for `FLOOD` from `socket`, one query at a time;
/// returns how many got a whole answer, and how many queries were sent.
fn steady_client(socket: UdpSocket, server: SocketAddr) -> (u32, u32) {
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    let mut message = query(API, RecordType::A);
    let (mut answered, mut sent) = (0, 0);
    let mut buf = [0u8; 2048];
    while start.elapsed() < FLOOD {
        message.metadata.id = sent as u16;
        socket.send_to(&message.to_vec().unwrap(), server).unwrap();
        sent += 1;
        if let Ok(len) = socket.recv(&mut buf) {
            let response = Message::from_vec(&buf[..len]).unwrap();
            if response.metadata.id == message.metadata.id
                && !response.metadata.truncation
                && response.answers.len() == 3
            {
                answered += 1;
            }
        }
        thread::sleep(Duration::from_millis(25));
    }
    (answered, sent)
}

/// Sends `windows` windows of 20 copies of `message` (ids 0, 1, …) from `socket` to `server`,
/// each window's replies read (until the socket's read timeout) before the next goes out, so no
/// socket buffer overflows on a busy machine; returns how many were whole answers (no TC, the
/// three pool addresses).
fn whole_answers_in_windows(socket: &UdpSocket, server: SocketAddr, message: &Message, windows: u16) -> u32 {
    let mut message = message.clone();
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    for window in 0..windows {
        for i in 0..20 {
            message.metadata.id = window * 20 + i;
            socket.send_to(&message.to_vec().unwrap(), server).unwrap();
        }
        for _ in 0..20 {
            let Ok(len) = socket.recv(&mut buf) else { break };
            let response = Message::from_vec(&buf[..len]).unwrap();
            answered += u32::from(!response.metadata.truncation && response.answers.len() == 3);
        }
    }
    answered
}

/// The value of the metric line starting with `prefix` (0 if absent).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines().find_map(|line| line.strip_prefix(prefix)).map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_flood_gets_the_rate_and_slips_while_another_prefix_keeps_service() {
    let rrl = RrlConfig { rate: RATE, slip: 2, ..RrlConfig::default() };
    let pool = addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let server = TestServer::start_with(zone(&["api"]), 1, pool, |s| s.with_rrl(rrl)).await;
    let addr = server.addr;

    // The flooder in 127.0.0.0/24, the other client in 127.0.1.0/24.
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.1.1:0").unwrap();
    let flooding = tokio::task::spawn_blocking(move || flood(flooder, addr));
    let steady = tokio::task::spawn_blocking(move || steady_client(other, addr));
    // Halfway through the flood, the flooded prefix is over its rate over UDP; TCP is never
    // limited.
    tokio::time::sleep(FLOOD / 2).await;
    let over_tcp = tcp(addr, &query(API, RecordType::A)).await;
    assert!(!over_tcp.metadata.truncation && over_tcp.answers.len() == 3, "{over_tcp:?}");
    let (got, (answered, asked)) = (flooding.await.unwrap(), steady.await.unwrap());

    let per_second = f64::from(got.whole_steady) / (FLOOD - STEADY_FROM).as_secs_f64();
    eprintln!("flood: {got:?}; whole answers per second after the burst: {per_second:.1} (rate {RATE})");
    assert_eq!(got.unexpected, 0, "{got:?}");
    assert!(
        (f64::from(RATE) * 0.9..=f64::from(RATE) * 1.1).contains(&per_second),
        "{per_second:.1} whole answers per second, rate {RATE}: {got:?}"
    );
    // Every other limited response slips (the rest are dropped: the client never sees them).
    let limited = got.sent - got.whole;
    assert!(got.slipped.abs_diff(limited / 2) <= limited / 50 + 1, "{got:?}");
    assert_eq!(answered, asked, "the other prefix got a whole answer to every query");
    assert!(asked >= 40, "{asked} queries from the other prefix");

    let text = server.metrics_text();
    let slipped = metric(&text, r#"dns_rrl_limited_responses_total{kind="answer",action="slipped"} "#);
    let dropped = metric(&text, r#"dns_rrl_limited_responses_total{kind="answer",action="dropped"} "#);
    let answered_udp = metric(&text, r#"dns_queries_total{rcode="noerror",qtype="a",transport="udp"} "#);
    assert_eq!(slipped, u64::from(got.slipped), "{text}");
    assert_eq!(slipped + dropped, u64::from(limited), "{text}");
    assert!(dropped.abs_diff(slipped) <= 1, "slip 2: as many dropped as slipped: {text}");
    // Sent responses are counted as sent, slipped ones included; dropped ones are not.
    assert_eq!(answered_udp, u64::from(got.whole + got.slipped + answered), "{text}");
    assert!(text.contains("dns_rrl_table_evictions_total 0"), "{text}");
    server.stop().await;
}

/// Without `with_rrl` (and with a rate of 0) nothing is limited: a burst well over any rate
/// from one socket is answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_zero_limits_nothing() {
    let pool = addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let server = TestServer::start_with(zone(&["api"]), 1, pool, |s| s.with_rrl(RrlConfig::OFF)).await;
    let addr = server.addr;
    let answered = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // 1,500 in all, more than a second's worth at the default rate.
        whole_answers_in_windows(&socket, addr, &query(API, RecordType::A), 75)
    })
    .await
    .unwrap();
    assert_eq!(answered, 1500);
    assert!(!server.metrics_text().contains("dns_rrl_limited_responses_total{"));
    server.stop().await;
}

/// A query with a valid server cookie proves its source address (a spoofed source never got
/// the cookie), so it is exempt from the rate: from one /24 limited to 20 a second with every
/// limited response dropped, 300 queries carrying the cookie this server issued are all answered
/// in full, while the same socket's queries with only a client cookie are held to the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_server_cookie_exempts_a_query_from_the_rate() {
    let rrl = RrlConfig { rate: 20, slip: 0, ..RrlConfig::default() };
    let pool = addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let server = TestServer::start_with(zone(&["api"]), 1, pool, |s| s.with_rrl(rrl)).await;
    let addr = server.addr;
    let client_only = query_with_cookie(API, RecordType::A, &[7; 8]);
    let (exempt, limited) = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.2.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 2048];
        // The server cookie, from the first answer to a client cookie.
        socket.send_to(&client_only.to_vec().unwrap(), addr).unwrap();
        let len = socket.recv(&mut buf).expect("an answer to the first query");
        let first = Message::from_vec(&buf[..len]).unwrap();
        let cookie = cookie_of(&first).expect("a COOKIE in the answer");
        assert_eq!((cookie.len(), &cookie[..8]), (24, &[7u8; 8][..]), "client cookie + server cookie");
        let with_server_cookie = query_with_cookie(API, RecordType::A, &cookie);
        let exempt = whole_answers_in_windows(&socket, addr, &with_server_cookie, 15);
        let start = Instant::now();
        let limited = whole_answers_in_windows(&socket, addr, &client_only, 15);
        (exempt, (limited, start.elapsed()))
    })
    .await
    .unwrap();
    let (limited, took) = limited;
    assert_eq!(exempt, 300, "every query with the server cookie answered");
    // At most the burst (one second's worth), the first query's token and the rate over the time taken.
    let most = 20.0 + 1.0 + 20.0 * took.as_secs_f64();
    assert!(
        f64::from(limited) <= most && limited < 300,
        "{limited} of 300 client-only queries answered in {took:?} at a rate of 20/s"
    );
    let text = server.metrics_text();
    let dropped = metric(&text, r#"dns_rrl_limited_responses_total{kind="answer",action="dropped"} "#);
    assert_eq!(dropped, u64::from(300 - limited), "{text}");
    server.stop().await;
}

/// A DO query for a random name under the pool zone (a denial, signed per name).
fn random_name_do_query(n: u32) -> Vec<u8> {
    let mut message = query(&format!("r{n:08x}.pool.example.test."), RecordType::A);
    message.metadata.id = n as u16;
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// The attack: with DNSSEC on, a flood of DO queries for random names (each denial signed for
/// its own name) from one /24 over the rate. The rate is decided before signing, so only the
/// responses that go out cost a signature: 600 queries at a rate of 20 a second with every
/// limited response dropped make about as many signatures as answers sent (the answer
/// version's own RRsets aside), not one per query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_do_queries_cost_no_signatures() {
    let rrl = RrlConfig { rate: 20, slip: 0, ..RrlConfig::default() };
    let pool = addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let server = TestServer::start_with(zone(&["api"]), 1, pool, |s| s.with_rrl(rrl)).await;
    server.set_signer(Some(testing::signer()));
    let signatures = |text: &str| metric(text, "dns_dnssec_signatures_total ");
    let before = signatures(&server.metrics_text());
    let addr = server.addr;
    let answered = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.3.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 4096];
        let mut answered = 0u64;
        for window in 0..30u32 {
            for n in 0..20 {
                socket.send_to(&random_name_do_query(window * 20 + n), addr).unwrap();
            }
            while let Ok(len) = socket.recv(&mut buf) {
                let response = Message::from_vec(&buf[..len]).expect("a response parses");
                assert!(
                    response.authorities.iter().any(|r| r.record_type() == RecordType::RRSIG),
                    "an answered denial is signed"
                );
                answered += 1;
            }
        }
        answered
    })
    .await
    .unwrap();
    let text = server.metrics_text();
    let made = signatures(&text) - before;
    let dropped = metric(&text, r#"dns_rrl_limited_responses_total{kind="nxdomain",action="dropped"} "#);
    assert!(answered > 0 && dropped > 0, "answered {answered}, dropped {dropped}\n{text}");
    assert_eq!(answered + dropped, 600, "every query answered or dropped\n{text}");
    // Each answered denial: the NSEC's and the SOA's signatures at most (the SOA's is cached).
    assert!(made <= 2 * answered, "{made} signatures for {answered} answers ({dropped} dropped)\n{text}");
    server.stop().await;
}
