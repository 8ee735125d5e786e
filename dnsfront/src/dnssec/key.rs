//! Zone keys: this site's private signing key and every site's public DNSKEY.
//!
//! Invariants: a [`SiteKey`] is a zone key (flags bit 7) with protocol 3 and an algorithm this
//! crate signs with (13 ECDSAP256SHA256 or 15 Ed25519), whose public key has the length that
//! algorithm needs; its presentation form round-trips (`"257 3 13 <base64>"`). A [`ZoneKey`]
//! holds the private half of one of them; it is never printed or serialized except as the
//! PKCS#8 DER that [`ZoneKey::generate_pkcs8`] returns for the key file.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKey, PublicKeyBuf, SigningKey};
use hickory_proto::rr::Name;
use rustls_pki_types::PrivatePkcs8KeyDer;

/// DNSKEY flags of a combined signing key: zone key (256) with the secure entry point bit (1).
pub const CSK_FLAGS: u16 = 257;

/// RFC 8410 PKCS#8 v1 for an Ed25519 private key, up to the 32-byte seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The algorithms a site key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// 13: ECDSA P-256 with SHA-256 (RFC 6605), the default.
    EcdsaP256Sha256,
    /// 15: Ed25519 (RFC 8080).
    Ed25519,
}

impl KeyAlgorithm {
    /// The IANA algorithm number.
    pub fn number(self) -> u8 {
        match self {
            Self::EcdsaP256Sha256 => 13,
            Self::Ed25519 => 15,
        }
    }

    /// The algorithm with IANA number `n`, when it is one of ours.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            13 => Some(Self::EcdsaP256Sha256),
            15 => Some(Self::Ed25519),
            _ => None,
        }
    }

    fn hickory(self) -> Algorithm {
        match self {
            Self::EcdsaP256Sha256 => Algorithm::ECDSAP256SHA256,
            Self::Ed25519 => Algorithm::ED25519,
        }
    }

    /// Length of the public key in DNSKEY form.
    fn public_len(self) -> usize {
        match self {
            Self::EcdsaP256Sha256 => 64,
            Self::Ed25519 => 32,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256Sha256 => write!(f, "13 (ECDSAP256SHA256)"),
            Self::Ed25519 => write!(f, "15 (ED25519)"),
        }
    }
}

/// Why a key or its text was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A DNSKEY's presentation form did not parse or is not a zone key we can use.
    #[error(
        "invalid DNSKEY {text:?}: {reason} (expected \"257 3 13 <base64>\" as `spdu dnssec-keygen` prints it)"
    )]
    BadDnskey {
        /// What was given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// The private key is neither an ECDSA P-256 nor an Ed25519 PKCS#8 key.
    #[error("not an ECDSA P-256 or Ed25519 PKCS#8 private key")]
    BadPrivateKey,
    /// The crypto provider failed (generating, or computing a digest).
    #[error("DNSSEC crypto: {0}")]
    Crypto(String),
}

/// A site's public zone key: the DNSKEY RDATA every site publishes at the apex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SiteKey {
    flags: u16,
    algorithm: KeyAlgorithm,
    public: Vec<u8>,
}

impl SiteKey {
    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The DNSKEY flags (257 for the keys `spdu dnssec-keygen` makes).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The DNSKEY RDATA as hickory-proto encodes it.
    pub fn dnskey(&self) -> DNSKEY {
        DNSKEY::with_flags(self.flags, PublicKeyBuf::new(self.public.clone(), self.algorithm.hickory()))
    }

    /// The key tag (RFC 4034 appendix B).
    pub fn key_tag(&self) -> u16 {
        let mut rdata = Vec::with_capacity(4 + self.public.len());
        rdata.extend_from_slice(&self.flags.to_be_bytes());
        rdata.extend_from_slice(&[3, self.algorithm.number()]);
        rdata.extend_from_slice(&self.public);
        DNSKEY::calculate_key_tag_internal(&rdata)
    }

    /// The SHA-256 DS RDATA for this key at `zone` (RFC 4509).
    pub fn ds(&self, zone: &Name) -> Result<DS, KeyError> {
        let digest =
            self.dnskey().to_digest(zone, DigestType::SHA256).map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(DS::new(self.key_tag(), self.algorithm.hickory(), DigestType::SHA256, digest.as_ref().to_vec()))
    }

    /// The DS record in presentation form, as a parent zone file takes it:
    /// `<zone>. IN DS <tag> <alg> 2 <HEX>`.
    pub fn ds_line(&self, zone: &Name) -> Result<String, KeyError> {
        let ds = self.ds(zone)?;
        let hex: String = ds.digest().iter().map(|b| format!("{b:02X}")).collect();
        Ok(format!("{} IN DS {} {} 2 {hex}", fqdn(zone), ds.key_tag(), self.algorithm.number()))
    }
}

fn fqdn(zone: &Name) -> String {
    let mut name = zone.clone();
    name.set_fqdn(true);
    name.to_ascii()
}

/// The RDATA presentation form: `257 3 13 <base64>`.
impl fmt::Display for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} 3 {} {}", self.flags, self.algorithm.number(), STANDARD.encode(&self.public))
    }
}

