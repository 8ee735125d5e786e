//! The request path: one raw DNS message in, one raw response out, counted.
//!
//! Owns [`PoolHandler`]: the answers being served (through the [`AnswerPublisher`]), the
//! response rate limiter ([`Rrl`], if on) and the metrics. Both listeners (`udp`, `tcp`) and the
//! socket-less entry in `offline` run [`PoolHandler::respond`]; the fast and the slow path
//! choose a pool name's records with the same live [`Chooser`](crate::answer::Chooser)
//! (`choose`). Invariants: every message gets exactly one response, except those dropped before
//! decoding (unreadable header, QR=1) and UDP responses over the rate limit that are not slipped
//! (`rrl`: decided per response once it is made, by the response code it carries; TCP is never
//! limited); nothing on this path waits on IO or builds records (they are built at publish time;
//! a weighted draw only selects among them); every response sent is counted once, under the
//! response code it carries, and every one held back by RRL once in its own counter.

use std::{net::SocketAddr, time::Instant};

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
    metrics::{DnsMetrics, Limited, LimitedCounters, Qtype, QueryCounters, Rcode},
    publish::AnswerPublisher,
    response::{self, Encoding},
    rrl::{self, Action, Kind, Rrl, RrlConfig},
    transport::Transport,
};

/// Answers queries for one pool zone.
pub(crate) struct PoolHandler {
    answers: AnswerPublisher,
    counters: QueryCounters,
    rrl: Option<Rrl>,
    limited: LimitedCounters,
    /// The server cookie secrets; `None`: cookies are off (COOKIE options are checked for
    /// length and otherwise ignored).
    cookies: Option<Secrets>,
}

impl PoolHandler {
    /// A handler without rate limiting, with cookies on (a random secret).
    pub(crate) fn new(answers: AnswerPublisher) -> Self {
        Self {
            counters: QueryCounters::new(answers.metrics()),
            limited: LimitedCounters::new(answers.metrics()),
            answers,
            rrl: None,
            cookies: Some(Secrets::random()),
        }
    }

    /// This handler with response rate limiting as `config` says (off when its rate is 0).
    pub(crate) fn with_rrl(self, config: RrlConfig) -> Self {
        Self { rrl: Rrl::new(config, rrl::TABLE_BUCKETS, Instant::now()), ..self }
    }

