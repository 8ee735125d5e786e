//! Online signing: RRSIGs over the RRsets of one answer version, and compact denial.
//!
//! Owns [`Signer`] (this site's key, every site's DNSKEY, the DNSKEY TTL and the signature
//! validity) and [`SignedVersion`], what one published answer version signs with: its
//! signature window, the DNSKEY RRset, and a bounded cache of RRSIGs keyed by the exact RRset
//! signed (so the subsets a rotating or weighted pick serves are signed once each per version).
//!
//! Invariants: time comes in as an argument ([`SignedVersion::new`] takes `now`), never from a
//! clock here, so the window is tested with any clock; a window starts [`SKEW`] before `now`
//! (a resolver whose clock is behind still accepts it) and ends `validity` after `now`;
//! [`SignedVersion::needs_refresh`] says when less than half of `validity` is left, and the
//! publisher then re-signs by building a new version. Denial (RFC 9824 compact denial of
//! existence): the NSEC at the query name itself, next name `\000.<qname>`, covers no other
//! name, so nothing can be walked and nothing is precomputed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use prometheus_client::metrics::counter::Counter;

use super::key::{SiteKey, ZoneKey};

/// How far a signature's inception is backdated, for resolvers whose clocks are behind.
pub const SKEW: Duration = Duration::from_secs(3_600);
/// RRSIGs cached per answer version; when full, the cache starts over (negative answers for
/// random names must not grow it without bound).
const CACHE_LIMIT: usize = 4_096;
/// The NXNAME meta type (RFC 9824): in an NSEC type bitmap, "this name does not exist".
pub const NXNAME: RecordType = RecordType::Unknown(128);

/// This site's signing setup: its key and every site's DNSKEY.
pub struct Signer {
    key: ZoneKey,
    /// The DNSKEY RRset's keys: this site's and every peer's, in that order.
    keys: Vec<SiteKey>,
    dnskey_ttl: u32,
    validity: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key)
            .field("sites", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs with `key`; the DNSKEY RRset holds `key`'s public half and `peers` (every other
    /// site's DNSKEY), with TTL `dnskey_ttl`; signatures are valid for `validity`.
    pub fn new(key: ZoneKey, peers: Vec<SiteKey>, dnskey_ttl: u32, validity: Duration) -> Self {
        let keys = std::iter::once(key.public().clone()).chain(peers).collect();
        Self { key, keys, dnskey_ttl, validity }
    }

    /// How long a signature is valid.
    pub fn validity(&self) -> Duration {
        self.validity
    }
}

/// The signature window of one version, in seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// RRSIG inception: `now` − [`SKEW`].
    pub inception: u32,
    /// RRSIG expiration: `now` + validity.
    pub expiration: u32,
}

/// What one answer version signs with.
pub(crate) struct SignedVersion {
    signer: std::sync::Arc<Signer>,
    apex: Name,
    window: Window,
    made_at: u64,
    pub(crate) dnskeys: Vec<Record>,
    cache: Mutex<HashMap<Vec<u8>, Record>>,
    /// Counts every signature made (cache misses, denials): `dns_dnssec_signatures_total`.
    signatures: Counter,
}

