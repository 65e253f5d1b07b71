//! Turning a batch of logits into next tokens, all rows at once on the device. The order follows
//! transformers' generate: repetition penalty, then temperature, top-k, top-p, min-p, then a draw.
//!
//! The draw is inverse-CDF sampling with one uniform per row. The uniforms come from each sequence's
//! own RNG stream (seeded by (seed, prompt index)), so a sequence's tokens do not depend on which other
//! sequences share its batch. candle's `cumsum` multiplies by a V×V triangular matrix (128k² for
//! Llama 3), so the CDF is built blockwise with 256×256 and nb×nb matrices instead.

use candle_core::{DType, Device, Result, Tensor, D};
use crossfeed_model::transfer;
use serde::{Deserialize, Serialize};

/// Sampling parameters; the defaults are plain multinomial sampling at temperature 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1.0 disables.
    pub top_p: f64,
    /// transformers' `repetition_penalty` (CTRL): 1.0 disables.
    pub repetition_penalty: f64,
    /// transformers' `min_p`: drop tokens less likely than min_p times the most likely; 0 disables.
    pub min_p: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, min_p: 0.0 }
    }
}

/// A sampling parameter outside the range transformers' logits processors accept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} = {value} is out of range (allowed: {allowed})")]
pub struct InvalidSampling {
    pub key: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl SamplingParams {
    /// The ranges transformers enforces (`TopPLogitsWarper`, `TemperatureLogitsWarper`,
    /// `RepetitionPenaltyLogitsProcessor`), with crossfeed's temperature 0 = greedy and top_k 0 = off.
    /// NaN fails every check.
    pub fn validate(&self) -> std::result::Result<(), InvalidSampling> {
        let bad = |key, value: f64, allowed| Err(InvalidSampling { key, value: value.to_string(), allowed });
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature, "a finite number >= 0; 0 means greedy");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "0 < top_p <= 1; 1 disables");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "0 <= min_p <= 1; 0 disables");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", self.repetition_penalty, "a finite number > 0; 1 disables");
        }
        Ok(())
    }

    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Probabilities `[B, V]` after temperature, top-k, top-p and min-p, in transformers' order (rows sum
/// to 1 over the kept tokens). Every kept set is a superlevel set ({x ≥ threshold}), so ties at a
/// threshold are all kept, as transformers' `<` comparisons keep them. No full-vocabulary sort runs on
/// a device: candle's CUDA sort fits rows of at most 8,192 (`crossfeed_model::cuda_rules`).
pub fn warp(logits: &Tensor, p: &SamplingParams) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    // The prefill's last-position logits are a strided view; every op below wants rows contiguous.
    let mut logits = logits.to_dtype(DType::F32)?.contiguous()?;
    if p.temperature != 1.0 {
        logits = div_scalar(&logits, p.temperature)?;
    }
    if p.top_k > 0 && p.top_k < v {
        let kth = kth_largest(&logits, p.top_k)?;
        let neg = Tensor::full(f32::NEG_INFINITY, logits.shape(), logits.device())?;
        logits = logits.broadcast_lt(&kth)?.where_cond(&neg, &logits)?;
    }
    // Sampling needs no gradient, so candle's fused softmax is fine here (unlike in training).
    let mut probs = candle_nn::ops::softmax_last_dim(&logits)?;
    let zeros = probs.zeros_like()?;
    if p.top_p < 1.0 {
        let threshold = nucleus_threshold(&probs, p.top_p)?;
        probs = probs.broadcast_lt(&threshold)?.where_cond(&zeros, &probs)?;
        probs = probs.broadcast_div(&probs.sum_keepdim(1)?)?;
    }
    if p.min_p > 0.0 {
        // MinPLogitsWarper: drop tokens less likely than min_p times the most likely one.
        let threshold = (probs.max_keepdim(1)? * p.min_p)?;
        probs = probs.broadcast_lt(&threshold)?.where_cond(&zeros, &probs)?;
        probs = probs.broadcast_div(&probs.sum_keepdim(1)?)?;
    }
    Ok(probs)
}

