//! `spdu acme-thumbprint`: the RFC 7638 JWK thumbprint of an ACME account key.
//!
//! The thumbprint is SHA-256 over the canonical JSON of the key's required public members, in
//! lexicographic order and without whitespace (RSA: `e`, `kty`, `n`; EC: `crv`, `kty`, `x`, `y`;
//! OKP: `crv`, `kty`, `x`), encoded base64url without padding. It is public: it is what every
//! site appends to a challenge token (RFC 8555 §8.1).
//!
//! Accepted: a JWK as JSON (certbot's `accounts/…/private_key.json`: RSA or EC, private members
//! ignored), or PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`, `RSA PUBLIC KEY`), SEC1
//! (`EC PRIVATE KEY`) and SPKI (`PUBLIC KEY`), read with the `der` crate. A file holding a
//! private key is refused if group or others may read it, like the node's own key.

use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::asn1::{AnyRef, BitStringRef, UintRef};
use der::{Decode, Reader, Tag, Tagged};
use sha2::{Digest, Sha256};

/// DER contents of the object identifiers read here.
mod oid {
    /// rsaEncryption, 1.2.840.113549.1.1.1.
    pub const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// id-ecPublicKey, 1.2.840.10045.2.1.
    pub const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// Ed25519, 1.3.101.112.
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// The named curves: DER contents, JWK `crv`, coordinate length in bytes.
    pub const CURVES: [(&[u8], &str, usize); 3] = [
        (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], "P-256", 32),
        (&[0x2b, 0x81, 0x04, 0x00, 0x22], "P-384", 48),
        (&[0x2b, 0x81, 0x04, 0x00, 0x23], "P-521", 66),
    ];
}

/// A public key, as the members an RFC 7638 thumbprint hashes (values base64url).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    /// `kty` RSA.
    Rsa {
        /// The modulus.
        n: String,
        /// The public exponent.
        e: String,
    },
    /// `kty` EC.
    Ec {
        /// The curve (`P-256`, `P-384`, `P-521`).
        crv: String,
        /// The x coordinate.
        x: String,
        /// The y coordinate.
        y: String,
    },
    /// `kty` OKP (Ed25519).
    Okp {
        /// The curve.
        crv: String,
        /// The public key.
        x: String,
    },
}

impl PublicJwk {
    /// RFC 7638 §3: the required members in lexicographic order, no whitespace.
    pub fn canonical_json(&self) -> String {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        match self {
            PublicJwk::Rsa { n, e } => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s(e), s(n)),
            PublicJwk::Ec { crv, x, y } => {
                format!(r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#, s(crv), s(x), s(y))
            }
            PublicJwk::Okp { crv, x } => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, s(crv), s(x)),
        }
    }

    /// The SHA-256 thumbprint, base64url without padding (43 characters).
    pub fn thumbprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

/// What a key file held: the public key, and whether the file held the private key too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKey {
    /// The public key.
    pub jwk: PublicJwk,
    /// The file held a private key.
    pub private: bool,
}

/// Reads the account key in `path` (JWK JSON or PEM) and returns its thumbprint. A private
/// key in a file that group or others may read is refused.
pub fn thumbprint_of_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = parse(&text).with_context(|| format!("{}", path.display()))?;
    if key.private {
        use spdu_keys::private_file::{OpenError, open_private};
        match open_private(path) {
            Ok(_) => {}
            Err(OpenError::Unsafe(why)) => bail!("{}: {why}", path.display()),
            Err(OpenError::Io(e)) => bail!("cannot read {}: {e}", path.display()),
        }
    }
    Ok(key.jwk.thumbprint())
}

/// Parses a key file's contents: JWK JSON (starting with `{`) or PEM.
pub fn parse(text: &[u8]) -> anyhow::Result<AccountKey> {
    let trimmed = text.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        let value: serde_json::Value = serde_json::from_slice(trimmed).context("not a JWK: invalid JSON")?;
        return from_jwk(&value);
    }
    if trimmed.starts_with(b"-----BEGIN ") {
        let (label, der) =
            der::pem::decode_vec(trimmed).map_err(|e| anyhow::anyhow!("not a PEM key: {e}"))?;
        return from_der(label, &der).with_context(|| format!("PEM {label:?}"));
    }
    bail!("neither a JWK (JSON) nor a PEM key")
}

