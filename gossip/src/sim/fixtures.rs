//! Deterministic identities and observations for tests and simulations: node `i` always has the
//! same key, name and address, so runs and failures reproduce.

use std::net::{IpAddr, Ipv4Addr};

use spdu_keys::{PublicKey, SecretKey};

use crate::proto::{Member, NodeInfo, Observation, PeerReport};

/// The cluster id every fixture uses.
pub const CLUSTER: &str = "spdu-sim";

/// Node `i`'s key, derived from `i` alone.
pub fn secret_key(i: usize) -> SecretKey {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_bytes(&bytes)
}

/// Node `i`'s public key.
pub fn public_key(i: usize) -> PublicKey {
    secret_key(i).public()
}

/// Node `i`'s name.
pub fn name(i: usize) -> String {
    format!("n{i}")
}

/// Node `i`'s service address.
pub fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

/// The roster of nodes `0..n`.
pub fn roster(n: usize) -> Vec<Member> {
    (0..n).map(|i| Member { name: name(i), key: public_key(i) }).collect()
}

/// Identity and settings of node `i` at `incarnation`.
pub fn node_info(i: usize, incarnation: u64) -> NodeInfo {
    NodeInfo {
        key: secret_key(i),
        name: name(i),
        cluster: CLUSTER.to_owned(),
        incarnation,
        addresses: vec![address(i)],
        service_check: None,
    }
}

/// An observation by node `i` (incarnation 1, seq 1) reporting on each `(peer, reachable)`.
pub fn observation(i: usize, healthy: bool, reports: &[(usize, bool)]) -> Observation {
    let mut reports = reports.to_vec();
    // Canonical form: reports in key order.
    reports.sort_by_key(|(peer, _)| public_key(*peer));
    Observation {
        cluster: CLUSTER.to_owned(),
        observer: public_key(i),
        name: name(i),
        incarnation: 1,
        seq: 1,
        healthy,
        addresses: vec![address(i)],
        peers: reports
            .iter()
            .map(|&(peer, reachable)| PeerReport {
                key: public_key(peer),
                reachable,
                rtt_us: reachable.then_some(1000),
                for_ms: 0,
                service_ok: None,
                service_latency_us: None,
            })
            .collect(),
        service_check: None,
    }
}
