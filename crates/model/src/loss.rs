//! Next-token cross entropy over a padded batch.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Per-sequence cross-entropy sums and predicted-token counts.
#[derive(Debug, Clone)]
pub struct CeSums {
    /// `[B]` f32: sum over the predicted tokens of each row (differentiable).
    pub ce_sum: Tensor,
    /// Predicted tokens per row (positions 1.. whose mask — and label mask — is 1).
    pub tokens: Vec<usize>,
}

impl CeSums {
    pub fn total_tokens(&self) -> usize {
        self.tokens.iter().sum()
    }

    /// Mean CE over all predicted tokens of the batch (the training loss).
    pub fn mean(&self) -> Result<Tensor> {
        self.ce_sum.sum_all()? / self.total_tokens().max(1) as f64
    }
}

/// Cross entropy of `logits: [B, T, V]` predicting `input_ids[:, 1:]`. A position counts when both
/// it and its label are real tokens (`attention_mask`) and `label_mask` (if given: 1 on the tokens whose
/// prediction is trained, e.g. completion-only) is 1 at the label position.
pub fn next_token_ce(
    logits: &Tensor,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    label_mask: Option<&Tensor>,
) -> Result<CeSums> {
    next_token_ce_counted(logits, input_ids, attention_mask, label_mask, None, logits.dtype())
}

/// [`next_token_ce`] with the per-row token counts already known on the host (`tokens`), which saves
/// reading them back from the device, for a model that computes in `dtype` (under bf16/f16 autocast the
/// CPU kernel rounds as torch's does; models hand back f32 logits either way).
pub fn next_token_ce_counted(
    logits: &Tensor,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    label_mask: Option<&Tensor>,
    tokens: Option<Vec<usize>>,
    dtype: DType,
) -> Result<CeSums> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        let dev = logits.device();
        return Ok(CeSums { ce_sum: Tensor::zeros(b, DType::F32, dev)?, tokens: vec![0; b] });
    }
    let mut weight = attention_mask.narrow(1, 1, t - 1)?.to_dtype(DType::F32)?;
    if let Some(lm) = label_mask {
        weight = (weight * lm.narrow(1, 1, t - 1)?.to_dtype(DType::F32)?)?;
    }
    let nll = if crate::fastpath::cpu_fast(logits.device()) {
        // The op reads all T positions (the last one with a dummy label and a zero gradient): narrowing
        // the [B, T, V] logits first would make backprop pad their gradient back with a full-size copy.
        let mut labels = Vec::with_capacity(b * t);
        for row in input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()? {
            labels.extend_from_slice(&row[1..]);
            labels.push(0);
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= v) {
            candle_core::bail!("label {bad} is outside the vocabulary of {v} logits");
        }
        let torch_order = dtype != DType::F32 && dtype != DType::F64;
        logits.to_dtype(DType::F32)?.apply_op1(FusedNll { labels, torch_order, stats: Default::default() })?.narrow(1, 0, t - 1)?
    } else {
        let logits = logits.narrow(1, 0, t - 1)?.to_dtype(DType::F32)?;
        let labels = input_ids.narrow(1, 1, t - 1)?.contiguous()?;
        let logp = log_softmax_last(&logits.reshape(((b * (t - 1)), v))?)?;
        crate::cuda_rules::gather(&logp, &labels.reshape((b * (t - 1), 1))?, 1)?.reshape((b, t - 1))?.neg()?
    };
    let ce_sum = (nll * &weight)?.sum(1)?;
    let tokens = match tokens {
        Some(t) => t,
        None => crate::transfer::vec1::<f32>(&weight.sum(1)?)?.into_iter().map(|x| x.round() as usize).collect(),
    };
    Ok(CeSums { ce_sum, tokens })
}

/// `log_softmax` from primitive differentiable ops.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Row offsets of a `[B, T, V]` layout whose rows (last dim) are contiguous, in row order.
fn row_starts(l: &Layout) -> Result<Vec<usize>> {
    let (dims, st) = (l.dims(), l.stride());
    if dims.len() != 3 || (st[2] != 1 && dims[2] > 1) {
        candle_core::bail!("fused-nll: expects [B, T, V] logits with contiguous rows, got {:?} / {:?}", dims, st);
    }
    Ok((0..dims[0]).flat_map(|b| (0..dims[1]).map(move |t| l.start_offset() + b * st[0] + t * st[1])).collect())
}

/// Negative log-likelihood of `labels` under `logits: [B, T, V]` (f32, CPU) → `[B, T]`, in one pass
/// over the logits forward and one backward. The composed version (max, subtract, exp, sum, log,
/// subtract, gather, and their backward) makes about a dozen `[B·T, V]` temporaries, ~200 MB each at
/// OPT's 50k vocabulary and 2 × 511 positions. (The bench model's step time did not change beyond
/// the machine's noise; BENCHMARKS.md.)
/// Per row, in f32 runs: `lse = max + ln Σ exp(x − max)` (sum in f64), `nll = lse − x[label]`; the
/// gradient is `g · (exp(x − lse) − onehot(label))`, with `lse` recovered from the saved `nll`.
/// Under bf16/f16 autocast (`torch_order`), as torch's `log_softmax` and its backward round, since the
/// logits' gradient is rounded to bf16/f16 next and every later gradient inherits its bits:
/// `lp = (x − max) − ln Σ exp(x − max)` ([`crate::simd::torch_exp_sum`]), `nll = −lp[label]`; the
/// gradient `exp(lp)·g` off the label and `−g − exp(lp)·(−g)` on it (`dlp − exp(lp)·Σdlp` with the
/// one nonzero `dlp = −g`), each row's `(max, ln Σ)` kept from the forward pass.
struct FusedNll {
    labels: Vec<u32>,
    torch_order: bool,
    stats: std::sync::Mutex<Vec<(f32, f32)>>,
}

