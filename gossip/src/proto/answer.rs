//! The answer rule (DESIGN.md), as a pure function of observations.
//!
//! Node X answers with:
//! 1. itself, unless its own health check says its service is down;
//! 2. every peer P that X's own latest probing sees reachable, that says itself healthy, and that at
//!    least `quorum` of the live observers other than P see reachable (X counts);
//! 3. itself anyway if that leaves nothing (fail open).
//!
//! X's own latest probing is X's own current observation, so the rule needs nothing but
//! observations. Observers that do not report on P at all (P is not in their roster) have no vote.

use spdu_keys::PublicKey;

use super::Observation;

/// How many live observers (other than the peer itself) must see a peer reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quorum {
    /// At least half of those who report on the peer; a tie counts as reachable.
    #[default]
    Half,
    /// At least this many of them.
    AtLeast(usize),
}

impl Quorum {
    /// Whether `yes` votes out of `voters` are enough.
    pub fn reached(self, yes: usize, voters: usize) -> bool {
        match self {
            Quorum::Half => 2 * yes >= voters,
            Quorum::AtLeast(k) => yes >= k,
        }
    }
}

/// The votes on one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    /// Live observers other than the peer that see it reachable.
    pub yes: Vec<PublicKey>,
    /// Live observers other than the peer that report on it at all.
    pub voters: Vec<PublicKey>,
}

/// Tallies what the live observers other than `peer` say about `peer`.
pub fn votes<'a>(peer: &PublicKey, live: impl IntoIterator<Item = &'a Observation>) -> Votes {
    let mut votes = Votes::default();
    for obs in live.into_iter().filter(|o| o.observer != *peer) {
        if let Some(report) = obs.report(peer) {
            votes.voters.push(obs.observer);
            if report.reachable {
                votes.yes.push(obs.observer);
            }
        }
    }
    votes
}

/// The nodes whose addresses node `mine.observer` answers with, itself first, peers in key order.
///
/// - `mine`: this node's own current observation (its latest probing and health);
/// - `live`: every fresh observation in the view, `mine` included;
/// - `latest`: the latest known observation of any node, fresh or not (for peers' own health).
pub fn answer_members<'a>(
    mine: &Observation,
    live: &[&'a Observation],
    latest: impl Fn(&PublicKey) -> Option<&'a Observation>,
    quorum: Quorum,
) -> Vec<PublicKey> {
    let mut members = Vec::new();
    if mine.healthy {
        members.push(mine.observer);
    }
    let mut peers: Vec<PublicKey> = mine
        .peers
        .iter()
        .filter(|r| r.reachable && latest(&r.key).is_some_and(|o| o.healthy))
        .filter(|r| {
            let v = votes(&r.key, live.iter().copied());
            quorum.reached(v.yes.len(), v.voters.len())
        })
        .map(|r| r.key)
        .collect();
    peers.sort();
    members.extend(peers);
    if members.is_empty() {
        members.push(mine.observer);
    }
    members
}
