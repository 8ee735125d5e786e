//! Keys and key files.
//!
//! Invariants: a key file is only ever created with `O_EXCL` and mode 0600, and a key file that
//! others can read or replace (see [`crate::private_file`]) is refused at load time. The public-key token is `ed25519:` followed by
//! the 32 key bytes in unpadded URL-safe base64; parsing accepts nothing else.

use std::fmt;
use std::fs;
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::private_file::{OpenError, UnsafeFile, open_private};

const TOKEN_PREFIX: &str = "ed25519:";

/// Errors from creating, loading or parsing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file already exists; keygen never overwrites a key.
    #[error("{}: key file already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// The key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file is not safe to use: others can read or replace it, or it is a link.
    #[error("{}: {source}", path.display())]
    Unsafe {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: UnsafeFile,
    },
    /// `keygen` was given a directory.
    #[error("{}: is a directory; give the path of the key file to create, e.g. {}", .0.display(), .0.join("node.key").display())]
    IsDirectory(PathBuf),
    /// The key file is not an ed25519 PKCS#8 PEM private key.
    #[error("{}: not an ed25519 PKCS#8 PEM private key: {reason}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A public-key token did not parse.
    #[error("invalid public key {token:?}: {reason}")]
    BadPublicKey {
        /// The text that was given.
        token: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// A node's private key. Never serialized except into its own key file.
pub struct SecretKey {
    inner: SigningKey,
}

impl SecretKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
        Self { inner: SigningKey::generate(&mut rng) }
    }

    /// Builds a key from 32 secret bytes (deterministic; for tests and simulations).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self { inner: SigningKey::from_bytes(bytes) }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.inner.verifying_key().to_bytes())
    }

    /// PKCS#8 v1 DER (no embedded public key), readable by OpenSSL 3.0, rcgen, rustls and dalek.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        let bytes = KeypairBytes { secret_key: self.inner.to_bytes(), public_key: None };
        bytes.to_pkcs8_der().expect("encoding a 32-byte key cannot fail").as_bytes().to_vec()
    }

    fn to_pkcs8_pem(&self) -> String {
        let bytes = KeypairBytes { secret_key: self.inner.to_bytes(), public_key: None };
        bytes.to_pkcs8_pem(LineEnding::LF).expect("encoding a 32-byte key cannot fail").to_string()
    }

    /// Generates a key and writes it to `path` (created exclusively, mode 0600).
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate();
        let io = |source| KeyError::Io { path: path.to_owned(), source };
        if path.is_dir() {
            return Err(KeyError::IsDirectory(path.to_owned()));
        }
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(
            |e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
                _ => io(e),
            },
        )?;
        // The umask cannot widen 0600, but a pre-set default ACL could; set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
        file.write_all(key.to_pkcs8_pem().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(key)
    }

    /// Loads a key file, refusing one that others can read or replace, or a link (see
    /// [`crate::private_file`]).
    pub fn load_file(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: path.to_owned(), source };
        let mut file = open_private(path).map_err(|e| match e {
            OpenError::Io(e) => io(e),
            OpenError::Unsafe(source) => KeyError::Unsafe { path: path.to_owned(), source },
        })?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let malformed = |reason: String| KeyError::Malformed { path: path.to_owned(), reason };
        let inner = SigningKey::from_pkcs8_pem(&text).map_err(|e| malformed(e.to_string()))?;
        Ok(Self { inner })
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.inner
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

/// A node's public key: its identity in rosters, observations and TLS.
///
/// Holds the 32 compressed bytes (cheap to copy, hash and compare). Keys an operator types (the
/// token form) and [`PublicKey::from_bytes`] are checked to be valid ed25519 points; keys decoded
/// from the wire are not (decompressing a point costs as much as the rest of a message), which is
/// safe because a key is only ever trusted by comparison with a roster key, and a signature never
/// verifies under an invalid point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses 32 raw bytes, refusing points that are not valid ed25519 public keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes).map(|_| Self(*bytes)).map_err(|_| KeyError::BadPublicKey {
            token: URL_SAFE_NO_PAD.encode(bytes),
            reason: "not a valid ed25519 point",
        })
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short, stable, human-comparable fingerprint (first 8 bytes, hex).
    pub fn fingerprint(&self) -> String {
        self.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Lets maps keyed by [`PublicKey`] be searched with raw bytes, without validating a point.
impl std::borrow::Borrow<[u8; 32]> for PublicKey {
    fn borrow(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = |reason| KeyError::BadPublicKey { token: s.to_owned(), reason };
        let body = s.trim().strip_prefix(TOKEN_PREFIX).ok_or(bad("expected `ed25519:` prefix"))?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad("not unpadded url-safe base64"))?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| bad("expected 32 key bytes"))?;
        Self::from_bytes(&bytes).map_err(|_| bad("not a valid ed25519 point"))
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            serde::Serialize::serialize(self.as_bytes(), s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = <String as serde::Deserialize>::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            // Not validated here: see the type's docs.
            Ok(Self(<[u8; 32] as serde::Deserialize>::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = SecretKey::generate_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        assert_eq!(SecretKey::load_file(&path).unwrap().public(), key.public());
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = SecretKey::generate_file(&path).unwrap();
        let err = SecretKey::generate_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::Exists(_)), "{err}");
        assert_eq!(SecretKey::load_file(&path).unwrap().public(), first.public());
    }

    #[test]
    fn load_refuses_group_or_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        SecretKey::generate_file(&path).unwrap();
        for mode in [0o640, 0o604, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::load_file(&path).unwrap_err();
            assert!(matches!(err, KeyError::Unsafe { source: UnsafeFile::Permissions { .. }, .. }), "{err}");
            assert!(err.to_string().contains("node.key: UNPROTECTED PRIVATE KEY FILE"), "{err}");
        }
    }

    #[test]
    fn keygen_into_a_directory_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretKey::generate_file(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::IsDirectory(_)), "{err}");
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn load_reports_missing_and_malformed_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let err = SecretKey::load_file(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }) && err.to_string().contains("missing.key"));

        let garbage = dir.path().join("garbage.key");
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&garbage).unwrap();
        fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let err = SecretKey::load_file(&garbage).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }) && err.to_string().contains("garbage.key"));
    }

    #[test]
    fn public_key_token_round_trips_and_rejects_junk() {
        let key = SecretKey::generate().public();
        let token = key.to_string();
        assert!(token.starts_with("ed25519:") && !token.contains(char::is_whitespace));
        assert_eq!(token.parse::<PublicKey>().unwrap(), key);
        for junk in ["", "ed25519:", "ed25519:!!!!", "ssh-ed25519 AAAA", &token[..token.len() - 2]] {
            assert!(junk.parse::<PublicKey>().is_err(), "{junk:?} parsed");
        }
    }

    #[test]
    fn public_key_serde_is_compact_in_binary_and_token_in_text() {
        let key = SecretKey::from_bytes(&[7; 32]).public();
        let bin = postcard::to_stdvec(&key).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<PublicKey>(&bin).unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{key}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }
}
