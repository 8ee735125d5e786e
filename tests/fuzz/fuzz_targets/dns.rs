//! The DNS request path: query packets through the same handler the server runs
//! (`spdu_dnsfront::offline::Responder`, `api` answering with every address, `www.deep` with
//! addresses drawn by weight), over UDP and TCP; TCP byte streams through the
//! server's connection code (RFC 7766 framing); and open/close sequences through the TCP
//! connection table. The first byte picks the mode: raw query bytes; a well-formed query built
//! from structured input (any name near the zone, any type, class, opcode, EDNS version, size
//! and COOKIE option, any number of questions) so the fuzzer spends its time past the header
//! parser; a TCP stream; a connection-table run; or a run of datagrams from several sources
//! through the UDP loop's batch code (`recvmmsg`/`sendmmsg` batches, without the sockets).
//!
//! Checks: nothing panics; every response decodes as exactly one message (no trailing bytes),
//! is a response to this query (same id, QR set), never SERVFAIL (our handler has no reason to
//! fail); over UDP it never exceeds 512 bytes without EDNS, nor the smaller of the client's
//! EDNS size and 1232 with it; a COOKIE option of a bad length (not 8, not 16 to 40) is
//! FORMERR; a well-formed client cookie is answered with itself and an RFC 9018 server cookie
//! (half the structured cookies are issued by the responder, so valid ones are exercised too),
//! a valid one is never BADCOOKIE, BADCOOKIE comes over UDP only and without records. On a TCP stream, the responses answer the stream's messages in order, one each, up
//! to where the server closed it. In the connection table, no limit is ever exceeded and every
//! slot is given back (asserted inside `connection_table_run`). Through the batch code, the
//! replies come in the datagrams' order, one for each datagram the single-query path answers
//! and whose source can be replied to, each to that source, each passing the UDP checks above.
//! Structured queries also go to the same zone signed (DNSSEC on): with DO, answers carry
//! RRSIGs and negative answers compact denial (`check_signed`); without DO, no DNSSEC records.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;
use spdu_dnsfront::offline::{Responder, TableStep, connection_table_run};
use spdu_dnsfront::{NameAnswers, Pick, PoolAnswers, SiteAddrs, TcpLimits, ZoneConfig};

fn responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "www.deep".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into(), "beta.example.test".into()],
        };
        // Enough addresses that a full answer does not fit in 512 bytes.
        let mut addrs: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        addrs.extend((1..=20u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])));
        let mut answers = PoolAnswers::same_for_all(7, 2, 5, addrs.clone());
        // Sites of one to three addresses, weights 100, 50, 0: two per response, drawn per query.
        let sites = addrs
            .chunks(3)
            .zip([100, 50, 0].into_iter().cycle())
            .map(|(addrs, weight)| SiteAddrs { addrs: addrs.to_vec(), weight })
            .collect();
        answers.names[1] = NameAnswers { ttl: 30, sites, pick: Pick::Weighted { max: 2 } };
        Responder::new(&zone, answers).expect("valid zone")
    })
}

/// The same zone and answers, signed (DNSSEC on, ECDSA, two sites' DNSKEYs).
fn signed_responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        use spdu_dnsfront::dnssec::{KeyAlgorithm, Signer, ZoneKey};
        let key = || ZoneKey::from_pkcs8(&ZoneKey::generate_pkcs8(KeyAlgorithm::EcdsaP256Sha256).unwrap()).unwrap();
        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "www.deep".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into(), "beta.example.test".into()],
        };
        let addrs: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        let r = Responder::new(&zone, PoolAnswers::same_for_all(7, 2, 5, addrs)).expect("valid zone");
        let other = key().public().clone();
        r.set_signer(Some(Signer::new(key(), vec![other], 3600, std::time::Duration::from_secs(172_800))));
        r
    })
}

