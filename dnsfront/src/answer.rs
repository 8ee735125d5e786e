//! What the zone answers: the per-version record snapshot and the pure lookup.
//!
//! Owns [`PoolAnswers`] (the node's published answer set), [`Snapshot`] (every record the zone
//! can answer with for one `PoolAnswers` value, built once per version so the query path only
//! borrows) and [`resolve`], which maps a question to an [`Outcome`] with no IO and no state.
//! Invariants: a snapshot's RRsets hold no duplicate records and at most
//! [`MAX_RECORDS_PER_RRSET`] records each (the first ones published); A and AAAA sets are kept
//! apart.

use std::net::IpAddr;

use hickory_proto::rr::{
    LowerName, RData, Record, RecordType,
    rdata::{A, AAAA, SOA},
};

use crate::zone::Zone;

/// Most addresses of one family a pool name answers with. No client uses more than a few; the
/// bound keeps every answer small (128 AAAA records: about 3.6 KB over TCP) whatever the node
/// publishes. Over UDP, an answer that does not fit the client's payload size is truncated.
pub const MAX_RECORDS_PER_RRSET: usize = 128;

/// SOA refresh: there are no secondaries, so these only need to be sane (RFC 1912 §2.2).
const SOA_REFRESH: i32 = 3600;
/// SOA retry.
const SOA_RETRY: i32 = 600;
/// SOA expire.
const SOA_EXPIRE: i32 = 1_209_600;

/// What the pool answers right now; published by the node through a `tokio::sync::watch`
/// channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAnswers {
    /// SOA serial; the node increases it whenever `addrs` changes.
    pub serial: u32,
    /// The pool's addresses, A and AAAA together.
    pub addrs: Vec<IpAddr>,
}

/// The records of one pool name.
#[derive(Debug, Default)]
pub(crate) struct PoolRecords {
    pub(crate) v4: Vec<Record>,
    pub(crate) v6: Vec<Record>,
}

/// Every record the zone serves for one [`PoolAnswers`] value.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The SOA; its TTL equals its minimum, so it serves in answers and negative responses
    /// alike (RFC 2308 §3: negative TTL = min(SOA TTL, minimum)).
    pub(crate) soa: Record,
    /// Indexed like [`Zone::pool_names`].
    pub(crate) pools: Vec<PoolRecords>,
}

impl Snapshot {
    /// Builds the records of `zone` for `answers`, at most [`MAX_RECORDS_PER_RRSET`] per RRset.
    pub(crate) fn build(zone: &Zone, answers: &PoolAnswers) -> Self {
        Self::build_with_cap(zone, answers, MAX_RECORDS_PER_RRSET)
    }

    /// [`build`](Self::build) with another bound (tests of oversized answers).
    pub(crate) fn build_with_cap(zone: &Zone, answers: &PoolAnswers, cap: usize) -> Self {
        let mut unique: Vec<IpAddr> = Vec::with_capacity(answers.addrs.len().min(cap.saturating_mul(2)));
        let mut seen = std::collections::HashSet::with_capacity(unique.capacity());
        let (mut v4, mut v6) = (0, 0);
        for addr in &answers.addrs {
            let count = if addr.is_ipv4() { &mut v4 } else { &mut v6 };
            if *count < cap && seen.insert(*addr) {
                *count += 1;
                unique.push(*addr);
            }
        }
        let pools = zone
            .pool_names
            .iter()
            .map(|name| {
                let mut records = PoolRecords::default();
                for addr in &unique {
                    match addr {
                        IpAddr::V4(v4) => {
                            records.v4.push(Record::from_rdata(name.clone(), zone.ttl, RData::A(A(*v4))))
                        }
                        IpAddr::V6(v6) => records.v6.push(Record::from_rdata(
                            name.clone(),
                            zone.ttl,
                            RData::AAAA(AAAA(*v6)),
                        )),
                    }
                }
                records
            })
            .collect();
        let soa = Record::from_rdata(
            zone.origin.clone().into(),
            zone.ttl,
            RData::SOA(SOA::new(
                zone.mname.clone(),
                zone.rname.clone(),
                answers.serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                zone.ttl,
            )),
        );
        Self { soa, pools }
    }
}

