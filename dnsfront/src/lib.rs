//! Authoritative DNS for the spdu pool zone, on hickory-server.
//!
//! Each site's node runs one [`DnsServer`] for the delegated pool zone (`pool.example.com`).
//! It answers each configured pool name with what the [`PoolAnswers`] the node last published
//! through its [`AnswerPublisher`] say for it (its sites' addresses, its TTL, and per response
//! every address, a rotating window of them, or sites drawn by weight: [`Pick`]), and answers
//! everything else the way an authoritative server must: SOA and NS at the apex, NXDOMAIN /
//! NODATA with the SOA for negative caching, REFUSED outside the zone, NOTIMP for other
//! opcodes, FORMERR for anything but one question, minimal RFC 8482 answers to ANY, EDNS
//! echoed, TC when the answer does not fit (UDP payload size, or 65,535 bytes over TCP),
//! FORMERR for a malformed COOKIE option, DNS cookies (RFC 7873, RFC 9018 server cookies:
//! a fresh server cookie for every client cookie, BADCOOKIE over UDP for a bad server cookie;
//! [`DnsServer::with_cookies`] turns them off). TCP connections are limited in total and per
//! source ([`TcpLimits`]); UDP responses per source prefix and response kind ([`RrlConfig`],
//! response rate limiting, off unless [`DnsServer::with_rrl`] turns it on; a query with a valid
//! server cookie is exempt).
//! This crate holds no membership or policy logic: it is a thin layer over the node's answer
//! snapshot (which sites a name answers with is decided by the node, with `spdu-policy`).
//!
//! # Layout
//!
//! Dependencies point down this list only (no two modules import each other):
//!
//! - `offline`: the request path without sockets, for fuzzing.
//! - `server`: [`DnsServer`]: binding UDP+TCP, serving until the shutdown token fires.
//! - `udp`: one receive-and-answer loop per UDP socket, in `recvmmsg`/`sendmmsg` batches.
//! - `tcp`: the TCP accept loop and one task per connection (RFC 7766 framing, idle timeouts).
//! - `limits`: [`TcpLimits`] and the table of open TCP connections (total and per source).
//! - `handler`: the request path, raw message in, raw response out (or held back by `rrl`),
//!   counted.
//! - `rrl`: [`RrlConfig`] and the response rate limiter: a fixed table of token buckets per
//!   source prefix and response kind; the slip (TC-only) form of a response.
//! - `publish`: [`AnswerPublisher`]: the node publishes [`PoolAnswers`]; everything served for
//!   them (records, the fast path's encoded responses) is built there, not per query.
//! - `fast`: the UDP fast path: plain queries parsed without allocating and answered from the
//!   responses encoded at publish time (one per rotation start, or per site drawn first).
//! - `response`: what a response says (rcode, records, EDNS, COOKIE checks) and its encoding,
//!   with truncation; used by the slow path and to build the fast path's table.
//! - [`dnssec`]: online DNSSEC signing (RFC 8901 multi-signer): zone keys, the DS, the
//!   per-version signature window and RRSIG cache, RFC 9824 compact denial; `response` signs
//!   a plan with it, `fast` keeps the signed positive answers.
//! - `cookie`: DNS cookies (RFC 7873) with RFC 9018 server cookies: the site's rotating
//!   secrets, the verdict on a query's COOKIE option, the server cookies issued.
//! - `choose`: the live per-query choices: rotation counters, weighted draws from a per-thread
//!   RNG seeded from the OS.
//! - `answer`: [`PoolAnswers`], the per-version record snapshot, what one response picks from
//!   a name's records, and the pure lookup (question → outcome), unit-tested without sockets.
//! - `master`: the zone as an RFC 1035 master file ([`AnswerPublisher::zone_file`]).
//! - `zone`: [`ZoneConfig`], its validation, and the compiled zone (names, empty
//!   non-terminals, apex records).
//! - `metrics`: [`DnsMetrics`], prometheus-client counters.
//! - `transport`: [`Transport`], UDP or TCP.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spdu_dnsfront::{
//!     AnswerPublisher, DnsMetrics, DnsServer, NameAnswers, Pick, PoolAnswers, SiteAddrs, ZoneConfig,
//! };
//!
//! let zone = ZoneConfig {
//!     origin: "pool.example.com".into(),
//!     names: vec!["api".into()],
//!     ttl: 5,
//!     nameservers: vec!["alpha.example.com".into(), "beta.example.com".into()],
//! };
//! // Every name answers with this address, TTL 5.
//! let initial = PoolAnswers::same_for_all(1, zone.names.len(), 5, vec!["192.0.2.10".parse().unwrap()]);
//! let answers = AnswerPublisher::new(&zone, initial, DnsMetrics::default())?;
//! let server = DnsServer::bind(&answers, &["127.0.0.1:0".parse().unwrap()]).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(server.run(shutdown.clone()));
//! // ... later, per name: its sites, its TTL and what each response takes.
//! answers.publish(PoolAnswers {
//!     serial: 2,
//!     names: vec![NameAnswers {
//!         ttl: 30,
//!         sites: vec![
//!             SiteAddrs { addrs: vec!["192.0.2.10".parse().unwrap()], weight: 100 },
//!             SiteAddrs { addrs: vec!["198.51.100.7".parse().unwrap()], weight: 50 },
//!         ],
//!         pick: Pick::Weighted { max: 1 },
//!     }],
//! });
//! shutdown.cancel();
//! # Ok(()) }
//! ```

mod answer;
mod choose;
mod cookie;
pub mod dnssec;
mod fast;
mod handler;
mod limits;
mod master;
mod metrics;
#[doc(hidden)]
pub mod offline;
mod publish;
mod response;
mod rrl;
mod server;
mod tcp;
mod transport;
mod udp;
mod zone;

pub use answer::{MAX_RECORDS_PER_RRSET, NameAnswers, PoolAnswers, SiteAddrs};
pub use limits::TcpLimits;
pub use metrics::DnsMetrics;
pub use publish::{AnswerPublisher, ServedAnswers};
pub use rrl::RrlConfig;
pub use server::{DnsError, DnsServer};
pub use spdu_policy::Pick;
pub use transport::Transport;
pub use zone::{ZoneConfig, ZoneError};