    /// The rate-limiting settings in force.
    pub(crate) fn rrl_config(&self) -> RrlConfig {
        self.rrl.as_ref().map_or(RrlConfig::OFF, Rrl::config)
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
        if fast
            && transport == Transport::Udp
            && let Some((rcode, qtype, verdict)) = self.fast_response(packet, src, out)
        {
            return self.send(src, transport, (rcode, qtype, Encoding::Whole), verdict, None, out);
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
                // Not counted in `queries` (see `DnsMetrics`), but limited like any error.
                return header.emit(&mut BinEncoder::new(out)).is_ok()
                    && self.within_rate(src, transport, Rcode::formerr, CookieVerdict::None, None, out);
            }
        };
        if request.metadata.message_type == MessageType::Response {
            // Never answer a response: that would make us a reflector.
            return false;
        }
        let (made, verdict, decided) = self.answer_request(&request, transport, out);
        self.send(src, transport, made, verdict, decided, out)
    }

    /// Whether the response in `out` (`made`: its planned code, the query's type, how it was
    /// encoded) goes out (rate limiting may drop it, or truncate it in place, unless the query's
    /// cookie `verdict` is a valid server cookie; `decided`: the limiting action if it was taken
    /// before the response was signed); counts it as sent, or as limited.
    fn send(
        &self,
        src: SocketAddr,
        transport: Transport,
        made: (Rcode, Qtype, Encoding),
        verdict: CookieVerdict,
        decided: Option<Action>,
        out: &mut Vec<u8>,
    ) -> bool {
        let (rcode, qtype, encoding) = made;
        let sent = match encoding {
            Encoding::Failed => Rcode::servfail,
            Encoding::Whole | Encoding::Truncated => rcode,
        };
        if !self.within_rate(src, transport, sent, verdict, decided, out) {
            return false;
        }
        self.count(rcode, qtype, transport, encoding);
        true
    }

    /// Applies response rate limiting to the response in `out`, carrying `rcode`, to `src` (or
    /// the action `decided` already): false if it is dropped; true if it goes out, whole or
    /// (slipped) truncated in place.
    /// TCP responses are never limited: the handshake proved the source address; nor are
    /// responses to a query with a valid server cookie (RFC 7873 §5.2.3: a cookie this site
    /// issued to that address proves it, as a spoofed source cannot have one).
    fn within_rate(
        &self,
        src: SocketAddr,
        transport: Transport,
        rcode: Rcode,
        verdict: CookieVerdict,
        decided: Option<Action>,
        out: &mut Vec<u8>,
    ) -> bool {
        let kind = Kind::of(rcode);
        let action = match decided {
            Some(action) => action,
            None => {
                let limited = transport == Transport::Udp && verdict != CookieVerdict::Valid;
                let Some(rrl) = self.rrl.as_ref().filter(|_| limited) else {
                    return true;
                };
                self.decide(rrl, src, kind)
            }
        };
        match action {
            Action::Send => true,
            Action::Slip if rrl::truncate_to_slip(out) => {
                self.limited.inc(kind, Limited::slipped);
                true
            }
            Action::Slip | Action::Drop => {
                self.limited.inc(kind, Limited::dropped);
                false
            }
        }
    }

    /// Takes one response of `kind` to `src` through the rate limiter.
    fn decide(&self, rrl: &Rrl, src: SocketAddr, kind: Kind) -> Action {
        let (action, evicted) = rrl.decide(src.ip(), kind, Instant::now());
        if evicted {
            self.metrics().rrl_evictions.inc();
        }
        action
    }

    /// Plans and encodes the response to a decoded query; returns what to count it as, the
    /// verdict on its cookie, and the rate-limiting action when it was taken here already.
    ///
    /// Cookies (RFC 7873 §5.2): a well-formed client cookie gets a fresh server cookie in the
    /// response's OPT; a bad server cookie over UDP gets BADCOOKIE instead of the answer (unless
    /// the query is in error already), over TCP the answer.
    ///
    /// Signing: with DNSSEC on, a DO query over UDP is rate limited *before* its answer is
    /// signed (a denial is signed per query name), so a flood of random names over the rate
    /// costs no signatures for the responses that are dropped or slipped (a slipped response is
    /// a bare TC header and question, with nothing to sign).
    fn answer_request(
        &self,
        request: &Request,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> ((Rcode, Qtype, Encoding), CookieVerdict, Option<Action>) {
        let current = self.answers.current();
        let mut edns = response::response_edns(request);
        let qtype = match request.queries.queries() {
            [query] => response::qtype_label(query.query_type()),
            _ => Qtype::none,
        };
        let mut plan = response::plan(&current.zone, &current.snapshot, request, &mut Live);
        let option = response::request_cookie(request).filter(|o| response::valid_cookie_len(o.len()));
        let mut verdict = CookieVerdict::None;
        if let (Some(secrets), Some(option), Some(edns)) = (&self.cookies, option, edns.as_mut())
            && plan.label != Rcode::formerr
        {
            let src = request.src();
            verdict = secrets.verdict(Some(option), src.ip());
            if verdict == CookieVerdict::Bad && transport == Transport::Udp && plan.label != Rcode::badvers {
                plan = response::bad_cookie();
            }
            if let Some(client) = cookie::client_cookie(option) {
                response::add_cookie(edns, &secrets.issue(client, src.ip()));
            }
        }
        let mut decided = None;
        if let Some(signed) = &current.signed {
            let mut dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
            if let Some(edns) = edns.as_mut() {
                // RFC 3225 §3: a server that speaks DNSSEC copies the DO bit.
                edns.set_dnssec_ok(dnssec_ok);
            }
            if dnssec_ok
                && transport == Transport::Udp
                && verdict != CookieVerdict::Valid
                && let Some(rrl) = &self.rrl
            {
                let action = self.decide(rrl, request.src(), Kind::of(plan.label));
                // Limited: nothing is signed (a slipped response keeps no records anyway).
                dnssec_ok &= action == Action::Send;
                decided = Some(action);
            }
            if plan.label != Rcode::badcookie {
                response::sign(&mut plan, &current.zone, &current.snapshot, signed, request, dnssec_ok);
            }
        }
        let limit = response::size_limit(transport, edns.as_ref());
        let encoding = response::encode(request, edns.as_ref(), &plan, limit, out);
        ((plan.label, qtype, encoding), verdict, decided)
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
        match self.fast_response(packet, src, out) {
            Some((rcode, qtype, _)) => {
                self.counters.inc(rcode, qtype, Transport::Udp);
                true
            }
            None => false,
        }
    }

    /// The fast path's response to `packet` from `src` in `out` (cleared first), what to count
    /// it as and the verdict on its cookie; `None` if the fast path does not take it.
    fn fast_response(
        &self,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Option<(Rcode, Qtype, CookieVerdict)> {
        out.clear();
        let query = fast::Query::parse(packet)?;
        let (verdict, issued) = match query.cookie() {
            Some(option) => match self.cookie_verdict(Some(option), src) {
                CookieVerdict::Bad => return None,
                CookieVerdict::None => (CookieVerdict::None, None),
                verdict @ (CookieVerdict::ClientOnly | CookieVerdict::Valid) => {
                    (verdict, cookie::client_cookie(option).and_then(|client| self.issue_cookie(client, src)))
                }
            },
            None => (CookieVerdict::None, None),
        };
        let current = self.answers.current();
        if current.signed.is_some() && query.qtype_label() == Qtype::other {
            // The DNSKEY RRset, and denial for other types, come from the slow path.
            return None;
        }
        let rcode = current.fast.answer(&query, &current.snapshot, issued.as_ref(), out)?;
        Some((rcode, query.qtype_label(), verdict))
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

    /// With a rate of 1 and slip 1, the second response of each kind to a prefix is its slip
    /// form: one valid message with the same ID, response code and question, TC set, no
    /// records, and an OPT exactly when the whole response had one. On the fast path and the
    /// slow path, for every kind of response; never over TCP.
    #[test]
    fn slipped_responses_are_valid_truncated_messages() {
        use hickory_proto::{
            op::{Edns, Message, Query},
            rr::{Name, RecordType},
        };

        let zone = ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into()],
        };
        let answers = PoolAnswers::same_for_all(1, 1, 5, vec!["192.0.2.1".parse().unwrap()]);
        let publisher = AnswerPublisher::new(&zone, answers, DnsMetrics::default()).unwrap();
        let rrl = RrlConfig { rate: 1, slip: 1, ..RrlConfig::default() };
        let handler = PoolHandler::new(publisher).with_rrl(rrl);
        let query = |name: &str, qtype: RecordType, edns: Option<u8>| {
            let mut message = Message::query();
            message.metadata.id = 4711;
            message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
            if let Some(version) = edns {
                let mut opt = Edns::new();
                opt.set_version(version);
                message.set_edns(opt);
            }
            message.to_vec().unwrap()
        };
        let mut two_questions = Message::query();
        for _ in 0..2 {
            two_questions
                .add_query(Query::query(Name::from_ascii("api.pool.example.test.").unwrap(), RecordType::A));
        }
        let cases = [
            ("answer, fast path", query("api.pool.example.test.", RecordType::A, Some(0)), "10.0.0.1"),
            ("answer, no EDNS", query("api.pool.example.test.", RecordType::A, None), "10.0.1.1"),
            ("NXDOMAIN with the SOA", query("nope.pool.example.test.", RecordType::A, Some(0)), "10.0.2.1"),
            ("REFUSED", query("example.org.", RecordType::A, None), "10.0.3.1"),
            ("BADVERS, slow path", query("api.pool.example.test.", RecordType::A, Some(1)), "10.0.4.1"),
            ("FORMERR, two questions", two_questions.to_vec().unwrap(), "10.0.5.1"),
            ("FORMERR, undecodable", vec![0x12, 0x67, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3], "10.0.6.1"),
        ];
        for (what, packet, src) in cases {
            let src = SocketAddr::new(src.parse().unwrap(), 5353);
            let (mut whole, mut slipped) = (Vec::new(), Vec::new());
            assert!(handler.respond(&packet, src, Transport::Udp, &mut whole), "{what}");
            assert!(handler.respond(&packet, src, Transport::Udp, &mut slipped), "{what}: slipped");
            let raw = slipped.clone();
            let (whole, slipped) = (Message::from_vec(&whole).unwrap(), Message::from_vec(&slipped).unwrap());
            assert!(slipped.metadata.truncation, "{what}: {slipped:?}");
            assert_eq!(slipped.metadata.id, whole.metadata.id, "{what}");
            assert_eq!(slipped.metadata.response_code, whole.metadata.response_code, "{what}");
            assert_eq!(slipped.queries, whole.queries, "{what}");
            assert!(slipped.answers.is_empty() && slipped.authorities.is_empty(), "{what}: {slipped:?}");
            assert_eq!(slipped.edns.is_some(), whole.edns.is_some(), "{what}");
            assert_eq!(slipped.to_vec().unwrap(), raw, "{what}: no trailing bytes");
            let mut over_tcp = Vec::new();
            assert!(handler.respond(&packet, src, Transport::Tcp, &mut over_tcp), "{what}: TCP");
            assert!(!Message::from_vec(&over_tcp).unwrap().metadata.truncation, "{what}: TCP never limited");
        }
        let mut text = String::new();
        let mut registry = Registry::default();
        handler.metrics().register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for (kind, count) in [("answer", 2), ("nxdomain", 1), ("error", 4)] {
            let series =
                format!(r#"dns_rrl_limited_responses_total{{kind="{kind}",action="slipped"}} {count}"#);
            assert!(text.contains(&series), "{series}: {text}");
        }
    }
}
