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
//! - [`health`]: runs this site's service check and probes the peers' advertised services.
//! - [`control`]: the local HTTP control endpoint (`/v1/peers`, `/metrics`, `/healthz`).
//! - [`peers`]: `spdu peers`: fetches and prints the signed view.
//! - [`cluster`]: [`cluster::LocalCluster`], real `spdu run` processes on 127.0.0.x, for the
//!   demo and the integration tests.
//! - [`demo`]: `spdu demo`: a site loss and recovery, live.
//!
//! The binary (`main.rs`) only parses the command line and calls into these modules.

pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod incarnation;
pub mod peers;
pub mod run;
