//! `[dns]`: how the DNS front treats its clients beyond answering them.
//!
//! `cookies` (default true): DNS cookies (RFC 7873) with RFC 9018 server cookies, under a
//! per-site secret made at start and rotated.

use serde::Deserialize;

/// `[dns]`, validated (every field has a default, so the section may be left out).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// `dns.cookies`: answer client cookies with server cookies and check those sent back
    /// (BADCOOKIE over UDP for a bad one); false: COOKIE options are ignored.
    pub cookies: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self { cookies: true }
    }
}