/// The public members of a JWK (RFC 7517), private ones ignored.
pub fn from_jwk(value: &serde_json::Value) -> anyhow::Result<AccountKey> {
    let member = |name: &str| -> anyhow::Result<String> {
        let v = value.get(name).with_context(|| format!("JWK: no member {name:?}"))?;
        let text = v.as_str().with_context(|| format!("JWK: member {name:?} is not a string"))?;
        if name != "kty" && name != "crv" {
            let ok =
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                bail!("JWK: member {name:?} is not base64url");
            }
        }
        Ok(text.to_owned())
    };
    if !value.is_object() {
        bail!("JWK: not a JSON object");
    }
    let kty = member("kty")?;
    let jwk = match kty.as_str() {
        "RSA" => PublicJwk::Rsa { n: member("n")?, e: member("e")? },
        "EC" => PublicJwk::Ec { crv: member("crv")?, x: member("x")?, y: member("y")? },
        "OKP" => PublicJwk::Okp { crv: member("crv")?, x: member("x")? },
        other => bail!("JWK: unsupported kty {:?}", crate::text::escape(other)),
    };
    Ok(AccountKey { jwk, private: value.get("d").is_some() })
}

/// The elements of a DER SEQUENCE.
fn sequence(der: AnyRef<'_>) -> anyhow::Result<Vec<AnyRef<'_>>> {
    if der.tag() != Tag::Sequence {
        bail!("expected a SEQUENCE, found {}", der.tag());
    }
    Ok(der.sequence(|reader| {
        let mut items = Vec::new();
        while !reader.is_finished() {
            items.push(reader.decode::<AnyRef<'_>>()?);
        }
        Ok::<_, der::Error>(items)
    })?)
}

fn any(der: &[u8]) -> anyhow::Result<AnyRef<'_>> {
    Ok(AnyRef::from_der(der)?)
}

/// An unsigned INTEGER as JWK writes it: big-endian without leading zeros, base64url.
fn uint(item: Option<&AnyRef<'_>>) -> anyhow::Result<String> {
    let item = item.context("missing INTEGER")?;
    let value = item.decode_as::<UintRef<'_>>()?;
    Ok(URL_SAFE_NO_PAD.encode(value.as_bytes()))
}

fn tagged<'a>(item: Option<&AnyRef<'a>>, tag: Tag) -> anyhow::Result<AnyRef<'a>> {
    let item = *item.with_context(|| format!("missing {tag}"))?;
    if item.tag() != tag {
        bail!("expected {tag}, found {}", item.tag());
    }
    Ok(item)
}

fn bits<'a>(item: Option<&AnyRef<'a>>) -> anyhow::Result<&'a [u8]> {
    let item = tagged(item, Tag::BitString)?;
    item.decode_as::<BitStringRef<'a>>()?.as_bytes().context("BIT STRING with unused bits")
}

/// An uncompressed EC point (`04 || x || y`) on the curve with this OID.
fn ec_point(curve: &[u8], point: &[u8]) -> anyhow::Result<PublicJwk> {
    let Some((_, crv, len)) = oid::CURVES.iter().find(|(o, _, _)| *o == curve) else {
        bail!("unsupported EC curve (P-256, P-384 and P-521 are)");
    };
    match point.split_first() {
        Some((4, xy)) if xy.len() == 2 * len => Ok(PublicJwk::Ec {
            crv: (*crv).to_owned(),
            x: URL_SAFE_NO_PAD.encode(&xy[..*len]),
            y: URL_SAFE_NO_PAD.encode(&xy[*len..]),
        }),
        _ => bail!("EC public key is not an uncompressed {crv} point"),
    }
}

fn rsa_public(der: AnyRef<'_>) -> anyhow::Result<PublicJwk> {
    let items = sequence(der)?;
    Ok(PublicJwk::Rsa { n: uint(items.first())?, e: uint(items.get(1))? })
}

/// PKCS#1 RSAPrivateKey: version, n, e, d, ….
fn rsa_private(der: AnyRef<'_>) -> anyhow::Result<PublicJwk> {
    let items = sequence(der)?;
    if items.len() < 9 {
        bail!("RSAPrivateKey has {} fields, expected at least 9", items.len());
    }
    Ok(PublicJwk::Rsa { n: uint(items.get(1))?, e: uint(items.get(2))? })
}

