//! The request path without sockets, for fuzzing and tests: raw query bytes in, raw response
//! bytes out, through the same `PoolHandler::respond` the server's listeners run; and a TCP
//! byte stream in, the server's bytes out, through the same connection code (`tcp`).
//!
//! Over UDP that is exactly the served path: the fast path for the queries it takes (so a
//! fuzzer exercises it), else hickory's decoding (drop what has no readable header or is a
//! response, FORMERR what does not decode) and the slow path, encoded against the UDP size
//! limit; several datagrams can also go through the UDP loop's batch code. Over TCP the same decoding and slow path, encoded against 65,535 bytes. Weighted
//! draws come from the calling thread's RNG, which [`Responder::seed`] makes repeatable. Not
//! part of the public API.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::OnceLock,
};

use tokio_util::sync::CancellationToken;

use crate::{
    answer::PoolAnswers,
    choose,
    cookie::Secrets,
    handler::PoolHandler,
    limits::{ConnectionTable, TcpLimits},
    metrics::{DnsMetrics, Refusal},
    publish::AnswerPublisher,
    tcp,
    transport::Transport,
    udp::Batch,
    zone::{ZoneConfig, ZoneError},
};

/// The secret of a [`Responder`]'s server cookies unless [`Responder::set_cookies`] says
/// otherwise.
pub const DEFAULT_SECRET: [u8; 16] = *b"spdu-offline-key";
/// The time a [`Responder`]'s cookie clock stands at by default (2026-01-01T00:00:00Z).
pub const DEFAULT_NOW: u32 = 1_767_225_600;

/// A pool zone answering raw query bytes in memory (queries come from 127.0.0.1:5353).
pub struct Responder {
    handler: PoolHandler,
    answers: AnswerPublisher,
    runtime: OnceLock<tokio::runtime::Runtime>,
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
        let answers = AnswerPublisher::new(zone, answers, metrics)?;
        let mut handler = PoolHandler::new(answers.clone());
        handler.set_cookies(Some(Secrets::fixed(DEFAULT_SECRET, DEFAULT_NOW)));
        Ok(Self { handler, answers, runtime: OnceLock::new() })
    }

    /// Server cookies from `secret` on a clock stopped at `now` (seconds since the epoch), so
    /// that the same query always gets the same response; `None`: cookies off. By default
    /// cookies are on, with a fixed secret at [`DEFAULT_NOW`].
    pub fn set_cookies(&mut self, cookies: Option<([u8; 16], u32)>) {
        self.handler.set_cookies(cookies.map(|(secret, now)| Secrets::fixed(secret, now)));
    }

    /// The COOKIE option content the server would send to `client` from `src`: the client
    /// cookie and a server cookie (`None` when cookies are off).
    pub fn issue_cookie(&self, client: [u8; 8], src: SocketAddr) -> Option<Vec<u8>> {
        self.handler.issue_cookie(&client, src).map(|c| c.to_vec())
    }

    /// Signs every answer with `signer` from now on (DNSSEC on), or not (`None`).
    pub fn set_signer(&self, signer: Option<crate::dnssec::Signer>) {
        self.answers.set_signer(signer);
    }

    /// Publishes a new answer set, as the node does.
    pub fn publish(&self, answers: PoolAnswers) {
        self.answers.publish(answers);
    }

    /// The response the server would send to `query` over UDP (`udp`) or TCP, or `None` if it
    /// would send nothing (shorter than a header, or a response).
    pub fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        self.run(query, udp, true)
    }

    /// The response the slow path (hickory's decoding and `response`) gives, bypassing the
    /// fast path: what the fast path must reproduce.
    pub fn answer_slow(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        self.run(query, udp, false)
    }

    /// Whether the fast path answers `query` over UDP. It does answer it, as a served query:
    /// counted in the metrics, rotation advanced, a weighted draw made.
    pub fn is_fast(&self, query: &[u8]) -> bool {
        self.handler.answer_fast(query, SocketAddr::from((Ipv4Addr::LOCALHOST, 5353)), &mut Vec::new())
    }

    /// The replies the UDP loop sends when `datagrams` arrive (each with its source address)
    /// in that order: the datagrams go through the loop's batch code (in batches of as many as
    /// one `recvmmsg` takes, each truncated to the receive buffer, sources through the same
    /// address conversions) and the handler, as on a socket. Returns each reply with its
    /// destination, in the order they are sent; a datagram the server does not answer (no
    /// readable header, a response, a source that cannot be replied to) has none.
    pub fn answer_udp_batch(&self, datagrams: &[(&[u8], SocketAddr)]) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut batch = Batch::new();
        let mut replies = Vec::with_capacity(datagrams.len());
        for &(datagram, src) in datagrams {
            if !batch.push(datagram, src) {
                batch.answer(&self.handler);
                replies.extend(batch.take_replies());
                assert!(batch.push(datagram, src), "an answered batch takes a datagram");
            }
        }
        batch.answer(&self.handler);
        replies.extend(batch.take_replies());
        replies
    }

    /// Seeds the weighted draws of the calling thread: after the same seed, the same query
    /// draws the same sites (on the fast and the slow path alike).
    pub fn seed(&self, seed: u64) {
        choose::seed(seed);
    }

    /// What the server writes on a TCP connection whose peer sends `stream` and then closes
    /// its side: the length-prefixed responses, in order, up to the point where the server
    /// closes the connection.
    pub fn answer_tcp_stream(&self, stream: &[u8]) -> Vec<u8> {
        let table = ConnectionTable::new(TcpLimits::default());
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
        let mut written = Vec::new();
        self.runtime().block_on(tcp::serve_stream(
            stream,
            &mut written,
            src,
            &self.handler,
            &table,
            &CancellationToken::new(),
        ));
        written
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime")
        })
    }

    fn run(&self, query: &[u8], udp: bool, fast: bool) -> Option<Vec<u8>> {
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
        let transport = if udp { Transport::Udp } else { Transport::Tcp };
        let mut out = Vec::new();
        self.handler.respond_with(query, src, transport, fast, &mut out).then_some(out)
    }
}