impl std::fmt::Debug for SignedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedVersion").field("window", &self.window).finish_non_exhaustive()
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SignedVersion {
    /// The version signed at `now` for the zone at `apex`.
    pub(crate) fn new(signer: std::sync::Arc<Signer>, apex: &Name, now: SystemTime) -> Self {
        let now_s = unix_seconds(now);
        // RRSIG times are serial numbers modulo 2^32 (RFC 4034 §3.1.5): truncation is the rule.
        let window = Window {
            inception: now_s.saturating_sub(SKEW.as_secs()) as u32,
            expiration: now_s.saturating_add(signer.validity.as_secs()) as u32,
        };
        let mut apex = apex.clone();
        apex.set_fqdn(true);
        let dnskeys = signer
            .keys
            .iter()
            .map(|k| {
                Record::from_rdata(
                    apex.clone(),
                    signer.dnskey_ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.dnskey())),
                )
            })
            .collect();
        Self {
            signer,
            apex,
            window,
            made_at: now_s,
            dnskeys,
            cache: Mutex::new(HashMap::new()),
            signatures: Counter::default(),
        }
    }

    /// Counts the signatures this version makes in `signatures` (shared with the DNS metrics).
    pub(crate) fn counting(self, signatures: Counter) -> Self {
        Self { signatures, ..self }
    }

    /// The signature window.
    pub(crate) fn window(&self) -> Window {
        self.window
    }

    /// Whether less than half of the validity is left at `now` (or the clock went back past
    /// the inception): time to sign a new version.
    pub(crate) fn needs_refresh(&self, now: SystemTime) -> bool {
        let now = unix_seconds(now);
        let half = self.signer.validity.as_secs() / 2;
        now >= self.made_at.saturating_add(half) || now + SKEW.as_secs() / 2 < self.made_at
    }

    /// The RRSIG over `records` (one RRset: same owner, type and TTL), from the cache or made
    /// now. `None` only if the crypto provider fails.
    pub(crate) fn rrsig(&self, records: &[&Record]) -> Option<Record> {
        records.first()?;
        let key = cache_key(records)?;
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Some(hit.clone());
        }
        let sig = self.sign(records)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, sig.clone());
        Some(sig)
    }

    fn sign(&self, records: &[&Record]) -> Option<Record> {
        let first = records[0];
        let public = self.signer.key.public();
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: match public.algorithm() {
                super::KeyAlgorithm::EcdsaP256Sha256 => Algorithm::ECDSAP256SHA256,
                super::KeyAlgorithm::Ed25519 => Algorithm::ED25519,
            },
            num_labels: first.name.num_labels(),
            original_ttl: first.ttl,
            sig_expiration: SerialNumber::new(self.window.expiration),
            sig_inception: SerialNumber::new(self.window.inception),
            key_tag: public.key_tag(),
            signer_name: self.apex.clone(),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, records.iter().copied()).ok()?;
        let signature = self.signer.key.signing().sign(&tbs).ok()?;
        self.signatures.inc();
        let rrsig = RRSIG::from_sig(input, signature);
        Some(Record::from_rdata(first.name.clone(), first.ttl, RData::DNSSEC(DNSSECRData::RRSIG(rrsig))))
    }

    /// The compact-denial NSEC at `qname` (RFC 9824): next name `\000.<qname>`, the types that
    /// exist there (`None`: the name does not exist, NXNAME) plus RRSIG and NSEC, with the
    /// negative TTL `ttl`.
    pub(crate) fn nsec(&self, qname: &Name, types: Option<&[RecordType]>, ttl: u32) -> Option<Record> {
        let mut owner = qname.to_lowercase();
        owner.set_fqdn(true);
        let next = Name::from_labels([&b"\0"[..]]).ok()?.append_domain(&owner).ok()?;
        let mut bitmap: Vec<RecordType> = types.map_or_else(|| vec![NXNAME], <[RecordType]>::to_vec);
        bitmap.extend([RecordType::RRSIG, RecordType::NSEC]);
        Some(Record::from_rdata(owner, ttl, RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, bitmap)))))
    }
}

