//! The DNS request path: query packets through the same handler the server runs
//! (`spdu_dnsfront::offline::Responder`), over UDP and TCP. Half the inputs are raw bytes; the
//! other half are well-formed queries built from structured input (any name near the zone, any
//! type, class, opcode, EDNS version and size, any number of questions) so the fuzzer spends its
//! time past the header parser.
//!
//! Checks: nothing panics; every response decodes, is a response to this query (same id,
//! QR set), never SERVFAIL (our handler has no reason to fail); over UDP it never exceeds 512
//! bytes without EDNS, nor the smaller of the client's EDNS size and 1232 with it.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use libfuzzer_sys::fuzz_target;
use spdu_dnsfront::offline::Responder;
use spdu_dnsfront::{PoolAnswers, ZoneConfig};

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
        Responder::new(&zone, PoolAnswers { serial: 7, addrs }).expect("valid zone")
    })
}

#[derive(Arbitrary, Debug)]
struct Structured {
    id: u16,
    opcode: u8,
    questions: Vec<(u8, Vec<u8>, u16, u16)>,
    edns: Option<(u16, u8, bool)>,
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
        msg.set_edns(edns);
    }
    msg.to_vec().unwrap_or_default()
}

fn check(query: &[u8], udp: bool) {
    let Some(response) = responder().answer(query, udp) else { return };
    let parsed = Message::from_vec(&response).expect("response does not decode");
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
    if mode & 1 == 0 {
        check(rest, mode & 2 == 0);
    } else if let Ok(s) = Structured::arbitrary(&mut Unstructured::new(rest)) {
        let query = build(&s);
        if query.len() >= 12 {
            check(&query, s.udp);
        }
    }
});
