//! The bounded, coalescing queue of stream frames waiting for one peer connection's writer.
//!
//! Invariants (checked by the `send_queue` fuzz target):
//! - at most [`MAX_QUEUED_FRAMES`] frames and [`MAX_QUEUED_BYTES`] bytes are held, whatever is
//!   pushed: a peer that takes nothing (no stream credit) costs a bounded amount of memory;
//! - a frame identical to one already waiting is not queued again (a flood of identical
//!   requests gets one reply);
//! - a frame marked as superseding its kind (a full digest) replaces the waiting one of that kind
//!   (it goes to the back): at most one of each such kind waits;
//! - when a push would break a bound, the oldest frames are dropped first (newer information is
//!   worth more), and every frame dropped is reported to the caller;
//! - frames leave in the order they were queued.
//!
//! The kind of a frame is its first byte, the encoded `Message` variant.

use std::collections::VecDeque;

use bytes::Bytes;

/// Most frames waiting for one connection.
pub const MAX_QUEUED_FRAMES: usize = 32;
/// Most bytes waiting for one connection (four of the largest frames).
pub const MAX_QUEUED_BYTES: usize = 4 * crate::proto::MAX_FRAME_BYTES;

/// What [`FrameQueue::push`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued {
        /// Older frames dropped to make room.
        dropped: usize,
        /// Whether it replaced a waiting frame of its kind (not counted in `dropped`).
        replaced: bool,
    },
    /// An identical frame already waits: nothing changed.
    Coalesced,
    /// Larger than the byte bound on its own: dropped, nothing changed.
    TooLarge,
}

/// Stream frames waiting for one connection's writer (see the module docs for the bounds).
#[derive(Debug, Default)]
pub struct FrameQueue {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

impl FrameQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frame`. With `supersedes`, a waiting frame of the same kind is replaced in place.
    pub fn push(&mut self, frame: Bytes, supersedes: bool) -> Pushed {
        if frame.len() > MAX_QUEUED_BYTES {
            return Pushed::TooLarge;
        }
        if self.frames.iter().any(|f| *f == frame) {
            return Pushed::Coalesced;
        }
        let kind = frame.first().copied();
        let mut replaced = false;
        if supersedes && let Some(i) = self.frames.iter().position(|f| f.first().copied() == kind) {
            let old = self.frames.remove(i).expect("found");
            self.bytes -= old.len();
            replaced = true;
        }
        let dropped = self.shrink_to_fit(frame.len());
        self.bytes += frame.len();
        self.frames.push_back(frame);
        Pushed::Queued { dropped, replaced }
    }

    /// Drops the oldest frames until one more of `incoming` bytes fits; how many were dropped.
    fn shrink_to_fit(&mut self, incoming: usize) -> usize {
        let mut dropped = 0;
        while !self.frames.is_empty()
            && (self.frames.len() >= MAX_QUEUED_FRAMES || self.bytes + incoming > MAX_QUEUED_BYTES)
        {
            let old = self.frames.pop_front().expect("not empty");
            self.bytes -= old.len();
            dropped += 1;
        }
        dropped
    }

    /// The oldest waiting frame.
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, fill: u8, len: usize) -> Bytes {
        let mut v = vec![fill; len];
        v[0] = kind;
        Bytes::from(v)
    }

    #[test]
    fn identical_frames_wait_once_and_digests_replace_each_other() {
        let mut q = FrameQueue::new();
        assert_eq!(q.push(frame(3, 1, 2000), false), Pushed::Queued { dropped: 0, replaced: false });
        for _ in 0..4000 {
            assert_eq!(q.push(frame(3, 1, 2000), false), Pushed::Coalesced);
        }
        assert_eq!(q.push(frame(4, 1, 1500), true), Pushed::Queued { dropped: 0, replaced: false });
        assert_eq!(q.push(frame(4, 2, 1700), true), Pushed::Queued { dropped: 0, replaced: true });
        assert_eq!((q.len(), q.bytes()), (2, 3700));
        assert_eq!(q.pop().unwrap(), frame(3, 1, 2000));
        assert_eq!(q.pop().unwrap(), frame(4, 2, 1700));
        assert!(q.pop().is_none() && q.bytes() == 0);
    }

    #[test]
    fn bounds_hold_and_the_oldest_go_first() {
        let mut q = FrameQueue::new();
        let mut dropped = 0;
        for i in 0..200u32 {
            let f = frame(3, (i % 250) as u8, 2000 + i as usize);
            match q.push(f, false) {
                Pushed::Queued { dropped: d, .. } => dropped += d,
                other => panic!("{other:?}"),
            }
            assert!(q.len() <= MAX_QUEUED_FRAMES);
        }
        assert_eq!(dropped, 200 - MAX_QUEUED_FRAMES);
        assert_eq!(q.pop().unwrap().len(), 2000 + 200 - MAX_QUEUED_FRAMES);

        let mut q = FrameQueue::new();
        let big = crate::proto::MAX_FRAME_BYTES;
        for i in 0..6 {
            q.push(frame(3, i, big), false);
            assert!(q.bytes() <= MAX_QUEUED_BYTES);
        }
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop().unwrap()[1], 2, "the two oldest were dropped");
        assert_eq!(q.push(frame(3, 0, MAX_QUEUED_BYTES + 1), false), Pushed::TooLarge);
    }
}
