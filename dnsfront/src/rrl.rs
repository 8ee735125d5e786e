//! Response rate limiting (RRL), as Knot's `mod-rrl` and BIND's `rate-limit`: UDP responses
//! per source prefix and response kind are held to a rate, so the server cannot be used to
//! flood a spoofed victim with responses.
//!
//! Owns [`RrlConfig`] (the settings), [`Rrl`] (the table of token buckets) and
//! [`truncate_to_slip`] (the TC-only form of a response). A bucket is kept per source prefix
//! (IPv4 /24 and IPv6 /56 by default; an IPv4-mapped IPv6 address counts as IPv4) and
//! [`Kind`] (answer, NXDOMAIN, error), as a GCRA (one "theoretical arrival time" per bucket:
//! integer arithmetic, exact): it allows `rate` responses per second and a burst of one second's
//! worth. A response over the rate is dropped, except every `slip`th one of its bucket, which is
//! sent truncated (TC, question and OPT only: smaller than the query's answer, and a real client
//! retries over TCP, which RRL never limits).
//!
//! Invariants: the table's memory is fixed when it is made ([`TABLE_BUCKETS`] buckets in sets of
//! [`WAYS`]) whatever the number of prefixes seen; a new prefix takes the bucket of its set with
//! the most tokens (a full bucket holds no state worth keeping, so evicting it loses nothing;
//! the buckets of prefixes being limited are the last to go); prefixes are hashed with a key
//! drawn at start, so nobody can aim many prefixes at one set. Time comes in as an argument:
//! the table never reads the clock.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use prometheus_client::encoding::EncodeLabelValue;

use crate::metrics::Rcode;

/// Buckets in the table: enough for 32,768 prefixes limited at once (about 850 KB).
pub(crate) const TABLE_BUCKETS: usize = 32_768;
/// Buckets per set: a prefix lives in one of the `WAYS` buckets of the set its hash picks.
pub(crate) const WAYS: usize = 4;
/// How far ahead of time a bucket may run: its burst is one second of its rate.
const WINDOW_NS: u64 = 1_000_000_000;

/// Settings of response rate limiting (`[dns]` in the node's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per source prefix and response kind, with a burst of one second's
    /// worth; 0 turns rate limiting off.
    pub rate: u32,
    /// Every `slip`th limited response is sent truncated (TC set) instead of dropped; 0 drops
    /// them all, 1 truncates them all.
    pub slip: u32,
    /// Length of the IPv4 prefix a bucket counts (1 to 32).
    pub ipv4_prefix: u8,
    /// Length of the IPv6 prefix a bucket counts (1 to 128).
    pub ipv6_prefix: u8,
}

impl RrlConfig {
    /// Default `rate`: a large resolver farm behind one /24 asking for every pool name as often
    /// as a TTL of a few seconds makes it stays well below it.
    pub const DEFAULT_RATE: u32 = 1_000;
    /// Default `slip` (BIND's): every other limited response is truncated.
    pub const DEFAULT_SLIP: u32 = 2;
    /// Default `ipv4_prefix`.
    pub const DEFAULT_IPV4_PREFIX: u8 = 24;
    /// Default `ipv6_prefix`.
    pub const DEFAULT_IPV6_PREFIX: u8 = 56;

    /// Rate limiting off.
    pub const OFF: RrlConfig = RrlConfig { rate: 0, ..Self::DEFAULT };

    const DEFAULT: RrlConfig = RrlConfig {
        rate: Self::DEFAULT_RATE,
        slip: Self::DEFAULT_SLIP,
        ipv4_prefix: Self::DEFAULT_IPV4_PREFIX,
        ipv6_prefix: Self::DEFAULT_IPV6_PREFIX,
    };
}

impl Default for RrlConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The kind of a response, with a bucket of its own per prefix (so a flood of NXDOMAIN does
/// not cost a prefix its answers), as a metrics label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Kind {
    /// NOERROR, with records or without (NODATA).
    answer,
    /// NXDOMAIN.
    nxdomain,
    /// Any other response code (REFUSED, FORMERR, NOTIMP, BADVERS, BADCOOKIE, SERVFAIL).
    error,
}

impl Kind {
    /// The kind of a response carrying `rcode`.
    pub(crate) fn of(rcode: Rcode) -> Self {
        match rcode {
            Rcode::noerror | Rcode::nodata => Self::answer,
            Rcode::nxdomain => Self::nxdomain,
            Rcode::refused
            | Rcode::formerr
            | Rcode::notimp
            | Rcode::badvers
            | Rcode::badcookie
            | Rcode::servfail => Self::error,
        }
    }
}

