//! The DNS front's counters, for the node's prometheus-client registry.
//!
//! Owns [`DnsMetrics`]. Clones share the same counters, so the node can keep one handle to
//! register and hand another to the server. Counting never fails and never blocks the query path
//! for long (one hashed label lookup per response).

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

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

/// Transport the query came over.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Transport {
    udp,
    tcp,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueryLabels {
    pub(crate) rcode: Rcode,
    pub(crate) qtype: Qtype,
    pub(crate) transport: Transport,
}

/// Counters of the DNS front, registered in the node's prometheus-client `Registry`.
///
/// Malformed packets whose header cannot be read are dropped by hickory-server before they reach
/// us and are not counted; malformed packets with a readable header are answered FORMERR by
/// hickory-server itself, also uncounted. FORMERR counted here is for well-formed messages with
/// zero or several questions.
#[derive(Clone, Default, Debug)]
pub struct DnsMetrics {
    pub(crate) queries: Family<QueryLabels, Counter>,
    pub(crate) truncated: Counter,
    pub(crate) send_errors: Counter,
    pub(crate) snapshots: Counter,
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
            "Responses that could not be encoded or sent",
            self.send_errors.clone(),
        );
        registry.register(
            "answer_snapshots",
            "Record snapshots built, one per new pool answer set",
            self.snapshots.clone(),
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
                transport: Transport::udp,
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
}