/// The answer to one question, borrowing from the zone and the snapshot.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome<'a> {
    /// The name is outside the zone, or a zone transfer was asked for: REFUSED, not
    /// authoritative.
    Refused,
    /// NOERROR with these records in the answer section. `rotate` marks a pool RRset whose
    /// order is rotated between queries.
    Answer {
        /// The RRset.
        records: &'a [Record],
        /// Whether to rotate the order.
        rotate: bool,
    },
    /// The name exists but has no records of this type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist in the zone: NXDOMAIN, SOA in authority.
    NxDomain,
}

/// Answers `qtype` at `qname` (class already checked to be IN).
pub(crate) fn resolve<'a>(
    zone: &'a Zone,
    snapshot: &'a Snapshot,
    qname: &LowerName,
    qtype: RecordType,
) -> Outcome<'a> {
    if !zone.origin.zone_of(qname) {
        return Outcome::Refused;
    }
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // No secondaries exist; the zone changes every few seconds and is not transferred.
        return Outcome::Refused;
    }
    let Some(node) = zone.nodes.get(qname) else {
        return Outcome::NxDomain;
    };
    let pool = node.pool.map(|index| &snapshot.pools[index]);
    let (records, rotate) = match (qtype, pool) {
        (RecordType::ANY, _) => match &node.any {
            Some(hinfo) => (std::slice::from_ref(hinfo), false),
            None => return Outcome::NoData,
        },
        (RecordType::SOA, _) if node.apex => (std::slice::from_ref(&snapshot.soa), false),
        (RecordType::NS, _) if node.apex => (zone.ns.as_slice(), false),
        (RecordType::A, Some(pool)) => (pool.v4.as_slice(), true),
        (RecordType::AAAA, Some(pool)) => (pool.v6.as_slice(), true),
        _ => return Outcome::NoData,
    };
    if records.is_empty() { Outcome::NoData } else { Outcome::Answer { records, rotate } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::ZoneConfig;

    fn zone() -> Zone {
        Zone::compile(&ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "www.deep".into()],
            ttl: 7,
            nameservers: vec!["alpha.example.test".into(), "beta.example.test".into()],
        })
        .unwrap()
    }

    fn name(s: &str) -> LowerName {
        s.parse().unwrap()
    }

    #[test]
    fn lookup_table() {
        let zone = zone();
        let answers = &PoolAnswers {
            serial: 42,
            addrs: vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            ],
        };
        let snap = Snapshot::build(&zone, answers);
        let capped = Snapshot::build_with_cap(&zone, answers, 1);
        assert_eq!(capped.pools[0].v4.len(), 1, "the cap bounds each RRset");
        let go = |n: &str, t| resolve(&zone, &snap, &name(n), t);

        match go("API.pool.example.TEST.", RecordType::A) {
            Outcome::Answer { records, rotate } => {
                assert_eq!(records.len(), 2, "duplicates are removed");
                assert!(rotate);
                assert_eq!(records[0].ttl, 7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(go("api.pool.example.test.", RecordType::AAAA), Outcome::NoData);
        assert_eq!(go("api.pool.example.test.", RecordType::TXT), Outcome::NoData);
        assert_eq!(go("deep.pool.example.test.", RecordType::A), Outcome::NoData);
        assert_eq!(go("deep.pool.example.test.", RecordType::ANY), Outcome::NoData);
        assert_eq!(go("nope.pool.example.test.", RecordType::A), Outcome::NxDomain);
        assert_eq!(go("x.api.pool.example.test.", RecordType::A), Outcome::NxDomain);
        assert_eq!(go("example.test.", RecordType::A), Outcome::Refused);
        assert_eq!(go("pool.example.test.", RecordType::AXFR), Outcome::Refused);
        assert_eq!(go("pool.example.test.", RecordType::A), Outcome::NoData);
        match go("pool.example.test.", RecordType::SOA) {
            Outcome::Answer { records, .. } => match &records[0].data {
                RData::SOA(soa) => {
                    assert_eq!(soa.serial, 42);
                    assert_eq!(soa.minimum, 7);
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match go("pool.example.test.", RecordType::NS) {
            Outcome::Answer { records, rotate } => {
                assert_eq!(records.len(), 2);
                assert!(!rotate);
            }
            other => panic!("{other:?}"),
        }
        match go("api.pool.example.test.", RecordType::ANY) {
            Outcome::Answer { records, .. } => {
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].record_type(), RecordType::HINFO);
            }
            other => panic!("{other:?}"),
        }
    }
}
