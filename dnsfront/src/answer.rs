//! What the zone answers: the per-version record snapshot, what one response picks from it,
//! and the pure lookup.
//!
//! Owns [`PoolAnswers`] (the node's published answers: per pool name its sites, TTL and
//! [`Pick`]), [`Snapshot`] (every record the zone can answer with for one `PoolAnswers` value,
//! built once per version so the query path only borrows), [`RRset`] (one name's records of
//! one family and how a response picks from them: a rotating window, or sites drawn by weight,
//! through a [`Chooser`]) and [`resolve`], which maps a question to an [`Outcome`] with no IO.
//!
//! Invariants: an RRset holds no duplicate records and at most [`MAX_RECORDS_PER_RRSET`]
//! records (the first ones published, in site order; an address listed by two sites belongs to
//! the first); A and AAAA sets are kept apart, so a site without addresses of a family takes no
//! part in that family's picks; a response's records are a selection of its RRset without
//! repeats, all with the name's TTL; the only state is each RRset's rotation counter.

use std::{collections::HashSet, net::IpAddr, ops::Range, sync::atomic::AtomicUsize};

use hickory_proto::rr::{
    LowerName, Name, RData, Record, RecordType,
    rdata::{A, AAAA, SOA},
};
use spdu_policy::{Pick, SiteAttrs};

use crate::zone::{MAX_TTL, Zone};

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

/// What the pool answers right now; published by the node through an
/// [`AnswerPublisher`](crate::AnswerPublisher).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAnswers {
    /// SOA serial; the node increases it whenever anything served changes.
    pub serial: u32,
    /// One per entry of [`ZoneConfig::names`](crate::ZoneConfig::names), same order. A name
    /// without an entry (a shorter vec) answers NODATA for A and AAAA.
    pub names: Vec<NameAnswers>,
}

impl PoolAnswers {
    /// Every one of `names` pool names answers with all of `addrs` (one site per address,
    /// [`Pick::All`]) and TTL `ttl`.
    pub fn same_for_all(serial: u32, names: usize, ttl: u32, addrs: Vec<IpAddr>) -> Self {
        let sites = addrs
            .into_iter()
            .map(|addr| SiteAddrs { addrs: vec![addr], weight: SiteAttrs::DEFAULT_WEIGHT })
            .collect();
        Self { serial, names: vec![NameAnswers { ttl, sites, pick: Pick::All }; names] }
    }
}

/// What one pool name answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAnswers {
    /// TTL of its A and AAAA records (held to 2^31 - 1, RFC 2181 §8).
    pub ttl: u32,
    /// Its sites, in answer order.
    pub sites: Vec<SiteAddrs>,
    /// What each response takes from them, per address family: [`Pick::All`] every address
    /// (order rotated per response), [`Pick::Rotate`] a window of `max` addresses whose start
    /// advances per response, [`Pick::Weighted`] the addresses of sites drawn by weight, in
    /// draw order, at most `max` (0: no limit).
    pub pick: Pick,
}

/// One site of a name's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteAddrs {
    /// Its addresses, A and AAAA together.
    pub addrs: Vec<IpAddr>,
    /// Its relative share under [`Pick::Weighted`] (0: only when no site of positive weight
    /// has addresses of the family asked for).
    pub weight: u32,
}

/// Where the per-response choices come from: the live ones (`choose`) or fixed ones (to
/// encode every response the fast path may send).
pub(crate) trait Chooser {
    /// Where a rotating selection over `n` (> 1) records starts (taken modulo `n`); `counter`
    /// is the RRset's own rotation counter.
    fn rotation(&mut self, counter: &AtomicUsize, n: usize) -> usize;

    /// Draws up to `max` (0: all) positions of `weights` into `out`, as
    /// [`spdu_policy::sample_weighted`] does.
    fn sample(&mut self, weights: &[u32], max: usize, out: &mut Vec<usize>);
}

/// How many different responses an RRset gives, and what tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variants {
    /// One per rotation start (1: always the same records in the same order).
    Rotations(usize),
    /// One per site: the site drawn first decides the whole response.
    FirstSite(usize),
    /// Too many to list: each response is drawn afresh.
    Drawn,
}