/// What to do with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Within the rate: send it.
    Send,
    /// Over the rate: send nothing.
    Drop,
    /// Over the rate, and this one's turn to slip: send it truncated ([`truncate_to_slip`]).
    Slip,
}

/// One bucket: a prefix and kind (by a 64-bit keyed hash; 0 is an empty bucket), its theoretical
/// arrival time (ns since the table's epoch; at or before now: full), and its limited responses
/// modulo `slip`.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    key: u64,
    tat: u64,
    limited: u32,
}

/// The rate limiter: a fixed table of buckets, shared by every UDP loop.
pub(crate) struct Rrl {
    config: RrlConfig,
    /// Nanoseconds between two responses at the rate.
    interval: u64,
    sets: Box<[Mutex<[Bucket; WAYS]>]>,
    hasher: RandomState,
    epoch: Instant,
}

impl Rrl {
    /// A limiter for `config` with `buckets` buckets (rounded up to a power of two of sets of
    /// [`WAYS`]), or `None` when `config.rate` is 0 (off).
    pub(crate) fn new(config: RrlConfig, buckets: usize, epoch: Instant) -> Option<Self> {
        if config.rate == 0 {
            return None;
        }
        let sets = buckets.div_ceil(WAYS).next_power_of_two();
        Some(Self {
            config,
            interval: WINDOW_NS / u64::from(config.rate).min(WINDOW_NS),
            sets: (0..sets).map(|_| Mutex::new([Bucket::default(); WAYS])).collect(),
            hasher: RandomState::new(),
            epoch,
        })
    }

    /// The settings in force.
    pub(crate) fn config(&self) -> RrlConfig {
        self.config
    }

    /// How many buckets the table holds (fixed).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// How many buckets are in use now.
    #[cfg(test)]
    pub(crate) fn buckets_in_use(&self) -> usize {
        let lock = |set: &Mutex<[Bucket; WAYS]>| *set.lock().unwrap_or_else(PoisonError::into_inner);
        self.sets.iter().map(|set| lock(set).iter().filter(|b| b.key != 0).count()).sum()
    }

    /// Decides about one response of `kind` to `ip` at `now`; the second value says whether a
    /// bucket still limiting another prefix had to make room (the table is too small for the
    /// prefixes being limited).
    pub(crate) fn decide(&self, ip: IpAddr, kind: Kind, now: Instant) -> (Action, bool) {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let key = self.key(ip, kind);
        let index = (key as usize) & (self.sets.len() - 1);
        let mut set = self.sets[index].lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = false;
        let bucket = match set.iter().position(|b| b.key == key) {
            Some(way) => &mut set[way],
            None => {
                // The bucket with the most tokens (the earliest arrival time); empty ones have 0.
                let way = (0..WAYS).min_by_key(|&way| set[way].tat).unwrap_or(0);
                evicted = set[way].key != 0 && set[way].tat > now;
                set[way] = Bucket { key, tat: now, limited: 0 };
                &mut set[way]
            }
        };
        let tat = bucket.tat.max(now);
        let next = tat.saturating_add(self.interval);
        if next <= now.saturating_add(WINDOW_NS) {
            bucket.tat = next;
            return (Action::Send, evicted);
        }
        let slip = self.config.slip;
        if slip == 0 {
            return (Action::Drop, evicted);
        }
        bucket.limited = (bucket.limited + 1) % slip;
        let action = if bucket.limited == 0 { Action::Slip } else { Action::Drop };
        (action, evicted)
    }

    /// The bucket key of `ip`'s prefix and `kind`: a keyed hash, never 0.
    fn key(&self, ip: IpAddr, kind: Kind) -> u64 {
        let (family, prefix) = match ip {
            IpAddr::V4(v4) => (4u8, mask(u128::from(v4.to_bits()) << 96, self.config.ipv4_prefix)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (4, mask(u128::from(v4.to_bits()) << 96, self.config.ipv4_prefix)),
                None => (6, mask(v6.to_bits(), self.config.ipv6_prefix)),
            },
        };
        self.hasher.hash_one((family, prefix, kind)).max(1)
    }
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("config", &self.config)
            .field("buckets", &(self.sets.len() * WAYS))
            .finish_non_exhaustive()
    }
}

/// `bits` with only its first `len` bits kept.
fn mask(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        len if len >= 128 => bits,
        len => bits & !(u128::MAX >> len),
    }
}

