//! The site's DNSSEC zone-signing key file: `spdu dnssec-keygen` writes it, the node loads it.
//!
//! Invariants: the file is PKCS#8 PEM (`PRIVATE KEY`, readable by OpenSSL and by knot's
//! `keymgr import-pem`), created exclusively with mode 0600 and never overwritten; loading
//! refuses a file others can read or replace, like the node key ([`spdu_keys::private_file`]).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use spdu_dnsfront::dnssec::{KeyAlgorithm, ZoneKey};
use spdu_keys::private_file::{OpenError, open_private};

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

/// Generates a zone key for `algorithm` and writes it to `path` (created exclusively, 0600).
pub fn generate_file(path: &Path, algorithm: KeyAlgorithm) -> anyhow::Result<ZoneKey> {
    if path.is_dir() {
        bail!("{}: is a directory; give the path of the key file to create", path.display());
    }
    let der = ZoneKey::generate_pkcs8(algorithm)?;
    let key = ZoneKey::from_pkcs8(&der)?;
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("{}: key file already exists; refusing to overwrite it", path.display())
            } else {
                anyhow::anyhow!("{}: {e}", path.display())
            }
        })?;
    file.set_permissions(fs::Permissions::from_mode(0o600)).with_context(|| path.display().to_string())?;
    file.write_all(to_pem(&der).as_bytes()).with_context(|| path.display().to_string())?;
    file.sync_all().with_context(|| path.display().to_string())?;
    Ok(key)
}

/// Loads a zone key file, refusing one that others can read or replace.
pub fn load_file(path: &Path) -> anyhow::Result<ZoneKey> {
    let mut file = open_private(path).map_err(|e| match e {
        OpenError::Io(e) => anyhow::anyhow!("{}: {e}", path.display()),
        OpenError::Unsafe(e) => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| path.display().to_string())?;
    let der = from_pem(&text).with_context(|| format!("{}: not a PKCS#8 PEM private key", path.display()))?;
    ZoneKey::from_pkcs8(&der).with_context(|| path.display().to_string())
}

fn to_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("{BEGIN}\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(END);
    pem.push('\n');
    pem
}

fn from_pem(text: &str) -> anyhow::Result<Vec<u8>> {
    let start = text.find(BEGIN).context("no BEGIN PRIVATE KEY line")? + BEGIN.len();
    let end = text[start..].find(END).context("no END PRIVATE KEY line")? + start;
    let body: String = text[start..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Ok(STANDARD.decode(body)?)
}

/// `spdu dnssec-keygen`: writes the key and prints its DNSKEY record (owner `zone` or `@`).
pub fn keygen(out: &Path, algorithm: u8, zone: Option<&str>) -> anyhow::Result<()> {
    let algorithm = KeyAlgorithm::from_number(algorithm)
        .with_context(|| format!("--algorithm {algorithm}: only 13 (ECDSAP256SHA256) and 15 (Ed25519)"))?;
    let owner = match zone {
        Some(zone) => {
            let name = hickory_proto::rr::Name::from_ascii(zone)
                .map_err(|e| anyhow::anyhow!("--zone {zone:?}: not a domain name: {e}"))?;
            format!("{}.", name.to_ascii().trim_end_matches('.'))
        }
        None => "@".to_owned(),
    };
    let key = generate_file(out, algorithm)?;
    println!("{owner} 3600 IN DNSKEY {}", key.public());
    if zone.is_none() {
        eprintln!(
            "wrote {}; the line above is the DNSKEY record (owner @, the pool zone); peers list the \
             RDATA in their [[peers]] entry: dnssec_key = \"{}\"",
            out.display(),
            key.public()
        );
    } else {
        eprintln!(
            "wrote {}; peers list it in their [[peers]] entry: dnssec_key = \"{}\"",
            out.display(),
            key.public()
        );
    }
    Ok(())
}

/// `spdu ds`: one DS line (SHA-256) per site, this node's first, then the peers in roster order.
pub fn print_ds(config: &Path) -> anyhow::Result<()> {
    let loaded = crate::config::Config::load(config)?;
    let Some(dnssec) = &loaded.dnssec else {
        bail!("{}: no [dnssec] section: DNSSEC is off, there is no DS to publish", config.display());
    };
    let own = dnssec.load_key(config)?;
    let zone = hickory_proto::rr::Name::from_ascii(&loaded.zone.origin)
        .map_err(|e| anyhow::anyhow!("zone.origin: {e}"))?;
    println!("{}", own.public().ds_line(&zone)?);
    for (_, site) in &dnssec.peers {
        println!("{}", site.ds_line(&zone)?);
    }
    Ok(())
}

/// Re-signs the served answers whenever less than half of the signature validity is left
/// (checked every second against the wall clock, which is what resolvers compare with).
pub async fn refresh_signatures(
    pool: spdu_dnsfront::AnswerPublisher,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if pool.refresh_signatures(std::time::SystemTime::now())
                    && let Some(window) = pool.signature_window()
                {
                    tracing::info!(inception = window.inception, expiration = window.expiration, "DNSSEC signatures refreshed");
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_load_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
            let path = dir.path().join(format!("zone-{}.key", algorithm.number()));
            let key = generate_file(&path, algorithm).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(load_file(&path).unwrap().public(), key.public());
            let e = generate_file(&path, algorithm).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{e}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_file(&path).unwrap_err().to_string();
            assert!(e.contains("UNPROTECTED PRIVATE KEY FILE"), "{e}");
        }
        let junk = dir.path().join("junk.key");
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&junk).unwrap();
        fs::write(&junk, "hello").unwrap();
        let e = format!("{:#}", load_file(&junk).unwrap_err());
        assert!(e.contains("not a PKCS#8 PEM private key"), "{e}");
    }
}
