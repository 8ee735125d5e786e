//! The UDP fast path: common queries answered from responses encoded once per answer version.
//!
//! Owns [`Query`], a query parsed without allocating (header, one question, at most a plain OPT),
//! and [`Table`]: for every name of the zone and every query-type family, the response the slow
//! path gives, encoded once per [`Snapshot`] (for a pool RRset: once per rotation start of an
//! `all` or `rotate` pick, at most [`MAX_RECORDS_PER_RRSET`](crate::MAX_RECORDS_PER_RRSET); once
//! per site of a `weighted` pick when the site drawn first decides the response, as with one
//! address per response); the REFUSED response; and the NXDOMAIN response for names in the
//! zone that do not exist, per name length. The whole table is built when the node publishes an
//! answer (`publish`), never on the query path. A fast response is those bytes with the ID, the
//! RD and CD flags and the question (verbatim, so 0x20 mixed case is echoed) copied from the
//! query, and an OPT appended when the query had one; which rotation or site it is, the live
//! [`Chooser`] decides, as for the slow path (same rotation counter, same first draw).
//!
//! Invariants: the table is made by `response`'s own `plan` + `encode`, so a fast response is
//! byte for byte what the slow path sends for the same rotation or first site (tests compare
//! them); a weighted pick whose response depends on more than its first draw has no entry (the
//! slow path draws it, O(sites · records)); hickory compresses no name against the question, so
//! what follows the question depends on the question's length only, never on its case. A query
//! the fast path is not sure of ([`Query::parse`] gives `None`: anything unusual, including a
//! COOKIE option of a bad length), or whose response would need truncating ([`Table::answer`]
//! gives `None`), goes to the slow path as it came.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::atomic::AtomicUsize,
};

use hickory_proto::{
    rr::{Name, RecordType},
    serialize::binary::BinEncodable,
};
use hickory_server::{net::xfer::Protocol, server::Request};

use crate::{
    answer::{Chooser, RRsetId, Snapshot, Variants},
    choose::Live,
    cookie,
    dnssec::SignedVersion,
    metrics::{Qtype, Rcode},
    response::{self, Encoding, MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD},
    zone::Zone,
};

/// Longest question name (wire form) the fast path takes. Longer names are legal but rare; the
/// slow path then applies hickory's own length rules.
const MAX_NAME: usize = 200;
/// Length of the DNS header.
const HEADER: usize = 12;
/// Length of the OPT we answer with: root owner, type, payload, TTL (extended RCODE 0,
/// version 0, no flags), empty RDATA.
const OPT_LEN: usize = 11;

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// The query types with a response of their own; every other fast type answers like TXT (the
/// handler gives them all NODATA, or NXDOMAIN / REFUSED by name alone).
const KINDS: [u16; 6] = [TYPE_A, TYPE_AAAA, TYPE_SOA, TYPE_NS, TYPE_ANY, TYPE_TXT];

fn kind(qtype: u16) -> usize {
    match qtype {
        TYPE_A => 0,
        TYPE_AAAA => 1,
        TYPE_SOA => 2,
        TYPE_NS => 3,
        TYPE_ANY => 4,
        _ => 5,
    }
}

/// Query types the fast path answers: data types and ANY. Not: 0, OPT, the meta types
/// (zone transfers, TSIG, …) and the private range, all of which the slow path handles.
fn fast_type(qtype: u16) -> bool {
    matches!(qtype, 1..=127 | TYPE_ANY | 256..=0xfeff) && qtype != TYPE_OPT
}

/// EDNS options whose content hickory parses (NSID, DAU/DHU/N3U, client subnet): a malformed
/// one is a FORMERR, so queries with them take the slow path. Others are skipped unread.
fn parsed_option(code: u16) -> bool {
    matches!(code, 3 | 5..=8)
}

