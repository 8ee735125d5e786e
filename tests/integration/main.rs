//! Integration tests: real `spdu` processes on loopback, real DNS clients, real QUIC.
//!
//! One test binary (see node/Cargo.toml). Each test uses its own 127.0.N.0/24 block so tests can
//! run in parallel without port clashes. The network-namespace scenarios (`netns`) need root and
//! skip loudly without it.

mod acme;
mod adversarial;
mod anycast;
mod bad_config;
mod cli;
mod cluster;
mod cookies;
mod dnssec;
mod dynamic_address;
mod health;
mod hostile_dns;
mod hostile_gossip;
mod hostile_node;
mod monitoring;
mod netns;
mod notify;
mod policy;
mod reload;
mod rrl;
mod status_page;
mod systemd;
mod testing;