/// `(max, ln Σ exp(x − max))` of a row, in torch's order.
fn row_stats(row: &[f32]) -> (f32, f32) {
    crate::simd::dispatch(#[inline(always)] || {
        let max = crate::simd::max(row);
        (max, crate::simd::torch_exp_sum(row, max).ln())
    })
}

impl CustomOp1 for FusedNll {
    fn name(&self) -> &'static str {
        "fused-nll"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else { candle_core::bail!("fused-nll: f32 only") };
        let _t = crate::profile::span("nll.fwd", 0.0);
        let (starts, v) = (row_starts(l)?, l.dims()[2]);
        if !self.torch_order {
            let mut nll = vec![0f32; starts.len()];
            nll.par_iter_mut().zip(starts.par_iter().zip(&self.labels)).for_each(|(out, (&start, &label))| {
                let row = &x[start..start + v];
                let (max, sum) = crate::simd::dispatch(#[inline(always)] || {
                    let max = crate::simd::max(row);
                    (max, crate::simd::sum_map(row, |z| crate::simd::exp(z - max)))
                });
                *out = max + (sum.ln() as f32) - row[label as usize];
            });
            return Ok((CpuStorage::F32(nll), Shape::from((l.dims()[0], l.dims()[1]))));
        }
        let stats: Vec<(f32, f32)> = starts.par_iter().map(|&start| row_stats(&x[start..start + v])).collect();
        let nll = stats.iter().zip(&starts).zip(&self.labels).map(|((&(max, ls), &start), &label)| -((x[start + label as usize] - max) - ls)).collect();
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
        Ok((CpuStorage::F32(nll), Shape::from((l.dims()[0], l.dims()[1]))))
    }

    fn bwd(&self, logits: &Tensor, nll: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let row_stats = if self.torch_order { RowStats::TorchOrder(self.stats.lock().map(|s| s.clone()).unwrap_or_default()) } else { RowStats::Nll(nll.flatten_all()?.to_vec1()?) };
        let op = FusedNllGrad { labels: self.labels.clone(), row_stats, grad: grad.flatten_all()?.to_vec1()? };
        Ok(Some(logits.apply_op1_no_bwd(&op)?))
    }
}

/// What the backward pass keeps of the forward pass, per row.
enum RowStats {
    /// The f32 path: the row's `nll`, from which `lse = nll + x[label]`.
    Nll(Vec<f32>),
    /// Torch's order: `(max, ln Σ)` (recomputed if absent).
    TorchOrder(Vec<(f32, f32)>),
}

/// `exp(lp)·g` per logit of a row, `lp = (x − max) − ln Σ` ([`FusedNll`]'s torch order).
fn torch_order_grad_row(dst: &mut [std::mem::MaybeUninit<f32>], row: &[f32], max: f32, ls: f32, g: f32) {
    crate::simd::dispatch(#[inline(always)] || {
        for (d, &z) in dst.iter_mut().zip(row) {
            d.write(crate::simd::sleef_exp((z - max) - ls) * g);
        }
    })
}

struct FusedNllGrad {
    labels: Vec<u32>,
    row_stats: RowStats,
    grad: Vec<f32>,
}

impl CustomOp1 for FusedNllGrad {
    fn name(&self) -> &'static str {
        "fused-nll-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else { candle_core::bail!("fused-nll-grad: f32 only") };
        let _t = crate::profile::span("nll.bwd", 0.0);
        let (starts, v) = (row_starts(l)?, l.dims()[2]);
        // Every element is written below, so no zeroing pass first (a [tokens, vocab] buffer: 206 MB at
        // the OPT-125M bench shape, memset on one thread).
        let len = starts.len() * v;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        out.spare_capacity_mut().par_chunks_mut(v.max(1)).enumerate().for_each(|(r, dst)| {
            let (row, label, g) = (&x[starts[r]..starts[r] + v], self.labels[r] as usize, self.grad[r]);
            if g == 0.0 {
                // A masked position: its gradient is exactly zero.
                dst.iter_mut().for_each(|d| {
                    d.write(0.0);
                });
                return;
            }
            match &self.row_stats {
                RowStats::Nll(nll) => {
                    let lse = nll[r] + row[label];
                    crate::simd::dispatch(#[inline(always)] || {
                        for (d, &z) in dst.iter_mut().zip(row) {
                            d.write(g * crate::simd::exp(z - lse));
                        }
                    });
                    // SAFETY: the loop above wrote the whole row, label included.
                    let at_label = unsafe { dst[label].assume_init() };
                    dst[label].write(at_label - g);
                }
                RowStats::TorchOrder(stats) => {
                    let (max, ls) = stats.get(r).copied().unwrap_or_else(|| row_stats(row));
                    torch_order_grad_row(dst, row, max, ls, g);
                    let at_label = crate::simd::sleef_exp((row[label] - max) - ls);
                    dst[label].write(-g - at_label * -g);
                }
            }
        });
        // SAFETY: each of the len elements was written above (every row, masked or not, in full).
        unsafe { out.set_len(len) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}
