//! Membership for spdu: who is reachable, as signed by whom, and what to answer.
//!
//! # Layout
//!
//! - [`proto`]: the protocol core. Deterministic, no IO, no clock: it is fed `now`, messages and
//!   timer events and returns messages to send, timers to set and answer-set changes.
//! - [`net`]: the QUIC driver. One actor task owns the core, the endpoint, the connections and
//!   the timer queue; peers are pinned by key at the TLS handshake.
//! - `sim` (tests and the `sim` feature): a seeded discrete-event network that drives many cores.

pub mod net;
pub mod proto;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
