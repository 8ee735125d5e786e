//! `[acme]`: answering ACME http-01 challenges on every site without shared state
//! ([`crate::acme`]): the account key's public thumbprint and the addresses to answer on.
//!
//! The section is optional; without it nothing listens. `thumbprint` may change on reload,
//! `listen` only with a restart (like every listener).

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::validate::socket_addr;
use super::{Checked, FieldError};

/// The length of a SHA-256 JWK thumbprint in base64url without padding.
pub const THUMBPRINT_LEN: usize = 43;

/// `[acme]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `acme.thumbprint`: the RFC 7638 SHA-256 thumbprint of the ACME account key (base64url,
    /// 43 characters), as `spdu acme-thumbprint` prints it.
    pub thumbprint: String,
    /// `acme.listen`: where challenges are answered (port 80 in production).
    pub listen: Vec<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    thumbprint: Spanned<String>,
    listen: Spanned<Vec<Spanned<String>>>,
}

/// Whether `text` is a SHA-256 thumbprint: 43 base64url characters whose last one carries no
/// bits past the 256th (so that it decodes to exactly 32 bytes).
pub fn is_thumbprint(text: &str) -> bool {
    text.len() == THUMBPRINT_LEN
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && text.bytes().last().is_some_and(|b| {
            // 43 characters carry 258 bits: the last character's low two bits must be zero.
            let value = match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'-' => 62,
                _ => 63,
            };
            value & 0b11 == 0
        })
}

impl RawAcme {
    pub(super) fn validate(&self) -> Checked<AcmeConfig> {
        let thumbprint = self.thumbprint.get_ref().trim();
        if !is_thumbprint(thumbprint) {
            return Err(FieldError::at(
                &self.thumbprint,
                format!(
                    "acme.thumbprint: {:?} is not a SHA-256 JWK thumbprint (43 base64url characters, \
                     as `spdu acme-thumbprint --account-key FILE` prints it)",
                    crate::text::escape(self.thumbprint.get_ref()).chars().take(100).collect::<String>()
                ),
            ));
        }
        if self.listen.get_ref().is_empty() {
            return Err(FieldError::at(&self.listen, "acme.listen: needs at least one listen address"));
        }
        let mut seen = HashSet::new();
        let mut listen = Vec::new();
        for (i, a) in self.listen.get_ref().iter().enumerate() {
            let addr = socket_addr(&format!("acme.listen[{i}]"), a)?;
            if !seen.insert(addr) {
                return Err(FieldError::at(a, format!("acme.listen[{i}]: {addr} is listed twice")));
            }
            listen.push(addr);
        }
        Ok(AcmeConfig { thumbprint: thumbprint.to_owned(), listen })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, tests::valid};

    const RFC7638: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn parse(acme: &str) -> anyhow::Result<Config> {
        Config::parse(Path::new("/etc/spdu/spdu.toml"), &format!("{}\n[acme]\n{acme}\n", valid()))
    }

    #[test]
    fn absent_by_default_and_read_when_given() {
        let config = Config::parse(Path::new("/etc/spdu/spdu.toml"), &valid()).unwrap();
        assert_eq!(config.acme, None);
        let config =
            parse(&format!("thumbprint = \"{RFC7638}\"\nlisten = [\"127.0.0.1:80\", \"[::1]:8080\"]"))
                .unwrap();
        let acme = config.acme.unwrap();
        assert_eq!(acme.thumbprint, RFC7638);
        assert_eq!(acme.listen, vec!["127.0.0.1:80".parse().unwrap(), "[::1]:8080".parse().unwrap()]);
    }

    #[test]
    fn mistakes_name_the_line_and_the_field() {
        let line = valid().lines().count() + 3;
        let listen = "listen = [\"127.0.0.1:80\"]";
        for (text, field) in [
            (format!("thumbprint = \"{}\"\n{listen}", &RFC7638[1..]), "acme.thumbprint: "),
            (format!("thumbprint = \"{RFC7638}A\"\n{listen}"), "acme.thumbprint: "),
            (format!("thumbprint = \"{}Z\"\n{listen}", &RFC7638[..42]), "acme.thumbprint: "),
            (format!("thumbprint = \"{}+\"\n{listen}", &RFC7638[..42]), "acme.thumbprint: "),
            (format!("thumbprint = \"{}=\"\n{listen}", &RFC7638[..42]), "acme.thumbprint: "),
        ] {
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.starts_with(&format!("/etc/spdu/spdu.toml:{line}:")), "{text}: {e}");
            assert!(e.contains(field), "{text}: {e}");
        }
        let thumbprint = format!("thumbprint = \"{RFC7638}\"\n");
        for (text, field) in [
            ("listen = []", "acme.listen: needs at least one listen address"),
            ("listen = [\"127.0.0.1\"]", "acme.listen[0]: invalid socket address"),
            ("listen = [\"127.0.0.1:0\"]", "acme.listen[0]: port 0"),
            ("listen = [\"127.0.0.1:80\", \"127.0.0.1:80\"]", "acme.listen[1]: 127.0.0.1:80 is listed twice"),
        ] {
            let e = format!("{:#}", parse(&format!("{thumbprint}{text}")).unwrap_err());
            assert!(e.starts_with(&format!("/etc/spdu/spdu.toml:{}:", line + 1)), "{text}: {e}");
            assert!(e.contains(field), "{text}: {e}");
        }
        let e = format!("{:#}", parse(&format!("{thumbprint}{listen}\nextra = 1")).unwrap_err());
        assert!(e.starts_with("/etc/spdu/spdu.toml:") && e.contains("unknown field `extra`"), "{e}");
        let e = format!("{:#}", parse(&thumbprint).unwrap_err());
        assert!(e.contains("missing field `listen`"), "{e}");
    }
}