/// DO queries to the signed zone (RFC 3225, RFC 9824): the DO bit comes back; a whole NOERROR
/// answer has an RRSIG for its records; a negative answer is NOERROR (compact denial, never
/// NXDOMAIN) with the SOA, an NSEC and their RRSIGs; without DO there are no DNSSEC records.
fn check_signed(s: &Structured, query: &[u8]) {
    let r = signed_responder();
    check_response(query, &r.answer(query, s.udp).unwrap_or_default(), s.udp);
    let Some(response) = r.answer(query, s.udp) else { return };
    let response = decode_whole(&response);
    let Some((_, 0, dnssec_ok)) = s.edns else { return };
    if s.questions.len() != 1 || response.metadata.truncation || s.opcode % 16 != 0 {
        return;
    }
    let dnssec_types = |records: &[hickory_proto::rr::Record]| {
        records.iter().filter(|r| matches!(r.record_type(), RecordType::RRSIG | RecordType::NSEC)).count()
    };
    let rcode = response.metadata.response_code;
    if !dnssec_ok {
        assert_eq!(dnssec_types(&response.answers) + dnssec_types(&response.authorities), 0, "DNSSEC without DO");
        return;
    }
    if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        return;
    }
    assert!(response.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok), "DO not echoed");
    assert_ne!(rcode, ResponseCode::NXDomain, "NXDOMAIN instead of compact denial");
    if !response.answers.is_empty() {
        assert!(dnssec_types(&response.answers) >= 1, "answer without RRSIG");
    } else {
        let types: Vec<RecordType> = response.authorities.iter().map(|r| r.record_type()).collect();
        for needed in [RecordType::SOA, RecordType::NSEC, RecordType::RRSIG] {
            assert!(types.contains(&needed), "negative answer without {needed}: {types:?}");
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Structured {
    id: u16,
    opcode: u8,
    questions: Vec<(u8, Vec<u8>, u16, u16)>,
    edns: Option<(u16, u8, bool)>,
    cookie: Option<Vec<u8>>,
    /// Replace the cookie by one the responder issued for its first 8 bytes (a valid one).
    issued: bool,
    udp: bool,
}

const NAMES: [&str; 8] = [
    "api.pool.example.test.",
    "pool.example.test.",
    "www.deep.pool.example.test.",
    "deep.pool.example.test.",
    "nope.pool.example.test.",
    "example.test.",
    ".",
    "API.POOL.EXAMPLE.TEST.",
];

fn build(s: &Structured) -> Vec<u8> {
    let mut msg = Message::new(s.id, MessageType::Query, OpCode::from_u8(s.opcode % 16));
    for (base, prefix, qtype, qclass) in s.questions.iter().take(3) {
        let mut name = Name::from_ascii(NAMES[usize::from(*base) % NAMES.len()]).expect("valid");
        if !prefix.is_empty()
            && let Ok(label) = Name::from_labels([prefix.as_slice()])
            && let Ok(longer) = label.append_domain(&name)
        {
            name = longer;
        }
        let mut query = Query::query(name, RecordType::from(*qtype));
        query.set_query_class(DNSClass::from(*qclass));
        msg.add_query(query);
    }
    if let Some((size, version, dnssec_ok)) = s.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        edns.set_version(version);
        edns.set_dnssec_ok(dnssec_ok);
        if let Some(cookie) = cookie_of(s) {
            edns.options_mut().insert(EdnsOption::Unknown(10, cookie));
        }
        msg.set_edns(edns);
    }
    msg.to_vec().unwrap_or_default()
}

/// The COOKIE option content `s` asks for: its bytes (at most 64), or with `issued` and at
/// least 8 of them, the client cookie and the server cookie the responder issues for it.
fn cookie_of(s: &Structured) -> Option<Vec<u8>> {
    let cookie = s.cookie.as_ref()?;
    match cookie.first_chunk::<8>() {
        Some(client) if s.issued => responder().issue_cookie(*client, SRC.parse().unwrap()),
        _ => Some(cookie.iter().copied().take(64).collect()),
    }
}

/// Where the offline responder's queries come from.
const SRC: &str = "127.0.0.1:5353";

/// Cookies (RFC 7873 §5.2): a well-formed client cookie in a version-0 query is answered with
/// the same client cookie and an RFC 9018 server cookie (unless the query is a FORMERR, or hits
/// the ANY / one-question rules before EDNS is read); a cookie the responder issued is never
/// BADCOOKIE; BADCOOKIE only over UDP, only for a query that had a server cookie, and without
/// records.
fn check_cookies(s: &Structured, query: &[u8]) {
    let Some(response) = responder().answer(query, s.udp) else { return };
    let response = decode_whole(&response);
    let rcode = response.metadata.response_code;
    let sent = cookie_of(s).filter(|_| s.edns.is_some_and(|(_, version, _)| version == 0));
    if rcode == ResponseCode::BADCOOKIE {
        assert!(s.udp, "BADCOOKIE over TCP");
        assert!(!s.issued || sent.as_ref().is_none_or(|c| c.len() < 8), "an issued cookie was refused");
        assert!(sent.as_ref().is_some_and(|c| c.len() > 8), "BADCOOKIE without a server cookie");
        assert!(response.answers.is_empty() && response.authorities.is_empty(), "BADCOOKIE with records");
    }
    let Some(sent) = sent.filter(|c| c.len() == 8 || (16..=40).contains(&c.len())) else { return };
    if rcode == ResponseCode::FormErr {
        return;
    }
    let back = response.edns.as_ref().and_then(|e| e.options().get(EdnsCode::Cookie));
    let Some(EdnsOption::Unknown(_, back)) = back else {
        panic!("no COOKIE back for {sent:02x?} ({rcode:?})")
    };
    assert_eq!(back.len(), 24, "client and RFC 9018 server cookie");
    assert_eq!(back[..8], sent[..8], "the client cookie is echoed");
    assert_eq!(back[8..12], [1, 0, 0, 0], "version 1, reserved 0");
}

/// Decodes `raw` as exactly one message.
fn decode_whole(raw: &[u8]) -> Message {
    let mut decoder = BinDecoder::new(raw);
    let message = Message::read(&mut decoder).expect("response does not decode");
    assert_eq!(decoder.len(), 0, "bytes after the response");
    message
}

/// A TCP stream: the responses are length-prefixed, each answers the next message of the
/// stream (same id), and there are never more responses than messages.
fn check_stream(stream: &[u8]) {
    let written = responder().answer_tcp_stream(stream);
    let mut queries = stream;
    let mut responses = written.as_slice();
    while !responses.is_empty() {
        let (len, rest) = responses.split_at_checked(2).expect("a length prefix");
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (response, rest) = rest.split_at_checked(len).expect("a whole response");
        responses = rest;
        let (qlen, qrest) = queries.split_at_checked(2).expect("a response without a query");
        let qlen = usize::from(u16::from_be_bytes([qlen[0], qlen[1]]));
        let (query, qrest) = qrest.split_at_checked(qlen).expect("a response to half a query");
        queries = qrest;
        let parsed = decode_whole(response);
        assert_eq!(parsed.metadata.id, u16::from_be_bytes([query[0], query[1]]), "answered out of order");
        assert_eq!(parsed.metadata.message_type, MessageType::Response);
    }
}

/// A connection-table run: limits from the first two bytes, then one step per byte pair.
fn check_table(data: &[u8]) {
    let Some((&[total, per_source], steps)) = data.split_first_chunk::<2>() else { return };
    let limits = TcpLimits {
        max_connections: usize::from(total % 16) + 1,
        max_per_source: usize::from(per_source % 8) + 1,
        ..TcpLimits::default()
    };
    let steps: Vec<TableStep> = steps
        .chunks_exact(2)
        .map(|pair| match pair[0] % 3 {
            0 => TableStep::Close(usize::from(pair[1])),
            1 => TableStep::Open(IpAddr::from([127, 0, 0, pair[1] % 8])),
            _ => TableStep::Open(IpAddr::from([
                0x2001,
                0xdb8,
                0,
                u16::from(pair[1] % 4),
                0,
                0,
                0,
                u16::from(pair[1]),
            ])),
        })
        .collect();
    connection_table_run(limits, &steps);
}

/// Sources a batch's datagrams come from: some cannot be replied to (port 0, unspecified,
/// broadcast).
const SOURCES: [&str; 8] = [
    "127.0.0.1:5353",
    "192.0.2.7:53",
    "[2001:db8::1]:1053",
    "[fe80::1%2]:5300",
    "[::ffff:198.51.100.1]:40000",
    "0.0.0.0:53",
    "255.255.255.255:53",
    "127.0.0.1:0",
];

/// Datagrams through the batch code: each is a source byte, a length byte and that many bytes.
fn check_batch(mut data: &[u8]) {
    let mut datagrams = Vec::new();
    while let Some((&[source, len], rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(len).min(rest.len());
        let (datagram, rest) = rest.split_at(len);
        let src: std::net::SocketAddr = SOURCES[usize::from(source) % SOURCES.len()].parse().expect("valid");
        datagrams.push((datagram, src));
        data = rest;
    }
    let replies = responder().answer_udp_batch(&datagrams);
    let mut replies = replies.iter();
    for &(datagram, src) in &datagrams {
        let answerable =
            src.port() != 0 && !src.ip().is_unspecified() && src.ip() != IpAddr::from([255, 255, 255, 255]);
        if !answerable || responder().answer(datagram, true).is_none() {
            continue;
        }
        let (to, reply) = replies.next().expect("a datagram left unanswered");
        assert_eq!(*to, src, "reply to another source");
        check_response(datagram, reply, true);
    }
    assert!(replies.next().is_none(), "more replies than datagrams answered");
}

fn check(query: &[u8], udp: bool) {
    let Some(response) = responder().answer(query, udp) else { return };
    check_response(query, &response, udp);
}

/// The checks on one response to `query`.
fn check_response(query: &[u8], response: &[u8], udp: bool) {
    let parsed = decode_whole(response);
    assert_eq!(parsed.metadata.id, u16::from_be_bytes([query[0], query[1]]), "wrong id");
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    assert_ne!(parsed.metadata.response_code, ResponseCode::ServFail, "SERVFAIL: encoding failed");
    if udp {
        let limit = match Message::from_vec(query).ok().and_then(|q| q.edns.map(|e| e.max_payload())) {
            Some(size) => usize::from(size.clamp(512, 1232)),
            None => 512,
        };
        assert!(response.len() <= limit, "{}-byte UDP response, limit {limit}", response.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 9 {
        0..=2 => check(rest, mode & 1 == 0),
        3..=5 => {
            if let Ok(s) = Structured::arbitrary(&mut Unstructured::new(rest)) {
                let query = build(&s);
                if query.len() >= 12 {
                    check(&query, s.udp);
                    check_cookies(&s, &query);
                    check_signed(&s, &query);
                    let bad_cookie = s.edns.is_some_and(|(_, version, _)| version == 0)
                        && cookie_of(&s).is_some_and(|c| c.len() != 8 && !(16..=40).contains(&c.len()));
                    if bad_cookie && let Some(response) = responder().answer(&query, s.udp) {
                        let rcode = decode_whole(&response).metadata.response_code;
                        assert_eq!(rcode, ResponseCode::FormErr, "COOKIE of a bad length");
                    }
                }
            }
        }
        6 => check_stream(rest),
        7 => check_table(rest),
        _ => check_batch(rest),
    }
});