/// Owner (lowercase), type, TTL and every RDATA in canonical order: one key per RRset signed.
fn cache_key(records: &[&Record]) -> Option<Vec<u8>> {
    let first = records[0];
    let mut rdatas: Vec<Vec<u8>> = Vec::with_capacity(records.len());
    for record in records {
        let mut buf = Vec::new();
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_canonical_form(true);
        record.data.emit(&mut encoder).ok()?;
        rdatas.push(buf);
    }
    rdatas.sort();
    let mut key = first.name.to_lowercase().to_ascii().into_bytes();
    key.push(0);
    key.extend_from_slice(&u16::from(first.record_type()).to_be_bytes());
    key.extend_from_slice(&first.ttl.to_be_bytes());
    for rdata in rdatas {
        key.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        key.extend_from_slice(&rdata);
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::dnssec::PublicKey;

    use super::*;
    use crate::dnssec::KeyAlgorithm;

    fn signer(validity: Duration) -> Arc<Signer> {
        let key =
            ZoneKey::from_pkcs8(&ZoneKey::generate_pkcs8(KeyAlgorithm::EcdsaP256Sha256).unwrap()).unwrap();
        Arc::new(Signer::new(key, vec![], 3600, validity))
    }

    fn apex() -> Name {
        Name::from_ascii("pool.example.test.").unwrap()
    }

    fn a(ip: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii("api.pool.example.test.").unwrap(),
            5,
            RData::A(ip.parse::<std::net::Ipv4Addr>().unwrap().into()),
        )
    }

    #[test]
    fn window_is_backdated_and_refresh_comes_at_half_validity() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let version = SignedVersion::new(signer(Duration::from_secs(172_800)), &apex(), t0);
        assert_eq!(version.window(), Window { inception: 1_800_000_000 - 3_600, expiration: 1_800_172_800 });
        assert!(!version.needs_refresh(t0));
        assert!(!version.needs_refresh(t0 + Duration::from_secs(86_399)));
        assert!(version.needs_refresh(t0 + Duration::from_secs(86_400)));
        // A clock stepped back by more than half the skew: re-sign rather than serve signatures
        // from the future.
        assert!(!version.needs_refresh(t0 - Duration::from_secs(1_000)));
        assert!(version.needs_refresh(t0 - Duration::from_secs(3_600)));
        let sig = version.rrsig(&[&a("192.0.2.1")]).unwrap();
        let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &sig.data else { panic!("{sig:?}") };
        assert_eq!(rrsig.input().sig_inception, SerialNumber::new(1_800_000_000 - 3_600));
        assert_eq!(rrsig.input().sig_expiration, SerialNumber::new(1_800_172_800));
        assert_eq!(rrsig.input().signer_name, apex());
        assert_eq!(rrsig.input().num_labels, 4);
    }

    #[test]
    fn signatures_verify_are_cached_per_rrset_and_cover_exactly_it() {
        let version = SignedVersion::new(signer(Duration::from_secs(7_200)), &apex(), SystemTime::now());
        let (one, two) = (a("192.0.2.1"), a("192.0.2.2"));
        let both = version.rrsig(&[&one, &two]).unwrap();
        // The same RRset in another order: the same (cached) signature.
        assert_eq!(version.rrsig(&[&two, &one]).unwrap(), both);
        let single = version.rrsig(&[&one]).unwrap();
        assert_ne!(single, both);
        let dnskey = match &version.dnskeys[0].data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => k.clone(),
            other => panic!("{other:?}"),
        };
        let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &both.data else { panic!() };
        let tbs = TBS::from_input(&one.name, DNSClass::IN, rrsig.input(), [&one, &two].into_iter()).unwrap();
        dnskey.public_key().verify(tbs.as_ref(), rrsig.sig()).unwrap();
        let tbs = TBS::from_input(&one.name, DNSClass::IN, rrsig.input(), [&one].into_iter()).unwrap();
        assert!(dnskey.public_key().verify(tbs.as_ref(), rrsig.sig()).is_err(), "a subset must not verify");
    }

    #[test]
    fn nsec_covers_only_the_query_name() {
        let version = SignedVersion::new(signer(Duration::from_secs(7_200)), &apex(), SystemTime::now());
        let nx = version.nsec(&Name::from_ascii("Nope.pool.example.test.").unwrap(), None, 5).unwrap();
        assert_eq!(nx.name.to_ascii(), "nope.pool.example.test.");
        let mut wire = Vec::new();
        nx.data.emit(&mut BinEncoder::new(&mut wire)).unwrap();
        let next = b"\x01\x00\x04nope\x04pool\x07example\x04test\x00";
        assert_eq!(&wire[..next.len()], next);
        // Window 0, 17 bytes: RRSIG (46) and NSEC (47) in byte 5, NXNAME (128) in byte 16.
        let mut bitmap = vec![0u8, 17, 0, 0, 0, 0, 0, 0x03];
        bitmap.extend([0; 10]);
        bitmap.push(0x80);
        assert_eq!(&wire[next.len()..], &bitmap[..]);
        let nodata = version.nsec(&apex(), Some(&[RecordType::SOA]), 5).unwrap();
        assert!(nodata.data.to_string().contains("SOA RRSIG NSEC"), "{nodata}");
        let empty = version.nsec(&apex(), Some(&[]), 5).unwrap();
        assert!(empty.data.to_string().ends_with(" RRSIG NSEC"), "{empty}");
    }
}