/// One step of a [`connection_table_run`]: open a connection from a source, or close one.
#[derive(Clone, Copy, Debug)]
pub enum TableStep {
    /// Open a connection from this address.
    Open(IpAddr),
    /// Close the `n`th open connection (modulo the number open), if any.
    Close(usize),
}

/// Runs `steps` against a connection table with `limits`; after each step checks that no limit
/// is exceeded and that the counts equal the connections open, and at the end that closing
/// everything frees every slot. Returns how many opens were refused for each limit
/// (total, per source). Panics if an invariant breaks.
pub fn connection_table_run(limits: TcpLimits, steps: &[TableStep]) -> (usize, usize) {
    let table = ConnectionTable::new(limits.within(None));
    let limits = table.limits();
    let mut open = Vec::new();
    let (mut total_refused, mut source_refused) = (0, 0);
    for step in steps {
        match *step {
            TableStep::Open(ip) => match table.open(ip) {
                Ok(slot) => open.push((ip, slot)),
                Err(Refusal::total) => {
                    assert_eq!(open.len(), limits.max_connections, "refused below the total limit");
                    total_refused += 1;
                }
                Err(Refusal::per_source) => {
                    assert!(
                        table.open_count(ip).1 >= limits.max_per_source,
                        "refused below the source limit"
                    );
                    source_refused += 1;
                }
            },
            TableStep::Close(n) => {
                if !open.is_empty() {
                    let index = n % open.len();
                    open.swap_remove(index);
                }
            }
        }
        assert!(open.len() <= limits.max_connections);
        for (ip, _) in &open {
            let (total, from_source) = table.open_count(*ip);
            assert_eq!(total, open.len());
            assert!(from_source <= limits.max_per_source);
        }
    }
    let any = open.first().map(|(ip, _)| *ip);
    open.clear();
    if let Some(ip) = any {
        assert_eq!(table.open_count(ip), (0, 0), "every slot is given back");
    }
    (total_refused, source_refused)
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
        Responder::new(&zone, PoolAnswers::same_for_all(1, 1, 5, vec!["192.0.2.1".parse().unwrap()])).unwrap()
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
