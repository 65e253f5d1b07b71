//! Fused CPU kernels with hand-written backward passes: RMSNorm, LayerNorm, rotate-half RoPE and
//! SwiGLU (attention is `attention.rs`). Each replaces a chain of composed candle ops whose forward and
//! backward each make a full-size temporary per op. The composed chains in `ops.rs` stay as the
//! device-generic twins (what CUDA runs); callers take these only when [`crate::fastpath::cpu_fast`]
//! says so, and `tests/fused.rs` checks values and gradients of each against its twin.
//!
//! All are f32 and need rows (the last dim) contiguous; rows are spread over rayon's threads.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::simd;

/// True when the fused kernels may run on `x` (CPU fast path allowed, f32).
pub fn applies(x: &Tensor) -> bool {
    crate::fastpath::cpu_fast(x.device()) && x.dtype() == DType::F32
}

/// Rows per rayon task: enough work per task that scheduling stays negligible.
fn rows_per_task(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expects a contiguous input, got {:?} / {:?}", l.dims(), l.stride()),
    }
}

/// The row width of a norm's input, checked against its weight (and bias) length: a mismatch would
/// otherwise normalise rows of the weight's width across the real rows.
fn row_width(xl: &Layout, w: usize, b: Option<usize>, op: &str) -> Result<usize> {
    let h = xl.dims().last().copied().unwrap_or(0);
    if h != w || b.is_some_and(|b| b != w) || h == 0 {
        bail!("{op}: input rows of width {h} need a weight{} of {h} elements, got {w}{}", if b.is_some() { " and bias" } else { "" }, b.map(|b| format!(" and {b}")).unwrap_or_default());
    }
    Ok(h)
}

/// Runs `f` over the (made contiguous) f32 CPU data of `ts`.
fn with_data<R>(ts: &[&Tensor], op: &str, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        let Storage::Cpu(s) = &**g else { bail!("{op}: CPU tensors only") };
        slices.push(data(s, l, op)?);
    }
    f(&slices)
}

