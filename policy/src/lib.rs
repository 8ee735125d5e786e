//! Failover policies: which of the sites that qualify each name of the pool answers with.
//!
//! The quorum rule (`spdu-gossip`, docs/design.md §3) decides which sites **qualify**; a [`Rule`]
//! per name only chooses among them. Policies: `all` (every qualifying site, or a rotating
//! subset), `priority` (the best priority level that qualifies), `weighted` (a sample by weight
//! per response; weight 0 is standby) and `fastest` (the N qualifying sites with the lowest
//! service-check latency, sticky).
//!
//! Layout:
//! - this file: the configuration ([`Policy`], [`Rule`], [`SiteAttrs`], [`PolicyConfig`]) and
//!   its [`PolicyDigest`], which nodes sign so that operators see when sites disagree;
//! - `select`: [`Selector`], one per name: the policy, stickiness and the change-rate limit over
//!   the qualifying sites, giving a [`Choice`] and, for `spdu explain`, a [`SiteVerdict`] per site;
//! - `pick`: [`Pick`], what one response takes from a choice (all, a rotating window, a sample by
//!   weight), shared by the DNS front and the simulator.
//!
//! Invariants: nothing here reads a clock or an OS random source (time and randomness come in as
//! arguments), so selections are deterministic and the simulator replays them bit for bit; a site
//! that stops qualifying leaves a choice at once: the change-rate limit only ever delays additions
//! and reshuffles.

mod pick;
mod select;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pick::{Pick, sample_weighted};
pub use select::{Candidate, Choice, Selector, SiteVerdict};

/// How a name chooses among its qualifying sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Every qualifying site (with `max_answers`, a rotating subset per response).
    #[default]
    All,
    /// The qualifying sites of the best (lowest) priority level present.
    Priority,
    /// Per response, up to `max_answers` sites sampled by weight; weight-0 sites only while no
    /// positive-weight site qualifies.
    Weighted,
    /// The `max_answers` qualifying sites with the lowest service-check latency, sticky.
    Fastest,
}

impl Policy {
    /// Every policy, in the order the config documents them.
    pub const ALL: [Policy; 4] = [Policy::All, Policy::Priority, Policy::Weighted, Policy::Fastest];

    /// The config spelling (`all`, `priority`, `weighted`, `fastest`).
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::All => "all",
            Policy::Priority => "priority",
            Policy::Weighted => "weighted",
            Policy::Fastest => "fastest",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default `good_enough_ms` of `fastest`.
pub const DEFAULT_GOOD_ENOUGH: Duration = Duration::from_millis(50);

/// One name's rule (a `[[zone.record]]` entry, or a `[zone] names` entry with policy `all`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The name, relative to the origin as configured (`"@"` is the apex).
    pub name: String,
    /// How it chooses.
    pub policy: Policy,
    /// Which sites may appear, by roster name (none: every site).
    pub sites: Option<Vec<String>>,
    /// At most this many addresses per response (0: no limit).
    pub max_answers: usize,
    /// TTL of its records.
    pub ttl: u32,
    /// TTL while its answer lacks a site it would hold if every site were up.
    pub ttl_degraded: u32,
    /// Least time between two changes that add or reshuffle sites (removals are never delayed).
    pub min_change_interval: Duration,
    /// `fastest`: every site whose service check answers at least this fast is equally good.
    pub good_enough: Duration,
}

impl Rule {
    /// The rule of a `[zone] names` entry: every qualifying site, `ttl` always.
    pub fn all(name: impl Into<String>, ttl: u32) -> Self {
        Self {
            name: name.into(),
            policy: Policy::All,
            sites: None,
            max_answers: 0,
            ttl,
            ttl_degraded: ttl,
            min_change_interval: Duration::ZERO,
            good_enough: DEFAULT_GOOD_ENOUGH,
        }
    }

    /// Whether the site called `site` may appear in this name's answer.
    pub fn allows(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|sites| sites.iter().any(|s| s == site))
    }
}

/// A site's place in the policies, as this node's operator configured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteAttrs {
    /// Lower is preferred (`priority`).
    pub priority: u32,
    /// Relative share (`weighted`); 0 is standby.
    pub weight: u32,
}

impl SiteAttrs {
    /// The default priority of a site.
    pub const DEFAULT_PRIORITY: u32 = 1;
    /// The default weight of a site.
    pub const DEFAULT_WEIGHT: u32 = 100;
}

impl Default for SiteAttrs {
    fn default() -> Self {
        Self { priority: Self::DEFAULT_PRIORITY, weight: Self::DEFAULT_WEIGHT }
    }
}

/// Every rule of the zone and every site's attributes: what a node's answers depend on besides
/// the quorum rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    /// One per name, in zone order.
    pub rules: Vec<Rule>,
    /// By site name; a site not listed has [`SiteAttrs::default`].
    pub sites: BTreeMap<String, SiteAttrs>,
}

