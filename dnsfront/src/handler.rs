//! The request path: one raw DNS message in, one raw response out, counted.
//!
//! Owns [`PoolHandler`]: the answers being served (through the [`AnswerPublisher`]) and the
//! metrics. Both listeners (`udp`, `tcp`) and the socket-less entry in `offline` run
//! [`PoolHandler::respond`]; the fast and the slow path choose a pool name's records with the
//! same live [`Chooser`](crate::answer::Chooser) (`choose`). Invariants: every message gets
//! exactly one response, except those dropped before decoding (unreadable header, QR=1);
//! nothing on this path waits on IO or builds records (they are built at publish time; a
//! weighted draw only selects among them); every response sent is counted once, under the
//! response code it carries.

use std::net::SocketAddr;

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{net::xfer::Protocol, server::Request};
use tracing::debug;

use crate::{
    choose::Live,
    cookie::{self, CookieVerdict, Secrets},
    fast,
    metrics::{DnsMetrics, Qtype, QueryCounters, Rcode},
    publish::AnswerPublisher,
    response::{self, Encoding},
    transport::Transport,
};

/// Answers queries for one pool zone.
pub(crate) struct PoolHandler {
    answers: AnswerPublisher,
    counters: QueryCounters,
    /// The server cookie secrets; `None`: cookies are off (COOKIE options are checked for
    /// length and otherwise ignored).
    cookies: Option<Secrets>,
}

impl PoolHandler {
    /// A handler for what `answers` publishes, with cookies on (a random secret).
    pub(crate) fn new(answers: AnswerPublisher) -> Self {
        Self { counters: QueryCounters::new(answers.metrics()), answers, cookies: Some(Secrets::random()) }
    }

    /// Replaces the cookie secrets (`None`: cookies off).
    pub(crate) fn set_cookies(&mut self, cookies: Option<Secrets>) {
        self.cookies = cookies;
    }

    /// Whether cookies are on.
    pub(crate) fn cookies_on(&self) -> bool {
        self.cookies.is_some()
    }

    /// The COOKIE option content to answer `client` from `src` with (`None`: cookies off).
    pub(crate) fn issue_cookie(
        &self,
        client: &[u8; cookie::CLIENT_LEN],
        src: SocketAddr,
    ) -> Option<[u8; cookie::OPTION_LEN]> {
        self.cookies.as_ref().map(|secrets| secrets.issue(client, src.ip()))
    }

    /// The verdict on a COOKIE option's content from `src` (`None` when cookies are off).
    pub(crate) fn cookie_verdict(&self, option: Option<&[u8]>, src: SocketAddr) -> CookieVerdict {
        self.cookies
            .as_ref()
            .map_or(CookieVerdict::None, |secrets| cookie::verdict(option, src.ip(), secrets))
    }

    /// Answers one raw DNS message, writing the response into `out`; returns false when nothing
    /// is to be sent.
    ///
    /// Over UDP, common queries are answered by the fast path from precomputed responses;
    /// everything else takes the slow path: a message shorter than a header, or a response, is
    /// dropped; one that does not decode gets a bare FORMERR header (no question, no EDNS); the
    /// rest is planned and encoded by `response`.
    pub(crate) fn respond(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        self.respond_with(packet, src, transport, true, out)
    }

