//! The local control endpoint (HTTP on `node.control`): what `spdu peers` and monitoring read.
//!
//! - `GET /v1/peers`: the node's signed view ([`ViewSnapshot`] as JSON). Keys are tokens and
//!   every observation carries its signed body (base64) and signature, so it can be verified
//!   independently of this node.
//! - `GET /metrics`: Prometheus text (OpenMetrics if asked for): DNS counters, gossip counters,
//!   transport counters, per-peer gauges, config reloads (`spdu_reloads_total{result}`),
//!   notification hooks, ACME challenge requests (`spdu_acme_requests_total{result}`), all
//!   named `spdu_…`. A registry is built per scrape from the live
//!   counters.
//! - `GET /v1/explain/{name}`: why a pool name answers what it does (`Explanation` as JSON);
//!   the name in any spelling of a configured one ([`PoolNames`]), else 404 with a JSON error.
//! - `GET /healthz`: `ok` while the membership actor runs (O(1), no view built).
//! - `GET /` (and `/index.html`): the status page (`status`), which reads the JSON above.
//! - `GET /v1/zone`: the pool zone as an RFC 1035 master file (text/plain), rendered from what
//!   DNS serves right now ([`AnswerPublisher::zone_file`]).
//! - `GET /v1/anycast`: whether this site should announce its anycast prefixes
//!   (`spdu_gossip::proto::AnycastVerdict` as JSON, with the node's `name`), what `spdu exabgp`
//!   polls.
//! - `GET /v1/events`: `{"events": [...]}`, the node's last events, oldest first
//!   ([`crate::events`]).
//!
//! It only reads; nothing here changes the node's state. The view is not secret, but it is not
//! for everyone: off loopback, only the networks in `node.control_allow` are served
//! ([`serve`]). Every request is answered from one cached view, rebuilt at most every
//! [`VIEW_MAX_AGE`]: a burst of requests costs the membership actor one snapshot. Explanations
//! are cached the same way, one per configured name (an unknown name never reaches the actor).
//!
//! - [`serve`]: the listener (allow-list, connection caps, header-read and idle timeouts).
//! - `metrics`: the `/metrics` registry.
//! - `names`: [`PoolNames`], which configured name an asked one is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use spdu_dnsfront::{AnswerPublisher, DnsMetrics};
use spdu_gossip::net::Membership;
use spdu_gossip::snapshot::ViewSnapshot;

mod metrics;
mod names;
mod serve;
mod status;

pub use names::PoolNames;
pub use serve::{Limits, serve};

/// How old a cached view may be when a request is answered from it.
pub const VIEW_MAX_AGE: Duration = Duration::from_millis(250);

/// One view, encoded once for every request that reads it.
struct CachedView {
    /// When it was taken.
    taken: Instant,
    /// `None` once membership has stopped.
    snapshot: Option<ViewSnapshot>,
    /// `/v1/peers`'s body (pretty JSON, so that `spdu peers --json` and curl show it as sent).
    json: Result<String, String>,
}

/// One name's explanation, encoded once for every request that reads it.
struct CachedExplanation {
    /// When it was taken.
    taken: Instant,
    /// Its body (pretty JSON); `None` when membership gave none (stopped, or no such rule).
    json: Option<Result<String, String>>,
}

/// What the handlers read.
struct Shared {
    membership: Membership,
    dns_metrics: DnsMetrics,
    /// The newest view; requests that find it too old wait on this lock while one of them
    /// rebuilds it, then all share the result.
    view: tokio::sync::Mutex<Option<Arc<CachedView>>>,
    /// The configured pool names.
    names: PoolNames,
    /// Reloads applied and refused (`reloads_total`).
    reloads: crate::reload::Reloads,
    /// The newest explanation of each configured name that was asked for (at most one entry
    /// per configured name), shared like the view.
    explained: tokio::sync::Mutex<HashMap<String, Arc<CachedExplanation>>>,
    /// What DNS serves, for `/v1/zone`.
    zone: AnswerPublisher,
    /// The node's event log (`/v1/events`).
    events: crate::events::EventLog,
    /// The notification hooks' counters (`/metrics`).
    notify: crate::notify::NotifyMetrics,
    /// The ACME challenge counters (`/metrics`).
    acme: crate::acme::AcmeMetrics,
}

