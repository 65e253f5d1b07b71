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

/// The keep mask of `site` under `seed` (u8, uploaded once): element i is kept iff the top 24 bits
/// of a hash of (seed, site, i) are at least p·2²⁴, so P(keep) = 1 - p. Each element depends only on
/// its index: the same bytes on any thread count, and on a resume.
pub fn seeded_mask(seed: u64, req: MaskRequest, dev: &Device) -> Result<Tensor> {
    let n: usize = req.dims.iter().product();
    let base = splitmix64(seed ^ (req.site as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let threshold = (req.p * (1u64 << 24) as f64).ceil() as u64;
    let keep: Vec<u8> = (0..n as u64).into_par_iter().map(|i| u8::from(splitmix64(base ^ i) >> 40 >= threshold)).collect();
    crate::transfer::upload(keep, req.dims, dev)?.to_dtype(DType::F32)
}