/// A query the fast path may answer, parsed without allocating.
pub(crate) struct Query<'a> {
    packet: &'a [u8],
    /// Wire length of the question name.
    name_len: usize,
    /// The question name in wire form, ASCII lower-cased.
    lower: [u8; MAX_NAME],
    qtype: u16,
    /// The client's EDNS payload size, if the query has an OPT.
    payload: Option<u16>,
    /// Where the content of the query's COOKIE option is in `packet` (start, end), if any.
    cookie: Option<(usize, usize)>,
    /// The OPT's DO bit (RFC 3225).
    dnssec_ok: bool,
}

impl<'a> Query<'a> {
    /// Parses `packet` if it is a plain query: QUERY opcode, no flag but RD, AD and CD, one
    /// question of class IN for a name of host-name characters (no compression) and a data type
    /// or ANY, nothing after it but at most one OPT of version 0 (extended RCODE 0, options
    /// well-formed and none that hickory would parse), no trailing bytes. Anything else: `None`.
    pub(crate) fn parse(packet: &'a [u8]) -> Option<Self> {
        let header = packet.get(..HEADER)?;
        // Byte 2: QR OPCODE(4) AA TC RD; byte 3: RA Z AD CD RCODE(4).
        if header[2] & 0xfe != 0 || header[3] & 0xcf != 0 {
            return None;
        }
        // One question, no answer or authority records, at most one additional (the OPT).
        if header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 || header[11] > 1 {
            return None;
        }

        let mut lower = [0u8; MAX_NAME];
        let mut pos = HEADER;
        loop {
            let len = usize::from(*packet.get(pos)?);
            let next = pos + 1 + len;
            if len > 63 || next - HEADER > MAX_NAME {
                return None;
            }
            lower[pos - HEADER] = len as u8;
            if len == 0 {
                pos = next;
                break;
            }
            let label = packet.get(pos + 1..next)?;
            for (to, &byte) in lower[pos + 1 - HEADER..next - HEADER].iter_mut().zip(label) {
                if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
                    return None;
                }
                *to = byte.to_ascii_lowercase();
            }
            pos = next;
        }
        let name_len = pos - HEADER;
        let fixed = packet.get(pos..pos + 4)?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN || !fast_type(qtype) {
            return None;
        }
        let rest = &packet[pos + 4..];
        let mut cookie = None;
        let mut dnssec_ok = false;

        let payload = if header[11] == 0 {
            if !rest.is_empty() {
                return None;
            }
            None
        } else {
            let opt = rest.get(..OPT_LEN)?;
            // Root owner, type OPT, extended RCODE 0, version 0 (higher: BADVERS, slow path).
            if opt[..3] != [0, 0, TYPE_OPT as u8] || opt[5] != 0 || opt[6] != 0 {
                return None;
            }
            let mut options = &rest[OPT_LEN..];
            if options.len() != usize::from(u16::from_be_bytes([opt[9], opt[10]])) {
                return None;
            }
            let mut at = packet.len() - options.len();
            while !options.is_empty() {
                let head = options.get(..4)?;
                let code = u16::from_be_bytes([head[0], head[1]]);
                let end = 4 + usize::from(u16::from_be_bytes([head[2], head[3]]));
                if parsed_option(code) || options.len() < end {
                    return None;
                }
                if code == cookie::OPTION_CODE {
                    if !response::valid_cookie_len(end - 4) || cookie.is_some() {
                        // FORMERR, or two cookies: the slow path's to give.
                        return None;
                    }
                    cookie = Some((at + 4, at + end));
                }
                options = &options[end..];
                at += end;
            }
            dnssec_ok = opt[7] & 0x80 != 0;
            Some(u16::from_be_bytes([opt[3], opt[4]]))
        };
        Some(Self { packet, name_len, lower, qtype, payload, cookie, dnssec_ok })
    }

    /// The content of the query's COOKIE option, if it has one (of a valid length).
    pub(crate) fn cookie(&self) -> Option<&'a [u8]> {
        self.cookie.map(|(start, end)| &self.packet[start..end])
    }

    /// The query type, as a metrics label.
    pub(crate) fn qtype_label(&self) -> Qtype {
        response::qtype_label(RecordType::from(self.qtype))
    }

    fn name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    /// The question section as sent: name, type, class.
    fn question(&self) -> &[u8] {
        &self.packet[HEADER..HEADER + self.name_len + 4]
    }
}