/// `x / s` as torch computes it for an f32 tensor and a Python float: a division by `s` rounded to f32
/// (candle's `x / s` multiplies by `1 / s`, which differs in the last bit and can move a token across a
/// top-p or min-p boundary).
fn div_scalar(x: &Tensor, s: f64) -> Result<Tensor> {
    // `full` fills on the device; `Tensor::new` would upload the scalar.
    x.broadcast_div(&Tensor::full(s as f32, (), x.device())?.to_dtype(x.dtype())?)
}

/// Rows longer than this are sorted in chunks (candle's CUDA sort takes at most 8,192 columns).
const SORT_CHUNK: usize = 4096;

/// The k-th largest value of each row of `x: [B, V]` (contiguous), `[B, 1]`: transformers' TopK
/// threshold. Rows are cut into chunks of `SORT_CHUNK`, each chunk keeps its k largest, until one sort
/// of the candidates is left; exact, ties included. A k too large for chunking (> half a chunk) sorts
/// the rows on the host instead (one copy; transformers users keep k in the tens).
pub fn kth_largest(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, _) = x.dims2()?;
    let dev = x.device();
    let mut cand = x.clone();
    loop {
        let v = cand.dim(1)?;
        if v <= SORT_CHUNK {
            let (sorted, _) = crossfeed_model::cuda_rules::sort_last_dim(&cand, false)?;
            return sorted.narrow(1, k - 1, 1)?.contiguous();
        }
        if k > SORT_CHUNK / 2 {
            let rows = crossfeed_model::transfer::vec2::<f32>(&cand)?;
            let kth: Vec<f32> = rows
                .into_iter()
                .map(|mut r| {
                    r.sort_unstable_by(|a, b| b.total_cmp(a));
                    r[k - 1]
                })
                .collect();
            return crossfeed_model::transfer::upload(kth, (b, 1), dev);
        }
        let chunks = v.div_ceil(SORT_CHUNK);
        let padded = if chunks * SORT_CHUNK > v {
            Tensor::cat(&[&cand, &Tensor::full(f32::NEG_INFINITY, (b, chunks * SORT_CHUNK - v), dev)?], 1)?
        } else {
            cand
        };
        let (sorted, _) = crossfeed_model::cuda_rules::sort_last_dim(&padded.reshape((b * chunks, SORT_CHUNK))?, false)?;
        cand = sorted.narrow(1, 0, k)?.contiguous()?.reshape((b, chunks * k))?;
    }
}

/// transformers' TopPLogitsWarper threshold for `probs: [B, V]`, `[B, 1]`: in ascending order it
/// drops the tokens whose cumulative probability is <= 1 - top_p and keeps the most likely one; the
/// first kept value t* is the smallest value t with F(t) > 1 - top_p, F(t) the mass of the values <= t
/// (a tie group is counted whole, so the tie order of its sort does not matter). On the CPU from a sort;
/// elsewhere by bisection on t (64 rounds of an O(V) masked sum per row, all rows at once), then t*
/// = the smallest value above the final lower bound.
pub fn nucleus_threshold(probs: &Tensor, top_p: f64) -> Result<Tensor> {
    let (b, v) = probs.dims2()?;
    let dev = probs.device();
    let c = 1.0 - top_p;
    if crossfeed_model::fastpath::cpu_fast(dev) {
        // As torch on the CPU: sort ascending, cumulative sum accumulated in f64 (torch's accumulate
        // type for f32 on the CPU), first value whose running mass exceeds 1 - top_p.
        use rayon::prelude::*;
        let t: Vec<f32> = probs
            .to_vec2::<f32>()?
            .into_par_iter()
            .map(|mut row| {
                row.sort_unstable_by(f32::total_cmp);
                let mut cum = 0f64;
                let removed = row.iter().take_while(|&&x| {
                    cum += x as f64;
                    cum as f32 <= c as f32
                });
                let r = removed.count().min(v - 1);
                row[r]
            })
            .collect();
        return Tensor::from_vec(t, (b, 1), dev);
    }
    let zeros = probs.zeros_like()?;
    let mut lo = Tensor::zeros((b, 1), DType::F32, dev)?;
    let mut hi = probs.max_keepdim(1)?;
    for _ in 0..64 {
        let mid = ((&lo + &hi)? * 0.5)?;
        let mass = probs.broadcast_le(&mid)?.where_cond(probs, &zeros)?.sum_keepdim(1)?;
        let below = mass.le(c)?;
        lo = below.where_cond(&mid, &lo)?;
        hi = below.where_cond(&hi, &mid)?;
    }
    let inf = Tensor::full(f32::INFINITY, (b, v), dev)?;
    // The most likely token is always kept (min_tokens_to_keep = 1), also when the f32 mass of a long
    // row sums to just under 1 - top_p's complement and the bisection ends at the top.
    probs.broadcast_gt(&lo)?.where_cond(probs, &inf)?.min_keepdim(1)?.minimum(&probs.max_keepdim(1)?)
}

