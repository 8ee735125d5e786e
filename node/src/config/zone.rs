//! `[zone]` and its `[[zone.record]]` entries: the pool names and each name's failover rule.
//!
//! Invariants: at least one name; every name is listed once, in `names` and the records
//! together (case-insensitively, relative and absolute spellings alike); [`ZoneConfig::names`]
//! is `names` in order, then the records in order, and the rules have one entry per name in the
//! same order (a `names` entry is [`Rule::all`] with the zone TTL), so position `i` is the same
//! name in both. A record's `sites` name only sites of the roster (this node or a peer), each
//! once; its `ttl_degraded` is never longer than its `ttl`; `good_enough_ms` is only set on a
//! `fastest` record. The DNS front ([`ZoneConfig::validate`]) checks the names' syntax; its
//! errors are located at the offending entry here.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use spdu_dnsfront::{MAX_RECORDS_PER_RRSET, ZoneConfig, ZoneError};
use spdu_policy::{DEFAULT_GOOD_ENOUGH, Policy, Rule};
use toml::Spanned;

use super::validate::{bounded, bounded_count, bounded_ms, name};
use super::{Checked, FieldError};

/// `zone.ttl`, `zone.record[].ttl`, `ttl_degraded`: at most 2³¹ − 1 s (RFC 2181 §8).
pub const TTL: RangeInclusive<u32> = 0..=0x7fff_ffff;
/// `zone.record[].max_answers`: 0 (no limit) up to the addresses one RRset holds.
pub const MAX_ANSWERS: RangeInclusive<u32> = 0..=MAX_RECORDS_PER_RRSET as u32;
/// `zone.record[].min_change_interval_ms`: up to a day.
pub const MIN_CHANGE_INTERVAL_MS: RangeInclusive<u64> = 0..=86_400_000;
/// `zone.record[].good_enough_ms`: up to a minute (the longest check timeout).
pub const GOOD_ENOUGH_MS: RangeInclusive<u64> = 0..=60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    origin: Spanned<String>,
    names: Option<Spanned<Vec<Spanned<String>>>>,
    ttl: Spanned<u32>,
    nameservers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    record: Vec<RawRecord>,
}

/// One `[[zone.record]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: Spanned<String>,
    policy: Spanned<String>,
    sites: Option<Spanned<Vec<Spanned<String>>>>,
    max_answers: Option<Spanned<u32>>,
    ttl: Option<Spanned<u32>>,
    ttl_degraded: Option<Spanned<u32>>,
    min_change_interval_ms: Option<Spanned<u64>>,
    good_enough_ms: Option<Spanned<u64>>,
}

/// A pool name with the field it came from.
struct Entry<'a> {
    field: String,
    value: &'a Spanned<String>,
}

