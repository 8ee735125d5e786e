//! The per-query choices of the served request path: where a rotating answer starts and which
//! sites a weighted answer draws.
//!
//! Owns [`Live`], the [`Chooser`] both the slow path (`handler`) and the fast path (`fast`)
//! answer with, and the per-thread random number generator behind it. Invariants: a rotation
//! advances the RRset's own counter (so names and families rotate independently: a client
//! asking A then AAAA does not make every other A answer start at the same record); draws come
//! from a small fast RNG per thread, seeded from the operating system on the thread's first
//! draw (or by [`seed`], for tests), never locked, never shared between threads; drawing the
//! first site allocates nothing.

use std::{
    cell::RefCell,
    sync::atomic::{AtomicUsize, Ordering},
};

use rand::{SeedableRng, rngs::SmallRng};
use spdu_policy::sample_weighted;

use crate::answer::Chooser;

/// One thread's random state.
struct State {
    rng: SmallRng,
    /// Reused by [`Live::first_site`].
    drawn: Vec<usize>,
}

impl State {
    fn new() -> Self {
        // Without OS randomness (never seen on Linux), the clock still differs between nodes.
        let seed = getrandom::u64().unwrap_or_else(|_| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64)
        });
        Self::seeded(seed)
    }

    fn seeded(seed: u64) -> Self {
        Self { rng: SmallRng::seed_from_u64(seed), drawn: Vec::with_capacity(1) }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

/// Choices for responses that are sent: rotation counters advance, draws are random.
pub(crate) struct Live;

impl Chooser for Live {
    fn rotation(&mut self, counter: &AtomicUsize, n: usize) -> usize {
        counter.fetch_add(1, Ordering::Relaxed) % n
    }

    fn sample(&mut self, weights: &[u32], max: usize, out: &mut Vec<usize>) {
        STATE.with_borrow_mut(|state| sample_weighted(weights, max, &mut state.rng, out));
    }
}

impl Live {
    /// The first site a weighted draw over `weights` (not empty) takes: the same random
    /// numbers, and so the same site, as the first draw of [`Chooser::sample`].
    pub(crate) fn first_site(weights: &[u32]) -> usize {
        STATE.with_borrow_mut(|state| {
            let State { rng, drawn } = state;
            drawn.clear();
            sample_weighted(weights, 1, rng, drawn);
            drawn.first().copied().unwrap_or(0)
        })
    }
}

/// Seeds this thread's draws: what follows is the same for the same seed (tests compare the
/// fast path with the slow path this way).
pub(crate) fn seed(seed: u64) {
    STATE.set(State::seeded(seed));
}
