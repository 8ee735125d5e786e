//! The `spdu` node: config, CLI commands and the wiring of membership, DNS and control.
//!
//! # Layout
//!
//! - [`config`]: the TOML config, its defaults and its validation (every error names the file,
//!   the field and, for TOML mistakes, the line).
//! - [`incarnation`]: the per-start number persisted next to the key, so that a restarted
//!   node's observations supersede its old ones.
//! - [`run`]: `spdu run`: binds QUIC, DNS and the control endpoint, then runs them under one
//!   cancellation token until SIGINT/SIGTERM; bridges the membership answer set into DNS.
//! - [`dns_runtime`]: the DNS server on a tokio runtime of its own (DNS load never delays gossip).
//! - [`reload`]: SIGHUP re-reads the config and applies it without a restart (or refuses it,
//!   naming the field, and keeps the running one); the config watch the other parts follow.
//! - [`health`]: runs this site's service check ([`health::check`]) and schedules the probes of
//!   the peers' advertised services ([`health::schedule`]).
//! - [`events`]: the event log (answer, peer, health and roster changes as this node sees
//!   them) and its producer task; `/v1/events` and the notification hooks read it.
//! - [`notify`]: the `[[notify]]` hooks: per-hook bounded queues and delivery workers (HTTP
//!   POST, signed, or a command), never blocking the node.
//! - [`dnssec_keys`]: the site's DNSSEC zone-signing key file (`spdu dnssec-keygen`).
//! - [`dns_client`]: the one DNS client (the `dns` check; the local-cluster harness).
//! - [`control`]: the local HTTP control endpoint (`/v1/peers`, `/v1/explain/{name}`, `/metrics`,
//!   `/healthz`).
//! - [`peers`]: `spdu peers`: fetches and prints the signed view.
//! - [`explain`]: `spdu explain NAME`: fetches and prints why a pool name answers what it does.
//! - [`check_health`]: `spdu check-health`: a Nagios / Icinga plugin over the signed view.
//! - [`zone`]: `spdu zone`: fetches and prints the pool zone as a master file.
//! - [`limits`]: raises the open-files limit at start.
//! - [`text`]: escaping peer-supplied text for the terminal.
//! - [`systemd`]: readiness, status, reload and watchdog notifications to systemd;
//!   [`manual`]: `spdu man`, the manual page generated from the command line.
//!
//! The binary (`main.rs`) only parses the command line and calls into these modules. The
//! local-cluster harness and the demo live in the `spdu-cluster` crate, never linked into
//! `spdu run`.

pub mod check_health;
pub mod config;
pub mod control;
pub mod dns_client;
pub mod dns_runtime;
pub mod dnssec_keys;
pub mod events;
pub mod explain;
pub mod health;
pub mod incarnation;
pub mod limits;
pub mod manual;
pub mod notify;
pub mod peers;
pub mod reload;
pub mod run;
pub mod systemd;
pub mod text;
pub mod zone;