/// One response, encoded, without its ID and question.
struct Encoded {
    /// Flags (RD and CD clear) and the four section counts (ARCOUNT 0).
    head: [u8; 10],
    /// What follows the question, once per variant of the answer (rotation start, site drawn
    /// first), else once. All the same length.
    tails: Box<[Box<[u8]>]>,
    /// Which tail a query gets.
    pick: TailPick,
    label: Rcode,
}

/// How a query's tail is chosen.
#[derive(Clone, Copy)]
enum TailPick {
    /// There is one.
    One,
    /// By the RRset's rotation counter.
    Rotation(RRsetId),
    /// By the site a weighted draw over the RRset's sites takes first.
    FirstSite(RRsetId),
}

/// The fast path's responses for one [`Snapshot`].
pub(crate) struct Table {
    /// The origin, wire form, lower case.
    origin: Box<[u8]>,
    /// Per name of the zone (wire form, lower case), per [`KINDS`] entry.
    names: HashMap<Box<[u8]>, [Option<Encoded>; KINDS.len()]>,
    /// With DNSSEC on: the same for DO queries, signed, positive answers only (a negative one
    /// holds an NSEC at the query name, signed per name by the slow path).
    signed: HashMap<Box<[u8]>, [Option<Encoded>; KINDS.len()]>,
    /// REFUSED, for names outside the zone (empty tail: fits every name).
    refused: Option<Encoded>,
    /// NXDOMAIN for names in the zone that do not exist, by wire length of the name (the SOA's
    /// compression pointers depend on it).
    nxdomain: Box<[Option<Encoded>]>,
}

impl Table {
    /// Encodes the responses for `snapshot`.
    pub(crate) fn build(zone: &Zone, snapshot: &Snapshot, signed: Option<&SignedVersion>) -> Self {
        let origin = wire(&Name::from(zone.origin.clone()));
        let by_name = |signed: Option<&SignedVersion>| {
            zone.nodes
                .keys()
                .map(|name| wire(&Name::from(name.clone())))
                .filter(|name| name.len() <= MAX_NAME)
                .map(|name| {
                    let by_kind = KINDS.map(|qtype| {
                        encode(zone, snapshot, &name, qtype, signed)
                            .filter(|e| signed.is_none() || e.label == Rcode::noerror)
                    });
                    (name, by_kind)
                })
                .collect()
        };
        let names = by_name(None);
        let signed = signed.map_or_else(HashMap::new, |signed| by_name(Some(signed)));
        // The root is outside every zone we may serve (the origin is never the root).
        let refused = encode(zone, snapshot, &[0], TYPE_TXT, None).filter(|e| e.label == Rcode::refused);
        let nxdomain = (0..=MAX_NAME)
            .map(|len| {
                encode(zone, snapshot, &absent_name(&origin, len)?, TYPE_TXT, None)
                    .filter(|e| e.label == Rcode::nxdomain)
            })
            .collect();
        Self { origin, names, signed, refused, nxdomain }
    }

