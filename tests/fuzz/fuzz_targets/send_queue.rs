//! The driver's per-connection send queue (`net::FrameQueue`) under arbitrary pushes and pops:
//! frames of every size up to past the byte bound, few distinct contents (so identical frames
//! recur), digests that supersede each other.
//!
//! Checks after every operation: nothing panics; the frame and byte bounds hold; the byte count
//! is the sum of what waits; a coalesced or too-large push changes nothing; what was queued,
//! minus what was dropped, replaced and popped, is what waits; no two identical frames wait.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spdu_gossip::net::{FrameQueue, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES, Pushed};
use spdu_gossip::proto::MAX_FRAME_BYTES;

const SIZES: [usize; 8] = [1, 2, 100, 1300, 60_000, 300_000, MAX_FRAME_BYTES, MAX_QUEUED_BYTES + 1];

#[derive(Arbitrary, Debug)]
enum Op {
    Push { kind: u8, fill: u8, size: u8, supersedes: bool },
    Pop,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut queue = FrameQueue::new();
    let mut waiting: u64 = 0;
    for op in ops.into_iter().take(512) {
        let (len, bytes) = (queue.len(), queue.bytes());
        match op {
            Op::Push { kind, fill, size, supersedes } => {
                let size = SIZES[usize::from(size) % SIZES.len()];
                let mut frame = vec![fill % 3; size];
                frame[0] = kind % 4;
                match queue.push(Bytes::from(frame), supersedes) {
                    Pushed::Queued { dropped, replaced } => {
                        assert!(!replaced || supersedes, "only a superseding frame replaces");
                        waiting = waiting + 1 - dropped as u64 - u64::from(replaced);
                    }
                    Pushed::Coalesced | Pushed::TooLarge => {
                        assert_eq!((queue.len(), queue.bytes()), (len, bytes), "nothing changed");
                    }
                }
            }
            Op::Pop => {
                if let Some(frame) = queue.pop() {
                    waiting -= 1;
                    assert_eq!(queue.bytes(), bytes - frame.len());
                } else {
                    assert_eq!((len, bytes), (0, 0));
                }
            }
        }
        assert!(queue.len() <= MAX_QUEUED_FRAMES && queue.bytes() <= MAX_QUEUED_BYTES);
        assert_eq!(queue.len() as u64, waiting, "queued - dropped - replaced - popped");
    }
    let mut left = Vec::new();
    let total = queue.bytes();
    while let Some(frame) = queue.pop() {
        assert!(!left.contains(&frame), "two identical frames waited");
        left.push(frame);
    }
    assert_eq!(left.iter().map(Bytes::len).sum::<usize>(), total, "the byte count is what waited");
    assert_eq!(queue.bytes(), 0);
});
