//! DNSSEC for the pool zone, RFC 8901 multi-signer model 2: each site signs its answers with its
//! own key, and every site publishes the same DNSKEY RRset (all sites' keys).
//!
//! - `key`: [`ZoneKey`] (this site's private key) and [`SiteKey`] (a site's DNSKEY), the DS.
//! - `sign`: [`Signer`], and the per-version signature window and RRSIG cache; compact denial.

mod key;
mod sign;

pub use key::{CSK_FLAGS, KeyAlgorithm, KeyError, SiteKey, ZoneKey};
pub(crate) use sign::SignedVersion;
pub use sign::{NXNAME, SKEW, Signer, Window};
