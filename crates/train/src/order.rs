//! Seeded, reproducible data order.
//!
//! Each epoch is an independent permutation drawn from ChaCha8 seeded with `seed` on stream
//! `epoch`, so epoch k's order does not depend on how many random numbers earlier epochs used, and
//! a resumed run can rebuild the current epoch from `(seed, epoch)` alone. The shuffle is our own
//! Fisher–Yates with unbiased rejection sampling (not `SliceRandom::shuffle`), so the order is
//! pinned by this file, not by the `rand` version.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Deterministic permutation of `0..n` for `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = uniform_below(&mut rng, (i + 1) as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// Unbiased integer in `0..bound` (Lemire's multiply-shift with rejection).
fn uniform_below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let x = rng.next_u64();
        let wide = (x as u128) * (bound as u128);
        if (wide as u64) >= threshold {
            return (wide >> 64) as u64;
        }
    }
}

/// Position in a seeded multi-epoch stream over `n` examples; serialisable so resume continues
/// with exactly the examples a straight run would have seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCursor {
    pub n: usize,
    pub seed: u64,
    pub epoch: u64,
    /// Index into the current epoch's permutation of the next example.
    pub index: usize,
}

impl DataCursor {
    /// Start of epoch 0.
    pub fn new(n: usize, seed: u64) -> Self {
        DataCursor {
            n,
            seed,
            epoch: 0,
            index: 0,
        }
    }

    /// The next `count` example indices, wrapping into the next epoch (with a fresh permutation)
    /// when the current one is exhausted. Empty when `n == 0`.
    pub fn take(&mut self, count: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(count);
        if self.n == 0 {
            return out;
        }
        let mut order = epoch_order(self.n, self.seed, self.epoch);
        while out.len() < count {
            if self.index >= self.n {
                self.epoch += 1;
                self.index = 0;
                order = epoch_order(self.n, self.seed, self.epoch);
            }
            out.push(order[self.index]);
            self.index += 1;
        }
        out
    }
}
