//! Field checks shared by every section, and `[node]` and `[timing]` with their bounds, and a
//! site's failover-policy attributes (`priority`, `weight`, in `[node]` and `[[peers]]`).
//!
//! Every number has sane bounds (listed in the README's config reference): a heartbeat of 1 ms
//! or a probe interval of 2^64-1 ms is a typo that would spin a core or overflow a timer, so it
//! is refused with the field and the allowed range named. Names and ids may not hold whitespace,
//! control or invisible format characters (two names that look the same must be the same).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use spdu_gossip::proto::{self, Quorum};
use spdu_policy::SiteAttrs;
use toml::Spanned;

use super::{Checked, FieldError, NodeConfig};
use spdu_gossip::proto::{AddressPin, MAX_SERVICE_ADDRESSES, is_special_purpose};

/// `timing.probe_interval_ms`, `probe_timeout_ms`, `heartbeat_ms`: 10 ms to 1 min.
pub const TIMER_MS: RangeInclusive<u64> = 10..=60_000;
/// `timing.stale_after_ms`: up to 1 h.
pub const STALE_AFTER_MS: RangeInclusive<u64> = 20..=3_600_000;
/// `timing.down_after`, `up_after`, `health.down_after`, `up_after`.
pub const COUNT: RangeInclusive<u32> = 1..=1_000;
/// `node.priority`, `peers[].priority`: lower is preferred.
pub const PRIORITY: RangeInclusive<u32> = 0..=1_000;
/// `node.weight`, `peers[].weight`: 0 is standby.
pub const WEIGHT: RangeInclusive<u32> = 0..=1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: Spanned<String>,
    key: Spanned<String>,
    gossip: Spanned<String>,
    dns: Spanned<Vec<Spanned<String>>>,
    control: Spanned<String>,
    control_allow: Option<Spanned<Vec<Spanned<String>>>>,
    addresses: Spanned<super::dynamic::RawAddresses>,
    priority: Option<Spanned<u32>>,
    weight: Option<Spanned<u32>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    probe_interval_ms: Option<Spanned<u64>>,
    probe_timeout_ms: Option<Spanned<u64>>,
    down_after: Option<Spanned<u32>>,
    up_after: Option<Spanned<u32>>,
    heartbeat_ms: Option<Spanned<u64>>,
    stale_after_ms: Option<Spanned<u64>>,
    quorum: Option<Spanned<QuorumSetting>>,
}

/// `timing.quorum`: `"half"` or a number of observers.
#[derive(Clone, Copy, Debug)]
pub(super) enum QuorumSetting {
    Half,
    AtLeast(u64),
}

