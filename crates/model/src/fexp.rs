//! The exponential of torch's CPU flash attention (`cpu_flash_attention` in ATen's
//! FlashAttentionKernel.cpp): the softmax numerators of each row are taken with `fexp_u20`, a fast
//! approximation (Malossi et al., "Fast Exponential Computation on SIMD Architectures"; about 1e-4
//! relative error, `exp(0)` = 0.99994660) on the AVX-512 vector part of the row — the first
//! 16·⌊n/16⌋ keys of each block of 512 — and with the C library's `expf` on the rest. In bf16/f16 the
//! numerators are rounded to the low dtype before `·V` and their sum becomes the log-sum-exp the
//! backward pass normalises with, so the approximation moves which way roundings go: measured on the
//! attention fixtures, it is most of the distance between exact-exp sdpa and torch's. Only the CPU
//! reproduces it; torch's CUDA kernels use `exp2f`, which the generic path's `exp` stands for.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Key block of torch's CPU kernel (`kv_split_size`) and its f32 vector width under AVX-512.
const KV_BLOCK: usize = 512;
const LANES: usize = 16;

/// torch's `fexp_u20` for one value (its AVX-512 steps, lane by lane).
#[inline(always)]
fn fexp_u20(x: f32) -> f32 {
    const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
    const LN_FLT_MIN: f32 = f32::from_bits(0xc2ae_ac50);
    const LN_FLT_MAX: f32 = f32::from_bits(0x42b1_7218);
    const C0: f32 = 0.000_107_034_35;
    const C1: f32 = 0.303_542_6;
    const C2: f32 = -0.224_338_37;
    const C3: f32 = -0.079_204_24;
    if x < LN_FLT_MIN {
        return 0.0;
    }
    if x > LN_FLT_MAX {
        return f32::INFINITY;
    }
    let src = x * LOG2E;
    let frac = src - src.floor();
    let poly = frac.mul_add(frac.mul_add(frac.mul_add(C3, C2), C1), C0);
    let t = 8_388_608f32.mul_add(src - poly, 8_388_608f32 * 127.0);
    // The integer conversion truncates (`cvtt`), and its bits are the float. t is in [2²³, 255·2²³] here,
    // or NaN (NaN input), which `as` took to 0 and `max` does too; unlike `as`, which saturates lane by
    // lane, the unchecked conversion vectorises. Not `clamp`: it passes NaN through.
    #[allow(clippy::manual_clamp)]
    let t = t.max(0.0).min(2_147_483_520.0);
    // SAFETY: t is finite and within i32's range (the line above).
    f32::from_bits(unsafe { t.to_int_unchecked::<i32>() } as u32)
}

struct RowExp;

impl CustomOp1 for RowExp {
    fn name(&self) -> &'static str {
        "torch-cpu-attention-exp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else { bail!("torch-cpu-attention-exp: f32 only") };
        let Some((a, b)) = l.contiguous_offsets() else { bail!("torch-cpu-attention-exp: expects a contiguous input") };
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = v[a..b].to_vec();
        out.par_chunks_mut(n).for_each(|row| {
            crate::simd::dispatch(#[inline(always)] || {
                for block in row.chunks_mut(KV_BLOCK) {
                    let vector = block.len() / LANES * LANES;
                    let (head, tail) = block.split_at_mut(vector);
                    head.iter_mut().for_each(|x| *x = fexp_u20(*x));
                    tail.iter_mut().for_each(|x| *x = x.exp());
                }
            })
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `exp` of every element of `x` (f32, CPU, rows along the last dim, shifted by their max) as torch's
/// CPU flash attention takes it. No backward pass: callers pass detached values.
pub fn attention_exp(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&RowExp)
}

/// The row sums of [`attention_exp`]'s output as torch's kernel adds them up
/// (`_exp_reduce_sum_fusion_kernel`): per key block, the vector part in 16 f32 lanes, the lanes
/// halved pairwise (`vec_reduce_all`), then the tail one by one; blocks summed in order. This sum is
/// both the softmax denominator and inside the log-sum-exp, so its last bit moves output roundings.
struct RowSum;

impl CustomOp1 for RowSum {
    fn name(&self) -> &'static str {
        "torch-cpu-attention-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else { bail!("torch-cpu-attention-sum: f32 only") };
        let Some((a, b)) = l.contiguous_offsets() else { bail!("torch-cpu-attention-sum: expects a contiguous input") };
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let sums: Vec<f32> = v[a..b]
            .par_chunks(n)
            .map(|row| {
                row.chunks(KV_BLOCK).fold(0f32, |total, block| {
                    let vector = block.len() / LANES * LANES;
                    let mut lanes = [0f32; LANES];
                    for c in block[..vector].chunks_exact(LANES) {
                        lanes.iter_mut().zip(c).for_each(|(a, &x)| *a += x);
                    }
                    let sum = block[vector..].iter().fold(crate::simd::halve_lanes(&mut lanes), |s, &x| s + x);
                    sum + total
                })
            })
            .collect();
        let mut dims = l.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = 1;
        }
        Ok((CpuStorage::F32(sums), Shape::from(dims)))
    }
}

