//! Building responses: what a response says ([`plan`]) and its bytes ([`encode`]).
//!
//! Owns [`Plan`] (rcode, flags and the records of one response, borrowed from the zone and the
//! answer snapshot, with the selection a [`Chooser`] made for a pool name), the EDNS rules
//! (version, payload size, COOKIE length), and encoding with truncation. The slow path
//! (`handler`) and the fast path's precomputed responses (`fast`) both come from here, so they
//! cannot drift apart (as hickory keeps response building apart from its `Catalog` and
//! `ZoneHandler`).
//!
//! Invariants: every response [`encode`] writes is one valid DNS message of at most the given
//! size, with no bytes after its last record; a response that does not fit is sent with TC set,
//! its question and OPT and no records (whole records only, and nothing for an amplifier to
//! gain); a response that cannot be encoded at all becomes a bare SERVFAIL header and says so
//! ([`Encoding::Failed`]), so it is counted as what was sent.

use std::{iter, sync::LazyLock};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, Record, RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
    serialize::binary::{BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    server::Request,
    zone_handler::{MessageResponse, MessageResponseBuilder, Queries},
};

use crate::{
    answer::{Chooser, Outcome, RRsetId, Selection, Snapshot, Variants, resolve},
    cookie,
    dnssec::SignedVersion,
    metrics::{Qtype, Rcode},
    transport::Transport,
    zone::Zone,
};

/// The UDP payload size we advertise and never exceed (DNS flag day 2020: avoids IP
/// fragmentation on any usual path).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// The largest UDP response to a query without EDNS (RFC 1035 §4.2.1), and the smallest
/// payload size an EDNS client may announce (RFC 6891 §6.2.5).
pub(crate) const MIN_UDP_PAYLOAD: u16 = 512;
/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;
/// Length of a client cookie, the only length of a COOKIE option without a server cookie
/// (RFC 7873 §4).
const CLIENT_COOKIE_LEN: usize = 8;
/// Lengths of a COOKIE option with a server cookie: the client cookie plus 8 to 32 bytes.
const FULL_COOKIE_LENS: std::ops::RangeInclusive<usize> = 16..=40;

/// Whether a COOKIE option of `len` bytes is well-formed (RFC 7873 §5.2.2: otherwise FORMERR).
pub(crate) fn valid_cookie_len(len: usize) -> bool {
    len == CLIENT_COOKIE_LEN || FULL_COOKIE_LENS.contains(&len)
}

/// The response to send, before encoding.
pub(crate) struct Plan<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    /// The records the answer section selects from.
    answers: &'a [Record],
    /// Which of them it holds, in order.
    selection: Selection,
    /// The pool RRset answered from, if any.
    pub(crate) rrset: Option<RRsetId>,
    /// How many different answers that RRset gives (`Rotations(1)` for anything else).
    pub(crate) variants: Variants,
    soa: Option<&'a Record>,
    /// Set when the full response did not fit: TC, no records.
    truncated: bool,
    pub(crate) label: Rcode,
    /// With DNSSEC and DO: the RRSIGs that follow the answer records.
    answer_sigs: Vec<Record>,
    /// With DNSSEC and DO: the SOA's RRSIG, the NSEC and its RRSIG after the SOA.
    authority_sigs: Vec<Record>,
}

impl<'a> Plan<'a> {
    fn error(rcode: ResponseCode, label: Rcode) -> Self {
        Self {
            rcode,
            authoritative: false,
            answers: &[],
            selection: Selection::all(0),
            rrset: None,
            variants: Variants::Rotations(1),
            soa: None,
            truncated: false,
            label,
            answer_sigs: Vec::new(),
            authority_sigs: Vec::new(),
        }
    }

    fn positive(answers: &'a [Record], selection: Selection) -> Self {
        Self { authoritative: true, answers, selection, ..Self::error(ResponseCode::NoError, Rcode::noerror) }
    }

    fn negative(rcode: ResponseCode, soa: &'a Record, label: Rcode) -> Self {
        Self { authoritative: true, soa: Some(soa), ..Self::error(rcode, label) }
    }

