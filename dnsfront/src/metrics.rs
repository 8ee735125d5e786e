//! The DNS front's counters, for the node's prometheus-client registry.
//!
//! Owns [`DnsMetrics`]. Clones share the same counters, so the node can keep one handle to
//! register and hand another to the server. Counting never fails and never blocks the query path:
//! [`QueryCounters`] resolves each label set to its counter once, so a response costs one atomic
//! increment. Invariant: every response sent is counted once in `queries`, under the response
//! code it actually carries (a SERVFAIL sent because encoding failed counts as `servfail`, and in
//! `send_errors`, never under the code that was planned); a response over the rate limit is
//! counted once in `rrl_limited_responses`, and also in `queries` if it was slipped (sent).

use std::sync::OnceLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{rrl::Kind, transport::Transport};

/// Response code class of a response, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Rcode {
    noerror,
    nodata,
    nxdomain,
    refused,
    formerr,
    notimp,
    badvers,
    badcookie,
    servfail,
}

/// Query type family, as a label (bounded cardinality: anything unusual is `other`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Qtype {
    a,
    aaaa,
    soa,
    ns,
    any,
    other,
    none,
}

/// Why a TCP connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Refusal {
    /// The server already holds its maximum number of TCP connections.
    total,
    /// The connection's source (address, or /64 for IPv6) already holds its maximum.
    per_source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    pub(crate) reason: Refusal,
}

