//! The simulator's event queue and the hasher of its lookup maps.
//!
//! Invariants: [`EventQueue`] pops in (time, sequence number) order, exactly as one binary heap
//! would (sequence numbers are unique, so the order is total); [`FastMap`]s are only looked up,
//! never iterated where the order could matter.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A queued event, ordered by (time in nanoseconds, sequence number) only. Sequence numbers are
/// unique, so the order is total: events at the same time run in the order they were queued.
#[derive(Debug)]
pub(super) struct Queued<E> {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Queued<E> {}

impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The event queue: pops in (time, sequence number) order, exactly as one binary heap would,
/// but keeps only the events of the current time bucket in a heap. Later events wait unsorted in
/// a ring of [`EventQueue::SLOTS`] buckets of [`EventQueue::WIDTH`] nanoseconds each (beyond that
/// horizon, in a second heap), and a bucket is heapified when the clock reaches it. At 1000
/// nodes millions of events are queued, but only the few thousand of the current millisecond
/// are ever sifted, in a heap that stays in cache.
#[derive(Debug)]
pub(super) struct EventQueue<E> {
    /// Every event of bucket `current` or earlier.
    near: BinaryHeap<Reverse<Queued<E>>>,
    /// Buckets `current + 1 .. current + SLOTS`, bucket `b` at index `b % SLOTS`.
    ring: Vec<Vec<Queued<E>>>,
    /// Events in `ring`.
    in_ring: usize,
    /// Events of bucket `current + SLOTS` or later.
    far: BinaryHeap<Reverse<Queued<E>>>,
    current: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self { near: BinaryHeap::new(), ring: Vec::new(), in_ring: 0, far: BinaryHeap::new(), current: 0 }
    }
}

impl<E> EventQueue<E> {
    /// Bucket width: 1 ms.
    pub(super) const WIDTH: u64 = 1_000_000;
    /// Buckets in the ring: a horizon of about 2 s (timers and deliveries are mostly nearer).
    pub(super) const SLOTS: u64 = 2048;

    pub(super) fn len(&self) -> usize {
        self.near.len() + self.in_ring + self.far.len()
    }

    pub(super) fn push(&mut self, q: Queued<E>) {
        let bucket = q.at / Self::WIDTH;
        if bucket <= self.current {
            self.near.push(Reverse(q));
        } else if bucket - self.current < Self::SLOTS {
            if self.ring.is_empty() {
                self.ring.resize_with(Self::SLOTS as usize, Vec::new);
            }
            self.ring[(bucket % Self::SLOTS) as usize].push(q);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(q));
        }
    }

    /// Moves the next non-empty bucket into `near`, if `near` is empty.
    fn advance(&mut self) {
        while self.near.is_empty() && self.len() > 0 {
            self.current = if self.in_ring == 0 {
                // Nothing within the horizon: jump to the earliest far event's bucket.
                self.far.peek().map_or(self.current, |Reverse(q)| q.at / Self::WIDTH)
            } else {
                self.current + 1
            };
            if self.in_ring > 0 {
                let slot = &mut self.ring[(self.current % Self::SLOTS) as usize];
                self.in_ring -= slot.len();
                self.near.extend(slot.drain(..).map(Reverse));
            }
            while self.far.peek().is_some_and(|Reverse(q)| q.at / Self::WIDTH <= self.current) {
                let q = self.far.pop().expect("peeked");
                self.near.push(q);
            }
        }
    }

    /// The earliest event's time.
    pub(super) fn peek_at(&mut self) -> Option<u64> {
        self.advance();
        self.near.peek().map(|Reverse(q)| q.at)
    }

    pub(super) fn pop(&mut self) -> Option<Queued<E>> {
        self.advance();
        self.near.pop().map(|Reverse(q)| q)
    }
}

/// A multiply-xor hasher (as in rustc's FxHash) for the simulator's lookup maps, whose keys are
/// node indices and public keys (uniformly distributed bytes). Lookups only: no map is iterated
/// where the order could matter.
#[derive(Clone, Copy, Default)]
pub(super) struct FastHasher(u64);

const FAST_K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FAST_K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// The bucketed queue pops exactly what one binary heap on (time, sequence number) pops,
    /// with events due now, in the past, in the current bucket, within the ring and beyond it.
    #[test]
    fn event_queue_pops_in_heap_order() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut queue = EventQueue::default();
        let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let event = || ();
        let (mut now, mut seq) = (0u64, 0u64);
        for round in 0..20_000 {
            for _ in 0..rng.random_range(0..3) {
                let delay = match rng.random_range(0..6) {
                    0 => 0,
                    1 => rng.random_range(0..EventQueue::<()>::WIDTH),
                    2 => rng.random_range(0..100 * EventQueue::<()>::WIDTH),
                    3 => rng.random_range(0..3 * EventQueue::<()>::SLOTS * EventQueue::<()>::WIDTH),
                    4 => 10 * EventQueue::<()>::SLOTS * EventQueue::<()>::WIDTH,
                    _ => 1_000_000 * EventQueue::<()>::WIDTH,
                };
                // Now and then, an event "in the past" (it still comes out first).
                let at = if round % 97 == 0 { now.saturating_sub(5) } else { now + delay };
                seq += 1;
                queue.push(Queued { at, seq, event: event() });
                heap.push(Reverse((at, seq)));
            }
            assert_eq!(queue.len(), heap.len());
            assert_eq!(queue.peek_at(), heap.peek().map(|Reverse((at, _))| *at));
            let (Some(q), Some(Reverse((at, s)))) = (queue.pop(), heap.pop()) else { continue };
            assert_eq!((q.at, q.seq), (at, s), "round {round}");
            now = at;
        }
        while let Some(Reverse((at, s))) = heap.pop() {
            let q = queue.pop().expect("same length");
            assert_eq!((q.at, q.seq), (at, s));
        }
        assert!(queue.pop().is_none());
    }
}
