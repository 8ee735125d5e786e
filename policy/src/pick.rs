//! What one response takes from a name's [`Choice`](crate::Choice): every site, a rotating
//! window, or a sample by weight.
//!
//! Invariants: a pick never repeats a site and never holds more than the choice; sampling is
//! without replacement, each draw proportional to the weights left (weight 0 sites are drawn
//! only when every weight left is 0, then uniformly), so with one site per response a site
//! with twice the weight appears in twice as many responses.

use rand::{Rng, RngExt};
use serde::Serialize;

/// How a response picks from a choice of `n` sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Pick {
    /// Every site of the choice, in its order.
    #[default]
    All,
    /// A window of `max` addresses over the choice, starting one further per response, so load
    /// spreads over all of them.
    Rotate {
        /// Addresses per response.
        max: usize,
    },
    /// `max` addresses from sites sampled by weight, afresh for each response (0: every site,
    /// in a weighted random order).
    Weighted {
        /// Addresses per response (0: no limit).
        max: usize,
    },
}

impl Pick {
    /// Whether every response for one choice is the same (so it can be encoded once).
    pub fn is_fixed(&self) -> bool {
        matches!(self, Pick::All)
    }
}

/// Draws up to `max` distinct positions of `weights` (0: all of them), each draw proportional to
/// the weights not yet drawn; appends them to `out` in draw order. Work is O(n · max).
pub fn sample_weighted<R: Rng + ?Sized>(weights: &[u32], max: usize, rng: &mut R, out: &mut Vec<usize>) {
    let n = weights.len();
    let max = if max == 0 { n } else { max.min(n) };
    let start = out.len();
    let mut left: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    while out.len() - start < max {
        let taken = |i: usize| out[start..].contains(&i);
        let i = if left == 0 {
            // Only weight-0 sites remain: uniformly among them.
            let free = n - (out.len() - start);
            let k = rng.random_range(0..free);
            (0..n).filter(|i| !taken(*i)).nth(k).expect("k < the positions not drawn")
        } else {
            let mut r = rng.random_range(0..left);
            (0..n)
                .find(|i| {
                    if taken(*i) {
                        return false;
                    }
                    let w = u64::from(weights[*i]);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .expect("r < the weights left")
        };
        left -= u64::from(weights[i]);
        out.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn one_per_response_follows_the_weights() {
        let weights = [100, 50, 50, 0];
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 4];
        let draws = 20_000;
        let mut out = Vec::new();
        for _ in 0..draws {
            out.clear();
            sample_weighted(&weights, 1, &mut rng, &mut out);
            counts[out[0]] += 1;
        }
        let share = |i: usize| f64::from(counts[i]) / f64::from(draws);
        assert!((share(0) - 0.5).abs() < 0.5 * 0.05, "{counts:?}");
        assert!((share(1) - 0.25).abs() < 0.25 * 0.05, "{counts:?}");
        assert!((share(2) - 0.25).abs() < 0.25 * 0.05, "{counts:?}");
        assert_eq!(counts[3], 0, "standby never drawn while others have weight");
    }

    #[test]
    fn without_replacement_and_zero_weights_last() {
        let mut rng = StdRng::seed_from_u64(1);
        for max in [0, 1, 2, 3, 4, 9] {
            let mut out = vec![99];
            sample_weighted(&[0, 5, 0, 1], max, &mut rng, &mut out);
            let drawn = &out[1..];
            assert_eq!(drawn.len(), if max == 0 { 4 } else { max.min(4) });
            let mut sorted = drawn.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), drawn.len(), "no repeats: {drawn:?}");
            if drawn.len() > 2 {
                assert!([1, 3].contains(&drawn[0]) && [1, 3].contains(&drawn[1]), "{drawn:?}");
            }
        }
        let mut out = Vec::new();
        sample_weighted(&[0, 0, 0], 2, &mut rng, &mut out);
        assert_eq!(out.len(), 2);
        sample_weighted(&[], 2, &mut rng, &mut out);
        assert_eq!(out.len(), 2);
    }
}