    /// [`respond`](Self::respond), with the fast path optional (tests compare the two).
    pub(crate) fn respond_with(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        fast: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if fast && transport == Transport::Udp && self.answer_fast(packet, src, out) {
            return true;
        }
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return false;
        };
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
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
        self.answer_request(&request, transport, out);
        true
    }

    /// Plans, encodes and counts the response to a decoded query.
    ///
    /// Cookies (RFC 7873 §5.2): a well-formed client cookie gets a fresh server cookie in the
    /// response's OPT; a bad server cookie over UDP gets BADCOOKIE instead of the answer (unless
    /// the query is in error already), over TCP the answer.
    fn answer_request(&self, request: &Request, transport: Transport, out: &mut Vec<u8>) {
        let current = self.answers.current();
        let mut edns = response::response_edns(request);
        let qtype = match request.queries.queries() {
            [query] => response::qtype_label(query.query_type()),
            _ => Qtype::none,
        };
        let mut plan = response::plan(&current.zone, &current.snapshot, request, &mut Live);
        let option = response::request_cookie(request).filter(|o| response::valid_cookie_len(o.len()));
        if let (Some(secrets), Some(option), Some(edns)) = (&self.cookies, option, edns.as_mut())
            && plan.label != Rcode::formerr
        {
            let src = request.src();
            if secrets.verdict(Some(option), src.ip()) == CookieVerdict::Bad
                && transport == Transport::Udp
                && plan.label != Rcode::badvers
            {
                plan = response::bad_cookie();
            }
            if let Some(client) = cookie::client_cookie(option) {
                response::add_cookie(edns, &secrets.issue(client, src.ip()));
            }
        }
        let limit = response::size_limit(transport, edns.as_ref());
        let encoding = response::encode(request, edns.as_ref(), &plan, limit, out);
        self.count(plan.label, qtype, transport, encoding);
    }

    /// Counts one response: under the planned code, unless encoding failed and a SERVFAIL went
    /// out instead.
    fn count(&self, planned: Rcode, qtype: Qtype, transport: Transport, encoding: Encoding) {
        match encoding {
            Encoding::Whole => self.counters.inc(planned, qtype, transport),
            Encoding::Truncated => {
                self.counters.inc(planned, qtype, transport);
                self.metrics().truncated.inc();
            }
            Encoding::Failed => {
                debug!(?planned, "response could not be encoded: SERVFAIL");
                self.counters.inc(Rcode::servfail, qtype, transport);
                self.metrics().send_errors.inc();
            }
        }
    }

    /// Answers `packet` through the fast path into `out` (cleared first) and counts it; false
    /// if the fast path does not take it.
    ///
    /// With cookies on, a query with a client cookie only or a valid server cookie is answered
    /// here with a fresh server cookie appended to the OPT; one with a bad server cookie goes to
    /// the slow path (BADCOOKIE is rare: it has no precomputed response).
    pub(crate) fn answer_fast(&self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(query) = fast::Query::parse(packet) else {
            return false;
        };
        let issued = match query.cookie() {
            Some(option) => match self.cookie_verdict(Some(option), src) {
                CookieVerdict::Bad => return false,
                CookieVerdict::None => None,
                CookieVerdict::ClientOnly | CookieVerdict::Valid => {
                    cookie::client_cookie(option).and_then(|client| self.issue_cookie(client, src))
                }
            },
            None => None,
        };
        let current = self.answers.current();
        match current.fast.answer(&query, &current.snapshot, issued.as_ref(), out) {
            Some(rcode) => {
                self.counters.inc(rcode, query.qtype_label(), Transport::Udp);
                true
            }
            None => false,
        }
    }

    /// The counters this handler counts into.
    pub(crate) fn metrics(&self) -> &DnsMetrics {
        self.answers.metrics()
    }

    /// Counts a response that was made but could not be sent.
    pub(crate) fn send_failed(&self) {
        self.metrics().send_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::{PoolAnswers, ZoneConfig};

    /// A SERVFAIL sent because encoding failed is counted as SERVFAIL and as a send error, not
    /// under the code that was planned.
    #[test]
    fn encode_failures_count_as_servfail_and_send_errors() {
        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into()],
        };
        let metrics = DnsMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let publisher =
            AnswerPublisher::new(&zone, PoolAnswers { serial: 1, names: vec![] }, metrics).unwrap();
        let handler = PoolHandler::new(publisher);
        handler.count(Rcode::nodata, Qtype::a, Transport::Udp, Encoding::Failed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"dns_queries_total{rcode="servfail",qtype="a",transport="udp"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"rcode="nodata""#), "{text}");
        assert!(text.contains("dns_send_errors_total 1"), "{text}");
    }
}
