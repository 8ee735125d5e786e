//! Authoritative DNS for the spdu pool zone, on hickory-server.
//!
//! Each site's node runs one [`DnsServer`] for the delegated pool zone (`pool.example.com`).
//! It answers the configured pool names with whatever [`PoolAnswers`] the node last published on
//! a `tokio::sync::watch` channel, and answers everything else the way an authoritative server
//! must: SOA and NS at the apex, NXDOMAIN / NODATA with the SOA for negative caching, REFUSED
//! outside the zone, NOTIMP for other opcodes, FORMERR for anything but one question, minimal
//! RFC 8482 answers to ANY, EDNS echoed, TC over UDP when the answer does not fit.
//! This crate holds no membership logic: it is a thin layer over the node's answer snapshot.
//!
//! # Layout
//!
//! - `zone`: [`ZoneConfig`], its validation, and the compiled zone (names, empty
//!   non-terminals, apex records).
//! - `answer`: [`PoolAnswers`], the per-version record snapshot, and the pure lookup
//!   (question → outcome), unit-tested without sockets.
//! - `handler`: the hickory `RequestHandler`: header checks, EDNS, rotation, metrics; and the
//!   whole raw-message-to-raw-response path (fast path first over UDP).
//! - `fast`: the UDP fast path: plain queries parsed without allocating and answered from
//!   responses encoded once per answer version (by the handler itself).
//! - `udp`: one receive-and-answer loop per UDP socket (hickory's listener serves TCP).
//! - `server`: [`DnsServer`]: binding UDP+TCP, serving until the shutdown token fires.
//! - `metrics`: [`DnsMetrics`], prometheus-client counters.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), spdu_dnsfront::DnsError> {
//! use std::sync::Arc;
//! use spdu_dnsfront::{DnsMetrics, DnsServer, PoolAnswers, ZoneConfig};
//!
//! let zone = ZoneConfig {
//!     origin: "pool.example.com".into(),
//!     names: vec!["api".into()],
//!     ttl: 5,
//!     nameservers: vec!["alpha.example.com".into(), "beta.example.com".into()],
//! };
//! let (tx, rx) = tokio::sync::watch::channel(Arc::new(PoolAnswers {
//!     serial: 1,
//!     addrs: vec!["192.0.2.10".parse().unwrap()],
//! }));
//! let server = DnsServer::bind(zone, &["127.0.0.1:0".parse().unwrap()], rx, DnsMetrics::default()).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(server.run(shutdown.clone()));
//! // ... later, when membership changes:
//! tx.send_replace(Arc::new(PoolAnswers { serial: 2, addrs: vec![] }));
//! shutdown.cancel();
//! # Ok(()) }
//! ```

mod answer;
mod fast;
mod handler;
mod metrics;
#[doc(hidden)]
pub mod offline;
mod server;
mod udp;
mod zone;

pub use answer::PoolAnswers;
pub use metrics::DnsMetrics;
pub use server::{DnsError, DnsServer, Transport};
pub use zone::{ZoneConfig, ZoneError};
