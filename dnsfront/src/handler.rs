//! The hickory-server `RequestHandler`: header checks, EDNS, and turning an [`Outcome`] into a
//! response.
//!
//! Owns [`PoolHandler`]: the compiled zone, the current record [`Snapshot`] (rebuilt lazily, once,
//! when the node publishes a new `PoolAnswers`), the rotation counter and the metrics. Every
//! request gets exactly one response, except those hickory-server drops before calling us
//! (unreadable header, QR=1). The per-query path allocates nothing of its own beyond an `Arc`
//! clone; records are borrowed from the snapshot.

use std::{
    iter,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, Record, RecordType},
};
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::sync::watch;
use tracing::debug;

use crate::{
    answer::{Outcome, PoolAnswers, Snapshot, resolve},
    metrics::{DnsMetrics, Qtype, QueryLabels, Rcode, Transport},
    zone::Zone,
};

/// The UDP payload size we advertise and never exceed (DNS flag day 2020: avoids IP
/// fragmentation on any usual path).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;

/// Answers queries for one pool zone.
pub(crate) struct PoolHandler {
    zone: Zone,
    answers: watch::Receiver<Arc<PoolAnswers>>,
    snapshot: RwLock<Arc<Snapshot>>,
    rotation: AtomicUsize,
    metrics: DnsMetrics,
}

impl PoolHandler {
    pub(crate) fn new(zone: Zone, answers: watch::Receiver<Arc<PoolAnswers>>, metrics: DnsMetrics) -> Self {
        let current = answers.borrow().clone();
        let snapshot = Snapshot::build(&zone, current);
        metrics.snapshots.inc();
        Self {
            zone,
            answers,
            snapshot: RwLock::new(Arc::new(snapshot)),
            rotation: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The snapshot for the currently published answers, building it if the node published a
    /// new value since the last query. Checking per query (rather than in a background task)
    /// means a query that starts after `send` returns always sees the new value.
    fn snapshot(&self) -> Arc<Snapshot> {
        let current = self.answers.borrow().clone();
        {
            let cached = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&cached.source, &current) {
                return cached.clone();
            }
        }
        let fresh = Arc::new(Snapshot::build(&self.zone, current));
        self.metrics.snapshots.inc();
        debug!(serial = fresh.source.serial, addrs = fresh.source.addrs.len(), "new pool answers");
        let mut cached = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        *cached = fresh.clone();
        fresh
    }

    fn count(&self, rcode: Rcode, qtype: Qtype, protocol: Protocol, info: &ResponseInfo) {
        let transport = match protocol {
            Protocol::Udp => Transport::udp,
            _ => Transport::tcp,
        };
        self.metrics.queries.get_or_create(&QueryLabels { rcode, qtype, transport }).inc();
        if info.truncation {
            self.metrics.truncated.inc();
        }
    }
}

/// The response to send, before encoding.
struct Plan<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    answers: &'a [Record],
    /// Where the rotated answer order starts.
    rotate_by: usize,
    soa: Option<&'a Record>,
    label: Rcode,
}

impl<'a> Plan<'a> {
    fn error(rcode: ResponseCode, label: Rcode) -> Self {
        Self { rcode, authoritative: false, answers: &[], rotate_by: 0, soa: None, label }
    }
}

fn qtype_label(qtype: RecordType) -> Qtype {
    match qtype {
        RecordType::A => Qtype::a,
        RecordType::AAAA => Qtype::aaaa,
        RecordType::SOA => Qtype::soa,
        RecordType::NS => Qtype::ns,
        RecordType::ANY => Qtype::any,
        _ => Qtype::other,
    }
}

#[async_trait::async_trait]
impl RequestHandler for PoolHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // RFC 6891 §6.1.1: answer an OPT with an OPT. The payload we put in it is also the
        // limit hickory-server encodes the UDP response against, so it is the smaller of the
        // client's buffer (at least 512) and ours.
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            ours.set_version(EDNS_VERSION);
            ours
        });

        let queries = request.queries.queries();
        let qtype = match queries {
            [query] => qtype_label(query.query_type()),
            _ => Qtype::none,
        };

        let snapshot;
        let plan = if request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION) {
            Plan::error(ResponseCode::BADVERS, Rcode::badvers)
        } else if request.metadata.op_code != OpCode::Query {
            Plan::error(ResponseCode::NotImp, Rcode::notimp)
        } else if queries.len() != 1 {
            Plan::error(ResponseCode::FormErr, Rcode::formerr)
        } else if !matches!(queries[0].query_class(), DNSClass::IN | DNSClass::ANY) {
            // QCLASS * matches IN (RFC 1035 §3.2.5); CH/HS/NONE are not served here.
            Plan::error(ResponseCode::Refused, Rcode::refused)
        } else {
            snapshot = self.snapshot();
            let query = &queries[0];
            match resolve(&self.zone, &snapshot, query.name(), query.query_type()) {
                Outcome::Refused => Plan::error(ResponseCode::Refused, Rcode::refused),
                Outcome::Answer { records, rotate } => Plan {
                    rcode: ResponseCode::NoError,
                    authoritative: true,
                    answers: records,
                    rotate_by: if rotate && records.len() > 1 {
                        self.rotation.fetch_add(1, Ordering::Relaxed) % records.len()
                    } else {
                        0
                    },
                    soa: None,
                    label: Rcode::noerror,
                },
                Outcome::NoData => Plan {
                    rcode: ResponseCode::NoError,
                    authoritative: true,
                    answers: &[],
                    rotate_by: 0,
                    soa: Some(&snapshot.soa),
                    label: Rcode::nodata,
                },
                Outcome::NxDomain => Plan {
                    rcode: ResponseCode::NXDomain,
                    authoritative: true,
                    answers: &[],
                    rotate_by: 0,
                    soa: Some(&snapshot.soa),
                    label: Rcode::nxdomain,
                },
            }
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = plan.rcode;
        metadata.authoritative = plan.authoritative;

        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let (head, tail) = plan.answers.split_at(plan.rotate_by);
        let response =
            builder.build(metadata, tail.iter().chain(head.iter()), iter::empty(), plan.soa, iter::empty());

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
