//! This node's own observation: its identity and version, its own service health, when to
//! re-sign, and its beats.
//!
//! Invariants:
//! - the version (incarnation, seq) only grows: `seq` by one per signed observation, the
//!   incarnation only when a peer shows that an earlier run of this node got further
//!   ([`Publisher::rise_above`]), never to `u64::MAX / 2` or beyond;
//! - a change of content is signed at once, or, within one probe interval of the previous
//!   signature, once that interval is over (one slot, [`Publisher::publish_at`]): a burst of
//!   changes becomes one observation;
//! - own health has one source: the verdict on this node's own check results (healthy until a
//!   check says otherwise); an unknown result changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use spdu_keys::{PublicKey, SecretKey};

use super::{
    Beat, Bitmap, CheckResult, HealthPolicy, NodeInfo, Observation, PolicyDigest, Roster, ServiceCheck,
    SignedBeat, SignedObservation, Verdict,
};

/// Everything this node says about itself.
#[derive(Debug)]
pub(super) struct Publisher {
    key: SecretKey,
    me: PublicKey,
    name: String,
    cluster: String,
    incarnation: u64,
    seq: u64,
    beat: u64,
    addresses: Vec<IpAddr>,
    /// Service address = the IP of `observed` (`addresses` is then unused).
    observed_address: bool,
    /// The address peers see this node at, adopted by quorum (`proto::sightings`).
    observed: Option<SocketAddr>,
    service_check: Option<ServiceCheck>,
    /// The digest of this node's failover policies, signed with every observation.
    policy: PolicyDigest,
    /// The verdict on this node's own service check, once a result came in.
    own: Option<Verdict>,
    last_publish: Option<Instant>,
    /// A coalesced change waits to be signed at this time.
    publish_at: Option<Instant>,
}

/// This node's reports on its peers, as one observation carries them.
pub(super) struct Reports {
    pub(super) reachable: Bitmap,
    pub(super) service_probed: Bitmap,
    pub(super) service_ok: Bitmap,
}

impl Publisher {
    /// Nothing published yet.
    pub(super) fn new(info: NodeInfo, policy: PolicyDigest) -> Self {
        Self {
            me: info.key.public(),
            key: info.key,
            name: info.name,
            cluster: info.cluster,
            incarnation: info.incarnation,
            seq: 0,
            beat: 0,
            addresses: info.addresses,
            observed_address: info.observed_address,
            observed: None,
            service_check: info.service_check,
            policy,
            own: None,
            last_publish: None,
            publish_at: None,
        }
    }

    /// New settings from a reload: what the next observation says about this site (identity
    /// and version are kept; so is the verdict on its own check, unless it has none any more:
    /// then it is healthy, as a node without a check is).
    pub(super) fn reconfigure(
        &mut self,
        addresses: Vec<IpAddr>,
        service_check: Option<ServiceCheck>,
        policy: PolicyDigest,
        self_check: bool,
    ) {
        self.addresses = addresses;
        self.service_check = service_check;
        self.policy = policy;
        if !self_check {
            self.own = None;
        }
    }

    /// Whether the service address is the observed one; returns whether that changed.
    pub(super) fn set_observed_address(&mut self, observed_address: bool) -> bool {
        std::mem::replace(&mut self.observed_address, observed_address) != observed_address
    }

    /// Peers agreed on where they see this node (signed from the next observation on).
    pub(super) fn set_observed(&mut self, observed: Option<SocketAddr>) {
        self.observed = observed;
    }

    /// The service addresses the next observation carries.
    fn service_addresses(&self) -> Vec<IpAddr> {
        match self.observed_address {
            true => self.observed.map(|a| a.ip()).into_iter().collect(),
            false => self.addresses.clone(),
        }
    }

    pub(super) fn policy(&self) -> PolicyDigest {
        self.policy
    }

    pub(super) fn key(&self) -> PublicKey {
        self.me
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn cluster(&self) -> &str {
        &self.cluster
    }

    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The version of the newest observation signed.
    pub(super) fn version(&self) -> (u64, u64) {
        (self.incarnation, self.seq)
    }

    /// Whether this node's service is healthy by its own check.
    pub(super) fn healthy(&self) -> bool {
        self.own.as_ref().is_none_or(Verdict::ok)
    }

    /// The verdict on this node's own check, once it ran.
    pub(super) fn own_health(&self) -> Option<&Verdict> {
        self.own.as_ref()
    }

    /// Counts one result of this node's own check; returns whether the verdict flipped.
    pub(super) fn on_self_check(&mut self, now: Instant, result: CheckResult, policy: &HealthPolicy) -> bool {
        self.own.get_or_insert_with(|| Verdict::new(true)).record(now, result, policy)
    }

    /// When a coalesced change is due to be signed.
    pub(super) fn publish_at(&self) -> Option<Instant> {
        self.publish_at
    }

    /// The content changed at `now`: true if it is to be signed now; otherwise it is held until
    /// one `interval` after the previous signature ([`Publisher::publish_at`]).
    pub(super) fn request(&mut self, now: Instant, interval: Duration) -> bool {
        match self.last_publish {
            Some(last) if now < last + interval => {
                self.publish_at.get_or_insert(last + interval);
                false
            }
            _ => true,
        }
    }

    /// Signs the next observation (next seq) with `reports` over `roster`.
    pub(super) fn sign(
        &mut self,
        now: Instant,
        roster: &Roster,
        reports: Reports,
    ) -> (SignedObservation, Observation) {
        self.seq += 1;
        self.publish_at = None;
        self.last_publish = Some(now);
        let obs = Observation {
            cluster: self.cluster.clone(),
            observer: self.me,
            name: self.name.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            healthy: self.healthy(),
            addresses: self.service_addresses(),
            service_check: self.service_check.clone(),
            roster: roster.id(),
            reachable: reports.reachable,
            service_probed: reports.service_probed,
            service_ok: reports.service_ok,
            policy: self.policy,
            observed: self.observed,
        };
        (obs.sign(&self.key), obs)
    }

    /// Signs the next beat of the current observation.
    pub(super) fn next_beat(&mut self) -> (SignedBeat, u64) {
        self.beat += 1;
        let beat = Beat { observer: self.me, incarnation: self.incarnation, seq: self.seq, beat: self.beat };
        (beat.sign(&self.key, &self.cluster), self.beat)
    }

    /// The latest beat signed.
    pub(super) fn beat(&self) -> u64 {
        self.beat
    }

    /// A roster peer holds an observation of ours at `held`. If that is newer than ours, an
    /// earlier run of this node got further: take the incarnation after it (the caller signs at
    /// once) and return it. Refused, changing nothing: a version not newer than ours (a late or
    /// repeated tell, or one about our own observations arriving out of order at the teller),
    /// or an incarnation of `u64::MAX / 2` or more (a liar cannot pin us at the top, where we
    /// could never rise again).
    pub(super) fn rise_above(&mut self, held: (u64, u64)) -> Option<u64> {
        if held <= self.version() || held.0 >= u64::MAX / 2 {
            return None;
        }
        self.incarnation = held.0 + 1;
        self.seq = 0;
        Some(self.incarnation)
    }
}
