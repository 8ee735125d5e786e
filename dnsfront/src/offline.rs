//! The request path without sockets, for fuzzing and tests: raw query bytes in, raw response
//! bytes out, through the same [`PoolHandler::respond`] the server's UDP loop runs.
//!
//! Over UDP that is exactly the served path: the fast path for the queries it takes (so a
//! fuzzer exercises it), else hickory's decoding (drop what has no readable header or is a
//! response, FORMERR what does not decode) and the handler, encoded against the UDP size
//! limit. Over TCP the same decoding and handler, encoded without limit, as hickory-server's
//! TCP listener does. Not part of the public API.

use std::{
    net::{Ipv4Addr, SocketAddr},
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use hickory_server::net::xfer::Protocol;
use tokio::sync::watch;

use crate::{DnsMetrics, PoolAnswers, ZoneConfig, ZoneError, handler::PoolHandler, zone::Zone};

/// A pool zone answering raw query bytes in memory.
pub struct Responder {
    handler: PoolHandler,
    answers: watch::Sender<Arc<PoolAnswers>>,
}

impl Responder {
    /// Compiles `zone` and serves `answers` from it.
    pub fn new(zone: &ZoneConfig, answers: PoolAnswers) -> Result<Self, ZoneError> {
        Self::with_metrics(zone, answers, DnsMetrics::default())
    }

    /// Like [`new`](Self::new), counting into `metrics`.
    pub fn with_metrics(
        zone: &ZoneConfig,
        answers: PoolAnswers,
        metrics: DnsMetrics,
    ) -> Result<Self, ZoneError> {
        let zone = Zone::compile(zone)?;
        let (tx, rx) = watch::channel(Arc::new(answers));
        Ok(Self { handler: PoolHandler::new(zone, rx, metrics), answers: tx })
    }

    /// Publishes a new answer set, as the node does.
    pub fn publish(&self, answers: PoolAnswers) {
        self.answers.send_replace(Arc::new(answers));
    }

    /// The response the server would send to `query` over UDP (`udp`) or TCP, or `None` if it
    /// would send nothing (shorter than a header, or a response).
    pub fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        self.run(query, protocol)
    }

    /// The response the slow path (hickory's decoding and the handler) gives, bypassing the
    /// fast path: what the fast path must reproduce.
    pub fn answer_slow(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        self.run_with(query, protocol, false)
    }

    /// Whether the fast path answers `query` over UDP. It does answer it, as a served query:
    /// counted in the metrics, rotation advanced.
    pub fn is_fast(&self, query: &[u8]) -> bool {
        self.handler.answer_fast(query, &mut Vec::new())
    }

    fn run(&self, query: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
        self.run_with(query, protocol, true)
    }

    fn run_with(&self, query: &[u8], protocol: Protocol, fast: bool) -> Option<Vec<u8>> {
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
        let mut out = Vec::new();
        let future = self.handler.respond_with(query, src, protocol, fast, &mut out);
        // Nothing on this path waits: the handler and its capturing response handler complete
        // on the first poll.
        let Poll::Ready(sent) = pin!(future).poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("the DNS handler waited on something");
        };
        sent.then_some(out)
    }
}

#[cfg(test)]
mod fuzz_regressions {
    //! Inputs the `dns` fuzz target (tests/fuzz) found, kept as tests.

    use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::Responder;
    use crate::{PoolAnswers, ZoneConfig};

    fn responder() -> Responder {
        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into()],
        };
        Responder::new(&zone, PoolAnswers { serial: 1, addrs: vec!["192.0.2.1".parse().unwrap()] }).unwrap()
    }

    /// Several questions that together exceed 512 bytes (the fuzzer's had opcode UPDATE and 11
    /// questions): echoing them all failed encoding, so the answer was SERVFAIL instead of the
    /// error the request deserves.
    #[test]
    fn many_long_questions_get_their_error_code_not_servfail() {
        // Distinct labels: names with a common suffix would compress.
        let long =
            |c: char| Name::from_ascii(format!("{}.", vec![c.to_string().repeat(60); 3].join("."))).unwrap();
        for (opcode, edns_version, expected) in [
            (OpCode::Update, None, ResponseCode::NotImp),
            (OpCode::Query, None, ResponseCode::FormErr),
            (OpCode::Query, Some(1), ResponseCode::BADVERS),
        ] {
            let mut query = Message::new(7, hickory_proto::op::MessageType::Query, opcode);
            for c in ['a', 'b', 'c', 'd'] {
                query.add_query(Query::query(long(c), RecordType::A));
            }
            if let Some(version) = edns_version {
                let mut edns = Edns::new();
                edns.set_version(version);
                query.set_edns(edns);
            }
            let bytes = query.to_vec().unwrap();
            assert!(bytes.len() > 512);
            for udp in [true, false] {
                let response = responder().answer(&bytes, udp).expect("a response");
                let parsed = Message::from_vec(&response).unwrap();
                assert_eq!(
                    u16::from(parsed.metadata.response_code),
                    u16::from(expected),
                    "{opcode:?} udp={udp}"
                );
                assert!(response.len() <= 512, "{} bytes", response.len());
            }
        }
    }
}
