//! The hickory-server `RequestHandler`: header checks, EDNS, and turning an [`Outcome`] into a
//! response; and [`PoolHandler::respond`], the whole path from raw message to raw response that
//! our UDP loop (and the fuzz entry in `offline`) runs.
//!
//! Owns [`PoolHandler`]: the compiled zone, the [`Current`] answers (record snapshot plus the
//! fast path's encoded responses, rebuilt lazily, once, when the node publishes a new
//! `PoolAnswers`), the rotation counter and the metrics. Every request gets exactly one
//! response, except those dropped before the handler (unreadable header, QR=1). What a response
//! says is decided in one place, [`plan`], and encoded in one place, [`build`] + [`encode`]: the
//! fast path's precomputed responses are made by the same two functions, so the paths cannot
//! drift apart.

use std::{
    iter,
    net::SocketAddr,
    sync::{
        Arc, LazyLock, Mutex, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    net::{
        NetError,
        runtime::{Time, TokioTime},
        xfer::Protocol,
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder, Queries},
};
use tokio::sync::watch;
use tracing::debug;

use crate::{
    answer::{Outcome, PoolAnswers, Snapshot, resolve},
    fast,
    metrics::{DnsMetrics, Qtype, QueryCounters, Rcode, Transport},
    zone::Zone,
};

/// The UDP payload size we advertise and never exceed (DNS flag day 2020: avoids IP
/// fragmentation on any usual path).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;

/// Everything served for one published [`PoolAnswers`] value.
pub(crate) struct Current {
    /// The records.
    pub(crate) snapshot: Snapshot,
    /// The same answers, encoded for the UDP fast path.
    pub(crate) fast: fast::Table,
}

/// Answers queries for one pool zone.
pub(crate) struct PoolHandler {
    zone: Zone,
    answers: watch::Receiver<Arc<PoolAnswers>>,
    current: RwLock<Arc<Current>>,
    rotation: AtomicUsize,
    metrics: DnsMetrics,
    counters: QueryCounters,
}

impl PoolHandler {
    pub(crate) fn new(zone: Zone, answers: watch::Receiver<Arc<PoolAnswers>>, metrics: DnsMetrics) -> Self {
        let source = answers.borrow().clone();
        let current = Arc::new(Self::build(&zone, source));
        metrics.snapshots.inc();
        Self {
            zone,
            answers,
            current: RwLock::new(current),
            rotation: AtomicUsize::new(0),
            counters: QueryCounters::new(&metrics),
            metrics,
        }
    }

    fn build(zone: &Zone, source: Arc<PoolAnswers>) -> Current {
        let snapshot = Snapshot::build(zone, source);
        let fast = fast::Table::build(zone, &snapshot);
        Current { snapshot, fast }
    }

    /// The answers for the currently published value, building them if the node published a
    /// new value since the last query. Checking per query (rather than in a background task)
    /// means a query that starts after `send` returns always sees the new value.
    fn current(&self) -> Arc<Current> {
        let source = self.answers.borrow().clone();
        {
            let cached = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&cached.snapshot.source, &source) {
                return cached.clone();
            }
        }
        let fresh = Arc::new(Self::build(&self.zone, source));
        self.metrics.snapshots.inc();
        let snapshot = &fresh.snapshot;
        debug!(serial = snapshot.source.serial, addrs = snapshot.source.addrs.len(), "new pool answers");
        let mut cached = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *cached = fresh.clone();
        fresh
    }

    /// Answers one raw DNS message the way hickory-server's request loop would, writing the
    /// response into `out`; returns false when nothing is to be sent.
    ///
    /// Over UDP, common queries are answered by the fast path from precomputed responses;
    /// everything else takes hickory's path: a message shorter than a header, or a response,
    /// is dropped; one that does not decode gets a bare FORMERR header (no question, no EDNS);
    /// the rest goes through [`RequestHandler::handle_request`].
    pub(crate) async fn respond(
        &self,
        packet: &[u8],
        src: SocketAddr,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> bool {
        self.respond_with(packet, src, protocol, true, out).await
    }

    /// [`respond`](Self::respond), with the fast path optional (tests compare the two).
    pub(crate) async fn respond_with(
        &self,
        packet: &[u8],
        src: SocketAddr,
        protocol: Protocol,
        fast: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if fast && protocol == Protocol::Udp && self.answer_fast(packet, out) {
            return true;
        }
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return false;
        };
        let request = match Request::from_bytes(packet.to_vec(), src, protocol) {
            Ok(request) => request,
            Err(error) => {
                debug!(%error, %src, "undecodable DNS message: FORMERR");
                let mut metadata = Metadata::response_from_request(&header.metadata);
                metadata.response_code = ResponseCode::FormErr;
                let header = Header { metadata, counts: HeaderCounts::default() };
                return header.emit(&mut BinEncoder::new(out)).is_ok();
            }
        };
        if request.metadata.message_type == MessageType::Response {
            // Never answer a response: that would make us a reflector.
            return false;
        }
        let capture = Capture::new(protocol);
        self.handle_request::<_, TokioTime>(&request, capture.clone()).await;
        capture.take_into(out)
    }

    /// Answers `packet` through the fast path into `out` (cleared first) and counts it; false
    /// if the fast path does not take it.
    pub(crate) fn answer_fast(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(query) = fast::Query::parse(packet) else {
            return false;
        };
        let current = self.current();
        match current.fast.answer(&self.zone, &current.snapshot, &query, &self.rotation, out) {
            Some(rcode) => {
                self.counters.inc(rcode, query.qtype_label(), Transport::udp);
                true
            }
            None => false,
        }
    }

    /// Counts a response that was made but could not be sent.
    pub(crate) fn send_failed(&self) {
        self.metrics.send_errors.inc();
    }

    fn count(&self, rcode: Rcode, qtype: Qtype, protocol: Protocol, info: &ResponseInfo) {
        let transport = match protocol {
            Protocol::Udp => Transport::udp,
            _ => Transport::tcp,
        };
        self.counters.inc(rcode, qtype, transport);
        if info.truncation {
            self.metrics.truncated.inc();
        }
    }
}

