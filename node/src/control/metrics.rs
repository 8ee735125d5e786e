//! `/metrics`: the Prometheus registry, built per scrape from the live counters and the cached
//! view, and its two text formats.
//!
//! Naming follows Prometheus' conventions: every name starts with `spdu_`, counters end in
//! `_total`, quantities are in base units with the unit as suffix (`_seconds`, `_bytes`), and
//! per-peer gauges carry the peer's roster name as a label. The names are an interface (alert
//! rules in `packaging/alerts.yml`, dashboards): rename only with care.
//!
//! prometheus-client writes OpenMetrics; [`prometheus_text`] rewrites it into the classic text
//! format (0.0.4), which is served unless the scraper asks for OpenMetrics, so that `curl …/metrics
//! | promtool check metrics` checks what Prometheus reads.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use spdu_gossip::snapshot::ViewSnapshot;

use super::Shared;

/// The prefix of every metric name (`spdu_`).
pub(crate) const PREFIX: &str = "spdu";

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

type Labels = Vec<(&'static str, &'static str)>;
/// Per-node gauges: one label (`peer` or `site`) holding a roster name.
type NodeGauges = Family<Vec<(&'static str, String)>, Gauge>;
/// Per-node gauges in seconds.
type NodeSeconds = Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>;

pub(super) fn registry(shared: &Shared, snapshot: Option<&ViewSnapshot>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    shared.dns_metrics.register(&mut registry);
    shared.notify.register(&mut registry);
    shared.acme.register(&mut registry);

    // Constant 1, labelled with who this node is: alert rules join on it to pick this node's
    // own series out of the per-site ones (`and on(instance, site) spdu_node_info`).
    if let Some(snapshot) = snapshot {
        let info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        info.get_or_create(&vec![
            ("site", snapshot.name.clone()),
            ("cluster", snapshot.cluster.clone()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ])
        .set(1);
        registry.register("node_info", "This node: its site name, cluster and spdu version (always 1)", info);
    }

    let reloads = Family::<Labels, Counter>::default();
    reloads.get_or_create(&vec![("result", "ok")]).inc_by(shared.reloads.ok());
    reloads.get_or_create(&vec![("result", "refused")]).inc_by(shared.reloads.refused());
    registry.register("reloads", "Config reloads (SIGHUP) applied and refused", reloads);

    let net = shared.membership.metrics();
    let gossip = registry.sub_registry_with_prefix("gossip");
    gossip.register(
        "handshakes_refused",
        "QUIC handshakes refused: key not in the roster, or no handshake slot for the source",
        counter(net.handshakes_refused()),
    );
    gossip.register(
        "handshakes_retried",
        "QUIC handshakes asked to validate their address first (Retry, under pressure)",
        counter(net.handshakes_retried()),
    );
    gossip.register(
        "send_queue_dropped",
        "Gossip stream frames dropped: send queue full, or not taken by the peer in time",
        counter(net.send_queue_dropped()),
    );
    gossip.register(
        "send_coalesced",
        "Gossip stream frames not queued: an identical or superseding one was waiting",
        counter(net.send_coalesced()),
    );
    gossip.register(
        "streams_timed_out",
        "Incoming gossip streams dropped: not delivered in time",
        counter(net.streams_timed_out()),
    );
    gossip.register(
        "malformed_frames",
        "Gossip frames dropped because they did not decode",
        counter(net.malformed_frames()),
    );
    gossip.register("frames_received", "Gossip frames received and decoded", counter(net.frames_received()));
    gossip.register("frames_sent", "Gossip frames handed to QUIC", counter(net.frames_sent()));
    gossip.register_with_unit(
        "payload_sent",
        "Gossip payload handed to QUIC",
        Unit::Bytes,
        counter(net.bytes_sent()),
    );
    gossip.register(
        "udp_datagrams_sent",
        "UDP datagrams QUIC sent on peer connections (ACKs and handshakes included)",
        counter(net.udp_datagrams_sent()),
    );
    gossip.register_with_unit(
        "udp_sent",
        "UDP payload QUIC sent on peer connections (IP and UDP headers not included)",
        Unit::Bytes,
        counter(net.udp_bytes_sent()),
    );
    gossip.register(
        "connections_open",
        "Authenticated peer connections open now",
        gauge(net.connections_open()),
    );

    let Some(snapshot) = snapshot else { return registry };
    let stats = &snapshot.stats;
    gossip.register(
        "observations_accepted",
        "Signed observations accepted into the view",
        counter(stats.accepted),
    );
    let rejected = Family::<Labels, Counter>::default();
    for (reason, value) in [
        ("replayed", stats.replayed),
        ("malformed", stats.malformed),
        ("wrong_cluster", stats.wrong_cluster),
        ("unknown_observer", stats.unknown_observer),
        ("bad_signature", stats.bad_signature),
        ("self_conflict", stats.self_conflict),
        ("unknown_sender", stats.unknown_sender),
    ] {
        rejected.get_or_create(&vec![("reason", reason)]).inc_by(value);
    }
    gossip.register("observations_rejected", "Observations or messages refused, by reason", rejected);
    gossip.register(
        "observations_other_roster",
        "Observations accepted over another roster than this node's (kept and relayed, no vote)",
        counter(stats.other_roster),
    );

    let reachable = snapshot.nodes.iter().filter(|n| n.probe.as_ref().is_some_and(|p| p.reachable)).count();
    let live = snapshot.nodes.iter().filter(|n| n.observation.as_ref().is_some_and(|o| o.fresh)).count();
    gossip.register(
        "roster_nodes",
        "Nodes in the roster, this one included",
        gauge(snapshot.nodes.len() as u64),
    );
    gossip.register(
        "peers_reachable",
        "Peers this node's own probing sees reachable",
        gauge(reachable as u64),
    );
    gossip.register(
        "live_observers",
        "Observers whose newest observation is fresh, this node included",
        gauge(live as u64),
    );
    gossip.register(
        "answer_members",
        "Sites that qualify for this node's DNS answer",
        gauge(snapshot.answer.members.len() as u64),
    );
    gossip.register(
        "answer_changes",
        "Changes of the answer (qualifying sites or any name's answer) since start",
        counter(snapshot.answer.version),
    );

    // Per site and per peer, labelled with the roster name, for alerts that name the site.
    let in_answer = NodeGauges::default();
    let peer_reachable = NodeGauges::default();
    let peer_rtt = NodeSeconds::default();
    let roster_agrees = NodeGauges::default();
    let policy_agrees = NodeGauges::default();
    for node in &snapshot.nodes {
        in_answer.get_or_create(&vec![("site", node.name.clone())]).set(i64::from(node.in_answer));
        if node.is_self {
            continue;
        }
        let peer = vec![("peer", node.name.clone())];
        if let Some(probe) = &node.probe {
            peer_reachable.get_or_create(&peer).set(i64::from(probe.reachable));
            if let Some(us) = probe.rtt_us {
                peer_rtt.get_or_create(&peer).set(us as f64 / 1e6);
            }
        }
        if let Some(o) = &node.observation {
            roster_agrees.get_or_create(&peer).set(i64::from(o.same_roster));
            // An all-zero digest is an older node's, which signs none: no statement either way.
            if o.observation.policy != Default::default() {
                policy_agrees.get_or_create(&peer).set(i64::from(o.observation.policy == snapshot.policy));
            }
        }
    }
    gossip.register(
        "site_in_answer",
        "Whether the site qualifies for this node's DNS answer (1) or not (0), this node's included",
        in_answer,
    );
    gossip.register(
        "peer_reachable",
        "Whether this node's own probing reaches the peer (1) or not (0)",
        peer_reachable,
    );
    gossip.register_with_unit("peer_rtt", "Smoothed round-trip time to the peer", Unit::Seconds, peer_rtt);
    gossip.register(
        "peer_roster_agrees",
        "Whether the peer's newest observation is over this node's roster (1) or another (0)",
        roster_agrees,
    );
    gossip.register(
        "peer_policy_agrees",
        "Whether the peer's failover policies have the same digest as this node's (1) or not (0)",
        policy_agrees,
    );

    // Service checks: this node's own (site = its name) and its probes of peers' services.
    let health_ok = NodeGauges::default();
    let health_latency = NodeSeconds::default();
    for node in &snapshot.nodes {
        let Some(health) = &node.health else { continue };
        let labels = vec![("site", node.name.clone())];
        health_ok.get_or_create(&labels).set(i64::from(health.ok));
        if let Some(us) = health.latency_us {
            health_latency.get_or_create(&labels).set(us as f64 / 1e6);
        }
    }
    let health = registry.sub_registry_with_prefix("health");
    health.register(
        "ok",
        "Service check verdict (1 healthy): this node's own check, or its probing of a peer's service",
        health_ok,
    );
    health.register_with_unit(
        "latency",
        "Duration of the latest service check (for HTTP, the whole fetch)",
        Unit::Seconds,
        health_latency,
    );
    registry
}

/// Rewrites prometheus-client's OpenMetrics exposition into the Prometheus text format 0.0.4:
/// a counter family is named with its `_total` suffix, `# UNIT` lines and `# EOF` are dropped.
/// Samples, labels and escaping are the same in both formats for counters and gauges (the only
/// metric types registered here).
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)))
            .and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail)));
        match descriptor {
            Some((p, name, tail)) if counters.contains(name) => {
                out.push_str(&format!("{p}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counters_take_their_total_name_and_openmetrics_only_lines_go() {
        let om = "# HELP spdu_dns_queries DNS queries.\n# TYPE spdu_dns_queries counter\n\
                  spdu_dns_queries_total{rcode=\"noerror\"} 3\n\
                  # HELP spdu_gossip_peer_rtt_seconds RTT.\n# TYPE spdu_gossip_peer_rtt_seconds gauge\n\
                  # UNIT spdu_gossip_peer_rtt_seconds seconds\n\
                  spdu_gossip_peer_rtt_seconds{peer=\"beta\"} 0.0012\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP spdu_dns_queries_total DNS queries.\n# TYPE spdu_dns_queries_total counter\n\
             spdu_dns_queries_total{rcode=\"noerror\"} 3\n\
             # HELP spdu_gossip_peer_rtt_seconds RTT.\n# TYPE spdu_gossip_peer_rtt_seconds gauge\n\
             spdu_gossip_peer_rtt_seconds{peer=\"beta\"} 0.0012\n"
        );
    }
}