/// `Σ e` over the last dim (kept as size 1) in the order of torch's CPU flash attention; see [`RowSum`].
pub fn attention_sum(e: &Tensor) -> Result<Tensor> {
    e.contiguous()?.apply_op1_no_bwd(&RowSum)
}

/// `e^x` elementwise with torch's vectorised exp ([`crate::simd::sleef_exp`]); backward `g·e^x`.
/// The backward of torch's CPU flash attention recomputes P this way (`exp`, not `exp_u20`), and P
/// rounded to bf16/f16 gives dV while `P∘(dP − Δ)` rounded gives dS.
struct SleefExp;

impl CustomOp1 for SleefExp {
    fn name(&self) -> &'static str {
        "torch-cpu-exp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else { bail!("torch-cpu-exp: f32 only") };
        let Some((a, b)) = l.contiguous_offsets() else { bail!("torch-cpu-exp: expects a contiguous input") };
        let mut out = v[a..b].to_vec();
        out.par_chunks_mut(1 << 14).for_each(|c| crate::simd::dispatch(#[inline(always)] || c.iter_mut().for_each(|x| *x = crate::simd::sleef_exp(*x))));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.mul(res)?))
    }
}

/// `e^x` as torch's vectorised CPU kernels compute it, differentiable; see [`SleefExp`].
pub fn torch_exp(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SleefExp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fexp_matches_torch_at_zero_and_stays_near_exp() {
        // exp(0) as torch's kernel gives it: the log-sum-exp of a row with one key is max − 5.34e-5.
        assert!((super::fexp_u20(0.0) - 0.999_946_6).abs() < 1e-7, "{}", super::fexp_u20(0.0));
        for i in 0..2000 {
            let x = -20.0 + i as f32 * 0.01;
            let rel = (super::fexp_u20(x) as f64 / (x as f64).exp() - 1.0).abs();
            assert!(rel < 2e-4, "{x}: {rel}");
        }
        assert_eq!(super::fexp_u20(f32::MIN), 0.0);
    }

    /// The unchecked conversion gives exactly what `t as i32` gave, NaN included.
    #[test]
    fn fexp_keeps_the_bits_of_the_as_cast() {
        fn as_cast(x: f32) -> f32 {
            let (log2e, min, max) = (f32::from_bits(0x3fb8_aa3b), f32::from_bits(0xc2ae_ac50), f32::from_bits(0x42b1_7218));
            if x < min {
                return 0.0;
            }
            if x > max {
                return f32::INFINITY;
            }
            let src = x * log2e;
            let frac = src - src.floor();
            let poly = frac.mul_add(frac.mul_add(frac.mul_add(-0.079_204_24, -0.224_338_37), 0.303_542_6), 0.000_107_034_35);
            f32::from_bits(8_388_608f32.mul_add(src - poly, 8_388_608f32 * 127.0) as i32 as u32)
        }
        for x in crate::simd::tests::samples() {
            assert_eq!(super::fexp_u20(x).to_bits(), as_cast(x).to_bits(), "fexp_u20({x:e})");
        }
    }
}