impl<'de> Deserialize<'de> for QuorumSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = QuorumSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#""half" or a number of observers"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QuorumSetting, E> {
                match v {
                    "half" => Ok(QuorumSetting::Half),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<QuorumSetting, E> {
                u64::try_from(v)
                    .map(QuorumSetting::AtLeast)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<QuorumSetting, E> {
                Ok(QuorumSetting::AtLeast(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A socket address with a port (never 0: a listener on port 0 gets a random port nobody knows).
pub(super) fn socket_addr(field: &str, value: &Spanned<String>) -> Checked<SocketAddr> {
    let addr: SocketAddr = value.get_ref().parse().map_err(|_| {
        FieldError::at(
            value,
            format!("{field}: invalid socket address {:?} (expected IP:port)", value.get_ref()),
        )
    })?;
    if addr.port() == 0 {
        return Err(FieldError::at(value, format!("{field}: port 0 in {addr} (give the real port)")));
    }
    Ok(addr)
}

/// A peer's address: a port, and an IP that can be dialled (not 0.0.0.0, broadcast, multicast…).
pub(super) fn remote_addr(field: &str, value: &Spanned<String>) -> Checked<SocketAddr> {
    let addr = socket_addr(field, value)?;
    if is_special_purpose(addr.ip()) {
        return Err(FieldError::at(
            value,
            format!("{field}: {} is a special-purpose address, not one a peer can be reached at", addr.ip()),
        ));
    }
    Ok(addr)
}

/// A service address: an IP clients can be sent to.
pub(super) fn service_ip(field: &str, value: &Spanned<String>) -> Checked<IpAddr> {
    let ip: IpAddr = value
        .get_ref()
        .parse()
        .map_err(|_| FieldError::at(value, format!("{field}: invalid IP address {:?}", value.get_ref())))?;
    if is_special_purpose(ip) {
        return Err(FieldError::at(
            value,
            format!(
                "{field}: {ip} is a special-purpose address (unspecified, broadcast, multicast, reserved \
                 or link-local), never a service address"
            ),
        ));
    }
    Ok(ip)
}

/// An address pin (`192.0.2.10`, `2001:db8::/48`).
pub(super) fn pin(field: &str, value: &Spanned<String>) -> Checked<AddressPin> {
    value
        .get_ref()
        .parse()
        .map_err(|e: spdu_gossip::proto::PinError| FieldError::at(value, format!("{field}: {e}")))
}

/// A name or id: not empty, no whitespace, control or invisible characters.
pub(super) fn name(field: &str, value: &Spanned<String>) -> Checked<String> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        return Err(FieldError::at(value, format!("{field}: must not be empty")));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || crate::text::is_invisible(*c)) {
        return Err(FieldError::at(
            value,
            format!(
                "{field}: \"{}\" contains whitespace or an invisible character (U+{:04X})",
                crate::text::escape(text),
                c as u32
            ),
        ));
    }
    Ok(text.clone())
}

/// A number within `range` (`unit` names it in the error), or `default`.
pub(super) fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    value: &Option<Spanned<T>>,
    default: T,
    range: &RangeInclusive<T>,
    unit: &str,
) -> Checked<T> {
    match value {
        None => Ok(default),
        Some(v) if !range.contains(v.get_ref()) => Err(FieldError::at(
            v,
            format!("{field}: {} is out of bounds ({} to {}{unit})", v.get_ref(), range.start(), range.end()),
        )),
        Some(v) => Ok(*v.get_ref()),
    }
}

/// A duration in milliseconds within `range`, or `default`.
pub(super) fn bounded_ms(
    field: &str,
    value: &Option<Spanned<u64>>,
    default: Duration,
    range: RangeInclusive<u64>,
) -> Checked<Duration> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    bounded(field, value, default_ms, &range, " ms").map(Duration::from_millis)
}

/// A count within `range`, or `default`.
pub(super) fn bounded_count(
    field: &str,
    value: &Option<Spanned<u32>>,
    default: u32,
    range: RangeInclusive<u32>,
) -> Checked<u32> {
    bounded(field, value, default, &range, "")
}

/// A site's `priority` and `weight` (`prefix` is `node` or `peers[i]`), defaults for those not set.
pub(super) fn site_attrs(
    prefix: &str,
    priority: &Option<Spanned<u32>>,
    weight: &Option<Spanned<u32>>,
) -> Checked<SiteAttrs> {
    Ok(SiteAttrs {
        priority: bounded_count(
            &format!("{prefix}.priority"),
            priority,
            SiteAttrs::DEFAULT_PRIORITY,
            PRIORITY,
        )?,
        weight: bounded_count(&format!("{prefix}.weight"), weight, SiteAttrs::DEFAULT_WEIGHT, WEIGHT)?,
    })
}

/// Service addresses: at least one, at most [`MAX_SERVICE_ADDRESSES`], each once, none special.
/// Errors about the whole list point at `at`.
fn service_ips<T>(field: &str, at: &Spanned<T>, list: &[Spanned<String>]) -> Checked<Vec<IpAddr>> {
    if list.is_empty() {
        return Err(FieldError::at(at, format!("{field}: needs at least one service address")));
    }
    if list.len() > MAX_SERVICE_ADDRESSES {
        return Err(FieldError::at(
            at,
            format!("{field}: {} addresses, at most {MAX_SERVICE_ADDRESSES}", list.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut addresses = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let ip = service_ip(&format!("{field}[{i}]"), a)?;
        if !seen.insert(ip) {
            return Err(FieldError::at(a, format!("{field}[{i}]: {ip} is listed twice")));
        }
        addresses.push(ip);
    }
    Ok(addresses)
}

impl RawNode {
    pub(super) fn validate(self, base: &Path) -> Checked<NodeConfig> {
        let node_name = name("node.name", &self.name)?;
        if self.key.get_ref().trim().is_empty() {
            return Err(FieldError::at(&self.key, "node.key: must name the private-key file"));
        }
        let key = base.join(self.key.get_ref());
        let gossip = socket_addr("node.gossip", &self.gossip)?;
        let control = socket_addr("node.control", &self.control)?;
        if self.dns.get_ref().is_empty() {
            return Err(FieldError::at(&self.dns, "node.dns: needs at least one listen address"));
        }
        let dns = (self.dns.get_ref().iter().enumerate())
            .map(|(i, a)| socket_addr(&format!("node.dns[{i}]"), a))
            .collect::<Checked<Vec<_>>>()?;
        let control_allow = match &self.control_allow {
            None if !control.ip().is_loopback() => {
                return Err(FieldError::at(
                    &self.control,
                    format!(
                        "node.control: {control} is not a loopback address; the control endpoint shows \
                         the whole view and takes connections from anyone who can reach it: bind it to \
                         127.0.0.1 or ::1, or name the networks allowed to connect with \
                         node.control_allow = [\"192.0.2.0/24\", …]"
                    ),
                ));
            }
            None => Vec::new(),
            Some(list) if list.get_ref().is_empty() => {
                return Err(FieldError::at(list, "node.control_allow: needs at least one network"));
            }
            Some(list) => (list.get_ref().iter().enumerate())
                .map(|(i, n)| pin(&format!("node.control_allow[{i}]"), n))
                .collect::<Checked<Vec<_>>>()?,
        };
        let (addresses, observed_address) = super::dynamic::node_addresses(&self.addresses, |list| {
            service_ips("node.addresses", &self.addresses, list)
        })?;
        let attrs = site_attrs("node", &self.priority, &self.weight)?;
        Ok(NodeConfig {
            name: node_name,
            key,
            gossip,
            dns,
            control,
            control_allow,
            addresses,
            observed_address,
            attrs,
        })
    }
}

impl RawTiming {
    pub(super) fn validate(self, nodes: usize) -> Checked<proto::Config> {
        let default = proto::Config::default();
        let probe_interval = bounded_ms(
            "timing.probe_interval_ms",
            &self.probe_interval_ms,
            default.probe_interval,
            TIMER_MS,
        )?;
        let probe_timeout =
            bounded_ms("timing.probe_timeout_ms", &self.probe_timeout_ms, default.probe_timeout, TIMER_MS)?;
        let down_after = bounded_count("timing.down_after", &self.down_after, default.down_after, COUNT)?;
        let up_after = bounded_count("timing.up_after", &self.up_after, default.up_after, COUNT)?;
        let heartbeat = bounded_ms("timing.heartbeat_ms", &self.heartbeat_ms, default.heartbeat, TIMER_MS)?;
        let stale_after =
            bounded_ms("timing.stale_after_ms", &self.stale_after_ms, default.stale_after, STALE_AFTER_MS)?;
        if stale_after <= heartbeat {
            let message = format!(
                "timing.stale_after_ms: {} must be larger than timing.heartbeat_ms ({}), \
                 or every observer goes stale between two heartbeats",
                stale_after.as_millis(),
                heartbeat.as_millis()
            );
            return Err(match self.stale_after_ms.as_ref().or(self.heartbeat_ms.as_ref()) {
                Some(at) => FieldError::at(at, message),
                None => FieldError::field(message),
            });
        }
        let quorum = match &self.quorum {
            None => default.quorum,
            Some(q) => match *q.get_ref() {
                QuorumSetting::Half => Quorum::Half,
                QuorumSetting::AtLeast(0) => {
                    return Err(FieldError::at(q, "timing.quorum: must be at least 1 (or \"half\")"));
                }
                QuorumSetting::AtLeast(k) if k > nodes as u64 => {
                    return Err(FieldError::at(
                        q,
                        format!(
                            "timing.quorum: {k} is more than the {nodes} nodes of the roster (peers + this node)"
                        ),
                    ));
                }
                QuorumSetting::AtLeast(k) => Quorum::AtLeast(k as usize),
            },
        };
        Ok(proto::Config {
            probe_interval,
            probe_timeout,
            down_after,
            up_after,
            heartbeat,
            stale_after,
            quorum,
            health: proto::HealthPolicy::default(),
            policy: proto::PolicyConfig::default(),
        })
    }
}
