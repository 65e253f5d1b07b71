//! CPU kernels that round as torch's CPU kernels do, for bf16/f16 autocast only.
//!
//! Under autocast the f32 parts of a step (norm statistics, softmax, cross entropy, the activations'
//! backward) feed values that are then rounded to bf16/f16, so one f32 ulp decides which way a rounding
//! goes, and those flips are most of the distance between two implementations of the same math. These
//! kernels add up in torch's order and take torch's `exp` (`simd::torch_*`, `simd::sleef_exp`), so that
//! crossfeed's `--dtype bf16|f16` rounds where torch.autocast rounds (`train/tests/attention_precision.rs`;
//! the norms bit for bit in `tests/torch_cpu.rs`). In f32 the fused kernels (`fused.rs`) run instead:
//! there the order only moves last bits, and they are faster. Callers take these only
//! when [`crate::fused::applies`] and the model computes in bf16/f16; the composed chains in `ops.rs`
//! stay as the device-generic twins.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::fused::{data, row_width, rows_per_task, with_data, zeroed};
use crate::simd;

/// Whether `x` (an f32 part of the step) belongs to a model computing in bf16/f16 on the CPU fast path:
/// where these kernels replace the fused ones.
pub fn applies(x: &Tensor, dtype: DType) -> bool {
    !matches!(dtype, DType::F32 | DType::F64) && crate::fused::applies(x)
}

// RMSNorm: y = w ∘ (x · r), r = 1/√(mean(x²) + ε), as transformers' LlamaRMSNorm.
//
// Three ops, each with torch's backward for the step it stands for, so that the gradients carry the
// bits of autograd over transformers' composed ops: `r` (rsqrt ∘ mean ∘ pow), `x · r` and `w ∘ x̂`.
// Splitting matters for x's gradient too: torch sums it as (residual + g∘w·r) + pow's term, in that
// order, and so does candle's backward when the two terms come from two nodes, the residual's first.

/// `r` per row (`[.., 1]`); backward: `2x · (−0.5·dr · r³) / n`, rounded where torch's rsqrt, mean and
/// pow backward passes round.
struct InvRms {
    eps: f64,
}

/// `rsqrt(mean(x²) + ε)` with transformers' f32 ops as torch's CPU kernels round them: the squares
/// summed in torch's order ([`simd::torch_sum_map`]), the mean as that sum divided by the width, ε
/// rounded to f32, the reciprocal of the square root rounded twice (ATen's `rsqrt` is `1 / sqrt`).
fn inv_rms(row: &[f32], eps: f64) -> f32 {
    simd::dispatch(#[inline(always)] || {
        let mean = simd::torch_sum_map(row, |v| v * v) / row.len() as f32;
        1.0 / (mean + eps as f32).sqrt()
    })
}

