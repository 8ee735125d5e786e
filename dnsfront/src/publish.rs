//! Publishing answers: everything served for one answer version, built when it is published.
//!
//! Owns [`AnswerPublisher`], the handle through which the node hands the DNS front each new
//! [`PoolAnswers`], and [`ServedAnswers`], what is served for one of them: the record snapshot
//! and the fast path's encoded responses. Invariants: both are built in [`AnswerPublisher::publish`],
//! on the publisher's thread, before the new version becomes visible, so the query path only
//! reads; a query that starts after `publish` returns is answered from the new version; the
//! compiled zone never changes for the life of a publisher.

use std::{ops::Deref, sync::Arc};

use tokio::sync::watch;
use tracing::debug;

use crate::{
    answer::{PoolAnswers, Snapshot},
    fast, master,
    metrics::DnsMetrics,
    zone::{Zone, ZoneConfig, ZoneError},
};

/// What the DNS front serves for one published [`PoolAnswers`]. Dereferences to it.
pub struct ServedAnswers {
    answers: PoolAnswers,
    /// The records.
    pub(crate) snapshot: Snapshot,
    /// The same answers, encoded for the UDP fast path.
    pub(crate) fast: fast::Table,
}

impl Deref for ServedAnswers {
    type Target = PoolAnswers;

    fn deref(&self) -> &PoolAnswers {
        &self.answers
    }
}

impl std::fmt::Debug for ServedAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedAnswers").field("answers", &self.answers).finish_non_exhaustive()
    }
}

/// The node's handle to publish answers to the DNS front (cheap to clone; clones publish to the
/// same servers). Create one per zone, give it to [`DnsServer::bind`](crate::DnsServer::bind),
/// and call [`publish`](Self::publish) whenever the pool changes.
#[derive(Clone)]
pub struct AnswerPublisher {
    zone: Arc<Zone>,
    current: Arc<watch::Sender<Arc<ServedAnswers>>>,
    metrics: DnsMetrics,
}

impl std::fmt::Debug for AnswerPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerPublisher").field("origin", &self.zone.origin).finish_non_exhaustive()
    }
}

impl AnswerPublisher {
    /// Validates and compiles `zone` and builds what is served for `initial`. The server's
    /// counters are `metrics` (clones share them).
    pub fn new(zone: &ZoneConfig, initial: PoolAnswers, metrics: DnsMetrics) -> Result<Self, ZoneError> {
        let zone = Arc::new(Zone::compile(zone)?);
        let served = Arc::new(build(&zone, initial, &metrics));
        let (current, _) = watch::channel(served);
        Ok(Self { zone, current: Arc::new(current), metrics })
    }

    /// Builds what is served for `answers` (records and encoded responses), then makes it the
    /// current version: every query that starts after this returns is answered from it.
    pub fn publish(&self, answers: PoolAnswers) {
        let served = Arc::new(build(&self.zone, answers, &self.metrics));
        self.current.send_replace(served);
    }

    /// The version being served.
    pub fn current(&self) -> Arc<ServedAnswers> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every version published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServedAnswers>> {
        self.current.subscribe()
    }

    /// The zone as an RFC 1035 master file, as served right now: SOA (with the current serial),
    /// NS, and every address of every pool name with its TTL (for a name whose responses take
    /// a selection, every address a response may carry).
    pub fn zone_file(&self) -> String {
        master::render(&self.zone, &self.current().snapshot)
    }

    /// The counters the servers fed by this publisher count into.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    pub(crate) fn zone(&self) -> &Zone {
        &self.zone
    }
}

fn build(zone: &Zone, answers: PoolAnswers, metrics: &DnsMetrics) -> ServedAnswers {
    let snapshot = Snapshot::build(zone, &answers);
    let fast = fast::Table::build(zone, &snapshot);
    metrics.snapshots.inc();
    debug!(serial = answers.serial, names = answers.names.len(), "new pool answers");
    ServedAnswers { answers, snapshot, fast }
}
