//! The request path without sockets, for fuzzing and tests: raw query bytes in, raw response
//! bytes out, through the same [`PoolHandler`] the server runs.
//!
//! Mirrors what hickory-server does around the handler (header and message decoding, dropping
//! responses, encoding against the UDP size limit, SERVFAIL when encoding fails) so that what a
//! fuzzer finds here is what a client could trigger. Not part of the public API.

use std::{
    net::{Ipv4Addr, SocketAddr},
    pin::pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
};

use hickory_proto::{
    op::{Header, HeaderCounts, Metadata, MessageType, OpCode, ResponseCode},
    rr::Record,
    serialize::binary::{BinEncodable, BinEncoder},
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tokio::sync::watch;

use crate::{DnsMetrics, PoolAnswers, ZoneConfig, ZoneError, handler::PoolHandler, zone::Zone};

/// A pool zone answering raw query bytes in memory.
pub struct Responder {
    handler: PoolHandler,
    _answers: watch::Sender<Arc<PoolAnswers>>,
}

impl Responder {
    /// Compiles `zone` and serves `answers` from it.
    pub fn new(zone: &ZoneConfig, answers: PoolAnswers) -> Result<Self, ZoneError> {
        let zone = Zone::compile(zone)?;
        let (tx, rx) = watch::channel(Arc::new(answers));
        Ok(Self { handler: PoolHandler::new(zone, rx, DnsMetrics::default()), _answers: tx })
    }

    /// The response hickory-server would send to `query` over UDP (`udp`) or TCP, or `None` if
    /// it would send nothing (shorter than a header, or a response). Undecodable messages get
    /// FORMERR from hickory-server itself and never reach the handler: also `None`.
    pub fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
        let request = Request::from_bytes(query.to_vec(), src, protocol).ok()?;
        if request.metadata.message_type == MessageType::Response {
            return None;
        }
        let sink = Capture { protocol, out: Arc::default() };
        let future = self.handler.handle_request::<_, TokioTime>(&request, sink.clone());
        // Nothing on this path waits: the handler and `Capture` complete on the first poll.
        let Poll::Ready(_) = pin!(future).poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("the DNS handler waited on something");
        };
        sink.out.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A response handler that encodes like hickory-server's and keeps the bytes.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    out: Arc<Mutex<Option<Vec<u8>>>>,
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
        let id = response.metadata().id;
        let max = match (self.protocol, response.edns()) {
            (Protocol::Udp, Some(edns)) => edns.max_payload(),
            (Protocol::Udp, None) => 512,
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(_) => {
                // hickory-server's fallback: a bare SERVFAIL header.
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header { metadata, counts: HeaderCounts::default() };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        *self.out.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}
