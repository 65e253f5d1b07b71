//! Training-time dropout where transformers applies it: OPT's `dropout` after the attention block and
//! after the feed-forward block of every layer, `attention_dropout` on the attention probabilities
//! (OPT and Llama). Inverted scaling as torch's `F.dropout`: kept elements are multiplied by the f32
//! `1 / (1 - p)`. Never in inference: only the training forward ([`crate::CausalLm::ce_train`]) takes
//! a [`Dropout`]. (OPT's `activation_dropout` is read by no line of transformers' `modeling_opt.py`, so
//! it is not applied here either.)
//!
//! Masks are data handed in per site, in the order the forward meets the sites (per layer: attention
//! probabilities, attention output, feed-forward output), which is torch's call order. The trainer
//! draws them from a seed ([`seeded_mask`]), a parity test injects the masks torch drew.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// What a mask source is asked for: the `site`-th dropout of this forward, over a tensor of `dims`,
/// with drop probability `p`.
#[derive(Debug, Clone, Copy)]
pub struct MaskRequest<'a> {
    pub site: usize,
    pub dims: &'a [usize],
    pub p: f64,
}

/// A keep mask (1 = kept, 0 = dropped; any dtype, on the tensor's device) for each request.
pub type MaskFn<'a> = dyn Fn(MaskRequest) -> Result<Tensor> + 'a;

/// The dropout of one training forward.
pub struct Dropout<'a> {
    masks: &'a MaskFn<'a>,
    site: Cell<usize>,
}

impl<'a> Dropout<'a> {
    pub fn new(masks: &'a MaskFn<'a>) -> Self {
        Self { masks, site: Cell::new(0) }
    }

    /// `x ∘ keep · 1/(1-p)`; `x` itself when `p` is 0 (torch draws no mask then either).
    pub fn apply(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let site = self.site.get();
        self.site.set(site + 1);
        let keep = (self.masks)(MaskRequest { site, dims: x.dims(), p })?;
        if keep.dims() != x.dims() {
            candle_core::bail!("dropout site {site}: mask of dims {:?} for a tensor of {:?}", keep.dims(), x.dims());
        }
        // torch: noise = bernoulli(1-p) / (1-p) in the tensor's dtype, then x * noise.
        let scale = 1.0f32 / (1.0 - p) as f32;
        x * keep.to_dtype(x.dtype())?.affine(scale as f64, 0.0)?
    }

    /// Sites met so far.
    pub fn sites(&self) -> usize {
        self.site.get()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for (`seed`, `a`, `b`): the per-step and per-micro-batch streams of the trainer.
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ a) ^ b)
}

/// Rounds of the mask hash's Feistel network (8: adjacent, 2¹⁶-apart, other-site and other-seed masks
/// all look independent in `tests/dropout.rs`' counts).
const ROUNDS: usize = 8;
/// The prime of the round function `(x + k)² mod P`: squares of 16-bit values stay below 2³².
const P: u32 = 65_521;
const HALF: u32 = 1 << 16;

/// The round keys (16 bits each) of `site` under `seed`.
fn round_keys(seed: u64, site: usize) -> [u32; ROUNDS] {
    let base = splitmix64(seed ^ (site as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    std::array::from_fn(|j| (splitmix64(base.wrapping_add(j as u64)) >> 48) as u32)
}

/// 24 hash bits of element `i`: a Feistel network over its two 16-bit halves with the round function
/// `(x + k)² mod P`. Every intermediate is a u32 below 2³², so candle's u32 ops compute the same bits on
/// any device without overflow ([`device_hash`]).
fn hash24(keys: &[u32; ROUNDS], i: u32) -> u32 {
    let (mut l, mut r) = (i % HALF, i / HALF);
    for &k in keys {
        let x = (r + k) % HALF;
        (l, r) = (r, (l + x * x % P) % HALF);
    }
    l * 256 + r / 256
}

/// [`hash24`] of elements `0..n` as `[n]` u32, computed on `dev` with candle's integer ops (nothing is
/// uploaded but the index vector [`crate::transfer::arange_u32`] keeps): the element grid is
/// `[rows of 2¹⁶] × [2¹⁶ columns]` broadcast, so the first round runs on the row halves only.
fn device_hash(keys: &[u32; ROUNDS], n: usize, dev: &Device) -> Result<Tensor> {
    let c = |v: u32| Tensor::full(v, (1, 1), dev);
    let (half, p) = (c(HALF)?, c(P)?);
    let modulo = |x: &Tensor, m: &Tensor| -> Result<Tensor> { x.broadcast_sub(&x.broadcast_div(m)?.broadcast_mul(m)?) };
    let cols = n.min(HALF as usize);
    let rows = n.div_ceil(HALF as usize);
    let ids = crate::transfer::arange_u32(cols.max(rows), dev)?;
    let mut l = ids.narrow(0, 0, cols)?.reshape((1, cols))?;
    let mut r = ids.narrow(0, 0, rows)?.reshape((rows, 1))?;
    for &k in keys {
        let x = modulo(&r.broadcast_add(&c(k)?)?, &half)?;
        let f = modulo(&x.mul(&x)?, &p)?;
        (l, r) = (r, modulo(&l.broadcast_add(&f)?, &half)?);
    }
    let out = l.broadcast_mul(&c(256)?)?.broadcast_add(&r.broadcast_div(&c(256)?)?)?;
    out.broadcast_as((rows, cols))?.flatten_all()?.narrow(0, 0, n)
}

/// The keep mask of `site` under `seed` (f32 0/1 on `dev`): element i is kept iff 24 hash bits of
/// (seed, site, i) are at least p·2²⁴, so P(keep) = 1 - p. Each element depends only on its index: the
/// same bits on any thread count, on a resume, and on every device — the CPU hashes with rayon, other
/// devices compute the same integer function on the device, so a step uploads no mask.
pub fn seeded_mask(seed: u64, req: MaskRequest, dev: &Device) -> Result<Tensor> {
    let n: usize = req.dims.iter().product();
    if u32::try_from(n).is_err() {
        candle_core::bail!("dropout site {}: {n} elements (dims {:?}) are over the 2^32 a mask indexes", req.site, req.dims);
    }
    let keys = round_keys(seed, req.site);
    let threshold = (req.p * (1u64 << 24) as f64).ceil().min((1u64 << 24) as f64) as u32;
    if crate::fastpath::cpu_fast(dev) {
        let keep: Vec<f32> = (0..n as u32).into_par_iter().map(|i| if hash24(&keys, i) >= threshold { 1.0 } else { 0.0 }).collect();
        return Tensor::from_vec(keep, req.dims, dev);
    }
    device_hash(&keys, n, dev)?.broadcast_ge(&Tensor::full(threshold, 1, dev)?)?.to_dtype(DType::F32)?.reshape(req.dims)
}
