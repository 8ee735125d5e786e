//! The node's TOML config: parsing, defaults and validation.
//!
//! [`Config::load`] reads and checks everything that can be checked without the private key
//! (every error names the file and the field, TOML mistakes also the line); [`Config::load_key`]
//! then loads the key file and refuses a roster that lists this node's own key. Nothing is
//! started before both succeed. Field names are part of the user interface (README's config
//! reference).
//!
//! - `validate`: field checks and their bounds, `[node]`, `[timing]`.
//! - `peers`: `[[peers]]` and each peer's pinned service addresses.
//! - `zone`: `[zone]` and `[[zone.record]]`: the pool names and each name's failover rule.
//! - `health`: the `[health]` section.
//! - `notify`: `[[notify]]`, the hooks that receive the node's events.
//! - `dns`: the `[dns]` section: response rate limiting and DNS cookies.
//! - `anycast`: the `[anycast]` section: the prefixes `spdu exabgp` announces, and their MED.
//! - `acme`: the `[acme]` section: ACME http-01 challenge answers.
//! - `dnssec`: the `[dnssec]` section and the peers' `dnssec_key`: online DNSSEC signing.
//! - `dynamic`: sites on dynamic addresses (`node.addresses = "observed"`, `gossip = "dynamic"`).
//!
//! Address pins ([`AddressPin`]) and the special-purpose rule are the protocol core's
//! (`spdu_gossip::proto`): the config builds the roster ([`spdu_gossip::proto::Member`]) the
//! driver and the core take.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use spdu_dnsfront::ZoneConfig;
use spdu_gossip::proto::{self, Member};
use spdu_keys::SecretKey;
use spdu_policy::{PolicyConfig, SiteAttrs};
use toml::Spanned;

mod acme;
mod anycast;
mod dns;
mod dnssec;
mod dynamic;
mod health;
mod notify;
mod peers;
#[cfg(test)]
mod tests;
mod validate;
mod zone;

