//! DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018).
//!
//! Owns [`Secrets`] (the site's server secret, random at start, 16 bytes, rotated every
//! [`ROTATE_EVERY`] seconds, the previous one kept to validate cookies issued before), the
//! [`CookieVerdict`] on a query's COOKIE option, and the server cookie we issue: version 1,
//! three reserved bytes (0), a 32-bit timestamp (seconds since the epoch, serial-number
//! arithmetic) and SipHash-2-4 over client cookie | version | reserved | timestamp | client
//! IP, keyed with the secret. A received server cookie is valid when it has that form, its
//! timestamp is at most one hour old and at most five minutes ahead (RFC 9018 §4.3), and its
//! hash matches under the current or the previous secret.
//!
//! What a verdict leads to (RFC 7873 §5.2, as knotd's `mod-cookies` does it): `None` — a
//! normal response, no COOKIE; `ClientOnly` and `Valid` — a normal response with the client
//! cookie and a fresh server cookie; `Bad` — over UDP a BADCOOKIE response (extended RCODE
//! 23, no records) with a fresh server cookie, over TCP (the source is proven there) a normal
//! response with a fresh server cookie. Invariants: a server cookie is always issued fresh
//! (timestamp now), so the fast and slow paths agree byte for byte at the same second; nothing
//! here allocates or takes a write lock on the query path except at a rotation.

use std::{
    net::IpAddr,
    sync::RwLock,
    time::{SystemTime, UNIX_EPOCH},
};

/// Length of a client cookie.
pub(crate) const CLIENT_LEN: usize = 8;
/// Length of the server cookies we issue (RFC 9018).
pub(crate) const SERVER_LEN: usize = 16;
/// Length of the COOKIE option we send: client cookie and our server cookie.
pub(crate) const OPTION_LEN: usize = CLIENT_LEN + SERVER_LEN;
/// The EDNS option code of COOKIE.
pub(crate) const OPTION_CODE: u16 = 10;
/// The server cookie version of RFC 9018.
const VERSION: u8 = 1;
/// How old a server cookie may be (RFC 9018 §4.3: one hour).
const MAX_AGE: u32 = 3600;
/// How far in the future a server cookie's timestamp may be (RFC 9018 §4.3: five minutes).
const MAX_AHEAD: u32 = 300;
/// Seconds between secret rotations. Longer than [`MAX_AGE`], so keeping one previous secret
/// validates every cookie still young enough.
pub(crate) const ROTATE_EVERY: u32 = 6 * 3600;

/// What a query's COOKIE option says (RFC 7873 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CookieVerdict {
    /// No COOKIE option (or cookies are off).
    None,
    /// A client cookie only: the client learns our server cookie from the response.
    ClientOnly,
    /// A client cookie and a server cookie we issued to this address within the hour.
    Valid,
    /// A client cookie and a server cookie that is not ours, too old, or for another address.
    Bad,
}

/// The site's server secrets: the current one, and the previous one during the overlap.
pub(crate) struct Secrets {
    keys: RwLock<Keys>,
    /// A fixed time, for tests and the offline path; `None`: the system clock.
    fixed_now: Option<u32>,
}

#[derive(Clone, Copy)]
struct Keys {
    current: [u8; 16],
    previous: Option<[u8; 16]>,
    /// When `current` was made.
    since: u32,
}

impl Secrets {
    /// A random secret, made now, rotated on the system clock.
    pub(crate) fn random() -> Self {
        let now = system_now();
        Self {
            keys: RwLock::new(Keys { current: random_key(), previous: None, since: now }),
            fixed_now: None,
        }
    }

    /// `secret`, with the clock stopped at `now` (never rotated unless asked to).
    pub(crate) fn fixed(secret: [u8; 16], now: u32) -> Self {
        Self { keys: RwLock::new(Keys { current: secret, previous: None, since: now }), fixed_now: Some(now) }
    }

    /// The time, in server cookie form.
    pub(crate) fn now(&self) -> u32 {
        self.fixed_now.unwrap_or_else(system_now)
    }

    /// The keys in force at `now`, rotating first if the current one is due.
    fn keys(&self, now: u32) -> Keys {
        let keys = *self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.fixed_now.is_some() || serial_age(now, keys.since) < ROTATE_EVERY {
            return keys;
        }
        let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another thread may have rotated meanwhile.
        if serial_age(now, keys.since) >= ROTATE_EVERY {
            *keys = Keys { current: random_key(), previous: Some(keys.current), since: now };
        }
        *keys
    }

    /// Makes `secret` current, keeping the current one as the previous.
    #[cfg(test)]
    fn rotate_to(&self, secret: [u8; 16], now: u32) {
        let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *keys = Keys { current: secret, previous: Some(keys.current), since: now };
    }

