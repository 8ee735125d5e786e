//! `[dnssec]` and each peer's `dnssec_key`: RFC 8901 multi-signer, one key per site.
//!
//! Invariants once validated: DNSSEC is on exactly when `[dnssec]` is present, and then every
//! peer has a `dnssec_key`; no two sites' keys are equal; all peers' keys use one algorithm
//! (RFC 4035 §2.2: a validator may expect RRSIGs of every algorithm in the DNSKEY RRset, so
//! sites signing with different algorithms would fail at some resolvers). This node's own key
//! is only read by [`super::Config::load_dnssec_key`], which checks it against the peers' too.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spdu_dnsfront::dnssec::SiteKey;
use toml::Spanned;

use super::validate::bounded;
use super::{Checked, FieldError};

/// `dnssec.ttl`: the DNSKEY RRset's TTL in seconds.
pub const DNSKEY_TTL: RangeInclusive<u32> = 60..=86_400;
/// `dnssec.signature_validity`: how long an RRSIG is valid, in seconds (1 h to 30 days).
pub const SIGNATURE_VALIDITY: RangeInclusive<u32> = 3_600..=2_592_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnssec {
    key: Spanned<String>,
    ttl: Option<Spanned<u32>>,
    signature_validity: Option<Spanned<u32>>,
}

/// `[dnssec]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnssecConfig {
    /// `dnssec.key`: this site's zone-signing key file (relative to the config file).
    pub key: PathBuf,
    /// `dnssec.ttl`: the DNSKEY RRset's TTL (default 3600 s).
    pub ttl: u32,
    /// `dnssec.signature_validity`: RRSIG validity (default 2 days); inception is backdated by
    /// an hour for clock skew, signatures are refreshed when half the validity is left.
    pub signature_validity: Duration,
    /// Every peer's DNSKEY (`peers[].dnssec_key`), by peer name, in roster order.
    pub peers: Vec<(String, SiteKey)>,
}

/// Checks `[dnssec]` against the peers' `dnssec_key` fields (`(name, field)` in roster order).
pub(super) fn validate(
    raw: Option<&RawDnssec>,
    peer_keys: &[(String, Option<&Spanned<String>>)],
    base: &Path,
) -> Checked<Option<DnssecConfig>> {
    let Some(raw) = raw else {
        if let Some((i, (name, Some(field)))) = peer_keys.iter().enumerate().find(|(_, (_, k))| k.is_some()) {
            return Err(FieldError::at(
                field,
                format!(
                    "peers[{i}].dnssec_key: peer {name:?} has a DNSSEC key but this node has no \
                     [dnssec] section; add one with `key = \"…\"` (see `spdu dnssec-keygen`)"
                ),
            ));
        }
        return Ok(None);
    };
    if raw.key.get_ref().trim().is_empty() {
        return Err(FieldError::at(&raw.key, "dnssec.key: empty path"));
    }
    let key = base.join(raw.key.get_ref());
    let ttl = bounded("dnssec.ttl", &raw.ttl, 3_600, &DNSKEY_TTL, " s")?;
    let validity =
        bounded("dnssec.signature_validity", &raw.signature_validity, 172_800, &SIGNATURE_VALIDITY, " s")?;
    let mut peers: Vec<(String, SiteKey)> = Vec::with_capacity(peer_keys.len());
    for (i, (name, field)) in peer_keys.iter().enumerate() {
        let Some(field) = field else {
            // The peer has no field to point at: point at the section that asks for it.
            return Err(FieldError::at(
                &raw.key,
                format!(
                    "peers[{i}].dnssec_key: missing for peer {name:?}; with [dnssec] every site's DNSKEY \
                 must be listed (the DNSKEY RRset holds all sites' keys)"
                ),
            ));
        };
        let site: SiteKey = field
            .get_ref()
            .parse()
            .map_err(|e| FieldError::at(field, format!("peers[{i}].dnssec_key: {e}")))?;
        if let Some(j) = peers.iter().position(|(_, k)| *k == site) {
            return Err(FieldError::at(
                field,
                format!("peers[{i}].dnssec_key: the same key as peers[{j}].dnssec_key"),
            ));
        }
        if let Some((first, k)) = peers.first()
            && k.algorithm() != site.algorithm()
        {
            return Err(FieldError::at(
                field,
                format!(
                    "peers[{i}].dnssec_key: algorithm {} but peer {first:?} uses {}; every site \
                     must sign with the same algorithm (RFC 4035 section 2.2)",
                    site.algorithm(),
                    k.algorithm()
                ),
            ));
        }
        peers.push((name.clone(), site));
    }
    Ok(Some(DnssecConfig { key, ttl, signature_validity: Duration::from_secs(u64::from(validity)), peers }))
}

impl DnssecConfig {
    /// Loads `dnssec.key` and checks it against the peers' keys: the same algorithm as theirs,
    /// and not listed as a peer's key. `config` names the config file in errors.
    pub fn load_key(&self, config: &Path) -> anyhow::Result<spdu_dnsfront::dnssec::ZoneKey> {
        let key = crate::dnssec_keys::load_file(&self.key)
            .map_err(|e| anyhow::anyhow!("{}: dnssec.key: {e:#}", config.display()))?;
        let own = key.public();
        for (i, (name, site)) in self.peers.iter().enumerate() {
            if site == own {
                anyhow::bail!(
                    "{}: peers[{i}].dnssec_key: is this node's own DNSKEY (from dnssec.key {}); \
                     peer {name:?} needs its own key",
                    config.display(),
                    self.key.display()
                );
            }
            if site.algorithm() != own.algorithm() {
                anyhow::bail!(
                    "{}: peers[{i}].dnssec_key: algorithm {} but this node's dnssec.key is algorithm {}; \
                     every site must sign with the same algorithm (RFC 4035 section 2.2)",
                    config.display(),
                    site.algorithm(),
                    own.algorithm()
                );
            }
        }
        Ok(key)
    }
}

impl DnssecConfig {
    /// The DNS server's signer: `dnssec.key` (checked as [`Self::load_key`] does) and every
    /// site's DNSKEY.
    pub fn signer(&self, config: &Path) -> anyhow::Result<spdu_dnsfront::dnssec::Signer> {
        let key = self.load_key(config)?;
        let peers = self.peers.iter().map(|(_, k)| k.clone()).collect();
        Ok(spdu_dnsfront::dnssec::Signer::new(key, peers, self.ttl, self.signature_validity))
    }
}

impl DnssecConfig {
    /// One line for messages: off, or the key file, TTL, validity and every peer's key.
    pub fn summary(config: &Option<Self>) -> String {
        match config {
            None => "off".to_owned(),
            Some(c) => {
                let peers: Vec<String> = c.peers.iter().map(|(name, key)| format!("{name}: {key}")).collect();
                format!(
                    "key {} ttl {} validity {} s, peers [{}]",
                    c.key.display(),
                    c.ttl,
                    c.signature_validity.as_secs(),
                    peers.join(", ")
                )
            }
        }
    }
}