/// How an RRset's records go into one response.
#[derive(Debug, PartialEq, Eq)]
enum How {
    /// `window` records (at most all of them) from a start that advances per response.
    Window(usize),
    /// Sites drawn by weight, their records in draw order, at most `max` (0: no limit).
    Weighted {
        /// Records per response (0: no limit).
        max: usize,
        /// The weight of each site that has records here.
        weights: Vec<u32>,
        /// Each such site's records, indexes into the RRset.
        sites: Vec<Range<usize>>,
    },
}

/// One pool name's records of one address family and how a response picks from them.
#[derive(Debug)]
pub(crate) struct RRset {
    records: Vec<Record>,
    how: How,
    /// Advanced once per response whose selection rotates.
    next: AtomicUsize,
}

impl PartialEq for RRset {
    /// The same records picked the same way (whatever the rotation counters say).
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records && self.how == other.how
    }
}

impl RRset {
    fn empty() -> Self {
        Self { records: Vec::new(), how: How::Window(0), next: AtomicUsize::new(0) }
    }

    /// The records of the addresses of one family (`v6`) of `answers`, at most `cap`, owned by
    /// `owner`; `seen` holds the addresses already taken.
    fn build(owner: &Name, answers: &NameAnswers, v6: bool, cap: usize, seen: &mut HashSet<IpAddr>) -> Self {
        let ttl = answers.ttl.min(MAX_TTL);
        let mut records = Vec::new();
        let mut weights = Vec::new();
        let mut sites = Vec::new();
        for site in &answers.sites {
            let start = records.len();
            for addr in site.addrs.iter().filter(|addr| addr.is_ipv6() == v6) {
                if records.len() < cap && seen.insert(*addr) {
                    let data = match addr {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    records.push(Record::from_rdata(owner.clone(), ttl, data));
                }
            }
            if records.len() > start {
                weights.push(site.weight);
                sites.push(start..records.len());
            }
        }
        let how = match answers.pick {
            Pick::All | Pick::Rotate { max: 0 } => How::Window(records.len()),
            Pick::Rotate { max } => How::Window(max.min(records.len())),
            Pick::Weighted { max } => How::Weighted { max, weights, sites },
        };
        Self { records, how, next: AtomicUsize::new(0) }
    }

    /// Every record it may answer with.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    /// How many different responses it gives.
    pub(crate) fn variants(&self) -> Variants {
        if self.records.is_empty() {
            return Variants::Rotations(1);
        }
        match &self.how {
            How::Window(_) => Variants::Rotations(self.records.len().max(1)),
            How::Weighted { max, sites, .. } => {
                if sites.len() == 1 || (*max > 0 && sites.iter().all(|site| site.len() >= *max)) {
                    Variants::FirstSite(sites.len())
                } else {
                    Variants::Drawn
                }
            }
        }
    }

    /// The weights a first site is drawn with, for [`Variants::FirstSite`].
    pub(crate) fn weights(&self) -> &[u32] {
        match &self.how {
            How::Weighted { weights, .. } => weights,
            How::Window(_) => &[],
        }
    }

    /// The rotation counter.
    pub(crate) fn counter(&self) -> &AtomicUsize {
        &self.next
    }

    /// The records of one response, chosen by `chooser`. Work: O(records) for a window;
    /// O(sites · records) for a weighted draw.
    pub(crate) fn select(&self, chooser: &mut impl Chooser) -> Selection {
        let n = self.records.len();
        match &self.how {
            How::Window(window) => {
                let start = if n > 1 { chooser.rotation(&self.next, n) % n } else { 0 };
                Selection::Window { start, count: *window }
            }
            How::Weighted { max, weights, sites } => {
                // Every site drawn has a record, so `max` sites give at least `max` records.
                let mut drawn =
                    Vec::with_capacity(if *max == 0 { sites.len() } else { (*max).min(sites.len()) });
                chooser.sample(weights, *max, &mut drawn);
                let limit = if *max == 0 { n } else { *max };
                let listed = drawn
                    .iter()
                    .filter_map(|site| sites.get(*site))
                    .flat_map(Clone::clone)
                    .take(limit)
                    .collect();
                Selection::Listed(listed)
            }
        }
    }
}

/// Which records of an RRset (or static record set) one response holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// `count` records from `start` on, wrapping around.
    Window {
        /// The first record.
        start: usize,
        /// How many.
        count: usize,
    },
    /// These records (indexes), in this order.
    Listed(Vec<usize>),
}