impl PolicyConfig {
    /// The attributes of the site called `site`.
    pub fn attrs(&self, site: &str) -> SiteAttrs {
        self.sites.get(site).copied().unwrap_or_default()
    }

    /// A digest of everything that shapes the answers, over `roster` (every site's name, this
    /// node's included): two nodes with equal digests choose alike from equal qualifying sets.
    /// Names compare case-insensitively; site lists compare as sets.
    pub fn digest<'a>(&self, roster: impl IntoIterator<Item = &'a str>) -> PolicyDigest {
        let mut h = Sha256::new();
        let mut put = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        put(b"spdu/policy/v1");
        let mut rules: Vec<&Rule> = self.rules.iter().collect();
        rules.sort_by_key(|r| r.name.to_ascii_lowercase());
        for rule in rules {
            put(rule.name.to_ascii_lowercase().as_bytes());
            put(rule.policy.as_str().as_bytes());
            match &rule.sites {
                None => put(b"*"),
                Some(sites) => {
                    let mut sites: Vec<&str> = sites.iter().map(String::as_str).collect();
                    sites.sort_unstable();
                    sites.dedup();
                    put(&(sites.len() as u64).to_be_bytes());
                    sites.iter().for_each(|s| put(s.as_bytes()));
                }
            }
            put(&(rule.max_answers as u64).to_be_bytes());
            put(&rule.ttl.to_be_bytes());
            put(&rule.ttl_degraded.to_be_bytes());
            put(&(rule.min_change_interval.as_millis() as u64).to_be_bytes());
            put(&(rule.good_enough.as_millis() as u64).to_be_bytes());
        }
        let mut names: Vec<&str> = roster.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let attrs = self.attrs(name);
            put(name.as_bytes());
            put(&attrs.priority.to_be_bytes());
            put(&attrs.weight.to_be_bytes());
        }
        let full = h.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&full[..16]);
        PolicyDigest(id)
    }
}

/// A 16-byte SHA-256 prefix of a [`PolicyConfig`] over a roster; all zero from a node that signs
/// none (older versions). Hex text in human-readable formats (JSON), 16 bytes in binary ones.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyDigest(pub [u8; 16]);

impl Serialize for PolicyDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { self.0.serialize(s) }
    }
}

impl<'de> Deserialize<'de> for PolicyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return <[u8; 16]>::deserialize(d).map(PolicyDigest);
        }
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("policy digest {text:?} is not 32 hex digits"));
        if text.len() != 32 || !text.is_ascii() {
            return Err(bad());
        }
        let mut id = [0; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(PolicyDigest(id))
    }
}

impl PolicyDigest {
    /// Whether this is the all-zero digest of a node that signs none.
    pub fn is_unknown(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyDigest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PolicyConfig {
        let mut admin = Rule::all("admin", 30);
        admin.policy = Policy::Priority;
        admin.sites = Some(vec!["beta".into(), "alpha".into()]);
        PolicyConfig {
            rules: vec![Rule::all("api", 30), admin],
            sites: [("alpha".to_string(), SiteAttrs { priority: 1, weight: 100 })].into(),
        }
    }

    #[test]
    fn digest_ignores_order_and_case_but_not_content() {
        let roster = ["alpha", "beta"];
        let base = config().digest(roster);
        let mut reordered = config();
        reordered.rules.reverse();
        reordered.rules[1].name = "API".into();
        reordered.rules[0].sites = Some(vec!["alpha".into(), "beta".into()]);
        assert_eq!(reordered.digest(["beta", "alpha"]), base);
        // An unlisted site has the default attributes, so listing them changes nothing.
        let mut explicit = config();
        explicit.sites.insert("beta".into(), SiteAttrs::default());
        assert_eq!(explicit.digest(roster), base);

        let mut weight = config();
        weight.sites.insert("beta".into(), SiteAttrs { priority: 1, weight: 50 });
        let mut ttl = config();
        ttl.rules[1].ttl_degraded = 2;
        let mut policy = config();
        policy.rules[0].policy = Policy::Weighted;
        for other in [weight, ttl, policy] {
            assert_ne!(other.digest(roster), base);
        }
        assert_ne!(config().digest(["alpha", "beta", "gamma"]), base);
        assert!(!base.is_unknown());
        assert_eq!(base.to_string().len(), 32);
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(json, format!("\"{base}\""));
        assert_eq!(serde_json::from_str::<PolicyDigest>(&json).unwrap(), base);
        assert!(serde_json::from_str::<PolicyDigest>("\"zz\"").is_err());
    }

    #[test]
    fn policy_spellings() {
        for policy in Policy::ALL {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        }
    }
}