/// Block size for the two-level CDF: near √V balances the within-block and across-block work.
fn block_size(v: usize) -> usize {
    ((v as f64).sqrt() as usize).next_power_of_two().clamp(16, 512).min(v.max(1))
}

/// One token per row: the first index whose CDF reaches `u_i · total_i`, `u_i ∈ (0, 1]`. Two-level
/// search: the block whose running total reaches the target, then the index inside that block, so
/// only block totals and one block per row get a cumulative sum.
pub fn draw(probs: &Tensor, uniforms: &[f32]) -> Result<Vec<u32>> {
    let (b, v) = probs.dims2()?;
    let dev = probs.device();
    let bs = block_size(v);
    let nb = v.div_ceil(bs);
    let padded = if nb * bs > v { Tensor::cat(&[probs, &Tensor::zeros((b, nb * bs - v), probs.dtype(), dev)?], 1)? } else { probs.clone() };
    let blocks = padded.reshape((b, nb, bs))?;
    let totals = blocks.sum(2)?;
    let cum_blocks = crossfeed_model::cuda_rules::matmul(&totals, &Tensor::triu2(nb, probs.dtype(), dev)?)?;
    let u = transfer::upload(uniforms.to_vec(), (b, 1), dev)?;
    let target = cum_blocks.narrow(1, nb - 1, 1)?.mul(&u)?;
    let count = |cum: &Tensor, t: &Tensor, max: usize| -> Result<Tensor> {
        cum.broadcast_lt(t)?.to_dtype(DType::F32)?.sum_keepdim(1)?.clamp(0f32, max as f32)?.to_dtype(DType::U32)
    };
    let blk = count(&cum_blocks, &target, nb - 1)?;
    // The target's remainder inside the chosen block (> 0: the block was the first to reach it).
    let before = (crossfeed_model::cuda_rules::gather(&cum_blocks, &blk, 1)? - crossfeed_model::cuda_rules::gather(&totals, &blk, 1)?)?;
    let rest = (target - before)?;
    let chosen = crossfeed_model::cuda_rules::gather(&blocks, &blk.unsqueeze(2)?.broadcast_as((b, 1, bs))?.contiguous()?, 1)?.squeeze(1)?;
    let inner = crossfeed_model::cuda_rules::matmul(&chosen, &Tensor::triu2(bs, probs.dtype(), dev)?)?;
    let j = count(&inner, &rest, bs - 1)?;
    // The id is put together on the device (exact in f32 below 2^24), so a step copies one [B] vector
    // to the host: the only sync of a decode step.
    let id = ((blk.to_dtype(DType::F32)? * bs as f64)? + j.to_dtype(DType::F32)?)?;
    transfer::vec1::<u32>(&id.clamp(0f32, (v - 1) as f32)?.to_dtype(DType::U32)?.squeeze(1)?)
}

/// transformers' RepetitionPenaltyLogitsProcessor: every token already in the row (prompt included)
/// has its logit divided by the penalty when positive, multiplied when negative.
pub fn repetition_penalty(logits: &Tensor, seen: &[Vec<u32>], penalty: f64) -> Result<Tensor> {
    let rows: Vec<&[u32]> = seen.iter().map(Vec::as_slice).collect();
    apply_repetition_penalty(logits, &seen_mask(&rows, logits.dim(D::Minus1)?, logits.device())?, penalty)
}