impl Shared {
    async fn view(&self) -> Arc<CachedView> {
        let mut cached = self.view.lock().await;
        if let Some(view) = cached.as_ref().filter(|v| v.taken.elapsed() < VIEW_MAX_AGE) {
            return view.clone();
        }
        let snapshot = self.membership.snapshot().await;
        let json = match &snapshot {
            Some(s) => serde_json::to_string_pretty(s).map(|j| j + "\n").map_err(|e| e.to_string()),
            None => Err("membership stopped".to_owned()),
        };
        let view = Arc::new(CachedView { taken: Instant::now(), snapshot, json });
        *cached = Some(view.clone());
        view
    }

    /// The explanation of `name`, one of [`Self::names`]' configured spellings.
    async fn explanation(&self, name: &str) -> Arc<CachedExplanation> {
        let mut cached = self.explained.lock().await;
        if let Some(entry) = cached.get(name).filter(|e| e.taken.elapsed() < VIEW_MAX_AGE) {
            return entry.clone();
        }
        let json = self
            .membership
            .explain(name.to_owned())
            .await
            .map(|e| serde_json::to_string_pretty(&e).map(|j| j + "\n").map_err(|e| e.to_string()));
        let entry = Arc::new(CachedExplanation { taken: Instant::now(), json });
        cached.insert(name.to_owned(), entry.clone());
        entry
    }
}

/// What the control endpoint reads besides membership.
pub struct Sources {
    /// DNS counters (`/metrics`).
    pub dns_metrics: DnsMetrics,
    /// The configured pool names (following reloads).
    pub names: PoolNames,
    /// The publisher DNS serves from (`/v1/zone`).
    pub zone: AnswerPublisher,
    /// The node's event log (`/v1/events`).
    pub events: crate::events::EventLog,
    /// The notification hooks' counters (`/metrics`).
    pub notify: crate::notify::NotifyMetrics,
    /// The reload counters (`/metrics`).
    pub reloads: crate::reload::Reloads,
    /// The ACME challenge counters (`/metrics`).
    pub acme: crate::acme::AcmeMetrics,
}

/// The HTTP router for the control endpoint.
pub fn router(membership: Membership, sources: Sources) -> axum::Router {
    let Sources { dns_metrics, names, zone, events, notify, reloads, acme } = sources;
    axum::Router::new()
        .route("/", get(status::page))
        .route("/index.html", get(status::page))
        .route("/favicon.ico", get(status::favicon))
        .route("/v1/peers", get(peers))
        .route("/v1/events", get(events_json))
        .route("/v1/anycast", get(anycast))
        .route("/v1/explain/{name}", get(explain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/v1/zone", get(zone_file))
        .with_state(Arc::new(Shared {
            membership,
            dns_metrics,
            view: tokio::sync::Mutex::new(None),
            names,
            reloads,
            explained: tokio::sync::Mutex::new(HashMap::new()),
            zone,
            events,
            notify,
            acme,
        }))
}

fn stopped() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "membership stopped\n").into_response()
}

async fn peers(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.view().await;
    match (&view.snapshot, &view.json) {
        (None, _) => stopped(),
        (Some(_), Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        (Some(_), Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the view: {e}\n")).into_response()
        }
    }
}

async fn anycast(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.view().await;
    let Some(snapshot) = &view.snapshot else { return stopped() };
    let mut body = serde_json::json!(snapshot.anycast);
    body["name"] = serde_json::Value::String(snapshot.name.clone());
    axum::Json(body).into_response()
}

async fn explain(State(shared): State<Arc<Shared>>, Path(asked): Path<String>) -> Response {
    let Some(name) = shared.names.find(&asked) else { return unknown_name(&shared.names, &asked) };
    let explained = shared.explanation(&name).await;
    match &explained.json {
        Some(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Some(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the explanation: {e}\n")).into_response()
        }
        None if !shared.membership.is_alive() => stopped(),
        None => unknown_name(&shared.names, &asked),
    }
}

/// 404 with a JSON error naming the configured names.
fn unknown_name(names: &PoolNames, asked: &str) -> Response {
    let asked: String = crate::text::escape(asked).chars().take(100).collect();
    let error = format!("no pool name \"{asked}\" here (the names are: {})", names.list().join(", "));
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

async fn events_json(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::json!({ "events": shared.events.recent() })).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    // O(1): the actor ran its loop lately; no view is built.
    if shared.membership.is_alive() { "ok\n".into_response() } else { stopped() }
}

async fn zone_file(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], shared.zone.zone_file()).into_response()
}