impl FromStr for SiteKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::BadDnskey { text: text.to_owned(), reason: reason.to_owned() };
        let mut tokens = text.split_ascii_whitespace();
        let flags: u16 =
            tokens.next().ok_or_else(|| bad("empty"))?.parse().map_err(|_| bad("flags is not a number"))?;
        if flags & 0x0100 == 0 {
            return Err(bad("flags lack the zone-key bit (256); a site key is 257"));
        }
        if flags & 0x0080 != 0 {
            return Err(bad("the key is revoked (flag 128)"));
        }
        let protocol = tokens.next().ok_or_else(|| bad("protocol missing"))?;
        if protocol != "3" {
            return Err(bad("protocol must be 3"));
        }
        let number: u8 = tokens
            .next()
            .ok_or_else(|| bad("algorithm missing"))?
            .parse()
            .map_err(|_| bad("algorithm is not a number"))?;
        let algorithm = KeyAlgorithm::from_number(number)
            .ok_or_else(|| bad(&format!("algorithm {number} is not supported (13 or 15)")))?;
        let encoded: String = tokens.collect();
        if encoded.is_empty() {
            return Err(bad("public key missing"));
        }
        let public = STANDARD.decode(encoded.as_bytes()).map_err(|e| bad(&format!("public key: {e}")))?;
        if public.len() != algorithm.public_len() {
            return Err(bad(&format!(
                "public key is {} bytes, algorithm {number} needs {}",
                public.len(),
                algorithm.public_len()
            )));
        }
        Ok(Self { flags, algorithm, public })
    }
}

/// This site's private zone key (with its public [`SiteKey`]).
pub struct ZoneKey {
    signing: Box<dyn SigningKey>,
    public: SiteKey,
}

impl ZoneKey {
    /// A fresh PKCS#8 private key for `algorithm`, from the operating system's random source.
    pub fn generate_pkcs8(algorithm: KeyAlgorithm) -> Result<Vec<u8>, KeyError> {
        let der = match algorithm {
            KeyAlgorithm::EcdsaP256Sha256 => EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256),
            KeyAlgorithm::Ed25519 => {
                // ring writes PKCS#8 v2 (with the public key), which OpenSSL 3.0 and GnuTLS
                // (knot's keymgr) cannot read: write v1, the RFC 8410 form, from a fresh seed.
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| KeyError::Crypto(e.to_string()))?;
                let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
                der.extend_from_slice(&seed);
                return Ok(der);
            }
        }
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(der.secret_pkcs8_der().to_vec())
    }

    /// Decodes a PKCS#8 private key (ECDSA P-256 or Ed25519), with the DNSKEY flags 257.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let key = PrivatePkcs8KeyDer::from(der);
        let signing: Box<dyn SigningKey> = match EcdsaSigningKey::from_pkcs8(&key, Algorithm::ECDSAP256SHA256)
        {
            Ok(k) => Box::new(k),
            Err(_) => {
                // v1 (no public key) as well as v2.
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| KeyError::BadPrivateKey)?;
                Box::new(Ed25519SigningKey::from_ed25519(pair))
            }
        };
        let algorithm = match signing.algorithm() {
            Algorithm::ECDSAP256SHA256 => KeyAlgorithm::EcdsaP256Sha256,
            Algorithm::ED25519 => KeyAlgorithm::Ed25519,
            _ => return Err(KeyError::BadPrivateKey),
        };
        let public = signing.to_public_key().map_err(|_| KeyError::BadPrivateKey)?;
        let public = SiteKey { flags: CSK_FLAGS, algorithm, public: public.public_bytes().to_vec() };
        Ok(Self { signing, public })
    }

    /// The public half.
    pub fn public(&self) -> &SiteKey {
        &self.public
    }

    pub(crate) fn signing(&self) -> &dyn SigningKey {
        self.signing.as_ref()
    }
}

impl fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZoneKey(tag {}, algorithm {})", self.public.key_tag(), self.public.algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pkcs8_and_text() {
        for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
            let der = ZoneKey::generate_pkcs8(algorithm).unwrap();
            let key = ZoneKey::from_pkcs8(&der).unwrap();
            assert_eq!(key.public().algorithm(), algorithm);
            let text = key.public().to_string();
            assert!(text.starts_with(&format!("257 3 {} ", algorithm.number())), "{text}");
            let parsed: SiteKey = text.parse().unwrap();
            assert_eq!(&parsed, key.public());
            assert_eq!(parsed.key_tag(), parsed.dnskey().calculate_key_tag().unwrap());
        }
    }

    #[test]
    fn ds_matches_rfc_8080_example() {
        // RFC 8080 section 6.1: Ed25519 DNSKEY and its SHA-256 DS at example.com.
        let key: SiteKey = "257 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=".parse().unwrap();
        assert_eq!(key.key_tag(), 3613);
        assert_eq!(
            key.ds_line(&Name::from_ascii("example.com").unwrap()).unwrap(),
            "example.com. IN DS 3613 15 2 3AA5AB37EFCE57F737FC1627013FEE07BDF241BD10F3B1964AB55C78E79A304B"
        );
    }

    #[test]
    fn bad_dnskey_text_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("257 3 8 AwEAAQ==", "algorithm 8 is not supported"),
            ("257 2 13 AAAA", "protocol must be 3"),
            ("1 3 13 AAAA", "zone-key bit"),
            ("385 3 13 AAAA", "revoked"),
            ("257 3 15 AAAA", "3 bytes, algorithm 15 needs 32"),
            ("257 3 15 !!!", "public key:"),
            ("257 3 15", "public key missing"),
        ] {
            let e = text.parse::<SiteKey>().unwrap_err().to_string();
            assert!(e.contains(reason), "{text:?}: {e}");
        }
        assert!(matches!(ZoneKey::from_pkcs8(b"nonsense"), Err(KeyError::BadPrivateKey)));
    }
}
