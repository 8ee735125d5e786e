//! Deterministic identities and observations for tests and simulations: node `i` always has the
//! same key, name and address, so runs and failures reproduce.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use spdu_keys::{PublicKey, SecretKey};

use crate::proto::{AddressPin, Bitmap, Member, NodeInfo, Observation, Roster};

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

/// Node `i`'s roster entry: its gossip address is on its service address, which is its one pin.
pub fn member(i: usize) -> Member {
    Member {
        name: name(i),
        key: public_key(i),
        gossip: Some(SocketAddr::new(address(i), 7946)),
        addresses: vec![AddressPin::host(address(i))],
    }
}

/// The roster of nodes `0..n`.
pub fn roster(n: usize) -> Vec<Member> {
    (0..n).map(member).collect()
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
        observed_address: false,
    }
}

/// The roster of nodes `0..n`, as observations index it.
pub fn roster_of(n: usize) -> Roster {
    Roster::new((0..n).map(public_key))
}

/// An observation by node `i` of the roster `0..n` (incarnation 1, seq 1), reporting each
/// `(peer, reachable)` (peers not listed: unreachable).
pub fn observation(i: usize, n: usize, healthy: bool, reports: &[(usize, bool)]) -> Observation {
    let roster = roster_of(n);
    let mut reachable = Bitmap::new(n);
    for &(peer, up) in reports {
        reachable.set(roster.index(&public_key(peer)).expect("peer in the roster"), up);
    }
    Observation {
        cluster: CLUSTER.to_owned(),
        observer: public_key(i),
        name: name(i),
        incarnation: 1,
        seq: 1,
        healthy,
        addresses: vec![address(i)],
        service_check: None,
        roster: roster.id(),
        reachable,
        service_probed: Bitmap::new(n),
        service_ok: Bitmap::new(n),
        policy: Default::default(),
        observed: None,
    }
}
