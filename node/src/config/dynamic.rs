//! Sites on dynamic addresses: `[node] addresses = "observed"` (this site's service address is
//! the IP its peers see its connections come from, adopted once a quorum of them agree) and
//! `[[peers]] gossip = "dynamic"` (a peer that is not dialled until it signs the address its own
//! peers see it at, and whose connections are accepted from any address).
//!
//! Invariants: a dynamic peer has explicit `addresses` pins (its address is not known in
//! advance, so it cannot default to its gossip IP); among them only a dynamic peer's may be the
//! whole address space (`0.0.0.0/0`, `::/0`: "any address its peers agree on"). A node with
//! `addresses = "observed"` checks its own service at an explicit `health.address`.

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{Checked, FieldError};
use spdu_gossip::proto::AddressPin;

/// The `gossip` value of a dynamic peer.
pub(super) const DYNAMIC: &str = "dynamic";

/// The `node.addresses` value that takes the service address from the peers' reports.
pub(super) const OBSERVED: &str = "observed";

/// `node.addresses`: a list of service addresses, or `"observed"`.
pub(super) enum RawAddresses {
    /// The list as written.
    List(Vec<Spanned<String>>),
    /// `"observed"` (or another word, refused when validated).
    Word(String),
}

impl<'de> Deserialize<'de> for RawAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAddresses;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a list of IP addresses or "observed""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAddresses, E> {
                Ok(RawAddresses::Word(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawAddresses, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    list.push(item);
                }
                Ok(RawAddresses::List(list))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Reads `node.addresses`: `(addresses, observed)`; `list` checks a list (errors about the
/// whole list point at `raw`).
pub(super) fn node_addresses(
    raw: &Spanned<RawAddresses>,
    list: impl FnOnce(&[Spanned<String>]) -> Checked<Vec<IpAddr>>,
) -> Checked<(Vec<IpAddr>, bool)> {
    match raw.get_ref() {
        RawAddresses::Word(w) if w == OBSERVED => Ok((Vec::new(), true)),
        RawAddresses::Word(w) => Err(FieldError::at(
            raw,
            format!(
                "node.addresses: {w:?} is neither a list of service addresses nor \"{OBSERVED}\" \
                 (the address this node's peers see it at)"
            ),
        )),
        RawAddresses::List(items) => Ok((list(items)?, false)),
    }
}

/// Whether a `[[peers]] gossip` value names a dynamic peer.
pub(super) fn is_dynamic(gossip: &Spanned<String>) -> bool {
    gossip.get_ref() == DYNAMIC
}

/// A dynamic peer must list its pins: there is no gossip IP to default to.
pub(super) fn require_pins<T>(
    field: &str,
    gossip: &Spanned<String>,
    addresses: &Option<Spanned<T>>,
) -> Checked<()> {
    if addresses.is_none() {
        return Err(FieldError::at(
            gossip,
            format!(
                "{field}.addresses: needed with gossip = \"{DYNAMIC}\": the prefixes its service \
                 address may be in (e.g. [\"198.18.0.0/15\"]; [\"0.0.0.0/0\"] accepts any address its \
                 peers agree on)"
            ),
        ));
    }
    Ok(())
}

/// Whether `pin` is the whole address space of its family (allowed for dynamic peers only).
pub(super) fn is_everything(pin: &AddressPin) -> bool {
    pin.prefix_len() == 0
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::super::tests::valid;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(Path::new("/etc/spdu/spdu.toml"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("config accepted"))
    }

    fn observed() -> String {
        valid().replace("addresses = [\"192.0.2.10\"]", "addresses = \"observed\"")
    }

    fn dynamic_beta(addresses: &str) -> String {
        valid().replace("gossip = \"198.51.100.20:7946\"", &format!("gossip = \"dynamic\"\n{addresses}"))
    }

    #[test]
    fn node_addresses_may_be_observed() {
        let config = parse(&observed()).unwrap();
        assert!(config.node.observed_address && config.node.addresses.is_empty());
        let listed = parse(&valid()).unwrap();
        assert!(!listed.node.observed_address);
        assert_eq!(listed.node.addresses, ["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]);
        let e = error(&valid().replace("addresses = [\"192.0.2.10\"]", "addresses = \"seen\""));
        assert!(e.contains("spdu.toml:8:13: node.addresses: \"seen\" is neither"), "{e}");
        let e = error(&valid().replace("addresses = [\"192.0.2.10\"]", "addresses = 7"));
        assert!(e.contains("spdu.toml:8:13") && e.contains("\"observed\""), "{e}");
        let e = error(&valid().replace("addresses = [\"192.0.2.10\"]", "addresses = []"));
        assert!(e.contains("node.addresses: needs at least one service address"), "{e}");
        // Its own check has no configured address to connect to unless told.
        let e = error(&format!("{}\n[health]\ncheck = \"tcp\"\nport = 80\n", observed()));
        assert!(e.contains("health.address: needed with node.addresses = \"observed\""), "{e}");
        let with_address =
            format!("{}\n[health]\ncheck = \"tcp\"\nport = 80\naddress = \"127.0.0.1:80\"\n", observed());
        assert!(parse(&with_address).is_ok());
    }

    #[test]
    fn a_dynamic_peer_has_no_gossip_address_and_explicit_pins() {
        let config = parse(&dynamic_beta("addresses = [\"198.18.0.0/15\"]")).unwrap();
        let beta = config.peers.iter().find(|p| p.name == "beta").unwrap();
        assert_eq!(beta.gossip, None);
        assert_eq!(beta.addresses, ["198.18.0.0/15".parse().unwrap()]);
        let gamma = config.peers.iter().find(|p| p.name == "gamma").unwrap();
        assert_eq!(gamma.gossip, Some("203.0.113.30:7946".parse().unwrap()));
        // Any address its peers agree on: allowed for a dynamic peer only.
        let any = parse(&dynamic_beta("addresses = [\"0.0.0.0/0\", \"::/0\"]")).unwrap();
        assert_eq!(any.peers[0].addresses.len(), 2);
        let e = error(&valid().replace(
            "gossip = \"198.51.100.20:7946\"",
            "gossip = \"198.51.100.20:7946\"\naddresses = [\"0.0.0.0/0\"]",
        ));
        assert!(e.contains("peers[0].addresses[0]: 0.0.0.0/0 is special-purpose"), "{e}");
        let e = error(&dynamic_beta(""));
        assert!(e.contains("spdu.toml:19:10: peers[0].addresses: needed with gossip = \"dynamic\""), "{e}");
        let e = error(&dynamic_beta("addresses = [\"224.0.0.0/4\"]"));
        assert!(e.contains("special-purpose"), "{e}");
        // Two dynamic peers do not collide on an address.
        let both = dynamic_beta("addresses = [\"198.18.0.0/15\"]").replace(
            "gossip = \"203.0.113.30:7946\"",
            "gossip = \"dynamic\"\naddresses = [\"198.18.0.0/15\"]",
        );
        assert!(parse(&both).unwrap().peers.iter().all(|p| p.gossip.is_none()));
    }
}
