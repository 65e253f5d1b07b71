//! Deterministic random streams.
//!
//! Every random choice in this crate comes from a ChaCha20 stream derived from
//! `(seed, purpose, generation, entity)`: the 256-bit key is the SplitMix64 expansion of `seed`, the
//! 64-bit stream id is a SplitMix64 hash of `(purpose, generation, entity)`. Streams therefore do not
//! depend on call order or thread count. Integer and float draws are implemented here on top of
//! `next_u64` (not through `rand`'s distributions) so the manifests stay stable across `rand` releases.

use rand::SeedableRng;
use rand::Rng as _;
use rand_chacha::ChaCha20Rng;

/// One step of SplitMix64 (Steele et al.), used as a stable 64-bit mixer.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable hash of a list of words (order-sensitive).
pub fn mix(words: &[u64]) -> u64 {
    let mut s = 0x6A09_E667_F3BC_C909u64;
    let mut h = 0u64;
    for &w in words {
        s ^= w;
        h ^= splitmix64(&mut s);
        s = s.rotate_left(17) ^ h;
    }
    h
}

/// Stable 64-bit hash of a string (FNV-1a), for purpose tags.
pub fn tag(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// A deterministic random stream.
pub struct Stream {
    rng: ChaCha20Rng,
}

impl Stream {
    /// The stream for `(seed, purpose, generation, entity)`.
    pub fn new(seed: u64, purpose: &str, generation: u64, entity: u64) -> Self {
        let mut s = seed;
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut s).to_le_bytes());
        }
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(mix(&[tag(purpose), generation, entity]));
        Stream { rng }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift with rejection; unbiased). `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// `k` distinct indices from `0..n`, uniformly, in random order. `k <= n`.
    /// Uses a partial Fisher–Yates over a sparse map, so memory is O(k) even for huge `n`.
    pub fn sample_indices(&mut self, n: u64, k: usize) -> Vec<u64> {
        assert!(k as u64 <= n);
        let mut swapped: std::collections::HashMap<u64, u64> = std::collections::HashMap::with_capacity(k * 2);
        let mut out = Vec::with_capacity(k);
        for i in 0..k as u64 {
            let j = i + self.below(n - i);
            let vj = *swapped.get(&j).unwrap_or(&j);
            let vi = *swapped.get(&i).unwrap_or(&i);
            swapped.insert(j, vi);
            out.push(vj);
        }
        out
    }
}