const TYPE_OPT: u16 = 41;
const HEADER: usize = 12;

/// Rewrites the response in `out` (one valid DNS message) into its slip form: the same header
/// with TC set, its question, its OPT if it has one (EDNS and any COOKIE stay), and no other
/// record. False (and `out` unchanged) if `out` does not parse as a DNS message.
pub(crate) fn truncate_to_slip(out: &mut Vec<u8>) -> bool {
    let Some((question_end, opt)) = question_and_opt(out) else {
        return false;
    };
    let opt_len = opt.as_ref().map_or(0, |range| range.len());
    if let Some(range) = opt {
        out.copy_within(range, question_end);
    }
    out.truncate(question_end + opt_len);
    out[2] |= 0x02;
    out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, u8::from(opt_len > 0)]);
    true
}

/// Where `message`'s question section ends, and its OPT record's bytes if it has one.
fn question_and_opt(message: &[u8]) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    let count = |at: usize| message.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (questions, answers, authority, additional) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = HEADER;
    for _ in 0..questions {
        pos = skip_name(message, pos)? + 4;
    }
    let question_end = pos;
    let mut opt = None;
    for i in 0..answers + authority + additional {
        let start = pos;
        pos = skip_name(message, pos)?;
        let fixed = message.get(pos..pos + 10)?;
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10 + rdlen;
        if i >= answers + authority && u16::from_be_bytes([fixed[0], fixed[1]]) == TYPE_OPT {
            opt = Some(start..pos);
        }
    }
    (question_end <= message.len() && pos == message.len()).then_some((question_end, opt))
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(message: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *message.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            len if len & 0xc0 == 0xc0 => return Some(pos + 2),
            len if len & 0xc0 != 0 => return None,
            len => pos += 1 + usize::from(len),
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Edns, Message, MessageType, Query},
        rr::{Name, RData, Record, RecordType},
    };

    use std::time::Duration;

    use super::*;

    const WINDOW: Duration = Duration::from_nanos(WINDOW_NS);

    fn config(rate: u32, slip: u32) -> RrlConfig {
        RrlConfig { rate, slip, ..RrlConfig::default() }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Counts the actions for `count` responses to `ip` spread evenly over `over` from `start`.
    fn run(rrl: &Rrl, ip: IpAddr, start: Instant, over: Duration, count: u32) -> [u32; 3] {
        let mut seen = [0; 3];
        for i in 0..count {
            let at = start + over * i / count;
            let (action, _) = rrl.decide(ip, Kind::answer, at);
            seen[action as usize] += 1;
        }
        seen
    }

    /// A burst of one second's worth, then the rate: 10 s of a flood at 10× the rate get
    /// 1 s + 10 s of the rate, and every `slip`th limited response slips.
    #[test]
    fn a_flood_gets_the_rate_and_slips_as_configured() {
        let epoch = Instant::now();
        let rrl = Rrl::new(config(100, 3), 1024, epoch).unwrap();
        let [sent, dropped, slipped] = run(&rrl, ip("192.0.2.7"), epoch, Duration::from_secs(10), 10_000);
        assert!((1_090..=1_101).contains(&sent), "sent {sent}");
        let limited = dropped + slipped;
        assert_eq!(limited + sent, 10_000);
        assert_eq!(slipped, limited / 3, "dropped {dropped}, slipped {slipped}");
    }

    #[test]
    fn slip_zero_drops_everything_and_one_slips_everything() {
        let epoch = Instant::now();
        for (slip, drops) in [(0, true), (1, false)] {
            let rrl = Rrl::new(config(10, slip), 64, epoch).unwrap();
            let [sent, dropped, slipped] = run(&rrl, ip("192.0.2.7"), epoch, Duration::ZERO, 100);
            assert_eq!(sent, 10, "slip {slip}");
            assert_eq!((dropped, slipped), if drops { (90, 0) } else { (0, 90) }, "slip {slip}");
        }
    }

    /// Prefixes: a /24 shares a bucket, the next /24 has its own; IPv6 by /56, IPv4-mapped
    /// addresses as IPv4; kinds have buckets of their own.
    #[test]
    fn buckets_are_per_prefix_and_kind() {
        let epoch = Instant::now();
        let rrl = Rrl::new(config(5, 0), 1024, epoch).unwrap();
        let limited = |text: &str, kind: Kind| rrl.decide(ip(text), kind, epoch).0 == Action::Drop;
        for host in 1..=5 {
            assert!(!limited(&format!("192.0.2.{host}"), Kind::answer));
        }
        assert!(limited("192.0.2.200", Kind::answer));
        assert!(limited("::ffff:192.0.2.9", Kind::answer));
        assert!(!limited("192.0.3.1", Kind::answer));
        assert!(!limited("192.0.2.1", Kind::nxdomain));
        for i in 0..5 {
            assert!(!limited(&format!("2001:db8:0:{i:x}::1"), Kind::error));
        }
        assert!(limited("2001:db8:0:ff::2", Kind::error), "same /56");
        assert!(!limited("2001:db8:0:100::1", Kind::error), "next /56");
        // Refilled after the window.
        let later = epoch + WINDOW;
        assert_eq!(rrl.decide(ip("192.0.2.1"), Kind::answer, later).0, Action::Send);
    }

    /// A million prefixes through a small table: its size never changes, it never holds more
    /// buckets than it has, and a prefix being limited keeps its bucket throughout (the new
    /// ones take full buckets first).
    #[test]
    fn memory_is_bounded_under_many_prefixes() {
        let epoch = Instant::now();
        let rrl = Rrl::new(config(10, 0), 1024, epoch).unwrap();
        let capacity = rrl.capacity();
        assert_eq!(capacity, 1024);
        let flooder = ip("198.51.100.1");
        let mut now = epoch;
        let mut flood_sent = 0;
        for i in 0u32..1_000_000 {
            // 100k responses a second: a new prefix each, and the flooder every 100th.
            now = epoch + Duration::from_micros(u64::from(i) * 10);
            let spread = IpAddr::V4((i << 8).into());
            assert_ne!(
                rrl.decide(spread, Kind::answer, now).0,
                Action::Drop,
                "a new prefix is never limited"
            );
            if i % 100 == 0 && rrl.decide(flooder, Kind::answer, now).0 == Action::Send {
                flood_sent += 1;
            }
        }
        assert_eq!(rrl.capacity(), capacity);
        assert!(rrl.buckets_in_use() <= capacity);
        assert_eq!(
            std::mem::size_of_val(&*rrl.sets),
            capacity / WAYS * std::mem::size_of::<Mutex<[Bucket; WAYS]>>()
        );
        // 10 s at 1,000 a second from the flooder: 10 for the burst plus 10 a second.
        let elapsed = now.duration_since(epoch).as_secs_f64();
        assert!(
            f64::from(flood_sent) <= 10.0 + 10.0 * elapsed + 1.0,
            "flooder sent {flood_sent} in {elapsed} s"
        );
        assert!(flood_sent >= 100, "flooder sent {flood_sent}");
    }

    #[test]
    fn rate_zero_is_off() {
        assert!(Rrl::new(RrlConfig::OFF, 1024, Instant::now()).is_none());
        assert_eq!(RrlConfig::default().rate, RrlConfig::DEFAULT_RATE);
    }

    #[test]
    fn masks() {
        assert_eq!(mask(u128::MAX, 0), 0);
        assert_eq!(mask(u128::MAX, 128), u128::MAX);
        assert_eq!(mask(u128::MAX, 24), 0xffff_ff00 << 96);
    }

    fn response(edns: bool) -> Vec<u8> {
        let name = Name::from_ascii("api.pool.example.test.").unwrap();
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.message_type = MessageType::Response;
        message.metadata.authoritative = true;
        message.add_query(Query::query(name.clone(), RecordType::A));
        for host in 1..=3 {
            let addr = std::net::Ipv4Addr::new(192, 0, 2, host);
            message.add_answer(Record::from_rdata(name.clone(), 5, RData::A(addr.into())));
        }
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(1232);
            message.set_edns(opt);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn slip_form_keeps_header_question_and_opt() {
        for edns in [false, true] {
            let whole = response(edns);
            let mut out = whole.clone();
            assert!(truncate_to_slip(&mut out));
            assert!(out.len() < whole.len());
            let parsed = Message::from_vec(&out).unwrap();
            assert!(parsed.metadata.truncation);
            assert!(parsed.metadata.authoritative);
            assert_eq!(parsed.metadata.id, 4242);
            assert_eq!(parsed.queries.len(), 1);
            assert!(parsed.answers.is_empty() && parsed.authorities.is_empty());
            assert_eq!(parsed.edns.is_some(), edns);
            assert_eq!(parsed.to_vec().unwrap(), out, "no trailing bytes");
        }
        let mut junk = vec![0, 1, 2];
        assert!(!truncate_to_slip(&mut junk));
        assert_eq!(junk, [0, 1, 2]);
    }
}