    /// Writes the response to `query` into `out` and returns its metrics label, or `None` when
    /// the slow path must answer (no precomputed response, or it would not fit the client's
    /// payload size and needs truncating). Chooses the rotation or the site as the slow path
    /// does, from `snapshot` (the one the table was built for). With `cookie` (the COOKIE
    /// option content to send: client and server cookie), the OPT carries it, as the slow path
    /// adds it.
    pub(crate) fn answer(
        &self,
        query: &Query<'_>,
        snapshot: &Snapshot,
        cookie: Option<&[u8; cookie::OPTION_LEN]>,
        out: &mut Vec<u8>,
    ) -> Option<Rcode> {
        let name = query.name();
        // Signed answers only from the signed table; without one, DO queries get the unsigned
        // answers, as without DNSSEC.
        let signed = query.dnssec_ok && !self.signed.is_empty();
        let encoded = if signed {
            self.signed.get(name)?[kind(query.qtype)].as_ref()?
        } else if let Some(by_kind) = self.names.get(name) {
            by_kind[kind(query.qtype)].as_ref()?
        } else if self.in_zone(name) {
            self.nxdomain.get(name.len())?.as_ref()?
        } else {
            self.refused.as_ref()?
        };

        let question = query.question();
        let tail_len = encoded.tails[0].len();
        // A cookie comes in an OPT only.
        let cookie = cookie.filter(|_| query.payload.is_some());
        let cookie_len = cookie.map_or(0, |c| 4 + c.len());
        let opt_len = if query.payload.is_some() { OPT_LEN + cookie_len } else { 0 };
        let payload = query.payload.map(|p| p.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD));
        let total = HEADER + question.len() + tail_len + opt_len;
        if total > usize::from(payload.unwrap_or(MIN_UDP_PAYLOAD)) {
            return None;
        }
        let variant = match encoded.pick {
            TailPick::One => 0,
            TailPick::Rotation(id) => Live.rotation(snapshot.rrset(id).counter(), encoded.tails.len()),
            TailPick::FirstSite(id) => Live::first_site(snapshot.rrset(id).weights()),
        };
        let tail = encoded.tails.get(variant)?;

        let packet = query.packet;
        let head = &encoded.head;
        out.reserve(total);
        out.extend_from_slice(&packet[..2]);
        // RD (byte 2, bit 0) and CD (byte 3, 0x10) are copied, as hickory's
        // `Metadata::response_from_request` does; AD is never set in a response.
        out.push(head[0] | (packet[2] & 0x01));
        out.push(head[1] | (packet[3] & 0x10));
        out.extend_from_slice(&head[2..8]);
        out.extend_from_slice(&[0, u8::from(payload.is_some())]);
        out.extend_from_slice(question);
        out.extend_from_slice(tail);
        if let Some(payload) = payload {
            let [high, low] = payload.to_be_bytes();
            let [rd_high, rd_low] = (cookie_len as u16).to_be_bytes();
            // The DO bit (RFC 3225 §3) when the answer is signed, as the slow path copies it.
            let flags = if signed { 0x80 } else { 0 };
            out.extend_from_slice(&[0, 0, TYPE_OPT as u8, high, low, 0, 0, flags, 0, rd_high, rd_low]);
            if let Some(content) = cookie {
                let [code_high, code_low] = cookie::OPTION_CODE.to_be_bytes();
                out.extend_from_slice(&[code_high, code_low, 0, content.len() as u8]);
                out.extend_from_slice(content);
            }
        }
        Some(encoded.label)
    }

    /// Whether `name` (a valid wire name, lower case) is at or below the origin.
    fn in_zone(&self, name: &[u8]) -> bool {
        let Some(start) = name.len().checked_sub(self.origin.len()) else {
            return false;
        };
        if name[start..] != *self.origin {
            return false;
        }
        // The suffix must start at a label.
        let mut pos = 0;
        while pos < start {
            pos += 1 + usize::from(name[pos]);
        }
        pos == start
    }
}

/// The wire form of `name`.
fn wire(name: &Name) -> Box<[u8]> {
    name.to_bytes().unwrap_or_default().into_boxed_slice()
}

/// A name of `len` wire bytes below `origin` that cannot exist in the zone: its first label
/// starts with a hyphen, which zone names never do. `None` if no name has that length.
fn absent_name(origin: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut remaining = len.checked_sub(origin.len()).filter(|r| *r >= 2)?;
    let mut name = Vec::with_capacity(len);
    while remaining > 0 {
        let mut label = (remaining - 1).min(63);
        if remaining - 1 - label == 1 {
            // One byte would be left: too short for a label.
            label -= 1;
        }
        name.push(label as u8);
        let fill = if name.len() == 1 { b'-' } else { b'x' };
        name.push(fill);
        name.extend(std::iter::repeat_n(b'x', label - 1));
        remaining -= 1 + label;
    }
    name.extend_from_slice(origin);
    Some(name)
}