impl candle_core::CustomOp1 for InvRms {
    fn name(&self) -> &'static str {
        "fused-inv-rms"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("rms_norm.fwd", 0.0);
        let x = data(xs, xl, self.name())?;
        let h = xl.dims().last().copied().unwrap_or(0);
        if h == 0 {
            bail!("{}: rows of width 0", self.name());
        }
        let r: Vec<f32> = x.par_chunks(h).map(|row| inv_rms(row, self.eps)).collect();
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = 1;
        }
        Ok((CpuStorage::F32(r), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, r: &Tensor, dr: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::span("rms_norm.bwd", 0.0);
        let h = x.dim(candle_core::D::Minus1)?;
        let dx = with_data(&[x, r, dr], self.name(), |s| {
            let (x, r, dr) = (s[0], s[1], s[2]);
            let mut dx = zeroed(x.len());
            dx.par_chunks_mut(h).zip(x.par_chunks(h)).zip(r.par_iter().zip(dr)).for_each(|((dx, x), (&r, &dr))| {
                // rsqrt: −0.5·grad · r³ (r³ as (r·r)·r); mean: / n; pow: grad · (2·x).
                let dsq = (-0.5 * dr) * (r * r * r) / h as f32;
                dx.iter_mut().zip(x).for_each(|(d, &x)| *d = dsq * (2.0 * x));
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `x · r` with `r: [.., 1]` per row; backward: `dx = g·r`, `dr = Σ g∘x` in torch's row-sum order.
struct RowScale;

impl CustomOp2 for RowScale {
    fn name(&self) -> &'static str {
        "fused-row-scale"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, rs: &CpuStorage, rl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (data(xs, xl, self.name())?, data(rs, rl, self.name())?);
        let h = xl.dims().last().copied().unwrap_or(0);
        if h == 0 || x.len() != r.len() * h {
            bail!("{}: {:?} rows against {} scales", self.name(), xl.dims(), r.len());
        }
        let mut out = zeroed(x.len());
        out.par_chunks_mut(h).zip(x.par_chunks(h)).zip(r).for_each(|((o, x), &r)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = x * r));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, r: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(candle_core::D::Minus1)?;
        let (dx, dr) = with_data(&[x, r, g], self.name(), |s| {
            let (x, r, g) = (s[0], s[1], s[2]);
            let mut dx = zeroed(x.len());
            let dr: Vec<f32> = dx
                .par_chunks_mut(h)
                .zip(x.par_chunks(h).zip(g.par_chunks(h)))
                .zip(r)
                // One product buffer per rayon task, not one allocation per row.
                .map_init(Vec::new, |prod, ((dx, (x, g)), &r)| {
                    dx.iter_mut().zip(g).for_each(|(d, &g)| *d = g * r);
                    prod.clear();
                    prod.extend(g.iter().zip(x).map(|(&g, &x)| g * x));
                    simd::torch_sum_map(prod, |v| v)
                })
                .collect();
            Ok((dx, dr))
        })?;
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), Some(Tensor::from_vec(dr, r.shape(), r.device())?)))
    }
}

/// `w ∘ x̂` over rows of `x̂`; backward: `dx̂ = g∘w`, `dw` the column sums of `g∘x̂` in the order torch's
/// CPU sum reduces over leading dims ([`simd::torch_col_sums`]).
struct ColScale;

impl CustomOp2 for ColScale {
    fn name(&self) -> &'static str {
        "fused-col-scale"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (data(xs, xl, self.name())?, data(ws, wl, self.name())?);
        let h = row_width(xl, w.len(), None, self.name())?;
        let mut out = zeroed(x.len());
        out.par_chunks_mut(h * rows_per_task(h)).zip(x.par_chunks(h * rows_per_task(h))).for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                o.iter_mut().zip(x).zip(w).for_each(|((o, &x), &w)| *o = w * x);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_data(&[x, w, g], self.name(), |s| {
            let (x, w, g) = (s[0], s[1], s[2]);
            let h = w.len();
            let mut dx = zeroed(x.len());
            dx.par_chunks_mut(h * rows_per_task(h)).zip(g.par_chunks(h * rows_per_task(h))).for_each(|(d, g)| {
                for (d, g) in d.chunks_exact_mut(h).zip(g.chunks_exact(h)) {
                    d.iter_mut().zip(g).zip(w).for_each(|((d, &g), &w)| *d = g * w);
                }
            });
            let gx: Vec<f32> = g.par_iter().zip(x).map(|(&g, &x)| g * x).collect();
            Ok((dx, simd::torch_col_sums(&gx, h)))
        })?;
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), Some(Tensor::from_vec(dw, w.shape(), w.device())?)))
    }
}

/// RMSNorm over the last dim in torch's rounding order (the caller checks [`crate::fused::applies`]).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let r = x.apply_op1(InvRms { eps })?;
    x.apply_op2(&r, RowScale)?.apply_op2(&w.contiguous()?, ColScale)
}

