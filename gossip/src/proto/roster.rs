//! The roster: who the members are ([`Member`], with the service addresses each may claim,
//! [`AddressPin`]) and the roster as observations index it: every member's key (the node itself
//! included) in key order, a short id that names exactly that list, and bitmaps over it.
//!
//! An observation reports on peers as bits ([`Bitmap`]) at the peers' positions in its observer's
//! sorted roster, and names that roster by its [`RosterId`]. A report on 1000 peers is then 125
//! bytes instead of 1000 keys, which is what lets the view (observers × peers) fit at 1000 nodes.
//! A receiver whose roster has another id cannot place the bits and gives that observation no
//! vote (see the answer rule): rosters are the same on every node of a healthy cluster.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spdu_keys::PublicKey;

/// Most service addresses one observation may list; an observation with more is refused as
/// malformed (a member cannot turn every answer into an amplifier).
pub const MAX_SERVICE_ADDRESSES: usize = 16;

/// A roster entry: one other site, as the operator configured it.
///
/// Its observations may claim service addresses, but only those inside one of its
/// [`Member::addresses`] pins are ever served or probed (see [`AddressPin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The operator's name for the node.
    pub name: String,
    /// Its key.
    pub key: PublicKey,
    /// Its gossip (QUIC) address; `None` for a dynamic peer (`gossip = "dynamic"`): it is not
    /// dialled until its observation carries the address its own peers see it at
    /// ([`super::Observation::observed`]), and its connections are accepted from any address.
    pub gossip: Option<SocketAddr>,
    /// The service addresses (or prefixes) it may claim.
    pub addresses: Vec<AddressPin>,
}

/// One address (`192.0.2.10`, a /32 or /128) or prefix (`2001:db8::/48`) a member's service
/// addresses must lie in. Written and read as that string (also through serde).
///
/// Invariant: no bit is set past the prefix (`192.0.2.1/24` is refused: say `192.0.2.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressPin {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a string is not an [`AddressPin`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Not an IP address.
    #[error("{0:?} is not an IP address or prefix (e.g. 192.0.2.10 or 2001:db8::/48)")]
    Address(String),
    /// The prefix length is not a number within the address family's bits.
    #[error("{0:?}: the prefix length must be 0-{1}")]
    PrefixLength(String, u8),
    /// Bits are set past the prefix.
    #[error("{given:?} has bits set past the prefix: did you mean {expected}?")]
    HostBits {
        /// As written.
        given: String,
        /// With the host bits cleared.
        expected: String,
    },
}

impl AddressPin {
    /// Exactly `addr` (a /32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, prefix_len: bits(addr) }
    }

    /// The prefix `addr/prefix_len`; refused if the length exceeds the family's bits or a bit is
    /// set past it.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, PinError> {
        let text = format!("{addr}/{prefix_len}");
        if prefix_len > bits(addr) {
            return Err(PinError::PrefixLength(text, bits(addr)));
        }
        let masked = mask(addr, prefix_len);
        if masked != addr {
            return Err(PinError::HostBits { given: text, expected: format!("{masked}/{prefix_len}") });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The address (the network address of a prefix).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length (32 or 128 for a single address).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies inside (an IPv4 address never lies in an IPv6 prefix, nor the reverse).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }

    /// The address, when the pin is a single address.
    pub fn exact(&self) -> Option<IpAddr> {
        (self.prefix_len == bits(self.addr)).then_some(self.addr)
    }
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with every bit past `prefix_len` cleared (`prefix_len` at most the family's bits).
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl From<IpAddr> for AddressPin {
    fn from(addr: IpAddr) -> Self {
        Self::host(addr)
    }
}

impl FromStr for AddressPin {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, PinError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| PinError::Address(s.to_owned()))?;
        match len {
            None => Ok(Self::host(addr)),
            Some(len) => {
                let len: u8 = len.parse().map_err(|_| PinError::PrefixLength(s.to_owned(), bits(addr)))?;
                Self::new(addr, len)
            }
        }
    }
}

impl fmt::Display for AddressPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exact() {
            Some(addr) => write!(f, "{addr}"),
            None => write!(f, "{}/{}", self.addr, self.prefix_len),
        }
    }
}

impl Serialize for AddressPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressPin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `ip` may never be a service address: unspecified (`0.0.0.0`, `::`), `0.0.0.0/8`,
/// broadcast, multicast, `240.0.0.0/4` and link-local (`169.254.0.0/16`, `fe80::/10`), in
/// IPv4-mapped IPv6 form too. Loopback, private, documentation and `198.18.0.0/15` addresses stay
/// allowed (tests and examples use them).
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let first = a.octets()[0];
            first == 0 || a.is_broadcast() || a.is_multicast() || first >= 240 || a.is_link_local()
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_special_purpose(IpAddr::V4(v4)),
            None => a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local(),
        },
    }
}

/// Names one sorted list of member keys: the first 16 bytes of its SHA-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RosterId(pub [u8; 16]);

impl std::fmt::Display for RosterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Every member's key in key order, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    keys: Vec<PublicKey>,
    id: RosterId,
}

