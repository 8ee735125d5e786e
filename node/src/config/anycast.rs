//! `[anycast]`: the prefixes `spdu exabgp` announces while this site may attract traffic, the
//! MED it announces them with, and how often it asks the node.
//!
//! The section is optional (no prefixes: `spdu exabgp` refuses to start). Each prefix is an
//! IPv4 or IPv6 CIDR with its host bits zero, neither of whose ends is special-purpose (the
//! service-address rule of [`is_special_purpose`]: this also refuses `0.0.0.0/0` and `::/0`),
//! at most once. `med`, when set, is the base of the MED: the announced MED is `med` plus this
//! site's `node.priority`, so a backup site (higher priority number) announces a worse metric.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use spdu_gossip::proto::is_special_purpose;
use toml::Spanned;

use super::validate::{bounded, bounded_ms};
use super::{Checked, FieldError};

/// At most this many prefixes.
pub const MAX_PREFIXES: usize = 64;
/// `anycast.med`: the base MED (the node's priority, at most 1000, is added).
pub const MED: RangeInclusive<u32> = 0..=4_000_000_000;
/// `anycast.poll_ms`: how often `spdu exabgp` asks the node.
pub const POLL_MS: RangeInclusive<u64> = 50..=1_000;
/// `anycast.poll_ms`'s default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

/// One anycast prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Its network address (host bits zero).
    pub addr: IpAddr,
    /// Its length in bits.
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    /// Parses `ADDR/LEN` and checks that the host bits are zero and neither end is
    /// special-purpose.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("\"{s}\" is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("\"{addr}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("\"{len}\" is not a prefix length (0 to {max})"))?;
        let (bits, host) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), (1u128 << (32 - u32::from(len))) - 1),
            IpAddr::V6(a) => (u128::from(a), u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)),
        };
        if bits & host != 0 {
            let network = to_addr(addr, bits & !host);
            return Err(format!("{s} has host bits set (the network is {network}/{len})"));
        }
        let last = to_addr(addr, bits | host);
        if let Some(special) = [addr, last].into_iter().find(|a| is_special_purpose(*a)) {
            return Err(format!(
                "{s} holds the special-purpose address {special} (unspecified, broadcast, multicast, \
                 reserved or link-local)"
            ));
        }
        Ok(Prefix { addr, len })
    }
}

/// `bits` as an address of `like`'s family.
fn to_addr(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((bits as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(bits.into()),
    }
}

/// `[anycast]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnycastConfig {
    /// `anycast.prefixes`: what `spdu exabgp` announces and withdraws.
    pub prefixes: Vec<Prefix>,
    /// `anycast.med` plus `node.priority`; none: announced without a MED.
    pub med: Option<u32>,
    /// `anycast.poll_ms`: how often `spdu exabgp` asks the node's `/v1/anycast`.
    pub poll: Duration,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnycast {
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    med: Option<Spanned<u32>>,
    #[serde(default)]
    poll_ms: Option<Spanned<u64>>,
}

impl RawAnycast {
    /// Validates the section; `priority` is this site's `node.priority`.
    pub(super) fn validate(&self, priority: u32) -> Checked<AnycastConfig> {
        if self.prefixes.len() > MAX_PREFIXES {
            return Err(FieldError::at(
                &self.prefixes[MAX_PREFIXES],
                format!("anycast.prefixes: more than {MAX_PREFIXES} prefixes"),
            ));
        }
        let mut prefixes: Vec<Prefix> = Vec::with_capacity(self.prefixes.len());
        for (i, raw) in self.prefixes.iter().enumerate() {
            let field = format!("anycast.prefixes[{i}]");
            let prefix: Prefix =
                raw.get_ref().trim().parse().map_err(|e| FieldError::at(raw, format!("{field}: {e}")))?;
            if prefixes.contains(&prefix) {
                return Err(FieldError::at(raw, format!("{field}: {prefix} is listed twice")));
            }
            prefixes.push(prefix);
        }
        let med = match &self.med {
            None => None,
            Some(_) => Some(bounded("anycast.med", &self.med, 0, &MED, "")? + priority),
        };
        let poll = bounded_ms("anycast.poll_ms", &self.poll_ms, DEFAULT_POLL, POLL_MS)?;
        Ok(AnycastConfig { prefixes, med, poll })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_refuse_host_bits_and_special_ranges() {
        for ok in ["198.18.100.0/24", "198.18.100.7/32", "2001:db8:5::/48", "10.0.0.0/8", "fd00::/8"] {
            assert_eq!(ok.parse::<Prefix>().expect(ok).to_string(), ok);
        }
        for (bad, says) in [
            ("198.18.100.1/24", "host bits set (the network is 198.18.100.0/24)"),
            ("2001:db8::1/64", "host bits set"),
            ("0.0.0.0/0", "special-purpose address 0.0.0.0"),
            ("::/0", "special-purpose address ::"),
            ("128.0.0.0/1", "special-purpose address 255.255.255.255"),
            ("224.0.0.0/4", "special-purpose"),
            ("169.254.0.0/16", "special-purpose"),
            ("fe80::/64", "special-purpose"),
            ("198.18.100.0/33", "not a prefix length"),
            ("198.18.100.0", "not ADDRESS/LENGTH"),
            ("example/24", "not an IP address"),
        ] {
            let e = bad.parse::<Prefix>().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// The announced MED is `med` plus this site's `node.priority`; no `med`, no MED.
    #[test]
    fn med_adds_the_site_priority() {
        let config = |node: &str, anycast: &str| {
            let text = format!(
                "[node]\nname = \"a\"\nkey = \"k\"\ngossip = \"127.0.201.11:7946\"\ndns = [\"127.0.201.11:53\"]\n\
                 control = \"127.0.201.11:7947\"\naddresses = [\"127.0.201.11\"]\n{node}\n\
                 [zone]\norigin = \"pool.example.test\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"a.example.test\"]\n\n\
                 [anycast]\nprefixes = [\"198.18.100.0/24\"]\n{anycast}"
            );
            super::super::Config::parse(std::path::Path::new("spdu.toml"), &text).expect("valid").anycast
        };
        assert_eq!(config("priority = 5", "med = 100").med, Some(105));
        assert_eq!(config("", "med = 100").med, Some(101));
        let plain = config("priority = 5", "");
        assert_eq!((plain.med, plain.poll), (None, DEFAULT_POLL));
        assert_eq!(config("", "poll_ms = 250").poll, Duration::from_millis(250));
    }
}