    /// The same response without its records and with TC set.
    fn truncated(&self) -> Plan<'a> {
        Self { authoritative: self.authoritative, truncated: true, ..Self::error(self.rcode, self.label) }
    }
}

/// The query type family of `qtype`, as a metrics label.
pub(crate) fn qtype_label(qtype: RecordType) -> Qtype {
    match qtype {
        RecordType::A => Qtype::a,
        RecordType::AAAA => Qtype::aaaa,
        RecordType::SOA => Qtype::soa,
        RecordType::NS => Qtype::ns,
        RecordType::ANY => Qtype::any,
        _ => Qtype::other,
    }
}

/// Decides the response to `request`. For a pool name's A or AAAA records, `chooser` picks the
/// records of this response (rotation start, weighted draw).
pub(crate) fn plan<'a>(
    zone: &'a Zone,
    snapshot: &'a Snapshot,
    request: &Request,
    chooser: &mut impl Chooser,
) -> Plan<'a> {
    let queries = request.queries.queries();
    if request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION) {
        Plan::error(ResponseCode::BADVERS, Rcode::badvers)
    } else if request.edns.as_ref().is_some_and(|edns| {
        edns.options()
            .get_all(EdnsCode::Cookie)
            .iter()
            .any(|cookie| !valid_cookie_len(usize::from(cookie.len())))
    }) {
        Plan::error(ResponseCode::FormErr, Rcode::formerr)
    } else if request.metadata.op_code != OpCode::Query {
        Plan::error(ResponseCode::NotImp, Rcode::notimp)
    } else if queries.len() != 1 {
        Plan::error(ResponseCode::FormErr, Rcode::formerr)
    } else if !matches!(queries[0].query_class(), DNSClass::IN | DNSClass::ANY) {
        // QCLASS * matches IN (RFC 1035 §3.2.5); CH/HS/NONE are not served here.
        Plan::error(ResponseCode::Refused, Rcode::refused)
    } else {
        let query = &queries[0];
        match resolve(zone, snapshot, query.name(), query.query_type()) {
            Outcome::Refused => Plan::error(ResponseCode::Refused, Rcode::refused),
            Outcome::Answer(records) => Plan::positive(records, Selection::all(records.len())),
            Outcome::Pool { id, rrset } => Plan {
                rrset: Some(id),
                variants: rrset.variants(),
                ..Plan::positive(rrset.records(), rrset.select(chooser))
            },
            Outcome::NoData => Plan::negative(ResponseCode::NoError, &snapshot.soa, Rcode::nodata),
            Outcome::NxDomain => Plan::negative(ResponseCode::NXDomain, &snapshot.soa, Rcode::nxdomain),
        }
    }
}

/// With DNSSEC on (`signed`): the DNSKEY RRset at the apex, and with the query's DO bit the
/// RRSIGs of every RRset in the response; a negative answer becomes RFC 9824 compact denial:
/// NOERROR, the SOA and an NSEC at the query name listing the types there (NXNAME when the
/// name does not exist), each with its RRSIG.
pub(crate) fn sign<'a>(
    plan: &mut Plan<'a>,
    zone: &Zone,
    snapshot: &Snapshot,
    signed: &'a SignedVersion,
    request: &Request,
    dnssec_ok: bool,
) {
    let [query] = request.queries.queries() else { return };
    let apex = query.name() == &zone.origin;
    if apex && query.query_type() == RecordType::DNSKEY && plan.label == Rcode::nodata {
        *plan = Plan::positive(&signed.dnskeys, Selection::all(signed.dnskeys.len()));
    }
    if !dnssec_ok {
        return;
    }
    if plan.rcode == ResponseCode::NoError && plan.soa.is_none() && !plan.answers.is_empty() {
        let (records, selection) = (plan.answers, &plan.selection);
        let rrset: Vec<&Record> =
            (0..selection.len()).map(|i| &records[selection.index(i, records.len())]).collect();
        plan.answer_sigs.extend(signed.rrsig(&rrset));
    } else if let Some(soa) = plan.soa {
        let qname: Name = query.name().into();
        let types: Option<Vec<RecordType>> = match zone.nodes.get(query.name()) {
            None => None,
            Some(node) => {
                let mut types = Vec::new();
                if let Some(pool) = node.pool {
                    for (v6, rtype) in [(false, RecordType::A), (true, RecordType::AAAA)] {
                        if !snapshot.rrset(RRsetId { pool, v6 }).records().is_empty() {
                            types.push(rtype);
                        }
                    }
                }
                if node.apex {
                    types.extend([RecordType::NS, RecordType::SOA, RecordType::DNSKEY]);
                }
                Some(types)
            }
        };
        plan.rcode = ResponseCode::NoError;
        plan.authority_sigs.extend(signed.rrsig(&[soa]));
        if let Some(nsec) = signed.nsec(&qname, types.as_deref(), soa.ttl) {
            let sig = signed.rrsig(&[&nsec]);
            plan.authority_sigs.push(nsec);
            plan.authority_sigs.extend(sig);
        }
    }
}

