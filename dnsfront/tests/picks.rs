//! Per-name answers against a real `DnsServer` on 127.0.0.1:0, over real UDP and TCP sockets
//! (and dig): each name's TTL, sites and pick (every address, a rotating window, a draw by
//! weight), and NODATA for a family no site of the name has.

mod testing;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use spdu_dnsfront::{NameAnswers, Pick, PoolAnswers, SiteAddrs};
use testing::{TestServer, UdpClient, addrs, answer_ips, dig, query, soa_of, tcp, udp, zone};

const API: &str = "api.pool.example.test.";
const ADMIN: &str = "admin.pool.example.test.";
const STATIC: &str = "static.pool.example.test.";

fn site(list: &[&str], weight: u32) -> SiteAddrs {
    SiteAddrs { addrs: addrs(list), weight }
}

fn name(ttl: u32, sites: Vec<SiteAddrs>, pick: Pick) -> NameAnswers {
    NameAnswers { ttl, sites, pick }
}

fn assert_nodata(response: &Message, what: &str) {
    assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{what}");
    assert!(response.metadata.authoritative, "{what}");
    assert!(response.answers.is_empty(), "{what}: {:?}", response.answers);
    assert_eq!(response.authorities.len(), 1, "{what}: the SOA");
    assert_eq!(response.authorities[0].ttl, 5, "{what}: negative TTL is the zone's");
    assert_eq!(soa_of(response).minimum, 5, "{what}");
}

/// Each name's A and AAAA records carry that name's TTL, over UDP (fast path), TCP (slow path)
/// and for dig; the SOA keeps the zone's TTL and minimum; a name the answers have no entry for,
/// and a family no site has, are NODATA.
#[tokio::test]
async fn each_name_has_its_own_ttl() {
    let answers = PoolAnswers {
        serial: 7,
        names: vec![
            name(30, vec![site(&["192.0.2.1", "2001:db8::1"], 100), site(&["192.0.2.2"], 100)], Pick::All),
            name(2, vec![site(&["192.0.2.9"], 100)], Pick::Rotate { max: 1 }),
        ],
    };
    let server = TestServer::start_answers(zone(&["api", "admin", "static"]), answers).await;
    for (qname, qtype, ttl, count) in
        [(API, RecordType::A, 30, 2), (API, RecordType::AAAA, 30, 1), (ADMIN, RecordType::A, 2, 1)]
    {
        for response in
            [udp(server.addr, &query(qname, qtype)).await, tcp(server.addr, &query(qname, qtype)).await]
        {
            assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{qname} {qtype}");
            assert_eq!(response.answers.len(), count, "{qname} {qtype}");
            assert!(response.answers.iter().all(|r| r.ttl == ttl), "{qname} {qtype}: {:?}", response.answers);
        }
    }
    let soa = udp(server.addr, &query("pool.example.test.", RecordType::SOA)).await;
    assert_eq!(soa.answers[0].ttl, 5);
    assert_eq!(soa_of(&soa).minimum, 5);
    assert_eq!(soa_of(&soa).serial, 7);

    assert_nodata(&udp(server.addr, &query(ADMIN, RecordType::AAAA)).await, "admin AAAA: no site has IPv6");
    assert_nodata(&udp(server.addr, &query(STATIC, RecordType::A)).await, "static A: no entry");
    assert_nodata(&tcp(server.addr, &query(STATIC, RecordType::AAAA)).await, "static AAAA: no entry");

    // An independent client reads the same TTLs.
    let text = dig(server.addr, &["+noall", "+answer", API, "A"]).await;
    let ttls: Vec<&str> = text.lines().filter_map(|line| line.split_whitespace().nth(1)).collect();
    assert_eq!(ttls, ["30", "30"], "{text}");
    let text = dig(server.addr, &["+noall", "+answer", ADMIN, "A"]).await;
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields, [ADMIN, "2", "IN", "A", "192.0.2.9"], "{text}");

    // A new version brings new TTLs.
    server.publish_answers(PoolAnswers {
        serial: 8,
        names: vec![name(600, vec![site(&["192.0.2.1"], 100)], Pick::All)],
    });
    let response = udp(server.addr, &query(API, RecordType::A)).await;
    assert_eq!(response.answers[0].ttl, 600);
    assert_nodata(&udp(server.addr, &query(ADMIN, RecordType::A)).await, "admin A: no entry any more");
    server.stop().await;
}

