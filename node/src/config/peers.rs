//! `[[peers]]`: the roster without this node, and each peer's pinned service addresses.
//!
//! Invariants: names and keys are unique (and differ from this node's); no two peers share a
//! gossip address and none is at this node's own (it would dial itself forever) or at a
//! special-purpose address; every peer has 1 to [`MAX_SERVICE_ADDRESSES`] address pins, none
//! special-purpose. Without `addresses`, a peer's pin is the IP of its gossip address: a peer
//! can then only ever be answered at that address, whatever its observations claim. A dynamic
//! peer (`gossip = "dynamic"`, see `config::dynamic`) has no gossip address and must list its
//! pins; it alone may pin the whole address space.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use spdu_keys::PublicKey;
use spdu_policy::SiteAttrs;
use toml::Spanned;

use super::validate::{name, pin, remote_addr, site_attrs};
use super::{Checked, FieldError, NodeConfig};
use spdu_gossip::proto::{AddressPin, MAX_SERVICE_ADDRESSES, Member, is_special_purpose};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    name: Spanned<String>,
    key: Spanned<String>,
    gossip: Spanned<String>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    priority: Option<Spanned<u32>>,
    weight: Option<Spanned<u32>>,
    /// The peer's DNSKEY RDATA; read by the `[dnssec]` section's validation.
    pub(super) dnssec_key: Option<Spanned<String>>,
}

/// Checks every `[[peers]]` entry against the others and against `node`; each becomes the
/// roster [`Member`] that the driver and the protocol core take as it is, with its failover
/// attributes (`priority`, `weight`).
pub(super) fn validate(raw: &[RawPeer], node: &NodeConfig) -> Checked<Vec<(Member, SiteAttrs)>> {
    let mut peers = Vec::with_capacity(raw.len());
    let mut names = BTreeMap::from([(node.name.clone(), "node.name".to_owned())]);
    let mut keys: BTreeMap<PublicKey, usize> = BTreeMap::new();
    let mut gossips: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (i, raw) in raw.iter().enumerate() {
        let peer_name = name(&format!("peers[{i}].name"), &raw.name)?;
        if let Some(first) = names.get(&peer_name) {
            let what = if first == "node.name" { "this node's own name" } else { "a duplicate of" };
            return Err(FieldError::at(
                &raw.name,
                format!("peers[{i}].name: {peer_name:?} is {what} {first}"),
            ));
        }
        names.insert(peer_name.clone(), format!("peers[{i}].name"));
        let key: PublicKey = raw
            .key
            .get_ref()
            .parse()
            .map_err(|e| FieldError::at(&raw.key, format!("peers[{i}].key: {e}")))?;
        if let Some(first) = keys.insert(key, i) {
            return Err(FieldError::at(
                &raw.key,
                format!("peers[{i}].key: the same key as peers[{first}].key"),
            ));
        }
        let dynamic = super::dynamic::is_dynamic(&raw.gossip);
        if dynamic {
            super::dynamic::require_pins(&format!("peers[{i}]"), &raw.gossip, &raw.addresses)?;
            let addresses = match &raw.addresses {
                Some(list) => pins(&format!("peers[{i}].addresses"), list, true)?,
                None => unreachable!("required above"),
            };
            let attrs = site_attrs(&format!("peers[{i}]"), &raw.priority, &raw.weight)?;
            peers.push((Member { name: peer_name, key, gossip: None, addresses }, attrs));
            continue;
        }
        let gossip = remote_addr(&format!("peers[{i}].gossip"), &raw.gossip)?;
        let own = gossip == node.gossip
            || (node.gossip.ip().is_unspecified()
                && gossip.port() == node.gossip.port()
                && gossip.ip().is_loopback());
        if own {
            return Err(FieldError::at(
                &raw.gossip,
                format!(
                    "peers[{i}].gossip: {gossip} is this node's own gossip address (node.gossip {})",
                    node.gossip
                ),
            ));
        }
        if let Some(first) = gossips.insert(gossip, i) {
            return Err(FieldError::at(
                &raw.gossip,
                format!(
                    "peers[{i}].gossip: {gossip} is also peers[{first}].gossip; each peer has its own address"
                ),
            ));
        }
        let addresses = match &raw.addresses {
            None => vec![AddressPin::host(gossip.ip())],
            Some(list) => pins(&format!("peers[{i}].addresses"), list, false)?,
        };
        let attrs = site_attrs(&format!("peers[{i}]"), &raw.priority, &raw.weight)?;
        peers.push((Member { name: peer_name, key, gossip: Some(gossip), addresses }, attrs));
    }
    Ok(peers)
}

/// `dynamic`: the peer's address is not known in advance, so the whole address space may be
/// pinned (`0.0.0.0/0`, `::/0`).
fn pins(field: &str, list: &Spanned<Vec<Spanned<String>>>, dynamic: bool) -> Checked<Vec<AddressPin>> {
    if list.get_ref().is_empty() {
        return Err(FieldError::at(
            list,
            format!("{field}: needs at least one address (or leave it out: the gossip address's IP)"),
        ));
    }
    if list.get_ref().len() > MAX_SERVICE_ADDRESSES {
        return Err(FieldError::at(
            list,
            format!("{field}: {} entries, at most {MAX_SERVICE_ADDRESSES}", list.get_ref().len()),
        ));
    }
    let mut out: Vec<AddressPin> = Vec::new();
    for (j, value) in list.get_ref().iter().enumerate() {
        let at = format!("{field}[{j}]");
        let p = pin(&at, value)?;
        if is_special_purpose(p.addr()) && !(dynamic && super::dynamic::is_everything(&p)) {
            return Err(FieldError::at(
                value,
                format!(
                    "{at}: {p} is special-purpose (unspecified, broadcast, multicast, reserved or \
                     link-local), never a service address"
                ),
            ));
        }
        if out.contains(&p) {
            return Err(FieldError::at(value, format!("{at}: {p} is listed twice")));
        }
        out.push(p);
    }
    Ok(out)
}
