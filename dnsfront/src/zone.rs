//! The pool zone: its configuration, validation, and the compiled form the query path reads.
//!
//! Owns [`ZoneConfig`] (the `[zone]` section of the config), [`ZoneError`], and [`Zone`]: the
//! validated zone with every name lower-cased and absolute, the set of nodes that exist in it
//! (apex, pool names, and the empty non-terminals between them) and the static apex records.
//! Invariant: a `Zone` is only ever built from a config that passed [`ZoneConfig::validate`], and
//! every name it holds lies at or below its origin.

use std::collections::HashMap;

use hickory_proto::rr::{
    LowerName, Name, RData, Record,
    rdata::{HINFO, NS},
};

/// Longest textual domain name, without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;
/// Largest TTL a resolver must honour (RFC 2181 §8).
pub(crate) const MAX_TTL: u32 = 0x7fff_ffff;

/// Zone settings, from the `[zone]` section of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The delegated pool zone, e.g. `"pool.example.com"` (with or without trailing dot).
    pub origin: String,
    /// Names answered with the pool, relative to `origin`, e.g. `["api"]`. May have several
    /// labels (`"www.api"`); `"@"` stands for the apex itself. An absolute name (trailing dot)
    /// is accepted if it lies inside the zone. [`PoolAnswers::names`](crate::PoolAnswers::names)
    /// follows this order.
    pub names: Vec<String>,
    /// The SOA minimum (negative-caching TTL) and the TTL of the SOA, NS and ANY records; each
    /// name's A/AAAA TTL comes with its answers ([`NameAnswers::ttl`](crate::NameAnswers::ttl);
    /// the node's config makes it this one unless the name's record sets another).
    pub ttl: u32,
    /// Absolute names of the zone's nameservers, for the NS RRset at the apex; the first one is
    /// the SOA `mname`. They must lie outside the zone: it carries no glue.
    pub nameservers: Vec<String>,
}

/// Why a [`ZoneConfig`] was refused. Each variant names the field and the offending value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneError {
    /// `zone.origin` is not a valid domain name.
    #[error("zone.origin {value:?} is not a valid domain name: {reason}")]
    InvalidOrigin {
        /// The configured origin.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `zone.names` is empty: the zone would answer nothing.
    #[error("zone.names is empty: at least one name must be answered with the pool")]
    NoNames,
    /// One of `zone.names` is not a valid name.
    #[error("zone.names entry {value:?} is not a valid name: {reason}")]
    InvalidName {
        /// The configured name.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An absolute entry of `zone.names` is not inside the zone.
    #[error("zone.names entry {value:?} is outside the zone {origin:?}")]
    NameOutsideZone {
        /// The configured name.
        value: String,
        /// The zone origin.
        origin: String,
    },
    /// The same name appears twice in `zone.names` (compared case-insensitively).
    #[error("zone.names entry {value:?} is listed more than once")]
    DuplicateName {
        /// The configured name.
        value: String,
    },
    /// `zone.nameservers` is empty: the apex needs an NS RRset and the SOA an mname.
    #[error("zone.nameservers is empty: the zone needs at least one nameserver")]
    NoNameservers,
    /// One of `zone.nameservers` is not a valid host name.
    #[error("zone.nameservers entry {value:?} is not a valid host name: {reason}")]
    InvalidNameserver {
        /// The configured nameserver.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A nameserver lies inside the zone, which would need glue the zone does not carry.
    #[error(
        "zone.nameservers entry {value:?} is inside the zone {origin:?}; in-zone nameservers need glue, which this zone cannot serve"
    )]
    NameserverInZone {
        /// The configured nameserver.
        value: String,
        /// The zone origin.
        origin: String,
    },
    /// `zone.ttl` is larger than RFC 2181 allows.
    #[error("zone.ttl {value} is too large (at most {MAX_TTL})")]
    TtlTooLarge {
        /// The configured TTL.
        value: u32,
    },
}

impl ZoneConfig {
    /// Checks every field; the error names the first bad field and value.
    pub fn validate(&self) -> Result<(), ZoneError> {
        Zone::compile(self).map(drop)
    }
}

/// What exists at one name of the zone.
#[derive(Debug)]
pub(crate) struct Node {
    /// True at the apex (SOA and NS live here).
    pub(crate) apex: bool,
    /// Index into [`Zone::pool_names`] when this name is answered with the pool.
    pub(crate) pool: Option<usize>,
    /// The synthesized RFC 8482 answer to `ANY` at this name; `None` for an empty non-terminal,
    /// which owns no records at all.
    pub(crate) any: Option<Record>,
}