/// Qwen3's q/k norm on a bf16/f16 projection `x` (given widened to f32), as transformers runs it under
/// autocast: normalised in f32 in torch's order, rounded to `low`, then times the f32 weight (an f32
/// result). The caller checks [`crate::fused::applies`].
pub fn rms_norm_rounded(x: &Tensor, w: &Tensor, eps: f64, low: DType) -> Result<Tensor> {
    let x = x.contiguous()?;
    let r = x.apply_op1(InvRms { eps })?;
    let y = x.apply_op2(&r, RowScale)?.to_dtype(low)?.to_dtype(DType::F32)?;
    y.apply_op2(&w.contiguous()?, ColScale)
}

/// SiLU of an f32 tensor holding bf16/f16 values, `x / (1 + e^(−x))` with torch's exp, and the backward
/// torch's kernel computes for those dtypes: `dy·σ·(1 + x·(1 − σ))`, `σ = 1/(1 + e^(−x))`, in f32 and rounded once by the caller's cast.
/// candle's backward, `dy·(σ·(1 − silu) + silu)`, is the same derivative rounded elsewhere, and moves
/// a gate's f16 gradient by an ulp now and then.
struct LowSilu;

impl candle_core::CustomOp1 for LowSilu {
    fn name(&self) -> &'static str {
        "low-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        // `x / (1 + e^(−x))` with torch's vectorised exp, as its SiLU kernel computes bf16/f16 inputs.
        let mut out = zeroed(x.len());
        out.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(o, x)| {
            simd::dispatch(#[inline(always)] || o.iter_mut().zip(x).for_each(|(o, &v)| *o = v / (1.0 + simd::sleef_exp(-v))))
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(&[x, g], self.name(), |s| {
            let mut dx = zeroed(s[0].len());
            dx.par_chunks_mut(1 << 14).zip(s[0].par_chunks(1 << 14).zip(s[1].par_chunks(1 << 14))).for_each(|(d, (x, dy))| {
                silu_grad(d, x, dy)
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `dy·σ·(1 + x·(1 − σ))` elementwise ([`LowSilu`]).
fn silu_grad(d: &mut [f32], x: &[f32], dy: &[f32]) {
    simd::dispatch(#[inline(always)] || {
        for ((d, &x), &dy) in d.iter_mut().zip(x).zip(dy) {
            let sig = 1.0 / (1.0 + simd::sleef_exp(-x));
            *d = dy * sig * (1.0 + x * (1.0 - sig));
        }
    })
}

/// [`LowSilu`] (the caller checks [`crate::fused::applies`]).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(LowSilu)
}

/// Softmax over the last dim as torch's CPU kernel computes it (`_vec_softmax_lastdim`, AVX-512): the
/// row max, `e = exp(x − max)` with torch's vectorised exp, their sum in its 16-lane order, and the
/// row multiplied by `1/sum` (not divided). The backward is `(g − Σ g∘y) ∘ y` with the dot product in
/// the same lane order (`_softmax_backward_data`). Eager attention rounds these probabilities and
/// their gradient to bf16/f16, so the last f32 bit decides roundings there.
struct TorchSoftmax;

impl candle_core::CustomOp1 for TorchSoftmax {
    fn name(&self) -> &'static str {
        "torch-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = x.to_vec();
        out.par_chunks_mut(n).for_each(softmax_row);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let n = y.dim(candle_core::D::Minus1)?.max(1);
        let dx = with_data(&[y, g], self.name(), |s| {
            let (y, g) = (s[0], s[1]);
            let mut dx = zeroed(y.len());
            dx.par_chunks_mut(n).zip(y.par_chunks(n).zip(g.par_chunks(n))).for_each(|(dx, (y, g))| softmax_grad_row(dx, y, g));
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// One row of [`TorchSoftmax`]'s forward pass, in place.
fn softmax_row(row: &mut [f32]) {
    simd::dispatch(#[inline(always)] || {
        let max = simd::max(row);
        row.iter_mut().for_each(|v| *v = simd::sleef_exp(*v - max));
        let inv = 1.0 / simd::torch_lane_sum_zip(row, row, |v, _| v);
        row.iter_mut().for_each(|v| *v *= inv);
    })
}

/// One row of [`TorchSoftmax`]'s backward pass.
fn softmax_grad_row(dx: &mut [f32], y: &[f32], g: &[f32]) {
    simd::dispatch(#[inline(always)] || {
        let dot = simd::torch_lane_sum_zip(g, y, |g, y| g * y);
        dx.iter_mut().zip(y.iter().zip(g)).for_each(|(d, (&y, &g))| *d = (g - dot) * y);
    })
}

/// [`TorchSoftmax`] (the caller checks [`crate::fused::applies`]).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(TorchSoftmax)
}

// ---------------------------------------------------------------------------------------------------
// LayerNorm: y = (x − mean)·rstd·w + b as ATen's CPU kernel (`LayerNormKernelImplInternal`) computes
// it: Welford moments in torch's order ([`moments`]), `rstd = 1/√(var + ε)` in f32, and the output
// as `fma((x − mean)·rstd, w, b)`; the backward follows ATen's kernel too (`LayerNorm::bwd`). Both are
// bit-identical to torch 2.15's on rows of 64, 100 and 2048 (`tests/torch_cpu.rs`). The output feeds a
// bf16/f16 linear, where a last-bit difference flips roundings.

/// `(mean, biased variance)` of a row as ATen's `RowwiseMoments` (moments_utils.h) computes them in
/// f32 with torch's AVX2 build (8 lanes; torch registers no AVX-512 kernel for layer norm): each
/// chunk of 16 vectors folded in by Welford's update with FMA, chunks merged pairwise in a cascade of
/// `CeilLog2(chunks)` levels, then the scalar tail by Welford, and the 8 lanes merged into it one by
/// one (GCC contracts that scalar code's `a·b + c` into FMA, and so does this).
#[inline(always)]
fn moments(x: &[f32]) -> (f32, f32) {
    const W: usize = 8;
    const CHUNK: usize = 16;
    type V = [f32; W];
    // AddMomentsVec: merge (m0_add, m1_add, m2_add) into (m0, m1, m2).
    fn add(m0_add: usize, m1_add: &V, m2_add: &V, st: &mut (usize, V, V)) {
        let n = st.0 + m0_add;
        let c = if n == 0 { 0.0 } else { m0_add as f32 / n as f32 };
        for l in 0..W {
            let delta = m1_add[l] - st.1[l];
            let m2_tmp = st.2[l] + m2_add[l];
            let c_delta = c * delta;
            let m0_delta = delta * st.0 as f32;
            st.1[l] += c_delta;
            st.2[l] = m0_delta.mul_add(c_delta, m2_tmp);
        }
        st.0 = n;
    }
    let n = x.len() / W;
    let m = n.div_ceil(CHUNK);
    let depth = simd::aten_ceil_log2(m);
    let mut stack = vec![(0usize, [0f32; W], [0f32; W]); depth.max(1)];
    for i in 0..m {
        let m0 = CHUNK.min(n - i * CHUNK);
        let (mut m1, mut m2) = ([0f32; W], [0f32; W]);
        for j in 0..m0 {
            let c = 1.0 / (j + 1) as f32;
            let v = &x[(i * CHUNK + j) * W..(i * CHUNK + j + 1) * W];
            for l in 0..W {
                let delta = v[l] - m1[l];
                m1[l] = c.mul_add(delta, m1[l]);
                m2[l] = delta.mul_add(v[l] - m1[l], m2[l]);
            }
        }
        add(m0, &m1, &m2, &mut stack[0]);
        let mut mask = i + 1;
        let mut j = 1;
        while j < depth && mask & 1 == 0 {
            let low = std::mem::replace(&mut stack[j - 1], (0, [0f32; W], [0f32; W]));
            add(low.0, &low.1, &low.2, &mut stack[j]);
            mask >>= 1;
            j += 1;
        }
    }
    for i in 1..depth {
        let s = stack[i];
        add(s.0, &s.1, &s.2, &mut stack[0]);
    }
    let (lanes1, lanes2) = (stack[0].1, stack[0].2);
    let (mut m0, mut m1, mut m2) = (0usize, 0f32, 0f32);
    for &v in &x[n * W..] {
        let delta = v - m1;
        m0 += 1;
        m1 += delta / m0 as f32;
        m2 = delta.mul_add(v - m1, m2);
    }
    for l in 0..W {
        let total = m0 + n;
        let c = if total == 0 { 0.0 } else { n as f32 / total as f32 };
        let delta = lanes1[l] - m1;
        m1 = c.mul_add(delta, m1);
        m2 += (delta * delta * c).mul_add(m0 as f32, lanes2[l]);
        m0 = total;
    }
    (m1, m2 / x.len() as f32)
}

/// `Σ a·b·c` (`triple`) or `Σ a·b` over a row as ATen's `map3_reduce_all` / `map2_reduce_all` add it up in
/// the AVX2 build: 8 lanes seeded with the first vector, later vectors added lane-wise, the partial last
/// vector folded in with FMA (GCC contracts that path's `acc + x·y`), the lanes halved pairwise; a
/// row shorter than a vector summed in order.
#[inline(always)]
fn lane8_dot(a: &[f32], b: &[f32], c: &[f32], triple: bool) -> f32 {
    const W: usize = 8;
    let n = a.len();
    // The product's last factor apart, so that the tail can fuse it.
    let head = |i: usize| if triple { a[i] * b[i] } else { a[i] };
    let last = |i: usize| if triple { c[i] } else { b[i] };
    if n < W {
        return (0..n).map(|i| head(i) * last(i)).reduce(|s, t| s + t).unwrap_or(0.0);
    }
    let mut acc: [f32; W] = std::array::from_fn(|l| head(l) * last(l));
    let full = n / W * W;
    for start in (W..full).step_by(W) {
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc += head(start + l) * last(start + l);
        }
    }
    for (l, acc) in acc.iter_mut().enumerate().take(n - full) {
        *acc = head(full + l).mul_add(last(full + l), *acc);
    }
    simd::halve_lanes(&mut acc)
}

struct LayerNorm {
    eps: f64,
}

/// `(mean, 1/√(var + ε))` of a row as ATen's kernel takes them.
#[inline(always)]
fn mean_rstd(row: &[f32], eps: f64) -> (f32, f32) {
    let (mean, var) = moments(row);
    (mean, 1.0 / (var + eps as f32).sqrt())
}

/// One row's `(mean, rstd)` ([`mean_rstd`]).
fn row_mean_rstd(row: &[f32], eps: f64) -> (f32, f32) {
    simd::dispatch(#[inline(always)] || {
        mean_rstd(row, eps)
    })
}

/// One row of [`LayerNorm`]'s forward pass: `fma((x − mean)·rstd, w, b)`.
fn layer_norm_row(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f64) {
    simd::dispatch(#[inline(always)] || {
        let (mean, rstd) = mean_rstd(x, eps);
        for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
            *o = ((x - mean) * rstd).mul_add(w, b);
        }
    })
}

/// One row's input gradient ([`LayerNorm`]'s backward pass, see there); `stats` is `(mean, rstd)`.
fn layer_norm_grad_row(dx: &mut [f32], x: &[f32], dy: &[f32], w: &[f32], stats: (f32, f32), scale: f32) {
    simd::dispatch(#[inline(always)] || {
        let (mean, a) = stats;
        let ds = lane8_dot(dy, x, w, true);
        let db = lane8_dot(dy, w, w, false);
        let bb = db.mul_add(mean, -ds) * a * a * a * scale;
        let c = (-bb).mul_add(mean, -(db * a * scale));
        for (((d, &dy), &x), &w) in dx.iter_mut().zip(dy).zip(x).zip(w) {
            *d = bb.mul_add(x, a * dy * w) + c;
        }
    })
}

