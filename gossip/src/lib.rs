//! Membership for spdu: who is reachable, as signed by whom, and what to answer.
//!
//! # Layout
//!
//! - [`proto`]: the protocol core. Deterministic, no IO, no clock: it is fed `now`, messages,
//!   check results and timeouts, and its outputs (messages to send, answer-set, probe-target and
//!   incarnation changes) are polled from it.
//! - [`snapshot`]: what `spdu peers` shows, built from the core's accessors.
//! - [`net`]: the QUIC driver. One actor task owns the core, the endpoint and the connections
//!   and sleeps until the core's next timeout; peers are pinned by key at the TLS handshake.
//! - `sim` (tests and the `sim` feature): a seeded discrete-event network that drives many cores.
//!
//! The why of it all (security model, answer rule, messages, timers, freshness, budgets, wire
//! format and its versioning) is in `docs/design.md` at the repository's root.

pub mod net;
pub mod proto;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod snapshot;
