//! DNSSEC for the pool zone, RFC 8901 multi-signer model 2: each site signs its answers with its
//! own key, and every site publishes the same DNSKEY RRset (all sites' keys).
//!
//! - `key`: [`ZoneKey`] (this site's private key) and [`SiteKey`] (a site's DNSKEY), the DS.

mod key;

pub use key::{CSK_FLAGS, KeyAlgorithm, KeyError, SiteKey, ZoneKey};