/// A validated zone, lower-cased and absolute, ready for the query path.
#[derive(Debug)]
pub(crate) struct Zone {
    pub(crate) origin: LowerName,
    pub(crate) ttl: u32,
    /// The absolute pool names, in config order; [`Node::pool`] indexes this.
    pub(crate) pool_names: Vec<Name>,
    /// Every name that exists in the zone: apex, pool names, empty non-terminals.
    pub(crate) nodes: HashMap<LowerName, Node>,
    /// The NS RRset at the apex.
    pub(crate) ns: Vec<Record>,
    /// SOA mname: the first nameserver.
    pub(crate) mname: Name,
    /// SOA rname: `hostmaster.<origin>`.
    pub(crate) rname: Name,
}

impl Zone {
    /// Validates `config` and builds the zone.
    pub(crate) fn compile(config: &ZoneConfig) -> Result<Self, ZoneError> {
        let origin = parse_absolute(&config.origin)
            .map_err(|reason| ZoneError::InvalidOrigin { value: config.origin.clone(), reason })?;
        if origin.is_root() {
            return Err(ZoneError::InvalidOrigin {
                value: config.origin.clone(),
                reason: "the root zone cannot be a pool zone".into(),
            });
        }
        if config.ttl > MAX_TTL {
            return Err(ZoneError::TtlTooLarge { value: config.ttl });
        }

        if config.nameservers.is_empty() {
            return Err(ZoneError::NoNameservers);
        }
        let mut ns_names = Vec::with_capacity(config.nameservers.len());
        for value in &config.nameservers {
            let name = parse_absolute(value)
                .map_err(|reason| ZoneError::InvalidNameserver { value: value.clone(), reason })?;
            if origin.zone_of(&name) {
                return Err(ZoneError::NameserverInZone {
                    value: value.clone(),
                    origin: config.origin.clone(),
                });
            }
            if !ns_names.contains(&name) {
                ns_names.push(name);
            }
        }

        if config.names.is_empty() {
            return Err(ZoneError::NoNames);
        }
        let mut pool_names: Vec<Name> = Vec::with_capacity(config.names.len());
        for value in &config.names {
            let name = pool_name(value, &origin).map_err(|e| match e {
                PoolNameError::Invalid(reason) => ZoneError::InvalidName { value: value.clone(), reason },
                PoolNameError::Outside => {
                    ZoneError::NameOutsideZone { value: value.clone(), origin: config.origin.clone() }
                }
            })?;
            if pool_names.contains(&name) {
                return Err(ZoneError::DuplicateName { value: value.clone() });
            }
            pool_names.push(name);
        }

        let ttl = config.ttl;
        // RFC 8482 §4.2: answer ANY with one synthesized HINFO "RFC8482" "" at names that own
        // records. It keeps ANY answers tiny (no amplification) and is what BIND and Knot do.
        let any_record = |owner: &Name| {
            Record::from_rdata(owner.clone(), ttl, RData::HINFO(HINFO::new("RFC8482".into(), String::new())))
        };

        let mut nodes = HashMap::new();
        nodes.insert(
            LowerName::from(&origin),
            Node { apex: true, pool: None, any: Some(any_record(&origin)) },
        );
        for (index, name) in pool_names.iter().enumerate() {
            let node =
                nodes.entry(LowerName::from(name)).or_insert(Node { apex: false, pool: None, any: None });
            node.pool = Some(index);
            node.any = Some(any_record(name));
            // Every name between the pool name and the apex exists too (empty non-terminal).
            let mut ancestor = name.base_name();
            while ancestor.num_labels() > origin.num_labels() {
                nodes.entry(LowerName::from(&ancestor)).or_insert(Node {
                    apex: false,
                    pool: None,
                    any: None,
                });
                ancestor = ancestor.base_name();
            }
        }

        let ns = ns_names
            .iter()
            .map(|target| Record::from_rdata(origin.clone(), ttl, RData::NS(NS(target.clone()))))
            .collect();
        let rname = origin.prepend_label("hostmaster").map_err(|e| ZoneError::InvalidOrigin {
            value: config.origin.clone(),
            reason: format!("hostmaster.<origin> is not a valid name: {e}"),
        })?;

        Ok(Self {
            origin: LowerName::from(&origin),
            ttl,
            pool_names,
            nodes,
            ns,
            mname: ns_names[0].clone(),
            rname,
        })
    }
}

/// Why a `zone.names` entry was refused.
enum PoolNameError {
    Invalid(String),
    Outside,
}

