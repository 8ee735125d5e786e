//! The node's TOML config: parsing, defaults and validation.
//!
//! [`Config::load`] reads and checks everything that can be checked without the private key
//! (every error names the file and the field, TOML mistakes also the line); [`Config::load_key`]
//! then loads the key file and refuses a roster that lists this node's own key. Nothing is
//! started before both succeed. Field names are part of the user interface (DESIGN.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use spdu_dnsfront::ZoneConfig;
use spdu_gossip::proto::{self, Quorum};
use spdu_keys::{PublicKey, SecretKey};
use toml::Spanned;

mod health;

pub use health::{HealthConfig, SelfCheck};

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[node]`: this site.
    pub node: NodeConfig,
    /// `[zone]`: the pool zone this node serves.
    pub zone: ZoneConfig,
    /// `[[peers]]`: the roster, without this node.
    pub peers: Vec<PeerConfig>,
    /// `[cluster] id`: mixed into every signature; defaults to the zone origin.
    pub cluster: String,
    /// `[timing]` and `quorum`, as the protocol core takes them (with `[health]`'s thresholds).
    pub protocol: proto::Config,
    /// `[health]`: this site's service check, what peers may check, how checks are run.
    pub health: HealthConfig,
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
    /// `node.addresses`: this site's service addresses.
    pub addresses: Vec<IpAddr>,
}

/// One `[[peers]]` entry.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// `peers[i].name`.
    pub name: String,
    /// `peers[i].key`: the token printed by the peer's `spdu keygen`.
    pub key: PublicKey,
    /// `peers[i].gossip`: the peer's QUIC address.
    pub gossip: SocketAddr,
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

    /// The roster as the QUIC driver takes it: each peer's service addresses pinned to the IP
    /// of its gossip address.
    pub fn gossip_peers(&self) -> Vec<spdu_gossip::proto::Member> {
        self.peers
            .iter()
            .map(|p| spdu_gossip::proto::Member {
                name: p.name.clone(),
                key: p.key,
                gossip: p.gossip,
                addresses: vec![spdu_gossip::proto::AddressPin::host(p.gossip.ip())],
            })
            .collect()
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
    zone: RawZone,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    health: health::RawHealth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    key: Spanned<String>,
    gossip: Spanned<String>,
    dns: Spanned<Vec<Spanned<String>>>,
    control: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: String,
    names: Vec<String>,
    ttl: u32,
    nameservers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    key: Spanned<String>,
    gossip: Spanned<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    id: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
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
enum QuorumSetting {
    Half,
    AtLeast(u64),
}

impl<'de> Deserialize<'de> for QuorumSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = QuorumSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

fn socket_addr(field: &str, value: &Spanned<String>) -> Checked<SocketAddr> {
    value.get_ref().parse().map_err(|_| {
        FieldError::at(
            value,
            format!("{field}: invalid socket address {:?} (expected IP:port)", value.get_ref()),
        )
    })
}

fn ip_addr(field: &str, value: &Spanned<String>) -> Checked<IpAddr> {
    value
        .get_ref()
        .parse()
        .map_err(|_| FieldError::at(value, format!("{field}: invalid IP address {:?}", value.get_ref())))
}

fn name(field: &str, value: &Spanned<String>) -> Checked<String> {
    let text = value.get_ref();
    if text.trim().is_empty() {
        return Err(FieldError::at(value, format!("{field}: must not be empty")));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::at(value, format!("{field}: {text:?} contains whitespace")));
    }
    Ok(text.clone())
}

fn positive_ms(field: &str, value: &Option<Spanned<u64>>, default: Duration) -> Checked<Duration> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(FieldError::at(v, format!("{field}: must be at least 1"))),
        Some(v) => Ok(Duration::from_millis(*v.get_ref())),
    }
}

fn positive_count(field: &str, value: &Option<Spanned<u32>>, default: u32) -> Checked<u32> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(FieldError::at(v, format!("{field}: must be at least 1"))),
        Some(v) => Ok(*v.get_ref()),
    }
}

impl RawConfig {
    fn validate(self, base: &Path) -> Checked<Config> {
        let node = self.node.validate(base)?;

        let mut peers = Vec::with_capacity(self.peers.len());
        let mut names = BTreeMap::from([(node.name.clone(), "node.name".to_owned())]);
        let mut keys: BTreeMap<PublicKey, usize> = BTreeMap::new();
        for (i, raw) in self.peers.iter().enumerate() {
            let peer_name = name(&format!("peers[{i}].name"), &raw.name)?;
            if let Some(first) = names.get(&peer_name) {
                let what = if first == "node.name" { "this node's own name" } else { "a duplicate of" };
                return Err(FieldError::at(
                    &raw.name,
                    format!("peers[{i}].name: {peer_name:?} is {what} {first}"),
                ));
            }
            names.insert(peer_name.clone(), format!("peers[{}].name", i));
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
            let gossip = socket_addr(&format!("peers[{i}].gossip"), &raw.gossip)?;
            peers.push(PeerConfig { name: peer_name, key, gossip });
        }

        let zone = ZoneConfig {
            origin: self.zone.origin,
            names: self.zone.names,
            ttl: self.zone.ttl,
            nameservers: self.zone.nameservers,
        };
        zone.validate().map_err(FieldError::field)?;

        let cluster = match &self.cluster.id {
            Some(id) => name("cluster.id", id)?,
            None => zone.origin.trim_end_matches('.').to_ascii_lowercase(),
        };

        let mut protocol = self.timing.validate(peers.len() + 1)?;
        let (health, policy) = self.health.validate(&node, &zone)?;
        protocol.health = policy;
        Ok(Config { path: PathBuf::new(), node, zone, peers, cluster, protocol, health })
    }
}

impl RawNode {
    fn validate(self, base: &Path) -> Checked<NodeConfig> {
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
        if self.addresses.get_ref().is_empty() {
            return Err(FieldError::at(
                &self.addresses,
                "node.addresses: needs at least one service address",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut addresses = Vec::new();
        for (i, a) in self.addresses.get_ref().iter().enumerate() {
            let ip = ip_addr(&format!("node.addresses[{i}]"), a)?;
            if !seen.insert(ip) {
                return Err(FieldError::at(a, format!("node.addresses[{i}]: {ip} is listed twice")));
            }
            addresses.push(ip);
        }
        Ok(NodeConfig { name: node_name, key, gossip, dns, control, addresses })
    }
}

impl RawTiming {
    fn validate(self, nodes: usize) -> Checked<proto::Config> {
        let default = proto::Config::default();
        let probe_interval =
            positive_ms("timing.probe_interval_ms", &self.probe_interval_ms, default.probe_interval)?;
        let probe_timeout =
            positive_ms("timing.probe_timeout_ms", &self.probe_timeout_ms, default.probe_timeout)?;
        let down_after = positive_count("timing.down_after", &self.down_after, default.down_after)?;
        let up_after = positive_count("timing.up_after", &self.up_after, default.up_after)?;
        let heartbeat = positive_ms("timing.heartbeat_ms", &self.heartbeat_ms, default.heartbeat)?;
        let stale_after = positive_ms("timing.stale_after_ms", &self.stale_after_ms, default.stale_after)?;
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const PEER_KEY: &str = "beta";

    fn key_token(seed: u8) -> String {
        SecretKey::from_bytes(&[seed; 32]).public().to_string()
    }

    fn valid() -> String {
        format!(
            r#"
[node]
name = "alpha"
key = "node.key"
gossip = "127.0.0.1:7946"
dns = ["127.0.0.1:5353"]
control = "127.0.0.1:7947"
addresses = ["192.0.2.10"]

[zone]
origin = "pool.example.com"
names = ["api"]
ttl = 5
nameservers = ["alpha.example.com"]

[[peers]]
name = "{PEER_KEY}"
key = "{}"
gossip = "198.51.100.20:7946"

[[peers]]
name = "gamma"
key = "{}"
gossip = "203.0.113.30:7946"
"#,
            key_token(2),
            key_token(3)
        )
    }

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(Path::new("/etc/spdu/spdu.toml"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("config accepted"))
    }

    #[test]
    fn valid_config_gets_defaults() {
        let config = parse(&valid()).unwrap();
        assert_eq!(config.node.name, "alpha");
        assert_eq!(config.node.key, Path::new("/etc/spdu/node.key"));
        assert_eq!(config.cluster, "pool.example.com");
        assert_eq!(config.protocol, proto::Config::default());
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.peers[1].key.to_string(), key_token(3));
    }

    #[test]
    fn timing_and_cluster_overrides() {
        let text = valid().replace(
            "[[peers]]\nname = \"beta\"",
            "[cluster]\nid = \"prod\"\n\n[timing]\nheartbeat_ms = 200\nstale_after_ms = 900\nquorum = 2\n\n[[peers]]\nname = \"beta\"",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.cluster, "prod");
        assert_eq!(config.protocol.heartbeat, Duration::from_millis(200));
        assert_eq!(config.protocol.stale_after, Duration::from_millis(900));
        assert_eq!(config.protocol.quorum, Quorum::AtLeast(2));
        let half = valid().replace(
            "[[peers]]\nname = \"beta\"",
            "[timing]\nquorum = \"half\"\n\n[[peers]]\nname = \"beta\"",
        );
        assert_eq!(parse(&half).unwrap().protocol.quorum, Quorum::Half);
    }

    fn with_timing(timing: &str) -> String {
        valid().replace(
            "[[peers]]\nname = \"beta\"",
            &format!("[timing]\n{timing}\n\n[[peers]]\nname = \"beta\""),
        )
    }

    #[test]
    fn toml_mistakes_name_file_line_and_field() {
        let e = error(&valid().replace("ttl = 5", "ttl = 5\ncolour = \"blue\""));
        assert!(e.starts_with("/etc/spdu/spdu.toml:14:1:") && e.contains("colour"), "{e}");
        let e = error(&valid().replace("ttl = 5", "ttl = \"five\""));
        assert!(e.contains("/etc/spdu/spdu.toml:13:7:") && e.contains("expected u32"), "{e}");
        let e = error(&with_timing("quorum = \"most\""));
        assert!(e.contains("half"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let e = error(&valid().replace("gossip = \"127.0.0.1:7946\"", "gossip = \"x\""));
        assert!(e.contains("spdu.toml:5:10: node.gossip: invalid socket address \"x\""), "{e}");
        let e = error(&valid().replace("[\"127.0.0.1:5353\"]", "[\"127.0.0.1:5353\", \"::1\"]"));
        assert!(e.contains("node.dns[1]: invalid socket address"), "{e}");
        let e = error(&valid().replace("[\"192.0.2.10\"]", "[\"192.0.2.300\"]"));
        assert!(e.contains("node.addresses[0]: invalid IP address"), "{e}");
        let e = error(&valid().replace("\"198.51.100.20:7946\"", "\"198.51.100.20\""));
        assert!(e.contains("peers[0].gossip: invalid socket address"), "{e}");
        let e = error(&valid().replace("dns = [\"127.0.0.1:5353\"]", "dns = []"));
        assert!(e.contains("node.dns: needs at least one"), "{e}");
    }

    #[test]
    fn names_and_keys_must_be_unique() {
        let e = error(&valid().replace("name = \"gamma\"", "name = \"beta\""));
        assert!(e.contains("peers[1].name: \"beta\" is a duplicate of peers[0].name"), "{e}");
        let e = error(&valid().replace("name = \"gamma\"", "name = \"alpha\""));
        assert!(e.contains("peers[1].name: \"alpha\" is this node's own name"), "{e}");
        let e = error(&valid().replace("name = \"gamma\"", "name = \"\""));
        assert!(e.contains("peers[1].name: must not be empty"), "{e}");
        let e = error(&valid().replace("name = \"alpha\"", "name = \" \""));
        assert!(e.contains("node.name: must not be empty"), "{e}");
        let e = error(&valid().replace(&key_token(3), &key_token(2)));
        assert!(e.contains("peers[1].key: the same key as peers[0].key"), "{e}");
        let e = error(&valid().replace(&key_token(3), "ed25519:nope"));
        assert!(e.contains("peers[1].key: invalid public key"), "{e}");
    }

    #[test]
    fn timing_is_checked() {
        let e = error(&with_timing("heartbeat_ms = 1000\nstale_after_ms = 1000"));
        assert!(e.contains("timing.stale_after_ms: 1000 must be larger than timing.heartbeat_ms"), "{e}");
        let e = error(&with_timing("heartbeat_ms = 5000"));
        assert!(e.contains("timing.stale_after_ms"), "{e}");
        let e = error(&with_timing("quorum = 0"));
        assert!(e.contains("timing.quorum: must be at least 1"), "{e}");
        let e = error(&with_timing("quorum = 4"));
        assert!(e.contains("timing.quorum: 4 is more than the 3 nodes"), "{e}");
        assert!(parse(&with_timing("quorum = 3")).is_ok());
        let e = error(&with_timing("probe_interval_ms = 0"));
        assert!(e.contains("timing.probe_interval_ms: must be at least 1"), "{e}");
    }

    #[test]
    fn zone_is_checked_by_dnsfront() {
        let e = error(&valid().replace("names = [\"api\"]", "names = []"));
        assert!(e.contains("zone.names"), "{e}");
    }

    #[test]
    fn key_file_is_checked_and_own_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spdu.toml");
        let missing = Config::parse(&path, &valid()).unwrap();
        let e = format!("{:#}", missing.load_key().unwrap_err());
        assert!(e.starts_with("node.key:") && e.contains("node.key"), "{e}");

        let key = SecretKey::generate_file(&dir.path().join("node.key")).unwrap();
        let config = Config::parse(&path, &valid()).unwrap();
        assert_eq!(config.load_key().unwrap().public(), key.public());

        let own = valid().replace(&key_token(3), &key.public().to_string());
        let config = Config::parse(&path, &own).unwrap();
        let e = format!("{:#}", config.load_key().unwrap_err());
        assert!(e.contains("peers[1].key: is this node's own public key"), "{e}");

        std::fs::set_permissions(dir.path().join("node.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = format!("{:#}", config.load_key().unwrap_err());
        assert!(e.contains("readable by group or others"), "{e}");
    }

    #[test]
    fn control_address_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spdu.toml");
        std::fs::write(&path, valid().replace("ttl = 5", "ttl = \"broken\"")).unwrap();
        assert_eq!(load_control_address(&path).unwrap(), "127.0.0.1:7947".parse().unwrap());
    }
}
