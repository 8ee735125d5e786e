//! The roster as observations index it: every member's key (the node itself included) in key
//! order, a short id that names exactly that list, and bitmaps over it.
//!
//! An observation reports on peers as bits ([`Bitmap`]) at the peers' positions in its observer's
//! sorted roster, and names that roster by its [`RosterId`]. A report on 1000 peers is then 125
//! bytes instead of 1000 keys, which is what lets the view (observers × peers) fit at 1000 nodes.
//! A receiver whose roster has another id cannot place the bits and gives that observation no
//! vote (see the answer rule): rosters are the same on every node of a healthy cluster.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spdu_keys::PublicKey;

/// Names one sorted list of member keys: the first 16 bytes of its SHA-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RosterId(pub [u8; 16]);

impl std::fmt::Display for RosterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Every member's key in key order, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    keys: Vec<PublicKey>,
    id: RosterId,
}

impl Roster {
    /// The roster of these keys (in any order; duplicates are kept once).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut keys: Vec<PublicKey> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        let mut hash = Sha256::new();
        hash.update(b"spdu/roster/v1");
        for key in &keys {
            hash.update(key.as_bytes());
        }
        let digest = hash.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        Self { keys, id: RosterId(id) }
    }

    /// Its id.
    pub fn id(&self) -> RosterId {
        self.id
    }

    /// The keys, sorted.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The position of `key`, if it is a member.
    pub fn index(&self, key: &PublicKey) -> Option<usize> {
        self.keys.binary_search(key).ok()
    }

    /// The key at position `i`.
    pub fn key(&self, i: usize) -> PublicKey {
        self.keys[i]
    }

    /// Bytes a bitmap over this roster has.
    pub fn bitmap_len(&self) -> usize {
        self.keys.len().div_ceil(8)
    }
}

/// One bit per roster position, least significant bit first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bitmap(#[serde(with = "super::observation::bytes")] pub Vec<u8>);

impl Bitmap {
    /// All clear, for `len` positions.
    pub fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(8)])
    }

    /// Whether bit `i` is set (positions past the end are clear).
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Sets bit `i` to `value`; `i` must be within the bitmap.
    pub fn set(&mut self, i: usize, value: bool) {
        let mask = 1 << (i % 8);
        if value {
            self.0[i / 8] |= mask;
        } else {
            self.0[i / 8] &= !mask;
        }
    }

    /// The positions of the set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(at, &byte)| {
            (0..8).filter(move |bit| byte & (1 << bit) != 0).map(move |bit| at * 8 + bit)
        })
    }

    /// Whether it fits a roster of `len` exactly: the right number of bytes, no bit set past the
    /// end (so one set of reports has one encoding).
    pub fn fits(&self, len: usize) -> bool {
        self.0.len() == len.div_ceil(8)
            && (len.is_multiple_of(8) || self.0.last().is_none_or(|b| b >> (len % 8) == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures::public_key;

    #[test]
    fn roster_id_names_the_set_not_the_order() {
        let a = Roster::new([public_key(0), public_key(1), public_key(2)]);
        let b = Roster::new([public_key(2), public_key(0), public_key(1), public_key(0)]);
        assert_eq!((a.id(), a.len()), (b.id(), 3));
        assert_ne!(a.id(), Roster::new([public_key(0), public_key(1)]).id());
        assert!(a.keys().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a.index(&public_key(1)).map(|i| a.key(i)), Some(public_key(1)));
        assert_eq!(a.index(&public_key(3)), None);
    }

    #[test]
    fn bitmaps() {
        let mut b = Bitmap::new(11);
        assert_eq!(b.0.len(), 2);
        b.set(0, true);
        b.set(10, true);
        b.set(3, true);
        b.set(3, false);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 10]);
        assert!(b.get(10) && !b.get(3) && !b.get(99));
        assert!(b.fits(11) && !b.fits(10) && !b.fits(17));
        b.0[1] |= 0x80;
        assert!(!b.fits(11), "a bit past the end");
        assert!(Bitmap::new(16).fits(16) && Bitmap::new(0).fits(0));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Bitmap>(&json).unwrap(), b);
    }
}
