//! The batched UDP loop (`recvmmsg`/`sendmmsg`): bursts from many real sockets on loopback are
//! answered one reply per query, to the socket that asked, with its id and question; and the
//! loop's batch code, run without sockets, keeps order, sources and truncation.

mod testing;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, ResponseCode},
    rr::RecordType,
};
use spdu_dnsfront::{AnswerPublisher, DnsMetrics, DnsServer, PoolAnswers, offline::Responder};
use testing::{TIMEOUT, addrs, query, zone};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const API: &str = "api.pool.example.test.";

fn pool() -> Vec<IpAddr> {
    addrs(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"])
}

/// What the `n`th query of a burst asks, and the response code it must get (`None`: the server
/// sends nothing back).
fn burst_query(n: usize, id: u16) -> (Vec<u8>, Option<(String, RecordType, ResponseCode)>) {
    let (name, qtype, rcode) = match n % 8 {
        // Fast path: plain A / AAAA, NXDOMAIN, the apex SOA.
        0 | 1 => (API, RecordType::A, ResponseCode::NoError),
        2 => (API, RecordType::AAAA, ResponseCode::NoError),
        3 => ("nope.pool.example.test.", RecordType::A, ResponseCode::NXDomain),
        4 => ("pool.example.test.", RecordType::SOA, ResponseCode::NoError),
        // Slow path: outside the zone, and a query with EDNS version 1 (BADVERS).
        5 => ("example.org.", RecordType::A, ResponseCode::Refused),
        6 => {
            let mut message = query(API, RecordType::A);
            message.metadata.id = id;
            let mut edns = Edns::new();
            edns.set_version(1);
            message.set_edns(edns);
            let expected = (API.to_string(), RecordType::A, ResponseCode::BADVERS);
            return (message.to_vec().unwrap(), Some(expected));
        }
        // Dropped: shorter than a header, or a response. They sit between the others.
        _ => {
            if n % 16 == 7 {
                return (vec![(id >> 8) as u8, id as u8, 0x01], None);
            }
            let mut message = query(API, RecordType::A);
            message.metadata.id = id;
            message.metadata.message_type = MessageType::Response;
            return (message.to_vec().unwrap(), None);
        }
    };
    let mut message = query(name, qtype);
    message.metadata.id = id;
    (message.to_vec().unwrap(), Some((name.to_string(), qtype, rcode)))
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was full, over IPv4 and
/// IPv6 (`RcvbufErrors` in /proc/net/snmp and /proc/net/snmp6), for the failure message.
fn receive_buffer_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp: "));
    let v4 = match (lines.next(), lines.next()) {
        (Some(names), Some(values)) => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "RcvbufErrors")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let snmp6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
    let v6 = snmp6
        .lines()
        .find_map(|line| line.strip_prefix("Udp6RcvbufErrors"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    v4 + v6
}

/// One client: sends `count` queries to `server` keeping at most `window` unanswered (so that
/// neither side's socket buffer overflows and drops a datagram on a busy machine), and checks
/// every reply: from the server, an id it is waiting for and answered once, its question and
/// response code. Returns how many replies it checked.
async fn client(socket: UdpSocket, server: SocketAddr, first_id: u16, count: usize, window: usize) -> usize {
    let mut waiting: HashMap<u16, (String, RecordType, ResponseCode)> = HashMap::new();
    let mut answered = HashSet::new();
    let mut next = 0;
    let mut buf = vec![0u8; 65535];
    while next < count || !waiting.is_empty() {
        while next < count && waiting.len() < window {
            let id = first_id + next as u16;
            let (bytes, expected) = burst_query(next, id);
            socket.send_to(&bytes, server).await.unwrap();
            if let Some(expected) = expected {
                waiting.insert(id, expected);
            }
            next += 1;
        }
        if waiting.is_empty() {
            continue;
        }
        let (len, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no reply within {TIMEOUT:?}; {} unanswered; receive-buffer drops on this host so far: {}",
                    waiting.len(),
                    receive_buffer_drops()
                )
            })
            .unwrap();
        assert_eq!(from, server, "reply from another address");
        let response = Message::from_vec(&buf[..len]).expect("reply parses");
        let id = response.metadata.id;
        assert!(answered.insert(id), "id {id} answered twice");
        let (name, qtype, rcode) =
            waiting.remove(&id).unwrap_or_else(|| panic!("reply with id {id} this socket did not send"));
        assert_eq!(response.metadata.message_type, MessageType::Response);
        // BADVERS and BADSIG share code 16; hickory decodes it as BADSIG: compare codes.
        assert_eq!(u16::from(response.metadata.response_code), u16::from(rcode), "id {id}: {name} {qtype}");
        let [question] = response.queries.as_slice() else { panic!("id {id}: not one question") };
        assert_eq!(question.name().to_ascii(), name, "id {id}");
        assert_eq!(question.query_type(), qtype, "id {id}");
        if rcode == ResponseCode::NoError && qtype == RecordType::A {
            assert_eq!(response.answers.len(), 3, "id {id}");
        }
    }
    answered.len()
}

/// `CLIENTS` sockets (IPv4: each on its own loopback address) send 160 queries each, as fast as
/// their window allows, to one server address: every query gets exactly one reply, to the
/// socket that sent it, with its id, question and response code. Meanwhile sockets that send
/// and close at once have their replies bounce, which must not stop the server. Run over IPv4
/// and, when the host has it, IPv6.
///
/// What is in flight at once (`CLIENTS * WINDOW` plus the vanishing clients' queries) stays far
/// below what a socket's default receive buffer holds (about 160 small datagrams at the default
/// 208 KiB): a datagram the kernel drops for a full buffer is lost to any UDP server, and a test
/// that counted on it not happening failed on a busy machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_many_sockets_gets_every_reply_right() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 160;
    const WINDOW: usize = 8;
    let answers = AnswerPublisher::new(
        &zone(&["api"]),
        PoolAnswers::same_for_all(1, 1, 5, pool()),
        DnsMetrics::default(),
    )
    .unwrap();
    let v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if !v6 {
        eprintln!("SKIP (IPv6 part): no ::1 on this host");
    }
    let listen: Vec<SocketAddr> =
        ["127.0.0.1:0", "[::1]:0"].iter().take(1 + usize::from(v6)).map(|a| a.parse().unwrap()).collect();
    let server = DnsServer::bind(&answers, &listen).await.unwrap();
    let bound = server.local_addrs();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    for &server in &bound {
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let local: SocketAddr = if server.is_ipv4() {
                (Ipv4Addr::new(127, 0, 0, 1 + c as u8), 0).into()
            } else {
                "[::1]:0".parse().unwrap()
            };
            let socket = UdpSocket::bind(local).await.unwrap();
            let first_id = (c * 1000) as u16;
            clients.spawn(client(socket, server, first_id, PER_CLIENT, WINDOW));
        }
        // Vanishing clients: their replies bounce with ICMP port unreachable.
        for v in 0..4u16 {
            let socket =
                UdpSocket::bind(if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).await.unwrap();
            for n in 0..5 {
                socket.send_to(&burst_query(0, 50_000 + v * 100 + n).0, server).await.unwrap();
            }
        }
        let mut replies = 0;
        while let Some(joined) = clients.join_next().await {
            replies += joined.expect("client task");
        }
        let expected_per_client = (0..PER_CLIENT).filter(|&n| burst_query(n, 0).1.is_some()).count();
        assert_eq!(replies, CLIENTS * expected_per_client, "{server}");
        assert!(replies >= 1000, "a burst of 1000+ replies, got {replies}");
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("run returns").unwrap().unwrap();
}