/// Resolves one `zone.names` entry against the (absolute, lower-case) origin.
fn pool_name(value: &str, origin: &Name) -> Result<Name, PoolNameError> {
    let value = value.trim();
    if value == "@" {
        return Ok(origin.clone());
    }
    if value.ends_with('.') {
        let name = parse_absolute(value).map_err(PoolNameError::Invalid)?;
        return if origin.zone_of(&name) { Ok(name) } else { Err(PoolNameError::Outside) };
    }
    check_syntax(value).map_err(PoolNameError::Invalid)?;
    let relative = Name::from_ascii(value).map_err(|e| PoolNameError::Invalid(e.to_string()))?.to_lowercase();
    let name = relative
        .append_domain(origin)
        .map_err(|e| PoolNameError::Invalid(format!("too long once the origin is appended: {e}")))?;
    if name.to_ascii().trim_end_matches('.').len() > MAX_NAME_LEN {
        return Err(PoolNameError::Invalid("too long once the origin is appended".into()));
    }
    Ok(name)
}

/// Parses a name that is absolute whether or not it ends with a dot; lower-cased, FQDN.
fn parse_absolute(value: &str) -> Result<Name, String> {
    let trimmed = value.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() {
        return Err("empty name".into());
    }
    check_syntax(bare)?;
    let mut name = Name::from_ascii(bare).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Host-name syntax (RFC 952/1123 letters, digits, hyphens; `_` allowed for service-style
/// labels), checked before hickory's parser, which accepts escapes and wildcards we do not want.
fn check_syntax(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label {label:?} is longer than {MAX_LABEL_LEN} characters"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("label {label:?} contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ZoneConfig {
        ZoneConfig {
            origin: "Pool.Example.TEST.".into(),
            names: vec!["api".into(), "www.api".into()],
            ttl: 5,
            nameservers: vec!["alpha.example.test".into(), "beta.example.test.".into()],
        }
    }

    fn err(f: impl FnOnce(&mut ZoneConfig)) -> ZoneError {
        let mut c = config();
        f(&mut c);
        c.validate().expect_err("config should be refused")
    }

    #[test]
    fn good_config_compiles_with_ents() {
        let zone = Zone::compile(&config()).unwrap();
        assert_eq!(zone.origin.to_string(), "pool.example.test.");
        assert_eq!(zone.pool_names.len(), 2);
        assert_eq!(zone.nodes.len(), 3); // apex, api, www.api
        let ent_config = ZoneConfig { names: vec!["a.b.c".into()], ..config() };
        let zone = Zone::compile(&ent_config).unwrap();
        let ent: LowerName = "b.c.pool.example.test.".parse().unwrap();
        assert!(zone.nodes[&ent].any.is_none());
        assert_eq!(zone.nodes.len(), 4);
        assert_eq!(zone.mname.to_string(), "alpha.example.test.");
        assert_eq!(zone.rname.to_string(), "hostmaster.pool.example.test.");
    }

    #[test]
    fn apex_and_absolute_names_are_accepted() {
        let c = ZoneConfig { names: vec!["@".into(), "api.pool.example.test.".into()], ..config() };
        let zone = Zone::compile(&c).unwrap();
        assert_eq!(zone.nodes.len(), 2);
        assert!(zone.nodes[&zone.origin].pool.is_some());
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(matches!(err(|c| c.origin = "".into()), ZoneError::InvalidOrigin { .. }));
        assert!(matches!(err(|c| c.origin = ".".into()), ZoneError::InvalidOrigin { .. }));
        assert!(matches!(err(|c| c.origin = "a..b".into()), ZoneError::InvalidOrigin { .. }));
        assert!(matches!(err(|c| c.names.clear()), ZoneError::NoNames));
        assert!(matches!(err(|c| c.nameservers.clear()), ZoneError::NoNameservers));
        assert!(matches!(err(|c| c.names.push("bad name".into())), ZoneError::InvalidName { .. }));
        assert!(matches!(err(|c| c.names.push("*".into())), ZoneError::InvalidName { .. }));
        assert!(matches!(err(|c| c.names.push("-x".into())), ZoneError::InvalidName { .. }));
        assert!(matches!(err(|c| c.names.push("x".repeat(64))), ZoneError::InvalidName { .. }));
        assert!(matches!(err(|c| c.names.push("api.other.test.".into())), ZoneError::NameOutsideZone { .. }));
        assert!(matches!(err(|c| c.names.push("API".into())), ZoneError::DuplicateName { .. }));
        assert!(matches!(err(|c| c.nameservers.push("ns..x".into())), ZoneError::InvalidNameserver { .. }));
        assert!(matches!(
            err(|c| c.nameservers.push("ns1.pool.example.test".into())),
            ZoneError::NameserverInZone { .. }
        ));
        assert!(matches!(err(|c| c.ttl = u32::MAX), ZoneError::TtlTooLarge { .. }));
        let message = err(|c| c.names.push("bad name".into())).to_string();
        assert!(message.contains("zone.names") && message.contains("bad name"), "{message}");
    }
}