/// What response rate limiting did with a response over the rate.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Limited {
    /// Not sent.
    dropped,
    /// Sent truncated (TC set, no records).
    slipped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitedLabels {
    pub(crate) kind: Kind,
    pub(crate) action: Limited,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueryLabels {
    pub(crate) rcode: Rcode,
    pub(crate) qtype: Qtype,
    pub(crate) transport: Transport,
}

const RCODES: usize = 9;
const QTYPES: usize = 7;
const TRANSPORTS: usize = 2;

/// The `queries` counter of every label set, each looked up in the family on its first use only
/// (so the exposition still lists only label sets that occurred). Clones of a prometheus-client
/// `Counter` share its value.
pub(crate) struct QueryCounters {
    family: Family<QueryLabels, Counter>,
    cells: [OnceLock<Counter>; RCODES * QTYPES * TRANSPORTS],
}

impl QueryCounters {
    pub(crate) fn new(metrics: &DnsMetrics) -> Self {
        Self { family: metrics.queries.clone(), cells: std::array::from_fn(|_| OnceLock::new()) }
    }

    /// Counts one response.
    pub(crate) fn inc(&self, rcode: Rcode, qtype: Qtype, transport: Transport) {
        let transport_index = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
        let index = (rcode as usize * QTYPES + qtype as usize) * TRANSPORTS + transport_index;
        self.cells[index]
            .get_or_init(|| self.family.get_or_create_owned(&QueryLabels { rcode, qtype, transport }))
            .inc();
    }
}

/// The `rrl_limited_responses` counter of every label set, each looked up on its first use only
/// (as [`QueryCounters`]: a flood is counted at one atomic increment per response).
pub(crate) struct LimitedCounters {
    family: Family<LimitedLabels, Counter>,
    cells: [OnceLock<Counter>; 6],
}

impl LimitedCounters {
    pub(crate) fn new(metrics: &DnsMetrics) -> Self {
        Self { family: metrics.rrl_limited.clone(), cells: std::array::from_fn(|_| OnceLock::new()) }
    }

    /// Counts one response over the rate.
    pub(crate) fn inc(&self, kind: Kind, action: Limited) {
        let index = kind as usize * 2 + action as usize;
        self.cells[index]
            .get_or_init(|| self.family.get_or_create_owned(&LimitedLabels { kind, action }))
            .inc();
    }
}

/// Counters of the DNS front, registered in the node's prometheus-client `Registry`.
///
/// Malformed packets whose header cannot be read are dropped and not counted; malformed packets
/// with a readable header that do not decode are answered FORMERR by the handler's raw path
/// (`PoolHandler::respond_with`, over UDP and TCP alike), also uncounted. FORMERR counted here is for well-formed messages with zero
/// or several questions, or a malformed COOKIE option.
#[derive(Clone, Default, Debug)]
pub struct DnsMetrics {
    pub(crate) queries: Family<QueryLabels, Counter>,
    pub(crate) truncated: Counter,
    pub(crate) send_errors: Counter,
    pub(crate) snapshots: Counter,
    pub(crate) tcp_refused: Family<RefusalLabels, Counter>,
    pub(crate) tcp_accept_errors: Counter,
    pub(crate) tcp_connections: Gauge,
    pub(crate) rrl_limited: Family<LimitedLabels, Counter>,
    pub(crate) rrl_evictions: Counter,
    pub(crate) dnssec_signatures: Counter,
}

impl DnsMetrics {
    /// TCP connections closed at once because a connection limit was reached, by limit.
    pub(crate) fn tcp_refused(&self, reason: Refusal) -> Counter {
        self.tcp_refused.get_or_create_owned(&RefusalLabels { reason })
    }
}

impl DnsMetrics {
    /// Registers every counter under the `dns_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("dns");
        registry.register(
            "queries",
            "DNS queries answered, by response code, query type family and transport",
            self.queries.clone(),
        );
        registry.register(
            "truncated_responses",
            "UDP responses sent with TC set because they exceeded the client's payload size",
            self.truncated.clone(),
        );
        registry.register(
            "send_errors",
            "Responses that could not be encoded (answered SERVFAIL instead) or sent",
            self.send_errors.clone(),
        );
        registry.register(
            "answer_snapshots",
            "Record snapshots built, one per new pool answer set",
            self.snapshots.clone(),
        );
        registry.register(
            "tcp_refused_connections",
            "TCP connections closed as soon as accepted because a connection limit was reached",
            self.tcp_refused.clone(),
        );
        registry.register(
            "tcp_accept_errors",
            "Errors accepting TCP connections (e.g. out of file descriptors), each followed by a pause",
            self.tcp_accept_errors.clone(),
        );
        registry.register("tcp_connections", "TCP connections open now", self.tcp_connections.clone());
        registry.register(
            "rrl_limited_responses",
            "UDP responses over the rate limit of their source prefix and kind, dropped or sent truncated",
            self.rrl_limited.clone(),
        );
        registry.register(
            "rrl_table_evictions",
            "Rate-limit buckets still limiting a prefix that were given to a new one (the table is full)",
            self.rrl_evictions.clone(),
        );
        registry.register(
            "dnssec_signatures",
            "DNSSEC signatures made (RRsets of a new answer version, cache misses, denials), not served from a cache",
            self.dnssec_signatures.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes() {
        let metrics = DnsMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics
            .queries
            .get_or_create(&QueryLabels {
                rcode: Rcode::nxdomain,
                qtype: Qtype::a,
                transport: Transport::Udp,
            })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"dns_queries_total{rcode="nxdomain",qtype="a",transport="udp"} 1"#),
            "{text}"
        );
        assert!(text.contains("dns_truncated_responses_total 0"), "{text}");
    }

    #[test]
    fn cached_counters_share_the_family() {
        let metrics = DnsMetrics::default();
        let counters = QueryCounters::new(&metrics);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        for _ in 0..3 {
            counters.inc(Rcode::badvers, Qtype::none, Transport::Tcp);
        }
        counters.inc(Rcode::noerror, Qtype::a, Transport::Udp);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"dns_queries_total{rcode="badvers",qtype="none",transport="tcp"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"dns_queries_total{rcode="noerror",qtype="a",transport="udp"} 1"#), "{text}");
        assert!(!text.contains("nxdomain"), "only label sets that occurred are listed: {text}");
    }
}