impl Selection {
    /// All of `n` records, in order.
    pub(crate) fn all(n: usize) -> Self {
        Selection::Window { start: 0, count: n }
    }

    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Selection::Window { count, .. } => *count,
            Selection::Listed(listed) => listed.len(),
        }
    }

    /// The index, among `n` records, of the `i`th record it holds (`i < len()`).
    pub(crate) fn index(&self, i: usize, n: usize) -> usize {
        match self {
            Selection::Window { start, .. } => (start + i) % n,
            Selection::Listed(listed) => listed[i],
        }
    }
}

/// The records of one pool name.
#[derive(Debug)]
pub(crate) struct PoolRecords {
    pub(crate) v4: RRset,
    pub(crate) v6: RRset,
}

/// Names one RRset of a [`Snapshot`]: a pool name and a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RRsetId {
    /// Index into [`Snapshot::pools`].
    pub(crate) pool: usize,
    /// AAAA (else A).
    pub(crate) v6: bool,
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
        let pools = zone
            .pool_names
            .iter()
            .enumerate()
            .map(|(index, owner)| match answers.names.get(index) {
                Some(name) => {
                    let mut seen = HashSet::new();
                    PoolRecords {
                        v4: RRset::build(owner, name, false, cap, &mut seen),
                        v6: RRset::build(owner, name, true, cap, &mut seen),
                    }
                }
                None => PoolRecords { v4: RRset::empty(), v6: RRset::empty() },
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

    /// The RRset `id` names.
    pub(crate) fn rrset(&self, id: RRsetId) -> &RRset {
        let pool = &self.pools[id.pool];
        if id.v6 { &pool.v6 } else { &pool.v4 }
    }
}

/// The answer to one question, borrowing from the zone and the snapshot.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome<'a> {
    /// The name is outside the zone, or a zone transfer was asked for: REFUSED, not
    /// authoritative.
    Refused,
    /// NOERROR with these records in the answer section, all of them, in this order.
    Answer(&'a [Record]),
    /// NOERROR with a selection of a pool name's A or AAAA records (never empty).
    Pool {
        /// Which RRset.
        id: RRsetId,
        /// It.
        rrset: &'a RRset,
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
    let records = match (qtype, node.pool) {
        (RecordType::ANY, _) => match &node.any {
            Some(hinfo) => std::slice::from_ref(hinfo),
            None => return Outcome::NoData,
        },
        (RecordType::SOA, _) if node.apex => std::slice::from_ref(&snapshot.soa),
        (RecordType::NS, _) if node.apex => zone.ns.as_slice(),
        (RecordType::A | RecordType::AAAA, Some(pool)) => {
            let id = RRsetId { pool, v6: qtype == RecordType::AAAA };
            let rrset = snapshot.rrset(id);
            return if rrset.records.is_empty() { Outcome::NoData } else { Outcome::Pool { id, rrset } };
        }
        _ => return Outcome::NoData,
    };
    if records.is_empty() { Outcome::NoData } else { Outcome::Answer(records) }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::atomic::Ordering};

    use rand::{SeedableRng, rngs::StdRng};

    use super::*;
    use crate::zone::ZoneConfig;

    fn zone() -> Zone {
        Zone::compile(&ZoneConfig {
            origin: "pool.example.test".into(),
            names: vec!["api".into(), "www.deep".into(), "admin".into()],
            ttl: 7,
            nameservers: vec!["alpha.example.test".into(), "beta.example.test".into()],
        })
        .unwrap()
    }

    fn name(s: &str) -> LowerName {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn site(addrs: &[&str], weight: u32) -> SiteAddrs {
        SiteAddrs { addrs: addrs.iter().map(|a| ip(a)).collect(), weight }
    }

    /// Rotation by the RRset's counter, draws from a seeded RNG.
    struct Test(StdRng);

    impl Chooser for Test {
        fn rotation(&mut self, counter: &AtomicUsize, n: usize) -> usize {
            counter.fetch_add(1, Ordering::Relaxed) % n
        }

        fn sample(&mut self, weights: &[u32], max: usize, out: &mut Vec<usize>) {
            spdu_policy::sample_weighted(weights, max, &mut self.0, out);
        }
    }

    fn addresses(rrset: &RRset, selection: &Selection) -> Vec<IpAddr> {
        (0..selection.len())
            .map(|i| match &rrset.records()[selection.index(i, rrset.records().len())].data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lookup_table() {
        let zone = zone();
        let answers =
            &PoolAnswers::same_for_all(42, 2, 9, vec![ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.1")]);
        let snap = Snapshot::build(&zone, answers);
        let capped = Snapshot::build_with_cap(&zone, answers, 1);
        assert_eq!(capped.pools[0].v4.records().len(), 1, "the cap bounds each RRset");
        let go = |n: &str, t| resolve(&zone, &snap, &name(n), t);

        match go("API.pool.example.TEST.", RecordType::A) {
            Outcome::Pool { id, rrset } => {
                assert_eq!(id, RRsetId { pool: 0, v6: false });
                assert_eq!(rrset.records().len(), 2, "duplicates are removed");
                assert_eq!(rrset.variants(), Variants::Rotations(2));
                assert_eq!(rrset.records()[0].ttl, 9, "the name's TTL");
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
        // A name the answers have no entry for (the vec is shorter) exists, without addresses.
        assert_eq!(go("admin.pool.example.test.", RecordType::A), Outcome::NoData);
        assert!(matches!(go("admin.pool.example.test.", RecordType::ANY), Outcome::Answer(_)));
        match go("pool.example.test.", RecordType::SOA) {
            Outcome::Answer(records) => match &records[0].data {
                RData::SOA(soa) => {
                    assert_eq!(soa.serial, 42);
                    assert_eq!(soa.minimum, 7, "the zone's TTL, whatever the names' TTLs");
                    assert_eq!(records[0].ttl, 7);
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match go("pool.example.test.", RecordType::NS) {
            Outcome::Answer(records) => assert_eq!(records.len(), 2),
            other => panic!("{other:?}"),
        }
        match go("api.pool.example.test.", RecordType::ANY) {
            Outcome::Answer(records) => {
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].record_type(), RecordType::HINFO);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_have_their_own_records_ttl_and_families() {
        let zone = zone();
        let answers = PoolAnswers {
            serial: 1,
            names: vec![
                NameAnswers {
                    ttl: 30,
                    sites: vec![
                        site(&["192.0.2.1", "2001:db8::1"], 100),
                        site(&["192.0.2.2", "192.0.2.1"], 50),
                    ],
                    pick: Pick::All,
                },
                NameAnswers { ttl: u32::MAX, sites: vec![site(&["2001:db8::2"], 100)], pick: Pick::All },
            ],
        };
        let snap = Snapshot::build(&zone, &answers);
        let api = &snap.pools[0];
        assert_eq!(api.v4.records().len(), 2, "an address listed twice is served once");
        assert_eq!(api.v6.records().len(), 1);
        assert!(api.v4.records().iter().chain(api.v6.records()).all(|r| r.ttl == 30));
        let deep = &snap.pools[1];
        assert!(deep.v4.records().is_empty(), "no site has an IPv4 address: NODATA");
        assert_eq!(deep.v6.records()[0].ttl, MAX_TTL, "RFC 2181 §8");
        assert!(snap.pools[2].v4.records().is_empty() && snap.pools[2].v6.records().is_empty());
    }

    #[test]
    fn rotate_takes_a_window_that_moves_per_response() {
        let zone = zone();
        let addrs: Vec<&str> = vec!["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"];
        let answers = PoolAnswers {
            serial: 1,
            names: vec![NameAnswers {
                ttl: 5,
                sites: vec![site(&addrs[..2], 100), site(&addrs[2..], 100)],
                pick: Pick::Rotate { max: 2 },
            }],
        };
        let snap = Snapshot::build(&zone, &answers);
        let rrset = &snap.pools[0].v4;
        assert_eq!(rrset.variants(), Variants::Rotations(5));
        let mut chooser = Test(StdRng::seed_from_u64(1));
        let all: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        for start in 0..10 {
            let picked = addresses(rrset, &rrset.select(&mut chooser));
            assert_eq!(picked, vec![all[start % 5], all[(start + 1) % 5]], "response {start}");
        }
        // A window as large as the set is every address, rotated.
        let mut wide = answers.clone();
        wide.names[0].pick = Pick::Rotate { max: 9 };
        let snap = Snapshot::build(&zone, &wide);
        let picked = addresses(&snap.pools[0].v4, &snap.pools[0].v4.select(&mut chooser));
        assert_eq!(picked, all);
        let picked = addresses(&snap.pools[0].v4, &snap.pools[0].v4.select(&mut chooser));
        assert_eq!(picked, [&all[1..], &all[..1]].concat());
    }

    #[test]
    fn weighted_draws_sites_by_weight() {
        let zone = zone();
        let weighted = |max, sites| PoolAnswers {
            serial: 1,
            names: vec![NameAnswers { ttl: 5, sites, pick: Pick::Weighted { max } }],
        };
        let three = vec![
            site(&["192.0.2.1"], 100),
            site(&["192.0.2.2", "2001:db8::2"], 50),
            site(&["192.0.2.3"], 50),
            site(&["192.0.2.4"], 0),
        ];
        let snap = Snapshot::build(&zone, &weighted(1, three.clone()));
        let rrset = &snap.pools[0].v4;
        assert_eq!(rrset.variants(), Variants::FirstSite(4));
        assert_eq!(snap.pools[0].v6.variants(), Variants::FirstSite(1), "one site has IPv6");
        let mut chooser = Test(StdRng::seed_from_u64(7));
        let mut counts: HashMap<IpAddr, u32> = HashMap::new();
        for _ in 0..20_000 {
            let picked = addresses(rrset, &rrset.select(&mut chooser));
            assert_eq!(picked.len(), 1);
            *counts.entry(picked[0]).or_default() += 1;
        }
        let share = |a: &str| f64::from(counts.get(&ip(a)).copied().unwrap_or(0)) / 20_000.0;
        assert!((share("192.0.2.1") - 0.5).abs() < 0.025, "{counts:?}");
        assert!((share("192.0.2.2") - 0.25).abs() < 0.0125, "{counts:?}");
        assert!((share("192.0.2.3") - 0.25).abs() < 0.0125, "{counts:?}");
        assert_eq!(share("192.0.2.4"), 0.0, "weight 0 never beside positive weights");

        // No limit: every site, in a weighted order; the first site no longer decides it.
        let snap = Snapshot::build(&zone, &weighted(0, three.clone()));
        let rrset = &snap.pools[0].v4;
        assert_eq!(rrset.variants(), Variants::Drawn);
        for _ in 0..50 {
            let picked = addresses(rrset, &rrset.select(&mut chooser));
            assert_eq!(picked.len(), 4);
            assert_eq!(picked[3], ip("192.0.2.4"), "weight 0 comes last");
        }

        // Sites of several addresses: whole sites in draw order, cut at max.
        let multi = vec![site(&["192.0.2.1", "192.0.2.11"], 100), site(&["192.0.2.2"], 100)];
        let snap = Snapshot::build(&zone, &weighted(2, multi.clone()));
        let rrset = &snap.pools[0].v4;
        assert_eq!(rrset.variants(), Variants::Drawn, "a one-address site drawn first needs a second draw");
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let picked = addresses(rrset, &rrset.select(&mut chooser));
            assert_eq!(picked.len(), 2);
            seen.insert(picked);
        }
        let expected: HashSet<Vec<IpAddr>> =
            [vec![ip("192.0.2.1"), ip("192.0.2.11")], vec![ip("192.0.2.2"), ip("192.0.2.1")]].into();
        assert_eq!(seen, expected);
        let snap = Snapshot::build(&zone, &weighted(1, multi));
        assert_eq!(snap.pools[0].v4.variants(), Variants::FirstSite(2));
    }
}