/// The response to send, before encoding.
pub(crate) struct Plan<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    answers: &'a [Record],
    /// Where the rotated answer order starts.
    rotate_by: usize,
    /// How many orders the answer rotates through (1: not rotated).
    pub(crate) rotations: usize,
    soa: Option<&'a Record>,
    pub(crate) label: Rcode,
}

impl<'a> Plan<'a> {
    fn error(rcode: ResponseCode, label: Rcode) -> Self {
        Self { rcode, authoritative: false, answers: &[], rotate_by: 0, rotations: 1, soa: None, label }
    }

    fn negative(rcode: ResponseCode, soa: &'a Record, label: Rcode) -> Self {
        Self { rcode, authoritative: true, answers: &[], rotate_by: 0, rotations: 1, soa: Some(soa), label }
    }
}

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

/// Decides the response to `request`. `rotate_by` is asked, given the RRset's size, where a
/// rotated answer starts; it is called only for pool RRsets of more than one record.
pub(crate) fn plan<'a>(
    zone: &'a Zone,
    snapshot: &'a Snapshot,
    request: &Request,
    rotate_by: impl FnOnce(usize) -> usize,
) -> Plan<'a> {
    let queries = request.queries.queries();
    if request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION) {
        Plan::error(ResponseCode::BADVERS, Rcode::badvers)
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
            Outcome::Answer { records, rotate } => {
                let rotations = if rotate && records.len() > 1 { records.len() } else { 1 };
                Plan {
                    rcode: ResponseCode::NoError,
                    authoritative: true,
                    answers: records,
                    rotate_by: if rotations > 1 { rotate_by(rotations) % rotations } else { 0 },
                    rotations,
                    soa: None,
                    label: Rcode::noerror,
                }
            }
            Outcome::NoData => Plan::negative(ResponseCode::NoError, &snapshot.soa, Rcode::nodata),
            Outcome::NxDomain => Plan::negative(ResponseCode::NXDomain, &snapshot.soa, Rcode::nxdomain),
        }
    }
}

/// The OPT to answer `request`'s OPT with (RFC 6891 §6.1.1), if it has one. The payload we put
/// in it is also the limit the UDP response is encoded against, so it is the smaller of the
/// client's buffer (at least 512) and ours.
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|edns| {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        ours.set_version(EDNS_VERSION);
        ours
    })
}

/// The response `plan` describes, to `request`, with `edns` echoed.
pub(crate) fn build<'q, 'a>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    plan: &Plan<'a>,
) -> MessageResponse<
    'q,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = plan.rcode;
    metadata.authoritative = plan.authoritative;
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
    let (head, tail) = plan.answers.split_at(plan.rotate_by);
    builder.build(metadata, tail.iter().chain(head.iter()), iter::empty(), plan.soa, iter::empty())
}

/// Encodes `response` in at most `max` bytes, as hickory-server does (truncating with TC when
/// it does not fit; a bare SERVFAIL header if encoding fails).
pub(crate) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    if let Ok(info) = response.destructive_emit(&mut encoder) {
        return Ok((info, bytes));
    }
    bytes.clear();
    let mut encoder = BinEncoder::new(&mut bytes);
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header { metadata, counts: HeaderCounts::default() };
    header.emit(&mut encoder)?;
    Ok((ResponseInfo::from(header), bytes))
}

#[async_trait::async_trait]
impl RequestHandler for PoolHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let current = self.current();
        let edns = response_edns(request);
        let qtype = match request.queries.queries() {
            [query] => qtype_label(query.query_type()),
            _ => Qtype::none,
        };
        let plan =
            plan(&self.zone, &current.snapshot, request, |_| self.rotation.fetch_add(1, Ordering::Relaxed));
        let response = build(request, edns.as_ref(), &plan);
        match response_handle.send_response(response).await {
            Ok(info) => {
                self.count(plan.label, qtype, request.protocol(), &info);
                info
            }
            Err(error) => {
                debug!(%error, src = %request.src(), "failed to send DNS response");
                self.metrics.send_errors.inc();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

/// A response handler that encodes like hickory-server's `ResponseHandle` (UDP: against the
/// OPT payload, or 512 without one) and keeps the bytes instead of sending them.
#[derive(Clone)]
pub(crate) struct Capture {
    protocol: Protocol,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    pub(crate) fn new(protocol: Protocol) -> Self {
        Self { protocol, out: Arc::default() }
    }

    /// Moves the captured response into `out`; false if none was sent.
    pub(crate) fn take_into(&self, out: &mut Vec<u8>) -> bool {
        match self.out.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(bytes) => {
                *out = bytes;
                true
            }
            None => false,
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = match (self.protocol, response.edns()) {
            (Protocol::Udp, Some(edns)) => edns.max_payload(),
            (Protocol::Udp, None) => 512,
            _ => u16::MAX,
        };
        let (info, bytes) = encode(response, max)?;
        *self.out.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}
