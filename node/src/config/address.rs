//! Address pins: an exact address (`192.0.2.10`) or a prefix (`2001:db8::/48`), as `[[peers]]
//! addresses` and `node.control_allow` take them, and which addresses are special-purpose.
//!
//! Invariants: a pin's bits past its prefix length are zero (`10.1.2.3/8` is refused, not
//! silently widened); `contains` compares only addresses of the pin's family.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Most service addresses one site may have (`node.addresses`, `peers[i].addresses`).
pub const MAX_SERVICE_ADDRESSES: usize = 16;

/// An exact address or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressPin {
    addr: IpAddr,
    prefix_len: u8,
}

impl AddressPin {
    /// The pin holding only `ip`.
    pub fn exact_address(ip: IpAddr) -> Self {
        Self { addr: ip, prefix_len: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` is inside the pin.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), self.prefix_len, 32) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix_len, 128) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The address, when the pin is a single address.
    pub fn exact(&self) -> Option<IpAddr> {
        (self.prefix_len == if self.addr.is_ipv4() { 32 } else { 128 }).then_some(self.addr)
    }

    /// The first address of the pin.
    pub fn network(&self) -> IpAddr {
        self.addr
    }
}

fn mask(bits: u128, prefix_len: u8, width: u8) -> u128 {
    if prefix_len == 0 {
        return 0;
    }
    let keep = u128::MAX << (width - prefix_len);
    bits & keep & (u128::MAX >> (128 - u32::from(width)))
}

impl FromStr for AddressPin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or prefix (192.0.2.10, 2001:db8::/48)"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => width,
            Some(len) => match len.parse::<u8>() {
                Ok(len) if len <= width => len,
                _ => return Err(format!("{text:?}: prefix length must be 0 to {width}")),
            },
        };
        let bits = match addr {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if mask(bits, prefix_len, width) != bits {
            return Err(format!("{text:?}: bits set past the prefix length"));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for AddressPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exact() {
            Some(ip) => write!(f, "{ip}"),
            None => write!(f, "{}/{}", self.addr, self.prefix_len),
        }
    }
}

/// Whether `ip` can never be a site's service address: unspecified, 0.0.0.0/8, broadcast,
/// multicast, 240.0.0.0/4, link-local. Loopback, private, documentation and benchmarking
/// addresses stay allowed (tests and examples use them).
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 0 || v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 || v4.is_link_local()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_special_purpose(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_contain_and_print() {
        let exact: AddressPin = "192.0.2.10".parse().unwrap();
        assert_eq!(exact.exact(), Some("192.0.2.10".parse().unwrap()));
        assert!(
            exact.contains("192.0.2.10".parse().unwrap()) && !exact.contains("192.0.2.11".parse().unwrap())
        );
        let net: AddressPin = "2001:db8::/48".parse().unwrap();
        assert_eq!(net.exact(), None);
        assert!(net.contains("2001:db8:0:1::5".parse().unwrap()));
        assert!(
            !net.contains("2001:db9::1".parse().unwrap()) && !net.contains("192.0.2.10".parse().unwrap())
        );
        assert_eq!(net.to_string(), "2001:db8::/48");
        let all: AddressPin = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        for bad in ["10.1.2.3/8", "10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<AddressPin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn special_purpose_addresses() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "169.254.1.1",
            "::",
            "ff02::1",
            "fe80::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(is_special_purpose(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "10.66.66.66", "192.0.2.1", "198.18.0.1", "::1", "2001:db8::1"] {
            assert!(!is_special_purpose(ip.parse().unwrap()), "{ip}");
        }
    }
}
