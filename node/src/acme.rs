//! ACME http-01 challenges answered on every site, with no state shared between sites.
//!
//! An ACME client on one site asks for a certificate; the CA fetches
//! `http://NAME/.well-known/acme-challenge/TOKEN` from whichever site DNS gives it. Every site
//! answers it the same way: the key authorization `TOKEN.THUMBPRINT` (RFC 8555 §8.1, §8.3), where
//! the thumbprint ([`thumbprint`]) is the account key's, public and the same for every token. So
//! a site needs only `[acme] thumbprint`; the account key stays where certificates are requested.
//!
//! Invariants: the listeners on `acme.listen` answer exactly `GET` and `HEAD` of
//! [`CHALLENGE_PREFIX`]`TOKEN` with TOKEN made of `[-_A-Za-z0-9]`, at most [`MAX_TOKEN_LEN`]
//! long, and no query: `200 text/plain` with the body `TOKEN.THUMBPRINT`. Any other method on
//! such a path is `405` (Allow: GET, HEAD); every other request is `404`. The path is matched as
//! sent, never percent-decoded. Requests are bounded by [`limits`]: one request per
//! connection, a head of at most 8 KiB (else 431), headers within 3 s, a cap on connections
//! per listener and per source. The thumbprint follows config reloads; the addresses need a
//! restart. Counted in `/metrics` as `spdu_acme_requests_total{result}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control;

pub mod thumbprint;

/// The path every challenge is under.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The longest token answered (CAs send 43 characters: 256 random bits in base64url).
pub const MAX_TOKEN_LEN: usize = 128;
/// Connections open at once on one listener.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one address on one listener.
pub const MAX_PER_SOURCE: usize = 16;
/// The most a request's head (request line and headers) may take.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Challenge requests answered, not found and refused; cheap to clone (clones count together).
#[derive(Clone, Debug, Default)]
pub struct AcmeMetrics {
    answered: Arc<AtomicU64>,
    not_found: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl AcmeMetrics {
    /// Challenges answered with the key authorization (200).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Requests for anything else (404, 405).
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }

    /// Connections closed unserved (over a connection cap).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Adds `acme_requests_total{result="answered|not_found|refused"}` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let requests = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (result, value) in
            [("answered", self.answered()), ("not_found", self.not_found()), ("refused", self.refused())]
        {
            requests.get_or_create(&vec![("result", result)]).inc_by(value);
        }
        registry.register(
            "acme_requests",
            "ACME http-01 requests: challenges answered, other requests (404/405), connections refused",
            requests,
        );
    }
}

/// The listeners' limits: anyone may connect (the CA's validation comes from anywhere), one
/// request per connection, small heads, connection caps.
pub fn limits(metrics: &AcmeMetrics) -> control::Limits {
    let anywhere = ["0.0.0.0/0", "::/0"].iter().filter_map(|n| n.parse().ok()).collect();
    control::Limits {
        max_connections: MAX_CONNECTIONS,
        max_per_source: MAX_PER_SOURCE,
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(5),
        label: "acme listener",
        max_header_bytes: Some(MAX_HEADER_BYTES),
        keep_alive: false,
        refused: metrics.refused.clone(),
        ..control::Limits::new(anywhere)
    }
}

/// A challenge token: `[-_A-Za-z0-9]`, 1 to [`MAX_TOKEN_LEN`] characters.
pub fn is_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Shared {
    config: watch::Receiver<Arc<Config>>,
    metrics: AcmeMetrics,
}

/// The router: every request goes to one handler, which answers challenges and nothing else.
/// The thumbprint is read from the config watch at each request (so it follows reloads).
pub fn router(config: watch::Receiver<Arc<Config>>, metrics: AcmeMetrics) -> axum::Router {
    axum::Router::new().fallback(challenge).with_state(Arc::new(Shared { config, metrics }))
}

async fn challenge(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let token = (uri.path().strip_prefix(CHALLENGE_PREFIX)).filter(|t| is_token(t) && uri.query().is_none());
    let thumbprint = shared.config.borrow().acme.as_ref().map(|a| a.thumbprint.clone());
    match (token, thumbprint) {
        (Some(token), Some(thumbprint)) if method == Method::GET || method == Method::HEAD => {
            shared.metrics.answered.fetch_add(1, Ordering::Relaxed);
            ([(header::CONTENT_TYPE, "text/plain")], format!("{token}.{thumbprint}")).into_response()
        }
        (Some(_), Some(_)) => {
            shared.metrics.not_found.fetch_add(1, Ordering::Relaxed);
            (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")], "method not allowed\n")
                .into_response()
        }
        _ => {
            shared.metrics.not_found.fetch_add(1, Ordering::Relaxed);
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
    }
}

/// Binds every address of `acme.listen`; an error names the field and the address.
pub async fn bind(listen: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for (i, addr) in listen.iter().enumerate() {
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("acme.listen[{i}]: cannot bind {addr}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves challenges on `listeners` until `shutdown`; ends with the first listener's error.
pub async fn serve(
    listeners: Vec<TcpListener>,
    config: watch::Receiver<Arc<Config>>,
    metrics: AcmeMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router(config, metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(control::serve(listener, router.clone(), limits(&metrics), shutdown.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)??;
    }
    Ok(())
}