/// Choices fixed in advance, to encode one variant of an answer: the `0`th rotation start, or
/// the `0`th site drawn first and no other (the table only encodes weighted picks whose first
/// site decides the response).
struct Fixed(usize);

impl Chooser for Fixed {
    fn rotation(&mut self, _: &AtomicUsize, n: usize) -> usize {
        self.0 % n
    }

    fn sample(&mut self, weights: &[u32], _: usize, out: &mut Vec<usize>) {
        if self.0 < weights.len() {
            out.push(self.0);
        }
    }
}

/// The slow path's response to a query for `name` (wire form) and `qtype`, class IN, no EDNS,
/// ID 0, no flags, in every variant of its answer; `None` if it could never be sent over UDP
/// whole, or if its variants are too many to list.
fn encode(
    zone: &Zone,
    snapshot: &Snapshot,
    name: &[u8],
    qtype: u16,
    signed: Option<&SignedVersion>,
) -> Option<Encoded> {
    let question_end = HEADER + name.len() + 4;
    let one = |variant: usize| -> Option<(Vec<u8>, Rcode, Option<RRsetId>, Variants)> {
        let mut query = Vec::with_capacity(question_end);
        query.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        query.extend_from_slice(name);
        query.extend_from_slice(&qtype.to_be_bytes());
        query.extend_from_slice(&CLASS_IN.to_be_bytes());
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        let request = Request::from_bytes(query, src, Protocol::Udp).ok()?;
        let mut plan = response::plan(zone, snapshot, &request, &mut Fixed(variant));
        if let Some(signed) = signed {
            response::sign(&mut plan, zone, snapshot, signed, &request, true);
        }
        let mut bytes = Vec::new();
        if response::encode(&request, None, &plan, MAX_UDP_PAYLOAD, &mut bytes) != Encoding::Whole {
            return None;
        }
        Some((bytes, plan.label, plan.rrset, plan.variants))
    };

    let (first, label, rrset, variants) = one(0)?;
    let (count, pick) = match (variants, rrset) {
        (Variants::Rotations(1) | Variants::FirstSite(1), _) | (_, None) => (1, TailPick::One),
        (Variants::Rotations(n), Some(id)) => (n, TailPick::Rotation(id)),
        (Variants::FirstSite(n), Some(id)) => (n, TailPick::FirstSite(id)),
        (Variants::Drawn, Some(_)) => return None,
    };
    if first.len() > usize::from(MAX_UDP_PAYLOAD)
        || first.len() < question_end
        || first[4..6] != [0, 1]
        || first[10..12] != [0, 0]
        || first[HEADER..question_end - 4] != *name
    {
        return None;
    }
    let head: [u8; 10] = first[2..HEADER].try_into().ok()?;
    let mut tails = Vec::with_capacity(count);
    tails.push(first[question_end..].into());
    for variant in 1..count {
        let (bytes, ..) = one(variant)?;
        if bytes.len() != first.len() || bytes[2..HEADER] != head {
            return None;
        }
        tails.push(bytes[question_end..].into());
    }
    Some(Encoded { head, tails: tails.into_boxed_slice(), pick, label })
}

#[cfg(test)]
mod tests {
    use hickory_proto::serialize::binary::BinDecodable;

    use super::*;

    #[test]
    fn absent_names_have_the_asked_length() {
        let origin = wire(&Name::from_ascii("pool.example.test.").unwrap());
        for len in origin.len() + 2..=MAX_NAME {
            let name = absent_name(&origin, len).unwrap();
            assert_eq!(name.len(), len);
            let parsed = Name::from_bytes(&name).unwrap();
            assert_eq!(parsed.num_labels(), parsed.base_name().num_labels() + 1);
            assert_eq!(name[1], b'-');
        }
        assert!(absent_name(&origin, origin.len() + 1).is_none());
        assert!(absent_name(&origin, origin.len()).is_none());
    }
}
