//! Turning a batch of logits into next tokens, all rows at once on the device. The order follows
//! transformers' generate: repetition penalty, then temperature, top-k, top-p, then a draw.
//!
//! The draw is inverse-CDF sampling with one uniform per row. The uniforms come from each sequence's
//! own RNG stream (seeded by (seed, prompt index)), so a sequence's tokens do not depend on which other
//! sequences share its batch. candle's `cumsum` multiplies by a V×V triangular matrix (128k² for
//! Llama 3), so the CDF is built blockwise with 256×256 and nb×nb matrices instead.

use candle_core::{DType, Device, Result, Tensor, D};
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
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
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

/// Inclusive cumulative sum over the last dim of `x: [B, V]`, built from two small triangular matmuls:
/// within blocks of `bs` (cost ∝ V·bs) and across the V/bs block totals (cost ∝ (V/bs)²); `bs` near
/// √V balances the two.
pub fn blocked_cumsum(x: &Tensor) -> Result<Tensor> {
    let (b, v) = x.dims2()?;
    let dev = x.device();
    let bs = block_size(v);
    let nb = v.div_ceil(bs);
    let padded = if nb * bs > v { Tensor::cat(&[x, &Tensor::zeros((b, nb * bs - v), x.dtype(), dev)?], 1)? } else { x.clone() };
    // One 2-D matmul over all blocks of all rows (a batched broadcast_matmul loops per row).
    let inner = padded.reshape((b * nb, bs))?.matmul(&Tensor::triu2(bs, x.dtype(), dev)?)?.reshape((b, nb, bs))?;
    let totals = inner.narrow(2, bs - 1, 1)?.squeeze(2)?;
    let strict = (Tensor::triu2(nb, x.dtype(), dev)? - Tensor::eye(nb, x.dtype(), dev)?)?;
    let offsets = totals.matmul(&strict)?;
    inner.broadcast_add(&offsets.unsqueeze(2)?)?.reshape((b, nb * bs))?.narrow(1, 0, v)
}

/// Probabilities `[B, V]` after temperature, top-k and top-p (rows sum to 1 over the kept tokens).
pub fn warp(logits: &Tensor, p: &SamplingParams) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let mut logits = logits.to_dtype(DType::F32)?;
    if p.temperature != 1.0 {
        logits = (logits / p.temperature)?;
    }
    if p.top_k > 0 && p.top_k < v {
        let (sorted, _) = logits.sort_last_dim(false)?;
        let kth = sorted.narrow(1, p.top_k - 1, 1)?;
        let neg = Tensor::full(f32::NEG_INFINITY, logits.shape(), logits.device())?;
        logits = logits.broadcast_lt(&kth)?.where_cond(&neg, &logits)?;
    }
    // Sampling needs no gradient, so candle's fused softmax is fine here (unlike in training).
    let mut probs = candle_nn::ops::softmax_last_dim(&logits.contiguous()?)?;
    if p.top_p < 1.0 {
        // transformers' TopPLogitsWarper: in ascending order, drop tokens whose cumulative probability
        // is <= 1 - top_p, always keeping the most likely one. The kept set is every token at least as
        // likely as the first kept one in that order (ties at that threshold are all kept).
        let (asc, _) = probs.sort_last_dim(true)?;
        let cum = blocked_cumsum(&asc)?;
        let removed = cum.le(1.0 - p.top_p)?.to_dtype(DType::F32)?.sum_keepdim(1)?;
        let removed = removed.clamp(0f32, (v - 1) as f32)?.to_dtype(DType::U32)?;
        let threshold = asc.gather(&removed, 1)?;
        let zeros = probs.zeros_like()?;
        probs = probs.broadcast_lt(&threshold)?.where_cond(&zeros, &probs)?;
        probs = probs.broadcast_div(&probs.sum_keepdim(1)?)?;
    }
    Ok(probs)
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
    let cum_blocks = totals.matmul(&Tensor::triu2(nb, probs.dtype(), dev)?)?;
    let u = Tensor::from_slice(uniforms, (b, 1), dev)?;
    let target = cum_blocks.narrow(1, nb - 1, 1)?.mul(&u)?;
    let count = |cum: &Tensor, t: &Tensor, max: usize| -> Result<Tensor> {
        cum.broadcast_lt(t)?.to_dtype(DType::F32)?.sum_keepdim(1)?.clamp(0f32, max as f32)?.to_dtype(DType::U32)
    };
    let blk = count(&cum_blocks, &target, nb - 1)?;
    // The target's remainder inside the chosen block (> 0: the block was the first to reach it).
    let before = (cum_blocks.gather(&blk, 1)? - totals.gather(&blk, 1)?)?;
    let rest = (target - before)?;
    let chosen = blocks.gather(&blk.unsqueeze(2)?.broadcast_as((b, 1, bs))?.contiguous()?, 1)?.squeeze(1)?;
    let inner = chosen.matmul(&Tensor::triu2(bs, probs.dtype(), dev)?)?;
    let j = count(&inner, &rest, bs - 1)?;
    let blk = blk.squeeze(1)?.to_vec1::<u32>()?;
    let j = j.squeeze(1)?.to_vec1::<u32>()?;
    Ok(blk.iter().zip(&j).map(|(&k, &i)| (k * bs as u32 + i).min(v as u32 - 1)).collect())
}

/// transformers' RepetitionPenaltyLogitsProcessor: every token already in the row (prompt included)
/// has its logit divided by the penalty when positive, multiplied when negative.
pub fn repetition_penalty(logits: &Tensor, seen: &[Vec<u32>], penalty: f64) -> Result<Tensor> {
    let (b, v) = logits.dims2()?;
    let mut mask = vec![0u8; b * v];
    for (i, row) in seen.iter().enumerate() {
        for &t in row {
            if (t as usize) < v {
                mask[i * v + t as usize] = 1;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (b, v), logits.device())?;
    let penalised = logits.lt(0.0)?.where_cond(&(logits * penalty)?, &(logits / penalty)?)?;
    mask.where_cond(&penalised, logits)
}

/// Forbids `ids` in the rows flagged by `rows` (min_new_tokens not yet reached) by setting their
/// logits to -inf.
pub fn forbid(logits: &Tensor, rows: &[bool], ids: &[u32]) -> Result<Tensor> {
    if !rows.iter().any(|&r| r) || ids.is_empty() {
        return Ok(logits.clone());
    }
    let (b, v) = logits.dims2()?;
    let dev: &Device = logits.device();
    let flag = Tensor::from_vec(rows.iter().map(|&r| u8::from(r)).collect::<Vec<_>>(), (b, 1), dev)?;
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
        return logits.argmax(D::Minus1)?.to_vec1::<u32>();
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