    /// The verdict on a COOKIE option's content (`None`: the query has none) from `src`.
    /// The option's length must be valid (8, or 16 to 40: checked before, FORMERR otherwise).
    pub(crate) fn verdict(&self, option: Option<&[u8]>, src: IpAddr) -> CookieVerdict {
        let Some(option) = option else {
            return CookieVerdict::None;
        };
        let Some((client, server)) = option.split_first_chunk::<CLIENT_LEN>() else {
            return CookieVerdict::None;
        };
        if server.is_empty() {
            return CookieVerdict::ClientOnly;
        }
        let Ok(server) = <&[u8; SERVER_LEN]>::try_from(server) else {
            return CookieVerdict::Bad;
        };
        if server[0] != VERSION {
            return CookieVerdict::Bad;
        }
        let now = self.now();
        let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
        let behind = now.wrapping_sub(stamp);
        let young = if behind < 1 << 31 { behind <= MAX_AGE } else { stamp.wrapping_sub(now) <= MAX_AHEAD };
        if !young {
            return CookieVerdict::Bad;
        }
        let keys = self.keys(now);
        let matches = |key: &[u8; 16]| {
            let hash = server_hash(key, client, &server[..8], src);
            hash.iter().zip(&server[8..]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        };
        if matches(&keys.current) || keys.previous.as_ref().is_some_and(matches) {
            CookieVerdict::Valid
        } else {
            CookieVerdict::Bad
        }
    }

    /// The COOKIE option content to answer `client` from `src` with: the client cookie and a
    /// fresh server cookie under the current secret.
    pub(crate) fn issue(&self, client: &[u8; CLIENT_LEN], src: IpAddr) -> [u8; OPTION_LEN] {
        let now = self.now();
        let keys = self.keys(now);
        issue_with(&keys.current, client, now, src)
    }
}

/// The verdict on a query's COOKIE option content (`None`: it has none) from `src`, under
/// `secrets` (see [`Secrets::verdict`]).
pub(crate) fn verdict(option: Option<&[u8]>, src: IpAddr, secrets: &Secrets) -> CookieVerdict {
    secrets.verdict(option, src)
}

/// The COOKIE option content for `client` from `src` at `now` under `secret`.
fn issue_with(secret: &[u8; 16], client: &[u8; CLIENT_LEN], now: u32, src: IpAddr) -> [u8; OPTION_LEN] {
    let mut option = [0u8; OPTION_LEN];
    option[..CLIENT_LEN].copy_from_slice(client);
    option[CLIENT_LEN] = VERSION;
    option[CLIENT_LEN + 4..CLIENT_LEN + 8].copy_from_slice(&now.to_be_bytes());
    let hash = server_hash(secret, client, &option[CLIENT_LEN..CLIENT_LEN + 8], src);
    option[CLIENT_LEN + 8..].copy_from_slice(&hash);
    option
}

/// The client cookie at the start of a COOKIE option's content, if it is long enough.
pub(crate) fn client_cookie(option: &[u8]) -> Option<&[u8; CLIENT_LEN]> {
    option.first_chunk::<CLIENT_LEN>()
}

/// RFC 9018 §4.4: SipHash-2-4(client cookie | version | reserved | timestamp | client IP).
fn server_hash(secret: &[u8; 16], client: &[u8; CLIENT_LEN], head: &[u8], src: IpAddr) -> [u8; 8] {
    let mut input = [0u8; CLIENT_LEN + 8 + 16];
    input[..CLIENT_LEN].copy_from_slice(client);
    input[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(head);
    let len = match src.to_canonical() {
        IpAddr::V4(v4) => {
            input[16..20].copy_from_slice(&v4.octets());
            20
        }
        IpAddr::V6(v6) => {
            input[16..32].copy_from_slice(&v6.octets());
            32
        }
    };
    siphash24(secret, &input[..len])
}

/// `later - earlier` in serial-number arithmetic (RFC 1982), 0 if `later` is before `earlier`.
fn serial_age(later: u32, earlier: u32) -> u32 {
    let diff = later.wrapping_sub(earlier);
    if diff < 1 << 31 { diff } else { 0 }
}

fn system_now() -> u32 {
    // Serial-number arithmetic: the truncation to 32 bits is intended (RFC 9018 §4.3).
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    // Without OS randomness no secret could be kept; the process cannot serve safely anyway.
    getrandom::fill(&mut key).expect("OS random numbers");
    key
}

/// SipHash-2-4 of `data` under `key` (Aumasson and Bernstein), output in little-endian byte
/// order as the reference implementation writes it.
fn siphash24(key: &[u8; 16], data: &[u8]) -> [u8; 8] {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    // Only the length's low byte goes in (the algorithm's definition).
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    (v[0] ^ v[1] ^ v[2] ^ v[3]).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn key(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    /// The SipHash paper's vector (key 00..0f, message 00..0e), and the reference's 64 vectors'
    /// first and last (message lengths 0 and 63) against std's SipHash-2-4.
    #[test]
    fn siphash_matches_the_reference() {
        let k: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..64).collect();
        assert_eq!(u64::from_le_bytes(siphash24(&k, &msg[..15])), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&k, &[]), hex("310e0edd47db6f72")[..]);
        assert_eq!(siphash24(&k, &msg[..63]), hex("724506eb4c328a95")[..]);
    }

    /// RFC 9018 Appendix A.1 to A.3: the cookies issued, byte for byte, and each one's
    /// verdict then and later.
    #[test]
    fn rfc9018_vectors() {
        let secret = key("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let cases = [
            ("2464c4abcf10c957", "198.51.100.100", 1_559_731_985, "010000005cf79f111f8130c3eee29480"),
            ("2464c4abcf10c957", "198.51.100.100", 1_559_734_385, "010000005cf7a871d4a564a1442aca77"),
            ("fc93fc62807ddb86", "203.0.113.203", 1_559_734_700, "010000005cf7a9acf73a7810aca2381e"),
        ];
        for (client, ip, now, server) in cases {
            let client: [u8; 8] = hex(client).try_into().unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            let option = issue_with(&secret, &client, now, ip);
            assert_eq!(option[8..], hex(server)[..], "{ip} at {now}");
            let at = |t| Secrets::fixed(secret, t).verdict(Some(&option), ip);
            assert_eq!(at(now), CookieVerdict::Valid);
            assert_eq!(at(now + MAX_AGE), CookieVerdict::Valid, "an hour old");
            assert_eq!(at(now + MAX_AGE + 1), CookieVerdict::Bad, "older than an hour");
            assert_eq!(at(now - MAX_AHEAD), CookieVerdict::Valid, "five minutes ahead");
            assert_eq!(at(now - MAX_AHEAD - 1), CookieVerdict::Bad, "further ahead");
            let other: IpAddr = "198.51.100.101".parse().unwrap();
            assert_eq!(Secrets::fixed(secret, now).verdict(Some(&option), other), CookieVerdict::Bad);
            assert_eq!(
                Secrets::fixed(secret, now).verdict(Some(&option[..8]), ip),
                CookieVerdict::ClientOnly
            );
        }
    }

    #[test]
    fn bad_server_cookies() {
        let secrets = Secrets::fixed(key("e5e973e5a6b2a43f48e7dc849e37bfcf"), 1_559_731_985);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let good = secrets.issue(&[7; 8], ip);
        assert_eq!(secrets.verdict(Some(&good), ip), CookieVerdict::Valid);
        assert_eq!(secrets.verdict(None, ip), CookieVerdict::None);
        for i in 8..OPTION_LEN {
            let mut bad = good;
            bad[i] ^= 1;
            assert_eq!(secrets.verdict(Some(&bad), ip), CookieVerdict::Bad, "byte {i} flipped");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(secrets.verdict(Some(&longer), ip), CookieVerdict::Bad);
        assert_eq!(secrets.verdict(Some(&good[..16]), ip), CookieVerdict::Bad);
    }

    /// After a rotation, cookies made under the previous secret stay valid; after a second one
    /// they are not.
    #[test]
    fn rotation_keeps_the_previous_secret() {
        let now = 1_700_000_000;
        let secrets = Secrets::fixed([1; 16], now);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let old = secrets.issue(&[9; 8], ip);
        secrets.rotate_to([2; 16], now);
        assert_eq!(secrets.verdict(Some(&old), ip), CookieVerdict::Valid);
        let new = secrets.issue(&[9; 8], ip);
        assert_ne!(old, new);
        assert_eq!(secrets.verdict(Some(&new), ip), CookieVerdict::Valid);
        secrets.rotate_to([3; 16], now);
        assert_eq!(secrets.verdict(Some(&old), ip), CookieVerdict::Bad);
        assert_eq!(secrets.verdict(Some(&new), ip), CookieVerdict::Valid);
    }

    #[test]
    fn random_secrets_rotate_on_time() {
        let secrets = Secrets::random();
        let before = secrets.keys(secrets.now());
        let later = secrets.keys(before.since + ROTATE_EVERY);
        assert_eq!(later.previous, Some(before.current));
        assert_ne!(later.current, before.current);
    }
}