/// The `[B, V]` u8 mask of the tokens each row has seen, uploaded once (a generator keeps it on the
/// device and adds each step's tokens with [`mark_seen`]). Ids past V are ignored, as torch's gather
/// would refuse them before any logit changed.
pub fn seen_mask(rows: &[&[u32]], v: usize, dev: &Device) -> Result<Tensor> {
    let mut mask = vec![0u8; rows.len() * v];
    for (i, row) in rows.iter().enumerate() {
        for &t in row.iter().filter(|&&t| (t as usize) < v) {
            mask[i * v + t as usize] = 1;
        }
    }
    transfer::upload(mask, (rows.len(), v), dev)
}

/// `seen` `[B, V]` with each row's token of `ids: [B, 1]` (u32, on the device) marked: no upload.
pub fn mark_seen(seen: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let v = seen.dim(1)?;
    let hit = transfer::arange_u32(v, seen.device())?.unsqueeze(0)?.broadcast_eq(ids)?;
    seen.maximum(&hit)
}

/// [`repetition_penalty`] with the seen tokens as a device mask from [`seen_mask`] / [`mark_seen`].
pub fn apply_repetition_penalty(logits: &Tensor, seen: &Tensor, penalty: f64) -> Result<Tensor> {
    let penalised = logits.lt(&logits.zeros_like()?)?.where_cond(&(logits * penalty)?, &div_scalar(logits, penalty)?)?;
    seen.where_cond(&penalised, logits)
}

/// Forbids `ids` in the rows flagged by `rows` (min_new_tokens not yet reached) by setting their
/// logits to -inf.
pub fn forbid(logits: &Tensor, rows: &[bool], ids: &[u32]) -> Result<Tensor> {
    if !rows.iter().any(|&r| r) || ids.is_empty() {
        return Ok(logits.clone());
    }
    let (b, v) = logits.dims2()?;
    let dev: &Device = logits.device();
    let flag = transfer::upload(rows.iter().map(|&r| u8::from(r)).collect::<Vec<_>>(), (b, 1), dev)?;
    let neg = Tensor::full(f32::NEG_INFINITY, (b, 1), dev)?;
    let mut out = logits.clone();
    for &id in ids.iter().filter(|&&i| (i as usize) < v) {
        let id = id as usize;
        let col = out.narrow(1, id, 1)?;
        let col = flag.where_cond(&neg, &col)?;
        out = out.slice_assign(&[0..b, id..id + 1], &col)?;
    }
    Ok(out)
}

/// Next token per row from `logits: [B, V]` (f32).
pub fn next_tokens(logits: &Tensor, p: &SamplingParams, uniforms: &[f32]) -> Result<Vec<u32>> {
    if p.is_greedy() {
        return transfer::vec1::<u32>(&crossfeed_model::cuda_rules::argmax(logits)?);
    }
    draw(&warp(logits, p)?, uniforms)
}

#[cfg(test)]
mod tests {
    use super::SamplingParams;

    #[test]
    fn out_of_range_parameters_are_named() {
        let p = |f: fn(&mut SamplingParams)| {
            let mut s = SamplingParams::default();
            f(&mut s);
            s.validate()
        };
        assert!(p(|_| ()).is_ok());
        assert!(p(|s| s.temperature = 0.0).is_ok());
        assert!(p(|s| s.top_p = 1.0).is_ok());
        for (bad, key) in [
            (p(|s| s.top_p = 1.5), "top_p"),
            (p(|s| s.top_p = 0.0), "top_p"),
            (p(|s| s.top_p = f64::NAN), "top_p"),
            (p(|s| s.temperature = -0.1), "temperature"),
            (p(|s| s.temperature = f64::INFINITY), "temperature"),
            (p(|s| s.repetition_penalty = 0.0), "repetition_penalty"),
        ] {
            let e = bad.expect_err(key);
            assert_eq!(e.key, key);
            assert!(e.to_string().starts_with(key) && e.to_string().contains("allowed"), "{e}");
        }
    }
}