impl Roster {
    /// The roster of these keys (in any order; duplicates are kept once).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut keys: Vec<PublicKey> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        let mut hash = Sha256::new();
        hash.update(b"spdu/roster/v1");
        for key in &keys {
            hash.update(key.as_bytes());
        }
        let digest = hash.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        Self { keys, id: RosterId(id) }
    }

    /// Its id.
    pub fn id(&self) -> RosterId {
        self.id
    }

    /// The keys, sorted.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The position of `key`, if it is a member.
    pub fn index(&self, key: &PublicKey) -> Option<usize> {
        self.keys.binary_search(key).ok()
    }

    /// The position of the key with these bytes, if it is a member (for keys read from the wire
    /// unchecked: no point decompression).
    pub fn index_of_bytes(&self, key: &[u8; 32]) -> Option<usize> {
        self.keys.binary_search_by(|k| k.as_bytes().cmp(key)).ok()
    }

    /// The key at position `i`.
    pub fn key(&self, i: usize) -> PublicKey {
        self.keys[i]
    }

    /// Bytes a bitmap over this roster has.
    pub fn bitmap_len(&self) -> usize {
        self.keys.len().div_ceil(8)
    }
}

/// One bit per roster position, least significant bit first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bitmap(#[serde(with = "super::observation::bytes")] pub Vec<u8>);

impl Bitmap {
    /// All clear, for `len` positions.
    pub fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(8)])
    }

    /// Whether bit `i` is set (positions past the end are clear).
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Sets bit `i` to `value`; `i` must be within the bitmap.
    pub fn set(&mut self, i: usize, value: bool) {
        let mask = 1 << (i % 8);
        if value {
            self.0[i / 8] |= mask;
        } else {
            self.0[i / 8] &= !mask;
        }
    }

    /// The positions of the set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(at, &byte)| {
            (0..8).filter(move |bit| byte & (1 << bit) != 0).map(move |bit| at * 8 + bit)
        })
    }

    /// Whether it fits a roster of `len` exactly: the right number of bytes, no bit set past the
    /// end (so one set of reports has one encoding).
    pub fn fits(&self, len: usize) -> bool {
        self.0.len() == len.div_ceil(8)
            && (len.is_multiple_of(8) || self.0.last().is_none_or(|b| b >> (len % 8) == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures::public_key;

    #[test]
    fn roster_id_names_the_set_not_the_order() {
        let a = Roster::new([public_key(0), public_key(1), public_key(2)]);
        let b = Roster::new([public_key(2), public_key(0), public_key(1), public_key(0)]);
        assert_eq!((a.id(), a.len()), (b.id(), 3));
        assert_ne!(a.id(), Roster::new([public_key(0), public_key(1)]).id());
        assert!(a.keys().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a.index(&public_key(1)).map(|i| a.key(i)), Some(public_key(1)));
        assert_eq!(a.index(&public_key(3)), None);
    }

    #[test]
    fn address_pins() {
        let pin: AddressPin = "192.0.2.10".parse().unwrap();
        assert_eq!(pin.exact(), Some("192.0.2.10".parse().unwrap()));
        assert!(pin.contains("192.0.2.10".parse().unwrap()) && !pin.contains("192.0.2.11".parse().unwrap()));
        let net: AddressPin = "2001:db8::/48".parse().unwrap();
        assert_eq!((net.exact(), net.prefix_len()), (None, 48));
        assert!(net.contains("2001:db8:0:ffff::1".parse().unwrap()));
        assert!(
            !net.contains("2001:db9::1".parse().unwrap()) && !net.contains("192.0.2.10".parse().unwrap())
        );
        assert!("0.0.0.0/0".parse::<AddressPin>().unwrap().contains("203.0.113.9".parse().unwrap()));
        for (text, shown) in
            [("192.0.2.10", "192.0.2.10"), ("2001:db8::/48", "2001:db8::/48"), ("::1/128", "::1")]
        {
            assert_eq!(text.parse::<AddressPin>().unwrap().to_string(), shown);
        }
        let err = |s: &str| s.parse::<AddressPin>().unwrap_err().to_string();
        assert!(err("192.0.2.1/24").contains("did you mean 192.0.2.0/24"), "{}", err("192.0.2.1/24"));
        assert!(err("192.0.2.0/33").contains("0-32"));
        assert!(err("example.com").contains("not an IP address"));
        assert!(err("10.0.0.0/x").contains("prefix length"));
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, "\"2001:db8::/48\"");
        assert_eq!(serde_json::from_str::<AddressPin>(&json).unwrap(), net);
        assert!(serde_json::from_str::<AddressPin>("\"10.0.0.1/8\"").is_err());
    }

    #[test]
    fn special_purpose_addresses() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "240.0.0.1",
            "169.254.169.254",
            "::",
            "ff02::1",
            "fe80::1",
            "::ffff:0.0.0.0",
            "::ffff:169.254.1.1",
        ] {
            assert!(is_special_purpose(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.66.66.66",
            "192.168.1.1",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "2001:db8::1",
            "8.8.8.8",
        ] {
            assert!(!is_special_purpose(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn bitmaps() {
        let mut b = Bitmap::new(11);
        assert_eq!(b.0.len(), 2);
        b.set(0, true);
        b.set(10, true);
        b.set(3, true);
        b.set(3, false);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 10]);
        assert!(b.get(10) && !b.get(3) && !b.get(99));
        assert!(b.fits(11) && !b.fits(10) && !b.fits(17));
        b.0[1] |= 0x80;
        assert!(!b.fits(11), "a bit past the end");
        assert!(Bitmap::new(16).fits(16) && Bitmap::new(0).fits(0));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Bitmap>(&json).unwrap(), b);
    }
}