/// OpenMetrics when the scraper's `Accept` asks for it (Prometheus does), else the classic text
/// format (curl, `promtool check metrics`).
async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let view = shared.view().await;
    let registry = metrics::registry(&shared, view.snapshot.as_ref());
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")).into_response();
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            metrics::prometheus_text(&text),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use spdu_gossip::net::Settings;
    use spdu_gossip::proto::{self, Policy, PolicyConfig, Rule};
    use spdu_keys::SecretKey;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::explain::fetch_explanation;

    /// A real node alone on loopback (random ports) with `api` (all) and `www` (priority), and its
    /// control endpoint; asked through `spdu explain`'s client.
    #[tokio::test]
    async fn explain_answers_configured_names_in_any_spelling_and_refuses_others() {
        let mut www = Rule::all("www", 30);
        www.policy = Policy::Priority;
        www.ttl_degraded = 2;
        let protocol = proto::Config {
            policy: PolicyConfig { rules: vec![Rule::all("api", 5), www], sites: Default::default() },
            ..proto::Config::default()
        };
        let bound = spdu_gossip::net::Membership::bind(Settings {
            key: SecretKey::from_bytes(&[7; 32]),
            name: "alpha".into(),
            cluster: "pool.example.test".into(),
            incarnation: 1,
            listen: "127.0.0.1:0".parse().unwrap(),
            addresses: vec!["192.0.2.1".parse().unwrap()],
            peers: vec![],
            protocol,
            service_check: None,
            observed_address: false,
        })
        .unwrap();
        let membership = bound.membership();
        let shutdown = CancellationToken::new();
        let node = tokio::spawn(bound.run(shutdown.clone()));
        let zone = spdu_dnsfront::ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "www".into()],
            ttl: 5,
            nameservers: vec!["ns.example.net".into()],
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = listener.local_addr().unwrap();
        let initial = spdu_dnsfront::PoolAnswers::same_for_all(1, 2, 5, vec!["192.0.2.1".parse().unwrap()]);
        let sources = Sources {
            dns_metrics: DnsMetrics::default(),
            names: PoolNames::new(&zone),
            zone: AnswerPublisher::new(&zone, initial, DnsMetrics::default()).unwrap(),
            events: crate::events::EventLog::new("alpha".into(), "pool.example.test".into()),
            notify: Default::default(),
            reloads: Default::default(),
            acme: Default::default(),
        };
        let app = router(membership, sources);
        let server = tokio::spawn(serve(listener, app, Limits::new(vec![]), shutdown.clone()));

        for asked in ["www", "WWW", "www.pool.example.test", "www.Pool.Example.Test."] {
            let json = fetch_explanation(control, asked).await.unwrap();
            let e: spdu_gossip::snapshot::Explanation = serde_json::from_str(&json).unwrap();
            assert_eq!((e.name.as_str(), e.policy, e.ttl, e.ttl_degraded), ("www", Policy::Priority, 30, 2));
            assert_eq!(e.sites.len(), 1);
            assert!(e.sites[0].is_self && e.sites[0].in_answer, "{json}");
            let table = crate::explain::render_table(&json).unwrap();
            assert!(table.starts_with("www: policy priority, TTL now 30"), "{table}");
        }
        for asked in ["nope", "api.other.example.", "a/b", &"x".repeat(400)] {
            let e = format!("{:#}", fetch_explanation(control, asked).await.unwrap_err());
            assert!(e.contains("no pool name") && e.contains("(the names are: api, www)"), "{asked}: {e}");
        }
        let e = format!("{:#}", fetch_explanation(control, "nope").await.unwrap_err());
        assert_eq!(e, "no pool name \"nope\" here (the names are: api, www)");

        shutdown.cancel();
        node.await.unwrap();
        server.await.unwrap().unwrap();
    }
}