fn responder() -> Responder {
    Responder::new(&zone(&["api"]), PoolAnswers::same_for_all(1, 1, 5, pool())).unwrap()
}

/// The batch code without sockets: more datagrams than one `recvmmsg` takes, from IPv4 and IPv6
/// sources, with sources that cannot be replied to and datagrams that get no reply in between.
/// Replies come in order, each to its query's source (port and scope kept), with its id.
#[test]
fn batches_keep_order_and_sources() {
    let r = responder();
    let mut datagrams: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    let mut expected = Vec::new();
    for n in 0..200u16 {
        let (bytes, reply) = burst_query(usize::from(n), n);
        let src: SocketAddr = match n % 5 {
            0 => (Ipv4Addr::new(192, 0, 2, n as u8), 1024 + n).into(),
            1 => format!("[2001:db8::{n:x}]:{}", 2000 + n).parse().unwrap(),
            2 => format!("[fe80::1%{}]:53", n).parse().unwrap(),
            // No reply can go there.
            3 if n % 3 == 0 => (Ipv4Addr::UNSPECIFIED, 53).into(),
            3 if n % 3 == 1 => (Ipv4Addr::BROADCAST, 53).into(),
            3 => (Ipv4Addr::LOCALHOST, 0).into(),
            _ => "[::ffff:198.51.100.1]:5300".parse().unwrap(),
        };
        if reply.is_some() && n % 5 != 3 {
            expected.push((src, n));
        }
        datagrams.push((bytes, src));
    }
    let refs: Vec<(&[u8], SocketAddr)> = datagrams.iter().map(|(b, s)| (b.as_slice(), *s)).collect();
    let replies = r.answer_udp_batch(&refs);
    let got: Vec<(SocketAddr, u16)> =
        replies.iter().map(|(to, reply)| (*to, u16::from_be_bytes([reply[0], reply[1]]))).collect();
    assert_eq!(got, expected);
    // Each is the reply the single-query path gives to the same datagram (but for the
    // rotation, which every query advances: compare what does not rotate).
    let answerable = datagrams.iter().filter(|(_, src)| {
        src.port() != 0 && !src.ip().is_unspecified() && src.ip() != IpAddr::from(Ipv4Addr::BROADCAST)
    });
    let singles: Vec<Vec<u8>> = answerable.filter_map(|(bytes, _)| r.answer(bytes, true)).collect();
    assert_eq!(singles.len(), replies.len());
    for ((_, reply), single) in replies.iter().zip(&singles) {
        let (batched, single) = (Message::from_vec(reply).unwrap(), Message::from_vec(single).unwrap());
        assert_eq!(batched.metadata, single.metadata);
        assert_eq!(batched.queries, single.queries);
        assert_eq!(batched.answers.len(), single.answers.len());
    }
}

/// A datagram longer than the receive buffer is cut to it, as the kernel cuts it on a socket:
/// a query padded past 4096 bytes is then a query with trailing bytes (FORMERR) or, cut
/// inside its header, dropped.
#[test]
fn long_datagrams_are_truncated_like_on_a_socket() {
    let r = responder();
    let src: SocketAddr = (Ipv4Addr::LOCALHOST, 5353).into();
    let mut message = query(API, RecordType::A);
    message.metadata.id = 0x1234;
    let mut padded = message.to_vec().unwrap();
    padded.resize(5000, 0xff);
    let replies = r.answer_udp_batch(&[(&padded, src)]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, src);
    let batched = Message::from_vec(&replies[0].1).unwrap();
    let single = Message::from_vec(&r.answer(&padded[..4096], true).unwrap()).unwrap();
    let whole = Message::from_vec(&r.answer(&padded, true).unwrap()).unwrap();
    assert_eq!(batched.metadata, single.metadata);
    assert_eq!(batched.metadata.id, 0x1234);
    assert_eq!(whole.metadata.id, 0x1234);
    // Cut inside the header: nothing to answer.
    assert!(r.answer_udp_batch(&[(&padded[..11], src)]).is_empty());
}
