//! What a run records (answer changes, removals, traffic) and the questions a test asks of it
//! afterwards: whether and when the answers held the running nodes, when a node left or came
//! back into them. The questions only read the records.

use std::time::Duration;

use super::{NodeId, Sim};

/// One node's answer set changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerChange {
    /// Simulated time since the start.
    pub at: Duration,
    /// The answering node.
    pub node: NodeId,
    /// Its answer now, sorted (empty while crashed).
    pub members: Vec<NodeId>,
}

/// A node left the answer of a running node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Simulated time since the start.
    pub at: Duration,
    /// The answering node.
    pub node: NodeId,
    /// The node it stopped answering with.
    pub dropped: NodeId,
}

/// Messages and bytes (encoded frame sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// How many messages.
    pub messages: u64,
    /// Their encoded size in bytes.
    pub bytes: u64,
}

impl Counter {
    pub(super) fn add(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes as u64;
    }
}

/// One node's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Everything it handed to the network (lost or not).
    pub sent: Counter,
    /// Of which observation pushes.
    pub sent_push: Counter,
    /// Everything delivered to it.
    pub received: Counter,
}

impl Sim {
    /// Whether every running node answers with exactly the running nodes.
    pub fn converged(&self) -> bool {
        let up = self.up_nodes();
        up.iter().all(|i| self.nodes[*i].answer == up)
    }

    /// When every node of `observers` last stopped answering with `x` (at or after `since`), if
    /// none of them answers with it now. `since` itself if none had it since then.
    pub fn dropped_by_all(&self, x: NodeId, observers: &[NodeId], since: Duration) -> Option<Duration> {
        let mut latest = since;
        for &o in observers {
            if self.nodes[o].answer.contains(&x) {
                return None;
            }
            if let Some(r) =
                self.removals.iter().rev().find(|r| r.node == o && r.dropped == x && r.at >= since)
            {
                latest = latest.max(r.at);
            }
        }
        Some(latest)
    }

    /// Per node (indexed by [`NodeId`]): when its answer came to hold every running node, as the
    /// first time at or after `since` from which it held all of them without interruption until
    /// now (`since` itself if it already did then). `None` for a crashed node and for a node
    /// whose answer lacks a running node now. Extra (crashed) nodes in an answer do not count
    /// against it: this is "every running node is in", not [`Sim::converged`]'s equality.
    pub fn converged_at(&self, since: Duration) -> Vec<Option<Duration>> {
        let up = self.up_nodes();
        let mut at: Vec<Option<Duration>> = (0..self.nodes.len())
            .map(|i| (self.is_up(i) && holds_all(&self.nodes[i].answer, &up)).then_some(since))
            .collect();
        // Nodes whose current run of full answers may reach further back.
        let mut open: Vec<bool> = at.iter().map(Option::is_some).collect();
        let mut left = open.iter().filter(|o| **o).count();
        for change in self.changes.iter().rev() {
            if left == 0 || change.at < since {
                break;
            }
            if !open[change.node] {
                continue;
            }
            if holds_all(&change.members, &up) {
                at[change.node] = Some(change.at);
            } else {
                open[change.node] = false;
                left -= 1;
            }
        }
        at
    }

    /// The first time at or after `since` at which every node of `observers` answered with `x`
    /// and kept doing so until now; `None` if one does not answer with it now.
    pub fn included_by_all(&self, x: NodeId, observers: &[NodeId], since: Duration) -> Option<Duration> {
        let mut latest = since;
        for &o in observers {
            if !self.nodes[o].answer.contains(&x) {
                return None;
            }
            // The change that began its current run of answers holding `x`.
            let included_at = self
                .changes
                .iter()
                .rev()
                .filter(|c| c.node == o)
                .take_while(|c| c.members.contains(&x))
                .last()
                .map(|c| c.at);
            latest = latest.max(included_at.unwrap_or(since));
        }
        Some(latest)
    }
}

/// Whether sorted `set` holds every node of sorted `wanted`.
fn holds_all(set: &[NodeId], wanted: &[NodeId]) -> bool {
    if set.len() < wanted.len() {
        return false;
    }
    let mut rest = set.iter();
    wanted.iter().all(|w| rest.any(|s| s == w))
}
