//! `[dns]`: how the DNS server protects itself and others: response rate limiting and DNS
//! cookies (`cookies`, default true: RFC 7873 with RFC 9018 server cookies, under a per-site
//! secret made at start and rotated).
//!
//! The section is optional; every field has a default. Rate limiting is on by default, at a
//! rate no resolver farm behind one prefix reaches in normal use, so the node is never a useful
//! reflector; `rrl_rate = 0` turns it off.

use std::ops::RangeInclusive;

use serde::Deserialize;
use spdu_dnsfront::RrlConfig;
use toml::Spanned;

use super::Checked;
use super::validate::bounded;

/// `dns.rrl_rate`: responses per second per source prefix and response kind; 0 is off.
pub const RRL_RATE: RangeInclusive<u32> = 0..=1_000_000;
/// `dns.rrl_slip`: every Nth limited response is sent truncated; 0 never, 1 always.
pub const RRL_SLIP: RangeInclusive<u32> = 0..=100;
/// `dns.rrl_ipv4_prefix`: the IPv4 prefix length a rate is counted per.
pub const RRL_IPV4_PREFIX: RangeInclusive<u8> = 8..=32;
/// `dns.rrl_ipv6_prefix`: the IPv6 prefix length a rate is counted per.
pub const RRL_IPV6_PREFIX: RangeInclusive<u8> = 16..=128;

/// `[dns]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// `dns.rrl_rate`: UDP responses per second per source prefix and response kind (answer,
    /// NXDOMAIN, error), with a burst of one second's worth; 0 turns rate limiting off.
    pub rrl_rate: u32,
    /// `dns.rrl_slip`: every `rrl_slip`th response over the rate is sent truncated (TC set) so
    /// that a real client retries over TCP; the others are dropped. 0 drops them all.
    pub rrl_slip: u32,
    /// `dns.rrl_ipv4_prefix`: IPv4 sources are counted per prefix of this length.
    pub rrl_ipv4_prefix: u8,
    /// `dns.rrl_ipv6_prefix`: IPv6 sources are counted per prefix of this length.
    pub rrl_ipv6_prefix: u8,
    /// `dns.cookies`: answer client cookies with server cookies and check those sent back
    /// (BADCOOKIE over UDP for a bad one; a valid one exempts the query from rate limiting);
    /// false: COOKIE options are ignored.
    pub cookies: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let rrl = RrlConfig::default();
        Self {
            rrl_rate: rrl.rate,
            rrl_slip: rrl.slip,
            rrl_ipv4_prefix: rrl.ipv4_prefix,
            rrl_ipv6_prefix: rrl.ipv6_prefix,
            cookies: true,
        }
    }
}

impl DnsConfig {
    /// The rate-limiting settings the DNS server takes.
    pub fn rrl(&self) -> RrlConfig {
        RrlConfig {
            rate: self.rrl_rate,
            slip: self.rrl_slip,
            ipv4_prefix: self.rrl_ipv4_prefix,
            ipv6_prefix: self.rrl_ipv6_prefix,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    rrl_rate: Option<Spanned<u32>>,
    #[serde(default)]
    rrl_slip: Option<Spanned<u32>>,
    #[serde(default)]
    rrl_ipv4_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    rrl_ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    cookies: Option<bool>,
}

impl RawDns {
    pub(super) fn validate(&self) -> Checked<DnsConfig> {
        let default = DnsConfig::default();
        Ok(DnsConfig {
            rrl_rate: bounded("dns.rrl_rate", &self.rrl_rate, default.rrl_rate, &RRL_RATE, " responses/s")?,
            rrl_slip: bounded("dns.rrl_slip", &self.rrl_slip, default.rrl_slip, &RRL_SLIP, "")?,
            rrl_ipv4_prefix: bounded(
                "dns.rrl_ipv4_prefix",
                &self.rrl_ipv4_prefix,
                default.rrl_ipv4_prefix,
                &RRL_IPV4_PREFIX,
                " bits",
            )?,
            rrl_ipv6_prefix: bounded(
                "dns.rrl_ipv6_prefix",
                &self.rrl_ipv6_prefix,
                default.rrl_ipv6_prefix,
                &RRL_IPV6_PREFIX,
                " bits",
            )?,
            cookies: self.cookies.unwrap_or(default.cookies),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, tests::valid};
    use super::*;

    fn parse(dns: &str) -> anyhow::Result<Config> {
        Config::parse(Path::new("/etc/spdu/spdu.toml"), &format!("{}\n[dns]\n{dns}\n", valid()))
    }

    #[test]
    fn defaults_without_the_section() {
        let config = Config::parse(Path::new("/etc/spdu/spdu.toml"), &valid()).unwrap();
        assert_eq!(config.dns, DnsConfig::default());
        assert_eq!(config.dns.rrl(), RrlConfig::default());
        assert_eq!(
            (
                config.dns.rrl_rate,
                config.dns.rrl_slip,
                config.dns.rrl_ipv4_prefix,
                config.dns.rrl_ipv6_prefix
            ),
            (1_000, 2, 24, 56)
        );
        assert_eq!(parse("").unwrap().dns, DnsConfig::default());
    }

    #[test]
    fn fields_are_read() {
        let config =
            parse("rrl_rate = 50\nrrl_slip = 0\nrrl_ipv4_prefix = 32\nrrl_ipv6_prefix = 64").unwrap();
        let expected = RrlConfig { rate: 50, slip: 0, ipv4_prefix: 32, ipv6_prefix: 64 };
        assert_eq!(config.dns.rrl(), expected);
        assert_eq!(parse("rrl_rate = 0").unwrap().dns.rrl().rate, 0, "0 is off");
    }

    /// Each mistake names the file and the line, and the field or the value.
    #[test]
    fn mistakes_name_the_line_and_the_field() {
        let line = valid().lines().count() + 3;
        for (text, field) in [
            ("rrl_rate = 1000001", "dns.rrl_rate: 1000001 is out of bounds (0 to 1000000 responses/s)"),
            ("rrl_slip = 101", "dns.rrl_slip: 101 is out of bounds (0 to 100)"),
            ("rrl_ipv4_prefix = 33", "dns.rrl_ipv4_prefix: 33 is out of bounds (8 to 32 bits)"),
            ("rrl_ipv6_prefix = 8", "dns.rrl_ipv6_prefix: 8 is out of bounds (16 to 128 bits)"),
            // Type errors point at the value on the field's line (toml names no field then).
            ("rrl_rate = -1", ":12: invalid value: integer `-1`, expected u32"),
            ("rrl_ipv6_prefix = 300", ":19: invalid value: integer `300`, expected u8"),
            ("rrl_rate = \"fast\"", ":12: invalid type: string \"fast\", expected u32"),
            ("rrl_burst = 5", "unknown field `rrl_burst`"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.starts_with(&format!("/etc/spdu/spdu.toml:{line}:")), "{text}: {e}");
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