/// Rotate{max}: every response holds exactly `max` addresses of the family asked for, a window
/// of consecutive addresses of the name whose start moves by one per response, so successive
/// responses cover them all, even while A and AAAA queries alternate.
#[tokio::test]
async fn rotate_returns_max_addresses_and_covers_all_of_them() {
    let v4 = addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"]);
    let v6 = addrs(&["2001:db8::1", "2001:db8::2", "2001:db8::3"]);
    let answers = PoolAnswers {
        serial: 1,
        names: vec![name(
            5,
            vec![
                site(&["192.0.2.1", "192.0.2.2", "2001:db8::1"], 100),
                site(&["192.0.2.3", "2001:db8::2", "2001:db8::3"], 100),
                site(&["192.0.2.4", "192.0.2.5"], 100),
            ],
            Pick::Rotate { max: 2 },
        )],
    };
    let server = TestServer::start_answers(zone(&["api"]), answers).await;
    let mut client = UdpClient::new(server.addr).await;
    let window = |list: &[IpAddr], got: &[IpAddr]| {
        let start = list.iter().position(|a| *a == got[0]).expect("a served address");
        assert_eq!(got[1], list[(start + 1) % list.len()], "consecutive: {got:?}");
        start
    };
    let (mut starts4, mut starts6) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let a = answer_ips(&client.ask(&query(API, RecordType::A)).await);
        assert_eq!(a.len(), 2, "{a:?}");
        starts4.push(window(&v4, &a));
        let aaaa = answer_ips(&client.ask(&query(API, RecordType::AAAA)).await);
        assert_eq!(aaaa.len(), 2, "{aaaa:?}");
        starts6.push(window(&v6, &aaaa));
    }
    for (starts, n) in [(&starts4, 5), (&starts6, 3)] {
        for pair in starts.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % n, "the window moves by one per response: {starts:?}");
        }
    }
    // Over TCP (the slow path), the same windows, continuing the same rotation.
    let got = answer_ips(&tcp(server.addr, &query(API, RecordType::A)).await);
    assert_eq!(got.len(), 2);
    assert_eq!(window(&v4, &got), (starts4[9] + 1) % 5);

    // A window as large as the name's addresses is all of them, rotated.
    server.publish_answers(PoolAnswers {
        serial: 2,
        names: vec![name(
            5,
            vec![site(&["192.0.2.1", "192.0.2.2", "192.0.2.3"], 100)],
            Pick::Rotate { max: 7 },
        )],
    });
    let mut orders = HashSet::new();
    for _ in 0..3 {
        let got = answer_ips(&client.ask(&query(API, RecordType::A)).await);
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), v4[..3].iter().copied().collect());
        orders.insert(got);
    }
    assert_eq!(orders.len(), 3, "{orders:?}");
    server.stop().await;
}

/// Weighted{max: 1}: over 20,000 real UDP queries, each site's share of the responses is its
/// share of the weights within ±5 % (weights 100/50/50 → 50/25/25 %); a weight-0 site is never
/// chosen while sites of positive weight have addresses of the family; a site without IPv4
/// takes no part in A answers.
#[tokio::test]
async fn weighted_shares_follow_the_weights() {
    let answers = PoolAnswers {
        serial: 1,
        names: vec![name(
            5,
            vec![
                site(&["192.0.2.1"], 100),
                site(&["192.0.2.2"], 50),
                site(&["2001:db8::99"], 1000),
                site(&["192.0.2.3"], 50),
                site(&["192.0.2.4", "2001:db8::4"], 0),
            ],
            Pick::Weighted { max: 1 },
        )],
    };
    let server = TestServer::start_answers(zone(&["api"]), answers).await;
    let mut client = UdpClient::new(server.addr).await;
    const QUERIES: u32 = 20_000;
    let mut counts: HashMap<IpAddr, u32> = HashMap::new();
    for _ in 0..QUERIES {
        let got = answer_ips(&client.ask(&query(API, RecordType::A)).await);
        assert_eq!(got.len(), 1, "{got:?}");
        *counts.entry(got[0]).or_default() += 1;
    }
    let share =
        |a: &str| f64::from(counts.get(&a.parse().unwrap()).copied().unwrap_or(0)) / f64::from(QUERIES);
    for (addr, expected) in [("192.0.2.1", 0.5), ("192.0.2.2", 0.25), ("192.0.2.3", 0.25)] {
        let got = share(addr);
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{addr}: {got} of the responses, expected {expected}: {counts:?}"
        );
    }
    assert_eq!(share("192.0.2.4"), 0.0, "weight 0 is standby: {counts:?}");
    eprintln!("weighted shares over {QUERIES} UDP queries: {counts:?}");

    // AAAA: the weight-1000 site against the standby one, which it always wins.
    for _ in 0..50 {
        let got = answer_ips(&client.ask(&query(API, RecordType::AAAA)).await);
        assert_eq!(got, addrs(&["2001:db8::99"]));
    }
    let text = server.metrics_text();
    assert!(
        text.contains(&format!(
            r#"dns_queries_total{{rcode="noerror",qtype="a",transport="udp"}} {QUERIES}"#
        )),
        "{text}"
    );
    server.stop().await;
}

