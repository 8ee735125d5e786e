//! Publishing answers: everything served for one answer version, built when it is published.
//!
//! Owns [`AnswerPublisher`], the handle through which the node hands the DNS front each new
//! [`PoolAnswers`], and [`ServedAnswers`], what is served for one of them: the record snapshot
//! and the fast path's encoded responses. Invariants: both are built in [`AnswerPublisher::publish`],
//! on the publisher's thread, before the new version becomes visible, so the query path only
//! reads; a query that starts after `publish` returns is answered from the new version. Each
//! version carries the compiled zone it was built for: a reload's new zone
//! ([`AnswerPublisher::replace_zone`]: names, TTL, nameservers) becomes visible together with
//! answers built for it, on the same sockets, so no query sees one without the other.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;
use std::{ops::Deref, sync::Arc};

use tokio::sync::watch;
use tracing::debug;

use crate::{
    answer::{PoolAnswers, Snapshot},
    dnssec::{SignedVersion, Signer, Window},
    fast, master,
    metrics::DnsMetrics,
    zone::{Zone, ZoneConfig, ZoneError},
};

/// What the DNS front serves for one published [`PoolAnswers`]. Dereferences to it.
pub struct ServedAnswers {
    answers: PoolAnswers,
    /// The zone they were built for.
    pub(crate) zone: Arc<Zone>,
    /// The records.
    pub(crate) snapshot: Snapshot,
    /// The same answers, encoded for the UDP fast path.
    pub(crate) fast: fast::Table,
    /// With DNSSEC on: the signature window, the DNSKEY RRset and the RRSIG cache.
    pub(crate) signed: Option<SignedVersion>,
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
    current: Arc<watch::Sender<Arc<ServedAnswers>>>,
    /// Held while a version is built and made current, so that two publishers' versions
    /// cannot interleave a zone and answers built for another.
    publishing: Arc<Mutex<()>>,
    metrics: DnsMetrics,
    /// With DNSSEC on, what every version is signed with.
    signer: Arc<Mutex<Option<Arc<Signer>>>>,
}

impl std::fmt::Debug for AnswerPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerPublisher").field("origin", &self.current().zone.origin).finish_non_exhaustive()
    }
}

impl AnswerPublisher {
    /// Validates and compiles `zone` and builds what is served for `initial`. The server's
    /// counters are `metrics` (clones share them).
    pub fn new(zone: &ZoneConfig, initial: PoolAnswers, metrics: DnsMetrics) -> Result<Self, ZoneError> {
        let zone = Arc::new(Zone::compile(zone)?);
        let served = Arc::new(build(zone, initial, &metrics, None, SystemTime::now()));
        let (current, _) = watch::channel(served);
        Ok(Self {
            current: Arc::new(current),
            publishing: Arc::new(Mutex::new(())),
            metrics,
            signer: Arc::new(Mutex::new(None)),
        })
    }

    /// Signs every version from now on with `signer` (DNSSEC on), or none (off), starting with
    /// the current answers, re-signed at once.
    pub fn set_signer(&self, signer: Option<Signer>) {
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        *self.signer.lock().unwrap_or_else(PoisonError::into_inner) = signer.map(Arc::new);
        let current = self.current();
        self.install(current.zone.clone(), current.answers.clone(), SystemTime::now());
    }

    /// With DNSSEC on: re-signs the current answers when less than half of the signature
    /// validity is left at `now` (the node calls this on a timer); true if it did.
    pub fn refresh_signatures(&self, now: SystemTime) -> bool {
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current();
        if !current.signed.as_ref().is_some_and(|s| s.needs_refresh(now)) {
            return false;
        }
        self.install(current.zone.clone(), current.answers.clone(), now);
        true
    }

    /// The current version's signature window, with DNSSEC on.
    pub fn signature_window(&self) -> Option<Window> {
        self.current().signed.as_ref().map(SignedVersion::window)
    }

    /// Builds the version for `answers` in `zone`, signed at `now` with DNSSEC on, and makes it
    /// current. The caller holds `publishing`.
    fn install(&self, zone: Arc<Zone>, answers: PoolAnswers, now: SystemTime) {
        let signer = self.signer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        self.current.send_replace(Arc::new(build(zone, answers, &self.metrics, signer, now)));
    }

    /// Builds what is served for `answers` (records and encoded responses), then makes it the
    /// current version: every query that starts after this returns is answered from it.
    pub fn publish(&self, answers: PoolAnswers) {
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        let zone = self.current.borrow().zone.clone();
        self.install(zone, answers, SystemTime::now());
    }

    /// Serves `zone` (a reload's: names, TTL, nameservers, even another origin) from now on,
    /// with `answers` (one per name of the new zone), on the same sockets: every query that
    /// starts after this returns is answered from the new zone. Refused, changing nothing: a
    /// zone [`AnswerPublisher::new`] would refuse.
    pub fn replace_zone(&self, zone: &ZoneConfig, answers: PoolAnswers) -> Result<(), ZoneError> {
        let zone = Arc::new(Zone::compile(zone)?);
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        self.install(zone, answers, SystemTime::now());
        Ok(())
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
        let served = self.current();
        master::render(&served.zone, &served.snapshot)
    }

    /// The counters the servers fed by this publisher count into.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }
}

fn build(
    zone: Arc<Zone>,
    answers: PoolAnswers,
    metrics: &DnsMetrics,
    signer: Option<Arc<Signer>>,
    now: SystemTime,
) -> ServedAnswers {
    let snapshot = Snapshot::build(&zone, &answers);
    let signed = signer.map(|signer| {
        SignedVersion::new(signer, &zone.origin.clone().into(), now)
            .counting(metrics.dnssec_signatures.clone())
    });
    if let Some(signed) = &signed {
        // The RRsets every signed answer version serves: signed now, not on the query path.
        signed.rrsig(&[&snapshot.soa]);
        signed.rrsig(&zone.ns.iter().collect::<Vec<_>>());
        signed.rrsig(&signed.dnskeys.iter().collect::<Vec<_>>());
        for pool in &snapshot.pools {
            for rrset in [&pool.v4, &pool.v6] {
                if !rrset.records().is_empty() {
                    signed.rrsig(&rrset.records().iter().collect::<Vec<_>>());
                }
            }
        }
    }
    let fast = fast::Table::build(&zone, &snapshot, signed.as_ref());
    metrics.snapshots.inc();
    debug!(serial = answers.serial, names = answers.names.len(), "new pool answers");
    ServedAnswers { answers, zone, snapshot, fast, signed }
}