impl RawZone {
    /// The zone and one rule per name, in the same order; `roster` is every site's name, this
    /// node's first.
    pub(super) fn validate(&self, roster: &[&str]) -> Checked<(ZoneConfig, Vec<Rule>)> {
        let ttl = bounded("zone.ttl", &Some(self.ttl.clone()), 0, &TTL, " s")?;
        let mut entries = Vec::new();
        let mut rules = Vec::new();
        for (i, value) in self.names.iter().flat_map(|l| l.get_ref()).enumerate() {
            let field = format!("zone.names[{i}]");
            rules.push(Rule::all(name(&field, value)?, ttl));
            entries.push(Entry { field, value });
        }
        for (i, record) in self.record.iter().enumerate() {
            let field = format!("zone.record[{i}]");
            rules.push(record.validate(&field, ttl, roster)?);
            entries.push(Entry { field: format!("{field}.name"), value: &record.name });
        }
        if entries.is_empty() {
            let message = "zone.names: no pool name: list the names answered with the pool in \
                           zone.names or in [[zone.record]] entries";
            return Err(match &self.names {
                Some(names) => FieldError::at(names, message),
                None => FieldError::field(message),
            });
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for entry in &entries {
            let key = name_key(entry.value.get_ref(), self.origin.get_ref());
            if let Some(first) = seen.insert(key, &entry.field) {
                return Err(FieldError::at(
                    entry.value,
                    format!(
                        "{}: {:?} is the same name as {first} (names compare case-insensitively; each \
                         name has one rule)",
                        entry.field,
                        entry.value.get_ref()
                    ),
                ));
            }
        }

        let zone = ZoneConfig {
            origin: self.origin.get_ref().clone(),
            names: entries.iter().map(|e| e.value.get_ref().clone()).collect(),
            ttl,
            nameservers: self.nameservers.get_ref().iter().map(|n| n.get_ref().clone()).collect(),
        };
        zone.validate().map_err(|e| self.locate(&entries, e))?;
        Ok((zone, rules))
    }

    /// Places a DNS front's zone error at the entry it is about.
    fn locate(&self, entries: &[Entry<'_>], e: ZoneError) -> FieldError {
        let entry = |value: &str| entries.iter().rev().find(|e| e.value.get_ref() == value);
        let nameserver = |value: &str| self.nameservers.get_ref().iter().find(|n| n.get_ref() == value);
        match &e {
            ZoneError::InvalidName { value, reason } => match entry(value) {
                Some(en) => {
                    FieldError::at(en.value, format!("{}: {value:?} is not a valid name: {reason}", en.field))
                }
                None => FieldError::field(e),
            },
            ZoneError::NameOutsideZone { value, origin } => match entry(value) {
                Some(en) => FieldError::at(
                    en.value,
                    format!("{}: {value:?} is outside the zone {origin:?}", en.field),
                ),
                None => FieldError::field(e),
            },
            ZoneError::DuplicateName { value } => match entry(value) {
                Some(en) => {
                    FieldError::at(en.value, format!("{}: {value:?} is listed more than once", en.field))
                }
                None => FieldError::field(e),
            },
            ZoneError::InvalidOrigin { .. } => FieldError::at(&self.origin, e),
            ZoneError::TtlTooLarge { .. } => FieldError::at(&self.ttl, e),
            ZoneError::NoNameservers => FieldError::at(&self.nameservers, e),
            ZoneError::InvalidNameserver { value, .. } | ZoneError::NameserverInZone { value, .. } => {
                match nameserver(value) {
                    Some(n) => FieldError::at(n, e),
                    None => FieldError::field(e),
                }
            }
            _ => FieldError::field(e),
        }
    }
}

impl RawRecord {
    /// This record's rule; `field` is `zone.record[i]`, `zone_ttl` the default TTL.
    fn validate(&self, field: &str, zone_ttl: u32, roster: &[&str]) -> Checked<Rule> {
        let rule_name = name(&format!("{field}.name"), &self.name)?;
        let policy =
            Policy::ALL.into_iter().find(|p| p.as_str() == self.policy.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = Policy::ALL.iter().map(|p| p.as_str()).collect();
                FieldError::at(
                    &self.policy,
                    format!(
                        "{field}.policy: \"{}\" is not a policy ({})",
                        crate::text::escape(self.policy.get_ref()),
                        known.join(", ")
                    ),
                )
            })?;
        let sites = match &self.sites {
            None => None,
            Some(list) => Some(sites(&format!("{field}.sites"), list, roster)?),
        };
        let max_answers = bounded_count(&format!("{field}.max_answers"), &self.max_answers, 0, MAX_ANSWERS)?;
        let ttl = bounded(&format!("{field}.ttl"), &self.ttl, zone_ttl, &TTL, " s")?;
        let ttl_degraded = bounded(&format!("{field}.ttl_degraded"), &self.ttl_degraded, ttl, &TTL, " s")?;
        if let Some(at) = self.ttl_degraded.as_ref().filter(|_| ttl_degraded > ttl) {
            return Err(FieldError::at(
                at,
                format!(
                    "{field}.ttl_degraded: {ttl_degraded} is longer than the record's ttl ({ttl}); it is \
                     the shorter TTL served while the answer lacks a site, so that caches come back soon"
                ),
            ));
        }
        let min_change_interval = bounded_ms(
            &format!("{field}.min_change_interval_ms"),
            &self.min_change_interval_ms,
            Duration::ZERO,
            MIN_CHANGE_INTERVAL_MS,
        )?;
        if let Some(at) = self.good_enough_ms.as_ref().filter(|_| policy != Policy::Fastest) {
            return Err(FieldError::at(
                at,
                format!(
                    "{field}.good_enough_ms: only used by policy \"fastest\", not by {:?}",
                    policy.as_str()
                ),
            ));
        }
        let good_enough = bounded_ms(
            &format!("{field}.good_enough_ms"),
            &self.good_enough_ms,
            DEFAULT_GOOD_ENOUGH,
            GOOD_ENOUGH_MS,
        )?;
        Ok(Rule {
            name: rule_name,
            policy,
            sites,
            max_answers: max_answers as usize,
            ttl,
            ttl_degraded,
            min_change_interval,
            good_enough,
        })
    }
}

/// A record's `sites`: at least one, each a roster site, each once.
fn sites(field: &str, list: &Spanned<Vec<Spanned<String>>>, roster: &[&str]) -> Checked<Vec<String>> {
    if list.get_ref().is_empty() {
        return Err(FieldError::at(
            list,
            format!("{field}: needs at least one site (or leave it out: every site)"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.get_ref().len());
    for (j, value) in list.get_ref().iter().enumerate() {
        let site = value.get_ref();
        if !roster.contains(&site.as_str()) {
            return Err(FieldError::at(
                value,
                format!(
                    "{field}[{j}]: \"{}\" is not a site of the roster (node.name or a peers[].name: {})",
                    crate::text::escape(site),
                    roster.join(", ")
                ),
            ));
        }
        if out.contains(site) {
            return Err(FieldError::at(value, format!("{field}[{j}]: {site:?} is listed twice")));
        }
        out.push(site.clone());
    }
    Ok(out)
}

/// What two spellings of one pool name have in common: lower case, relative to `origin`
/// (`"@"` for the apex); an absolute name outside the zone keeps its trailing dot.
pub(crate) fn name_key(name: &str, origin: &str) -> String {
    let name = name.to_ascii_lowercase();
    let origin = origin.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_suffix('.') {
        _ if name == "@" => name,
        Some(abs) if abs == origin => "@".to_owned(),
        Some(abs) => abs.strip_suffix(&format!(".{origin}")).map_or_else(|| name.clone(), str::to_owned),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::name_key;

    #[test]
    fn spellings_of_one_name_share_a_key() {
        let origin = "Pool.Example.com.";
        assert_eq!(name_key("API", origin), "api");
        assert_eq!(name_key("api.pool.example.COM.", origin), "api");
        assert_eq!(name_key("pool.example.com.", origin), "@");
        assert_eq!(name_key("@", origin), "@");
        assert_eq!(name_key("www.api", origin), "www.api");
        assert_eq!(name_key("api.other.example.", origin), "api.other.example.");
        assert_ne!(name_key("xpool.example.com.", origin), "@");
    }
}
