//! Where this node's peers see its connections come from, and the address it adopts from what
//! they report ([`super::Message::Observed`]); and where this node sees each peer from, to tell it.
//!
//! Invariants:
//! - one report per peer (by roster position): the last one it sent; a report naming a
//!   special-purpose IP or port 0 is ignored;
//! - a report counts only while this node's probing says its sender is reachable;
//! - an address is adopted only when [`needed`] reports of reachable peers name the same IP: a
//!   strict majority of the reachable peers, and never fewer than two once the roster has two
//!   peers or more, so no single peer can move this node's address; with one peer (a
//!   two-site cluster) that peer's report is all there is;
//! - the adopted address only changes to another one that has a quorum: losing the quorum keeps
//!   it (a partition does not take a site's address away). The port is the one the agreeing
//!   reports carry most often (ties: the lowest).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::is_special_purpose;

/// Reports of reachable peers that must name one IP for it to be adopted, out of `reachable`
/// reachable peers in a roster of `peers` peers (this node excluded).
pub fn needed(reachable: usize, peers: usize) -> usize {
    (reachable / 2 + 1).max(peers.min(2))
}

/// What peers see of this node's address, and what it sees of theirs.
#[derive(Debug)]
pub(super) struct Sightings {
    /// By roster position: the address the peer last said it sees us from.
    reports: Vec<Option<SocketAddr>>,
    /// By roster position: the address we see the peer's connection come from.
    seen: Vec<Option<SocketAddr>>,
    adopted: Option<SocketAddr>,
}

/// Whether `addr` could be where a node's connections come from.
pub(super) fn is_usable(addr: SocketAddr) -> bool {
    addr.port() != 0 && !is_special_purpose(addr.ip())
}

impl Sightings {
    /// Nothing reported, over a roster of `len`.
    pub(super) fn new(len: usize) -> Self {
        Self { reports: vec![None; len], seen: vec![None; len], adopted: None }
    }

    /// The roster changed: position `j` takes what old position `from[j]` had.
    pub(super) fn remap(&mut self, from: &[Option<usize>]) {
        let take = |old: &[Option<SocketAddr>]| from.iter().map(|i| i.and_then(|i| old[i])).collect();
        self.reports = take(&self.reports);
        self.seen = take(&self.seen);
    }

    /// The peer at `i` says it sees us from `addr`; returns whether its report changed.
    pub(super) fn report(&mut self, i: usize, addr: SocketAddr) -> bool {
        if !is_usable(addr) || self.reports[i] == Some(addr) {
            return false;
        }
        self.reports[i] = Some(addr);
        true
    }

    /// The address adopted so far.
    pub(super) fn adopted(&self) -> Option<SocketAddr> {
        self.adopted
    }

    /// Adopts the IP that [`needed`] reports of reachable peers name, if there is one and it
    /// differs from the adopted one; returns whether the adopted address changed. `reachable`
    /// says which positions this node's probing sees reachable; `peers` is the roster size
    /// without this node.
    pub(super) fn adopt(&mut self, reachable: impl Fn(usize) -> bool, peers: usize) -> bool {
        let live: Vec<SocketAddr> =
            self.reports.iter().enumerate().filter(|(i, _)| reachable(*i)).filter_map(|(_, a)| *a).collect();
        let reachable_peers = (0..self.reports.len()).filter(|i| reachable(*i)).count();
        let mut by_ip: BTreeMap<IpAddr, BTreeMap<u16, usize>> = BTreeMap::new();
        for addr in &live {
            *by_ip.entry(addr.ip()).or_default().entry(addr.port()).or_default() += 1;
        }
        let quorum = needed(reachable_peers, peers);
        let Some((ip, ports)) = by_ip.into_iter().find(|(_, ports)| ports.values().sum::<usize>() >= quorum)
        else {
            return false;
        };
        // The most frequent port, the lowest among equals (max_by_key keeps the last maximum).
        let port = ports.iter().rev().max_by_key(|(_, n)| **n).map(|(p, _)| *p).expect("non-empty");
        let addr = SocketAddr::new(ip, port);
        if self.adopted == Some(addr) {
            return false;
        }
        self.adopted = Some(addr);
        true
    }

    /// We see the connection of the peer at `i` come from `addr`.
    pub(super) fn saw(&mut self, i: usize, addr: SocketAddr) {
        self.seen[i] = Some(addr);
    }

    /// Where we see each peer from, by position (told again every heartbeat until the peer signs
    /// it: datagrams get lost).
    pub(super) fn seen(&self) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
        self.seen.iter().enumerate().filter_map(|(i, a)| Some((i, (*a)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn quorum_is_a_strict_majority_of_reachable_peers_and_never_one_of_several() {
        assert_eq!(needed(1, 1), 1, "two sites: the one peer decides");
        assert_eq!(needed(1, 2), 2, "three sites, one reachable: not enough alone");
        assert_eq!(needed(2, 2), 2);
        assert_eq!(needed(4, 4), 3);
        assert_eq!(needed(0, 9), 2);
        assert_eq!(needed(9, 9), 5);
    }

    #[test]
    fn one_report_of_several_is_not_adopted_a_quorum_is_and_it_sticks() {
        // Positions 0..4, this node at 0, peers 1, 2, 3 all reachable: two must agree.
        let mut s = Sightings::new(4);
        let all = |i: usize| i != 0;
        assert!(s.report(1, at("198.18.9.9:7946")));
        assert!(!s.adopt(all, 3), "a single report is not adopted");
        assert!(s.report(2, at("198.18.0.3:7946")));
        assert!(!s.adopt(all, 3), "two different reports: no quorum");
        assert!(s.report(3, at("198.18.0.3:40000")));
        assert!(s.adopt(all, 3));
        assert_eq!(s.adopted(), Some(at("198.18.0.3:7946")), "same IP; the lowest port of a tie");
        // The liar alone again cannot move it, and losing the quorum keeps it.
        assert!(!s.report(1, at("198.18.9.9:7946")));
        assert!(!s.adopt(|i| i == 1, 3));
        assert_eq!(s.adopted(), Some(at("198.18.0.3:7946")));
        // A report from an unreachable peer does not count.
        assert!(s.report(2, at("198.18.9.9:7946")));
        assert!(!s.adopt(|i| i == 1 || i == 3, 3));
        assert!(s.adopt(all, 3));
        assert_eq!(s.adopted(), Some(at("198.18.9.9:7946")), "two of three reachable agree");
    }

    #[test]
    fn unusable_reports_are_ignored() {
        let mut s = Sightings::new(2);
        for bad in ["0.0.0.0:7946", "198.18.0.3:0", "224.0.0.1:7946", "[fe80::1]:7946"] {
            assert!(!s.report(1, at(bad)), "{bad}");
        }
        assert!(!s.adopt(|i| i == 1, 1));
        assert!(s.report(1, at("127.0.204.3:7946")) && s.adopt(|i| i == 1, 1));
    }
}