/// Sums per-task partial vectors in task order. The tasks are fixed-size chunks of rows, so the sum
/// depends on neither the thread count nor work stealing (a rayon `reduce` pairs partials in whatever
/// order the threads finish, which changes the last bits from run to run at real widths).
pub(crate) fn sum_in_order(parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut parts = parts.into_iter();
    let Some(mut acc) = parts.next() else { return Vec::new() };
    for p in parts {
        for (a, b) in acc.iter_mut().zip(p) {
            *a += b;
        }
    }
    acc
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm: y = w ∘ (x · r), r = 1/√(mean(x²) + ε), as transformers' LlamaRMSNorm.
//
// Three ops, each with torch's backward for the step it stands for, so that the gradients carry the
// bits of autograd over transformers' composed ops: `r` (rsqrt ∘ mean ∘ pow), `x · r` and `w ∘ x̂`.
// Splitting matters for x's gradient too: torch sums it as (residual + g∘w·r) + pow's term, in that
// order, and so does candle's backward when the two terms come from two nodes, the residual's first.
// Under autocast an f32 ulp there moves which way the next layer's f16/bf16 gradients round.

/// `r` per row (`[.., 1]`); backward: `2x · (−0.5·dr · r³) / n`, rounded where torch's rsqrt, mean and
/// pow backward passes round.
struct InvRms {
    eps: f64,
}

/// `rsqrt(mean(x²) + ε)` with transformers' f32 ops as torch's CPU kernels round them: the squares
/// summed in torch's order ([`simd::torch_sum_map`]), the mean as that sum divided by the width, ε
/// rounded to f32, the reciprocal of the square root rounded twice (ATen's `rsqrt` is `1 / sqrt`).
fn inv_rms(row: &[f32], eps: f64) -> f32 {
    let mean = simd::torch_sum_map(row, |v| v * v) / row.len() as f32;
    1.0 / (mean + eps as f32).sqrt()
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
        let r: Vec<f32> = x.par_chunks(h).map(|row| simd::dispatch(|| inv_rms(row, self.eps))).collect();
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
            let mut dx = vec![0f32; x.len()];
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
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h).zip(x.par_chunks(h)).zip(r).for_each(|((o, x), &r)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = x * r));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, r: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(candle_core::D::Minus1)?;
        let (dx, dr) = with_data(&[x, r, g], self.name(), |s| {
            let (x, r, g) = (s[0], s[1], s[2]);
            let mut dx = vec![0f32; x.len()];
            let dr: Vec<f32> = dx
                .par_chunks_mut(h)
                .zip(x.par_chunks(h).zip(g.par_chunks(h)))
                .zip(r)
                .map(|((dx, (x, g)), &r)| {
                    dx.iter_mut().zip(g).for_each(|(d, &g)| *d = g * r);
                    let prod: Vec<f32> = g.iter().zip(x).map(|(&g, &x)| g * x).collect();
                    simd::torch_sum_map(&prod, |v| v)
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
        let mut out = vec![0f32; x.len()];
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
            let mut dx = vec![0f32; x.len()];
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

/// Fused RMSNorm over the last dim (the caller checks [`applies`]).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let r = x.apply_op1(InvRms { eps })?;
    x.apply_op2(&r, RowScale)?.apply_op2(&w.contiguous()?, ColScale)
}

// ---------------------------------------------------------------------------------------------------
// LayerNorm: y = x̂ ∘ w + b, x̂ = (x − mean) · r, r = 1/√(var + ε) (biased variance), as torch.
// Backward: dx = r · (g∘w − mean(g∘w) − x̂ · mean(g∘w∘x̂)), dw = Σ_rows g∘x̂, db = Σ_rows g.

struct LayerNorm {
    eps: f64,
}

/// (mean, 1/√(var + ε)) of a row.
fn moments(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = (simd::sum_map(row, |v| v) / n) as f32;
    let var = simd::sum_map(row, |v| (v - mean) * (v - mean)) / n;
    (mean, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("layer_norm.fwd", 0.0);
        let (x, w, b) = (data(xs, xl, self.name())?, data(ws, wl, self.name())?, data(bs, bl, self.name())?);
        let h = row_width(xl, w.len(), Some(b.len()), self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * rows_per_task(h)).zip(x.par_chunks(h * rows_per_task(h))).for_each(|(o, x)| {
            simd::dispatch(|| {
                for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                    let (mean, r) = moments(x, self.eps);
                    for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                        *o = (x - mean) * r * w + b;
                    }
                }
            })
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::span("layer_norm.bwd", 0.0);
        let (dx, dwb) = with_data(&[x, w, g], self.name(), |s| {
            let (x, w, g) = (s[0], s[1], s[2]);
            let (h, chunk) = (w.len(), w.len() * rows_per_task(w.len()));
            let mut dx = vec![0f32; x.len()];
            // One partial vector per task: dw in [0, h), db in [h, 2h).
            let dwb = dx
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                .map(|(dx, (x, g))| {
                    simd::dispatch(|| {
                        let mut dwb = vec![0f32; 2 * h];
                        let (dw, db) = dwb.split_at_mut(h);
                        for ((dx, x), g) in dx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(g.chunks_exact(h)) {
                            let (mean, r) = moments(x, self.eps);
                            let (mut s1, mut s2) = (0f64, 0f64);
                            for ((&x, &g), &w) in x.iter().zip(g).zip(w) {
                                let gw = g * w;
                                s1 += gw as f64;
                                s2 += (gw * (x - mean) * r) as f64;
                            }
                            let (m1, m2) = ((s1 / h as f64) as f32, (s2 / h as f64) as f32);
                            for (i, ((d, &x), &g)) in dx.iter_mut().zip(x).zip(g).enumerate() {
                                let xh = (x - mean) * r;
                                *d = r * (g * w[i] - m1 - xh * m2);
                                dw[i] += g * xh;
                                db[i] += g;
                            }
                        }
                        dwb
                    })
                })
                .collect::<Vec<_>>();
            Ok((dx, sum_in_order(dwb)))
        })?;
        let h = w.elem_count();
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        let dw = Tensor::from_slice(&dwb[..h], w.shape(), dev)?;
        let db = Tensor::from_slice(&dwb[h..], b.shape(), dev)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Fused LayerNorm over the last dim (the caller checks [`applies`]).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}

// ---------------------------------------------------------------------------------------------------
// Rotate-half RoPE: with x = [x1 | x2] along the head dim, y1 = x1∘c1 − x2∘s1, y2 = x2∘c2 + x1∘s2.
// Backward (the transpose): dx1 = g1∘c1 + g2∘s2, dx2 = g2∘c2 − g1∘s1. The input may be a strided
// [B, H, T, D] view (the heads split off a [B, T, H·D] projection); the output is contiguous, which is
// the layout the attention matmuls want anyway.

struct Rope;

fn rope_rows(x: &[f32], x_off: impl Fn(usize) -> usize + Sync, cos: &[f32], sin: &[f32], dims: [usize; 4], backward: bool) -> Vec<f32> {
    let [_, h, t, d] = dims;
    let half = d / 2;
    let rows = dims.iter().product::<usize>() / d.max(1);
    let mut out = vec![0f32; rows * d];
    let per = rows_per_task(d);
    out.par_chunks_mut(d * per).enumerate().for_each(|(c, o)| {
        simd::dispatch(|| {
            for (i, o) in o.chunks_exact_mut(d).enumerate() {
                let r = c * per + i;
                let tab = ((r / (h * t)) * t + r % t) * d;
                let (cs, sn) = (&cos[tab..tab + d], &sin[tab..tab + d]);
                let xo = x_off(r);
                let (x1, x2) = (&x[xo..xo + half], &x[xo + half..xo + d]);
                let (o1, o2) = o.split_at_mut(half);
                for j in 0..half {
                    if backward {
                        o1[j] = x1[j] * cs[j] + x2[j] * sn[half + j];
                        o2[j] = x2[j] * cs[half + j] - x1[j] * sn[j];
                    } else {
                        o1[j] = x1[j] * cs[j] - x2[j] * sn[j];
                        o2[j] = x2[j] * cs[half + j] + x1[j] * sn[half + j];
                    }
                }
            }
        })
    });
    out
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("rope.fwd", 0.0);
        let CpuStorage::F32(x) = xs else { bail!("{}: f32 only", self.name()) };
        let (cos, sin) = (data(cs, cl, self.name())?, data(ss, sl, self.name())?);
        let (&[b, h, t, d], st) = (xl.dims(), xl.stride()) else { bail!("{}: expects [B, H, T, D], got {:?}", self.name(), xl.dims()) };
        if (st[3] != 1 && d > 1) || d % 2 != 0 || cl.dims() != [b, 1, t, d] || sl.dims() != [b, 1, t, d] {
            bail!("{}: x {:?} / {:?} with tables {:?} {:?}", self.name(), xl.dims(), st, cl.dims(), sl.dims());
        }
        let (start, st) = (xl.start_offset(), [st[0], st[1], st[2]]);
        let off = |r: usize| start + (r / (h * t)) * st[0] + ((r / t) % h) * st[1] + (r % t) * st[2];
        Ok((CpuStorage::F32(rope_rows(x, off, cos, sin, [b, h, t, d], false)), Shape::from((b, h, t, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::span("rope.bwd", 0.0);
        let (b, h, t, d) = x.dims4()?;
        let dx = with_data(&[g, cos, sin], self.name(), |s| Ok(rope_rows(s[0], |r| r * d, s[1], s[2], [b, h, t, d], true)))?;
        Ok((Some(Tensor::from_vec(dx, (b, h, t, d), x.device())?), None, None))
    }
}

/// Fused rotate-half RoPE of `x: [B, H, T, D]` with tables `[B, 1, T, D]` (the caller checks [`applies`]).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = if x.stride()[3] == 1 { x.clone() } else { x.contiguous()? };
    x.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU: y = silu(a) ∘ u, silu(a) = a·σ(a).
// Backward: da = g∘u∘σ(a)∘(1 + a(1 − σ(a))), du = g∘silu(a).

struct SwiGlu;

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + simd::exp(-a))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(&self, as_: &CpuStorage, al: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("swiglu.fwd", 0.0);
        let (a, u) = (data(as_, al, self.name())?, data(us, ul, self.name())?);
        if al.dims() != ul.dims() {
            bail!("{}: gate {:?} and up {:?} differ", self.name(), al.dims(), ul.dims());
        }
        let mut out = vec![0f32; a.len()];
        out.par_chunks_mut(16384).zip(a.par_chunks(16384).zip(u.par_chunks(16384))).for_each(|(o, (a, u))| {
            simd::dispatch(|| {
                for ((o, &a), &u) in o.iter_mut().zip(a).zip(u) {
                    *o = a * sigmoid(a) * u;
                }
            })
        });
        Ok((CpuStorage::F32(out), al.shape().clone()))
    }

    fn bwd(&self, a: &Tensor, u: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::span("swiglu.bwd", 0.0);
        let (da, du) = with_data(&[a, u, g], self.name(), |s| {
            let (a, u, g) = (s[0], s[1], s[2]);
            let (mut da, mut du) = (vec![0f32; a.len()], vec![0f32; a.len()]);
            da.par_chunks_mut(16384)
                .zip(du.par_chunks_mut(16384))
                .zip(a.par_chunks(16384).zip(u.par_chunks(16384)).zip(g.par_chunks(16384)))
                .for_each(|((da, du), ((a, u), g))| {
                    simd::dispatch(|| {
                        for ((((da, du), &a), &u), &g) in da.iter_mut().zip(du.iter_mut()).zip(a).zip(u).zip(g) {
                            let s = sigmoid(a);
                            *da = g * u * s * (1.0 + a * (1.0 - s));
                            *du = g * a * s;
                        }
                    })
                });
            Ok((da, du))
        })?;
        let dev = a.device();
        Ok((Some(Tensor::from_vec(da, a.shape(), dev)?), Some(Tensor::from_vec(du, u.shape(), dev)?)))
    }
}

/// SiLU of an f32 tensor holding bf16/f16 values, with the backward torch's kernel computes for those
/// dtypes: `dy·σ·(1 + x·(1 − σ))`, `σ = 1/(1 + e^(−x))`, in f32 and rounded once by the caller's cast.
/// candle's backward, `dy·(σ·(1 − silu) + silu)`, is the same derivative rounded elsewhere, and moves
/// a gate's f16 gradient by an ulp now and then.
struct LowSilu;

impl candle_core::CustomOp1 for LowSilu {
    fn name(&self) -> &'static str {
        "low-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        let out = x.par_iter().map(|&v| v / (1.0 + (-v).exp())).collect();
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(&[x, g], self.name(), |s| {
            Ok(s[0]
                .par_iter()
                .zip(s[1])
                .map(|(&x, &dy)| {
                    let sig = 1.0 / (1.0 + simd::sleef_exp(-x));
                    dy * sig * (1.0 + x * (1.0 - sig))
                })
                .collect::<Vec<f32>>())
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// [`LowSilu`] (the caller checks [`applies`]).
pub fn low_silu(x: &Tensor) -> Result<Tensor> {
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
        out.par_chunks_mut(n).for_each(|row| {
            simd::dispatch(|| {
                let max = simd::max(row);
                row.iter_mut().for_each(|v| *v = simd::sleef_exp(*v - max));
                let inv = 1.0 / simd::torch_lane_sum(row.len(), |i| row[i]);
                row.iter_mut().for_each(|v| *v *= inv);
            })
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let n = y.dim(candle_core::D::Minus1)?.max(1);
        let dx = with_data(&[y, g], self.name(), |s| {
            let (y, g) = (s[0], s[1]);
            let mut dx = vec![0f32; y.len()];
            dx.par_chunks_mut(n).zip(y.par_chunks(n).zip(g.par_chunks(n))).for_each(|(dx, (y, g))| {
                let dot = simd::torch_lane_sum(y.len(), |i| g[i] * y[i]);
                dx.iter_mut().zip(y.iter().zip(g)).for_each(|(d, (&y, &g))| *d = (g - dot) * y);
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// [`TorchSoftmax`] (the caller checks [`applies`]).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(TorchSoftmax)
}

/// Fused `silu(gate) ∘ up` (the caller checks [`applies`]).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------------------------------------------
// ReLU with a one-pass backward: dx = g where y > 0. (candle's relu backward builds a zeros tensor, a
// comparison, a cast and a product: four passes and three temporaries the size of OPT's FFN.)

struct Relu;

impl candle_core::CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "fused-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("relu.fwd", 0.0);
        let x = data(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16384).zip(x.par_chunks(16384)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x.max(0.0);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::span("relu.bwd", 0.0);
        Ok(Some(relu_grad(y, g)?))
    }
}

/// `g` where `y > 0`, else 0: the gradient through a ReLU from its output `y`.
pub(crate) fn relu_grad(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let dx = with_data(&[y, g], "relu-grad", |s| {
        let mut dx = vec![0f32; s[0].len()];
        dx.par_chunks_mut(16384).zip(s[0].par_chunks(16384).zip(s[1].par_chunks(16384))).for_each(|(d, (y, g))| {
            for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                *d = if y > 0.0 { g } else { 0.0 };
            }
        });
        Ok(dx)
    })?;
    Tensor::from_vec(dx, y.shape(), y.device())
}

/// Fused ReLU (the caller checks [`applies`]).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Relu)
}
