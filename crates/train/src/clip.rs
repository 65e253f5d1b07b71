//! Gradient-norm computation and clipping with `torch.nn.utils.clip_grad_norm_` semantics.
//!
//! torch: `total = ||(||g_1||, ..., ||g_n||)||_2` over the parameters that have a gradient,
//! `coef = max_norm / (total + 1e-6)`, and every gradient is multiplied by `min(coef, 1)`.
//! Here the norm is accumulated in f64 (torch reduces in f32), so it is, if anything, slightly
//! more accurate; the difference is far below f32 resolution of the update.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor, Var};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per parallel chunk. Fixed (not derived from the thread count) so that reductions are
/// bit-reproducible whatever the number of threads.
const CHUNK: usize = 1 << 16;

/// Sum of squares of a contiguous f32 slice in f64, eight independent lanes so it vectorises,
/// reduced in a fixed order so the result never depends on threading.
pub(crate) fn sumsq_f32(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| {
            let mut acc = [0f64; 8];
            let chunks = c.chunks_exact(8);
            let rem = chunks.remainder();
            for c8 in chunks {
                for i in 0..8 {
                    let v = c8[i] as f64;
                    acc[i] += v * v;
                }
            }
            let mut s: f64 = acc.iter().sum();
            for &v in rem {
                s += (v as f64) * (v as f64);
            }
            s
        })
        .collect();
    partial.iter().sum()
}

/// Squared L2 norm of a tensor's elements (any device, any float dtype).
///
/// On CPU for contiguous f32 (the gradient of an f32 master weight) this reads the storage in place
/// with no temporary; elsewhere it falls back to tensor ops.
pub fn tensor_sq_norm(t: &Tensor) -> Result<f64> {
    if crossfeed_model::fastpath::cpu_fast(t.device()) {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(sumsq_f32(&data[start..end]));
        }
    }
    Ok(crossfeed_model::transfer::scalar::<f32>(&device_sq_sum(t)?)? as f64)
}

/// Elements per row of the device-side norm reduction.
const ROW: usize = 16384;

/// The squared sum of `t` as a 0-d f32 tensor on its device, in two reductions: over rows of `ROW`
/// elements, then over the row sums (plus the tail). candle's CUDA full reduction (`sum_all`) runs on
/// one block of 1,024 threads, so a 262M-element gradient (Llama-1B's embedding) would be summed by a
/// single block; a reduction over a last dim gets one block per row.
fn device_sq_sum(t: &Tensor) -> candle_core::Result<Tensor> {
    let sq = t.to_dtype(DType::F32)?.flatten_all()?.sqr()?;
    let n = sq.elem_count();
    let rows = n / ROW;
    if rows < 2 {
        return sq.sum_all();
    }
    let body = sq.narrow(0, 0, rows * ROW)?.reshape((rows, ROW))?.sum(1)?.sum_all()?;
    if rows * ROW == n {
        return Ok(body);
    }
    body + sq.narrow(0, rows * ROW, n - rows * ROW)?.sum_all()?
}

/// Squared L2 norms of many tensors with at most one device-to-host copy: on the CPU fast path each
/// is summed in place; elsewhere the per-tensor sums stay on the device, are stacked and copied once
/// (one sync per call instead of one per parameter).
pub fn sq_norms(ts: &[&Tensor]) -> Result<Vec<f64>> {
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    if ts.iter().all(|t| crossfeed_model::fastpath::cpu_fast(t.device())) {
        // Tensors in parallel: each one's sum is the same whichever thread computes it, and a tensor
        // of one chunk would otherwise be summed on the calling thread while the pool waits.
        return ts.par_iter().map(|t| tensor_sq_norm(t)).collect();
    }
    let sums = ts
        .iter()
        .map(|t| device_sq_sum(t))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let host = crossfeed_model::transfer::vec1::<f32>(&Tensor::stack(&sums, 0)?)?;
    Ok(host.into_iter().map(f64::from).collect())
}

/// Global L2 norm over the gradients of `vars` that are present in `grads` (missing ones are
/// skipped, as torch skips parameters whose `.grad` is `None`).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let present: Vec<&Tensor> = vars.iter().filter_map(|v| grads.get(v.as_tensor())).collect();
    Ok(sq_norms(&present)?.iter().sum::<f64>().sqrt())
}

/// torch's clip coefficient: `Some(max_norm / (total_norm + 1e-6))` when that is below 1 (the
/// gradients must be scaled), `None` when no scaling is needed or clipping is disabled
/// (`max_norm <= 0`, HF's convention for "no clipping").
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> Option<f64> {
    if max_norm <= 0.0 {
        return None;
    }
    // torch computes this on f32 tensors; round the same way so the scale matches.
    let coef = (max_norm as f32) / (total_norm as f32 + 1e-6f32);
    if coef < 1.0 {
        Some(coef as f64)
    } else {
        None
    }
}

/// Clip the gradients of `vars` in `grads` to global norm `max_norm` and return the norm *before*
/// clipping (what HF logs as `grad_norm`). `max_norm <= 0` disables clipping but still returns the
/// norm. Scaled gradients replace the originals in the store.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let total = grad_norm(grads, vars)?;
    if let Some(coef) = clip_coefficient(total, max_norm) {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(total)
}