/// dγ and dβ over the columns `[j0, j0 + dw.len())` of rows `h` wide, rows added in order.
fn layer_norm_param_grads(dw: &mut [f32], db: &mut [f32], x: &[f32], g: &[f32], stats: &[(f32, f32)], h: usize, j0: usize) {
    simd::dispatch(#[inline(always)] || {
        for (i, &(mean, a)) in stats.iter().enumerate() {
            let shift = -a * mean;
            let (x, dy) = (&x[i * h + j0..i * h + j0 + dw.len()], &g[i * h + j0..i * h + j0 + dw.len()]);
            for (((dw, db), &x), &dy) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
                *dw = dy.mul_add(a.mul_add(x, shift), *dw);
                *db += dy;
            }
        }
    })
}


impl candle_core::CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "torch-layer-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("layer_norm.fwd", 0.0);
        let (x, w, b) = (data(xs, xl, self.name())?, data(ws, wl, self.name())?, data(bs, bl, self.name())?);
        let h = row_width(xl, w.len(), Some(b.len()), self.name())?;
        let mut out = zeroed(x.len());
        out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(o, x)| layer_norm_row(o, x, w, b, self.eps));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    /// ATen's `LayerNormBackwardKernelImplInternal` as torch runs it on one thread (the goldens' setting;
    /// with more threads torch sums dγ/dβ per thread first, so its bits depend on the thread count):
    /// dγ and dβ summed over rows in order, dγ's terms as `fma(dy, fma(rstd, x, −rstd·mean), acc)`; per
    /// row `ds = Σ dy·x·γ` and `db = Σ dy·γ` in 8 lanes ([`lane8_dot`]), then
    /// `dx = fma(B, x, rstd·dy·γ) + C` with `B = fma(db, mean, −ds)·rstd³/N` and
    /// `C = fma(−B, mean, −db·rstd/N)` — GCC's FMA contractions of the kernel's vector code included.
    /// Bit-identical to torch 2.15's on rows of 64, 100 and 2048 (`tests/torch_cpu.rs`).
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::span("layer_norm.bwd", 0.0);
        let h = w.elem_count();
        let (dx, dw, db) = with_data(&[x, w, g], self.name(), |s| {
            let (x, w, g) = (s[0], s[1], s[2]);
            if h == 0 || x.len() % h != 0 || g.len() != x.len() {
                bail!("{}: {} values against a weight of {h}", self.name(), x.len());
            }
            let stats: Vec<(f32, f32)> = x.par_chunks(h).map(|row| row_mean_rstd(row, self.eps)).collect();
            let scale = 1.0 / h as f32;
            let mut dx = zeroed(x.len());
            dx.par_chunks_mut(h)
                .zip(x.par_chunks(h).zip(g.par_chunks(h)))
                .zip(&stats)
                .for_each(|((dx, (x, dy)), &stats)| layer_norm_grad_row(dx, x, dy, w, stats, scale));
            // Columns are independent: one task per block of columns, rows summed in order within it.
            let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
            dw.par_chunks_mut(256).zip(db.par_chunks_mut(256)).enumerate().for_each(|(c, (dw, db))| {
                layer_norm_param_grads(dw, db, x, g, &stats, h, c * 256)
            });
            Ok((dx, dw, db))
        })?;
        let dev = x.device();
        Ok((Some(Tensor::from_vec(dx, x.shape(), dev)?), Some(Tensor::from_vec(dw, w.shape(), dev)?), Some(Tensor::from_vec(db, b.shape(), dev)?)))
    }
}

/// LayerNorm over the last dim with torch's forward bits (the caller checks [`crate::fused::applies`]).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}