pub use acme::{AcmeConfig, THUMBPRINT_LEN, is_thumbprint};
pub use anycast::{AnycastConfig, MAX_PREFIXES, MED, POLL_MS, Prefix};
pub use dns::{DnsConfig, RRL_IPV4_PREFIX, RRL_IPV6_PREFIX, RRL_RATE, RRL_SLIP};
pub use dnssec::{DNSKEY_TTL, DnssecConfig, SIGNATURE_VALIDITY};
pub use health::{HealthConfig, SelfCheck};
pub use notify::{HookTarget, NotifyHook, Secret};
pub use spdu_gossip::proto::AddressPin;
pub use validate::{COUNT, PRIORITY, STALE_AFTER_MS, TIMER_MS, WEIGHT};
use validate::{RawNode, RawTiming, bounded_count, bounded_ms, name, socket_addr};
pub(crate) use zone::name_key;
pub use zone::{GOOD_ENOUGH_MS, MAX_ANSWERS, MIN_CHANGE_INTERVAL_MS, TTL};

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[node]`: this site.
    pub node: NodeConfig,
    /// `[zone]`: the pool zone this node serves; its `names` are `zone.names`, then the names of
    /// the `[[zone.record]]` entries.
    pub zone: ZoneConfig,
    /// `[[peers]]`: the roster, without this node.
    pub peers: Vec<Member>,
    /// `[cluster] id`: mixed into every signature; defaults to the zone origin.
    pub cluster: String,
    /// `[timing]` and `quorum`, as the protocol core takes them, with `[health]`'s thresholds
    /// and the failover policies (`policy`: one rule per name of [`Self::zone`], same order, and
    /// every site's `priority` and `weight`, this node's and each peer's).
    pub protocol: proto::Config,
    /// `[health]`: this site's service check, what peers may check, how checks are run.
    pub health: HealthConfig,
    /// `[[notify]]`: the hooks that receive the node's events.
    pub notify: Vec<NotifyHook>,
    /// `[dns]`: response rate limiting and DNS cookies.
    pub dns: DnsConfig,
    /// `[anycast]`: the prefixes `spdu exabgp` announces and withdraws.
    pub anycast: AnycastConfig,
    /// `[acme]`: ACME http-01 challenge answers; `None` without the section.
    pub acme: Option<AcmeConfig>,
    /// `[dnssec]` with the peers' `dnssec_key`: online signing, on when the section is present.
    pub dnssec: Option<DnssecConfig>,
}

/// `[node]`: this site.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `node.name`: this node's name in every roster.
    pub name: String,
    /// `node.key`: the private-key file (relative paths are relative to the config file).
    pub key: PathBuf,
    /// `node.gossip`: the QUIC (UDP) listen address.
    pub gossip: SocketAddr,
    /// `node.dns`: DNS listen addresses (UDP and TCP).
    pub dns: Vec<SocketAddr>,
    /// `node.control`: the local HTTP control endpoint (`spdu peers`, metrics).
    pub control: SocketAddr,
    /// `node.control_allow`: the networks that may connect to the control endpoint; empty when
    /// it is on loopback and the field is not set (then only loopback sources are served).
    pub control_allow: Vec<AddressPin>,
    /// `node.addresses`: this site's service addresses (empty with `"observed"`).
    pub addresses: Vec<IpAddr>,
    /// `node.addresses = "observed"`: the service address is the IP this node's peers see it at,
    /// once a quorum of them agree (`config::dynamic`).
    pub observed_address: bool,
    /// `node.priority` and `node.weight`: this site's place in the failover policies.
    pub attrs: SiteAttrs,
}

impl Config {
    /// Reads and validates `path` (everything but the key file).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors a relative
    /// `node.key`.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Config> {
        let located = |span: Option<Range<usize>>| match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            None => path.display().to_string(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            anyhow::anyhow!("{}: {message}", located(e.span()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config =
            raw.validate(base).map_err(|e| anyhow::anyhow!("{}: {}", located(e.span), e.message))?;
        config.path = path.to_owned();
        Ok(config)
    }

    /// Loads `node.key` and checks that the roster does not list this node's own key.
    pub fn load_key(&self) -> anyhow::Result<SecretKey> {
        let key = SecretKey::load_file(&self.node.key).context("node.key")?;
        let public = key.public();
        if let Some(i) = self.peers.iter().position(|p| p.key == public) {
            bail!(
                "{}: peers[{i}].key: is this node's own public key (from node.key {}); \
                 the roster lists only the other nodes",
                self.path.display(),
                self.node.key.display()
            );
        }
        Ok(key)
    }
}

/// Reads only `node.control` from a config file, so that `spdu peers` needs neither the key nor
/// a config that the current version fully accepts.
pub fn load_control_address(path: &Path) -> anyhow::Result<SocketAddr> {
    #[derive(Deserialize)]
    struct File {
        node: Node,
    }
    #[derive(Deserialize)]
    struct Node {
        control: Spanned<String>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| line_column(&text, s.start));
        let at = at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        anyhow::anyhow!("{}{at}: {}", path.display(), e.message().trim().replace('\n', " "))
    })?;
    socket_addr("node.control", &file.node.control)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// A validation error: the message names the field, the span points into the file.
#[derive(Debug)]
struct FieldError {
    span: Option<Range<usize>>,
    message: String,
}

impl FieldError {
    fn at<T>(value: &Spanned<T>, message: impl fmt::Display) -> Self {
        Self { span: Some(value.span()), message: message.to_string() }
    }

    fn field(message: impl fmt::Display) -> Self {
        Self { span: None, message: message.to_string() }
    }
}

type Checked<T> = Result<T, FieldError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    zone: zone::RawZone,
    #[serde(default)]
    peers: Vec<peers::RawPeer>,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    health: health::RawHealth,
    #[serde(default)]
    notify: Vec<Spanned<notify::RawNotify>>,
    #[serde(default)]
    dns: dns::RawDns,
    #[serde(default)]
    anycast: anycast::RawAnycast,
    acme: Option<acme::RawAcme>,
    dnssec: Option<dnssec::RawDnssec>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    id: Option<Spanned<String>>,
}

impl RawConfig {
    fn validate(self, base: &Path) -> Checked<Config> {
        let node = self.node.validate(base)?;
        let (peers, attrs): (Vec<Member>, Vec<SiteAttrs>) =
            peers::validate(&self.peers, &node)?.into_iter().unzip();

        let roster: Vec<&str> =
            std::iter::once(node.name.as_str()).chain(peers.iter().map(|p| p.name.as_str())).collect();
        let (zone, rules) = self.zone.validate(&roster)?;
        let sites = std::iter::once((node.name.clone(), node.attrs))
            .chain(peers.iter().map(|p| p.name.clone()).zip(attrs))
            .collect();
        let policy = PolicyConfig { rules, sites };

        let cluster = match &self.cluster.id {
            Some(id) => name("cluster.id", id)?,
            None => zone.origin.trim_end_matches('.').to_ascii_lowercase(),
        };

        let mut protocol = self.timing.validate(peers.len() + 1)?;
        let (health, health_policy) = self.health.validate(&node, &zone)?;
        protocol.health = health_policy;
        protocol.policy = policy;
        let notify = notify::validate(&self.notify, base)?;
        let dns = self.dns.validate()?;
        let anycast = self.anycast.validate(node.attrs.priority)?;
        let acme = self.acme.as_ref().map(acme::RawAcme::validate).transpose()?;
        let peer_keys: Vec<_> =
            peers.iter().zip(&self.peers).map(|(p, raw)| (p.name.clone(), raw.dnssec_key.as_ref())).collect();
        let dnssec = dnssec::validate(self.dnssec.as_ref(), &peer_keys, base)?;
        Ok(Config {
            path: PathBuf::new(),
            node,
            zone,
            peers,
            cluster,
            protocol,
            health,
            notify,
            dns,
            anycast,
            acme,
            dnssec,
        })
    }
}