/// The BADCOOKIE response (RFC 7873 §5.2.4, over UDP): no records; the COOKIE option with a
/// fresh server cookie goes in its OPT.
pub(crate) fn bad_cookie<'a>() -> Plan<'a> {
    Plan::error(ResponseCode::BADCOOKIE, Rcode::badcookie)
}

/// The content of `request`'s first COOKIE option, if it has one.
pub(crate) fn request_cookie(request: &Request) -> Option<&[u8]> {
    let edns = request.edns.as_ref()?;
    match edns.options().get(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data),
        _ => None,
    }
}

/// Adds a COOKIE option with `content` (client cookie and our server cookie) to `edns`.
pub(crate) fn add_cookie(edns: &mut Edns, content: &[u8; cookie::OPTION_LEN]) {
    edns.options_mut().insert(EdnsOption::Unknown(cookie::OPTION_CODE, content.to_vec()));
}

/// The OPT to answer `request`'s OPT with (RFC 6891 §6.1.1), if it has one. The payload we put
/// in it is also the limit the UDP response is encoded against, so it is the smaller of the
/// client's buffer (at least 512) and ours.
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|edns| {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD));
        ours.set_version(EDNS_VERSION);
        ours
    })
}

/// The largest response to send over `transport` with `edns` (ours, from [`response_edns`]).
pub(crate) fn size_limit(transport: Transport, edns: Option<&Edns>) -> u16 {
    match (transport, edns) {
        (Transport::Udp, Some(edns)) => edns.max_payload(),
        (Transport::Udp, None) => MIN_UDP_PAYLOAD,
        (Transport::Tcp, _) => u16::MAX,
    }
}

/// How [`encode`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The planned response, whole.
    Whole,
    /// The planned response did not fit: TC set, question and OPT only.
    Truncated,
    /// The response could not be encoded: a bare SERVFAIL header was written instead.
    Failed,
}

/// Encodes the response `plan` describes to `request`, with `edns` echoed, into `out` (cleared
/// first) in at most `max` bytes.
pub(crate) fn encode(
    request: &Request,
    edns: Option<&Edns>,
    plan: &Plan<'_>,
    max: u16,
    out: &mut Vec<u8>,
) -> Encoding {
    match emit(build(request, edns, plan), max, out) {
        Ok(false) => return Encoding::Whole,
        Ok(true) => {
            // TC is set in this one whether or not something else was left out: nothing is.
            if emit(build(request, edns, &plan.truncated()), max, out).is_ok() {
                return Encoding::Truncated;
            }
        }
        Err(()) => {}
    }
    servfail(request.metadata.id, out);
    Encoding::Failed
}

/// The response `plan` describes, to `request`, with `edns` echoed.
fn build<'q, 'p>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    plan: &'p Plan<'_>,
) -> MessageResponse<
    'q,
    'p,
    impl Iterator<Item = &'p Record> + Send + 'p,
    impl Iterator<Item = &'p Record> + Send + 'p,
    impl Iterator<Item = &'p Record> + Send + 'p,
    impl Iterator<Item = &'p Record> + Send + 'p,
> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = plan.rcode;
    metadata.authoritative = plan.authoritative;
    metadata.truncation = plan.truncated;
    // The question is echoed only when there is exactly one: more are never answered (FORMERR,
    // NOTIMP, BADVERS), and echoing them all may not fit in 512 bytes, which fails encoding and
    // turns the intended code into SERVFAIL (found by tests/fuzz `dns`).
    static NO_QUERIES: LazyLock<Queries> =
        LazyLock::new(|| Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero questions read"));
    let queries = if request.queries.len() == 1 { &request.queries } else { &*NO_QUERIES };
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    let (records, selection) = (plan.answers, &plan.selection);
    let answers = (0..selection.len())
        .map(move |i| &records[selection.index(i, records.len())])
        .chain(plan.answer_sigs.iter());
    // hickory writes the SOA first, then these.
    builder.build(metadata, answers, plan.authority_sigs.iter(), plan.soa, iter::empty())
}

/// Emits `response` into `out` (cleared first) in at most `max` bytes; `Ok(true)` if a record
/// did not fit (or TC was set already). hickory's encoder rolls back a record that does not fit but leaves its bytes
/// in the buffer: they are cut off here, so no junk follows the message.
fn emit<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
    out: &mut Vec<u8>,
) -> Result<bool, ()> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max);
    let emitted = response.destructive_emit(&mut encoder);
    let end = encoder.offset();
    out.truncate(end);
    emitted.map(|info| info.truncation).map_err(drop)
}

/// Writes a bare SERVFAIL header with `id` into `out` (cleared first).
fn servfail(id: u16, out: &mut Vec<u8>) {
    out.clear();
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header { metadata, counts: HeaderCounts::default() };
    // A 12-byte header always fits an unlimited encoder.
    let _ = header.emit(&mut BinEncoder::new(out));
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hickory_proto::{
        op::{Message, Query},
        rr::Name,
    };

    use super::*;
    use crate::{answer::PoolAnswers, zone::ZoneConfig};

    fn zone() -> Zone {
        Zone::compile(&ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into()],
        })
        .unwrap()
    }

    fn request(message: &Message) -> Request {
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        Request::from_bytes(message.to_vec().unwrap(), src, hickory_server::net::xfer::Protocol::Udp).unwrap()
    }

    #[test]
    fn cookie_lengths() {
        for len in 0..=48 {
            assert_eq!(valid_cookie_len(len), len == 8 || (16..=40).contains(&len), "{len}");
        }
    }

    /// Thousands of AAAA records: over TCP the response is one valid message of at most
    /// 65,535 bytes with TC set and no records, with nothing after it.
    #[test]
    fn oversized_answers_truncate_to_a_valid_message() {
        let zone = zone();
        let addrs = (0..5000u16).map(|i| std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, i])).collect();
        let snapshot =
            Snapshot::build_with_cap(&zone, &PoolAnswers::same_for_all(1, 1, 5, addrs), usize::MAX);
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii("api.pool.example.test.").unwrap(), RecordType::AAAA));
        let request = request(&query);
        let plan = plan(&zone, &snapshot, &request, &mut crate::choose::Live);
        let mut out = Vec::new();
        for max in [512, 1232, u16::MAX] {
            assert_eq!(encode(&request, None, &plan, max, &mut out), Encoding::Truncated);
            assert!(out.len() <= usize::from(max));
            let parsed = Message::from_vec(&out).unwrap();
            assert!(parsed.metadata.truncation);
            assert!(parsed.answers.is_empty());
            assert_eq!(parsed.to_vec().unwrap(), out, "no trailing bytes");
        }
    }

    /// A response that cannot be encoded at all says so, and its bytes are a SERVFAIL.
    #[test]
    fn encode_failure_is_reported() {
        let zone = zone();
        let snapshot = Snapshot::build(&zone, &PoolAnswers { serial: 1, names: vec![] });
        let mut query = Message::query();
        query.metadata.id = 77;
        query.add_query(Query::query(Name::from_ascii("api.pool.example.test.").unwrap(), RecordType::A));
        let request = request(&query);
        let plan = plan(&zone, &snapshot, &request, &mut crate::choose::Live);
        let mut out = Vec::new();
        // Not even the question fits.
        assert_eq!(encode(&request, None, &plan, 20, &mut out), Encoding::Failed);
        let parsed = Message::from_vec(&out).unwrap();
        assert_eq!(parsed.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(parsed.metadata.id, 77);
    }
}