/// SEC1 ECPrivateKey: version, privateKey, [0] parameters, [1] publicKey; `curve` from the
/// enclosing PKCS#8 structure when [0] is absent.
fn ec_private(der: AnyRef<'_>, curve: Option<&[u8]>) -> anyhow::Result<PublicJwk> {
    let items = sequence(der)?;
    let explicit = |number: u32| {
        items
            .iter()
            .find(|i| matches!(i.tag(), Tag::ContextSpecific { number: n, .. } if n.value() == number))
    };
    let from_params = explicit(0).map(|p| any(p.value())).transpose()?;
    let curve = match (&from_params, curve) {
        (Some(p), _) => tagged(Some(p), Tag::ObjectIdentifier)?.value(),
        (None, Some(c)) => c,
        (None, None) => bail!("EC private key names no curve"),
    };
    let Some(public) = explicit(1) else {
        bail!("EC private key without its public key (write it with `openssl ec -in KEY -out KEY`)");
    };
    let point = any(public.value())?;
    ec_point(curve, bits(Some(&point))?)
}

/// SubjectPublicKeyInfo or PKCS#8 PrivateKeyInfo's algorithm: OID and parameters.
fn algorithm<'a>(item: Option<&AnyRef<'a>>) -> anyhow::Result<(&'a [u8], Option<AnyRef<'a>>)> {
    let item = item.context("missing AlgorithmIdentifier")?;
    let parts = sequence(*item)?;
    let oid = tagged(parts.first(), Tag::ObjectIdentifier)?.value();
    Ok((oid, parts.get(1).copied()))
}

fn from_der(label: &str, der: &[u8]) -> anyhow::Result<AccountKey> {
    let top = any(der)?;
    let (jwk, private) = match label {
        "RSA PRIVATE KEY" => (rsa_private(top)?, true),
        "RSA PUBLIC KEY" => (rsa_public(top)?, false),
        "EC PRIVATE KEY" => (ec_private(top, None)?, true),
        "PUBLIC KEY" => {
            let items = sequence(top)?;
            let (alg, params) = algorithm(items.first())?;
            let key = bits(items.get(1))?;
            let jwk = match alg {
                oid::RSA => rsa_public(any(key)?)?,
                oid::EC => ec_point(tagged(params.as_ref(), Tag::ObjectIdentifier)?.value(), key)?,
                oid::ED25519 if key.len() == 32 => {
                    PublicJwk::Okp { crv: "Ed25519".into(), x: URL_SAFE_NO_PAD.encode(key) }
                }
                _ => bail!("unsupported key algorithm (RSA, EC and Ed25519 are)"),
            };
            (jwk, false)
        }
        "PRIVATE KEY" => {
            let items = sequence(top)?;
            let (alg, params) = algorithm(items.get(1))?;
            let inner = tagged(items.get(2), Tag::OctetString)?.value();
            let jwk = match alg {
                oid::RSA => rsa_private(any(inner)?)?,
                oid::EC => {
                    let curve =
                        params.as_ref().map(|p| tagged(Some(p), Tag::ObjectIdentifier)).transpose()?;
                    ec_private(any(inner)?, curve.map(|c| c.value()))?
                }
                oid::ED25519 => bail!(
                    "an Ed25519 private key's public key needs computing; give its public key \
                     (`openssl pkey -in KEY -pubout`)"
                ),
                _ => bail!("unsupported key algorithm (RSA and EC are)"),
            };
            (jwk, true)
        }
        "ENCRYPTED PRIVATE KEY" => bail!("encrypted; give the public key (`openssl pkey -in KEY -pubout`)"),
        other => bail!("unsupported PEM label {other:?}"),
    };
    Ok(AccountKey { jwk, private })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    const RFC7638_JWK: &str = r#"{
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }"#;

    #[test]
    fn rfc7638_example() {
        let key = parse(RFC7638_JWK.as_bytes()).unwrap();
        assert!(!key.private);
        assert_eq!(key.jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert!(key.jwk.canonical_json().starts_with(r#"{"e":"AQAB","kty":"RSA","n":"0vx7"#));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for text in [
            "",
            "{",
            "[]",
            r#"{"kty":"RSA","n":"abc"}"#,
            r#"{"kty":"RSA","n":"a b","e":"AQAB"}"#,
            r#"{"kty":"oct","k":"abc"}"#,
            r#"{"kty":7}"#,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            "ssh-rsa AAAA",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text}");
        }
    }
}
