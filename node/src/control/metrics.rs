//! `/metrics`: the Prometheus / OpenMetrics registry, built per scrape from the live counters
//! and the cached view.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use spdu_gossip::snapshot::ViewSnapshot;

use super::Shared;

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

pub(super) fn registry(shared: &Shared, snapshot: Option<&ViewSnapshot>) -> Registry {
    let mut registry = Registry::default();
    shared.dns_metrics.register(&mut registry);

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
    gossip.register("bytes_sent", "Gossip payload bytes handed to QUIC", counter(net.bytes_sent()));
    gossip.register(
        "udp_datagrams_sent",
        "UDP datagrams QUIC sent on peer connections (ACKs and handshakes included)",
        counter(net.udp_datagrams_sent()),
    );
    gossip.register(
        "udp_bytes_sent",
        "UDP payload bytes QUIC sent on peer connections (IP and UDP headers not included)",
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
        "Nodes in this node's DNS answer",
        gauge(snapshot.answer.members.len() as u64),
    );
    gossip.register(
        "answer_version",
        "Changes of the answer set since start",
        gauge(snapshot.answer.version),
    );

    // Service checks: this node's own (node = its name) and its probes of peers' services.
    let health_ok = Family::<Vec<(String, String)>, Gauge>::default();
    let health_latency = Family::<Vec<(String, String)>, Gauge>::default();
    for node in &snapshot.nodes {
        let Some(health) = &node.health else { continue };
        let labels = vec![("node".to_owned(), node.name.clone())];
        health_ok.get_or_create(&labels).set(i64::from(health.ok));
        if let Some(us) = health.latency_us {
            health_latency.get_or_create(&labels).set(i64::try_from(us).unwrap_or(i64::MAX));
        }
    }
    let health = registry.sub_registry_with_prefix("health");
    health.register(
        "ok",
        "Service check verdict (1 healthy): this node's own check, or its probing of a peer's service",
        health_ok,
    );
    health.register(
        "latency_microseconds",
        "Duration of the latest service check (for HTTP, the whole fetch)",
        health_latency,
    );
    registry
}