/// Weight-0 sites answer when no site of positive weight has the family (each in turn);
/// several addresses per response come from distinct sites in draw order; with no limit every
/// address comes, standby last; over TCP as over UDP.
#[tokio::test]
async fn weighted_standby_limits_and_tcp() {
    let answers = PoolAnswers {
        serial: 1,
        names: vec![
            name(
                5,
                vec![site(&["192.0.2.1", "2001:db8::1"], 0), site(&["2001:db8::2"], 0)],
                Pick::Weighted { max: 1 },
            ),
            name(
                5,
                vec![
                    site(&["192.0.2.11", "192.0.2.12"], 100),
                    site(&["192.0.2.21"], 100),
                    site(&["192.0.2.31"], 0),
                ],
                Pick::Weighted { max: 2 },
            ),
            name(
                5,
                vec![
                    site(&["192.0.2.11", "192.0.2.12"], 100),
                    site(&["192.0.2.21"], 1),
                    site(&["192.0.2.31"], 0),
                ],
                Pick::Weighted { max: 0 },
            ),
        ],
    };
    let server = TestServer::start_answers(zone(&["api", "admin", "static"]), answers).await;
    let mut client = UdpClient::new(server.addr).await;

    // Only standby sites: the only IPv4 one every time, both IPv6 ones in turn.
    let mut v6 = HashSet::new();
    for _ in 0..100 {
        assert_eq!(answer_ips(&client.ask(&query(API, RecordType::A)).await), addrs(&["192.0.2.1"]));
        let got = answer_ips(&client.ask(&query(API, RecordType::AAAA)).await);
        assert_eq!(got.len(), 1);
        v6.insert(got[0]);
    }
    assert_eq!(v6, addrs(&["2001:db8::1", "2001:db8::2"]).into_iter().collect());

    // max 2: whole sites in draw order, cut at two; the standby never, while the others have
    // addresses.
    let allowed: HashSet<Vec<IpAddr>> =
        [addrs(&["192.0.2.11", "192.0.2.12"]), addrs(&["192.0.2.21", "192.0.2.11"])].into();
    let mut seen = HashSet::new();
    for i in 0..200 {
        let response = if i % 10 == 0 {
            tcp(server.addr, &query(ADMIN, RecordType::A)).await
        } else {
            client.ask(&query(ADMIN, RecordType::A)).await
        };
        let got = answer_ips(&response);
        assert!(allowed.contains(&got), "{got:?}");
        seen.insert(got);
    }
    assert_eq!(seen, allowed);

    // No limit: every address, the standby last.
    for i in 0..50 {
        let response = if i % 10 == 0 {
            tcp(server.addr, &query(STATIC, RecordType::A)).await
        } else {
            client.ask(&query(STATIC, RecordType::A)).await
        };
        let got = answer_ips(&response);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[3], "192.0.2.31".parse::<IpAddr>().unwrap(), "{got:?}");
    }
    assert_nodata(&client.ask(&query(STATIC, RecordType::AAAA)).await, "static AAAA");
    server.stop().await;
}
