//! Fused CPU kernels with hand-written backward passes: RMSNorm, LayerNorm, rotate-half RoPE, SwiGLU,
//! ReLU and the embedding lookup (attention is `attention.rs`). Each replaces a chain of composed candle
//! ops whose forward and backward each make a full-size temporary per op. The composed chains in `ops.rs` stay as the
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
pub(crate) fn rows_per_task(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

pub(crate) fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expects a contiguous input, got {:?} / {:?}", l.dims(), l.stride()),
    }
}

/// The row width of a norm's input, checked against its weight (and bias) length: a mismatch would
/// otherwise normalise rows of the weight's width across the real rows.
pub(crate) fn row_width(xl: &Layout, w: usize, b: Option<usize>, op: &str) -> Result<usize> {
    let h = xl.dims().last().copied().unwrap_or(0);
    if h != w || b.is_some_and(|b| b != w) || h == 0 {
        bail!("{op}: input rows of width {h} need a weight{} of {h} elements, got {w}{}", if b.is_some() { " and bias" } else { "" }, b.map(|b| format!(" and {b}")).unwrap_or_default());
    }
    Ok(h)
}

/// Runs `f` over the (made contiguous) f32 CPU data of `ts`.
pub(crate) fn with_data<R>(ts: &[&Tensor], op: &str, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        let Storage::Cpu(s) = &**g else { bail!("{op}: CPU tensors only") };
        slices.push(data(s, l, op)?);
    }
    f(&slices)
}

/// A zeroed `len`-element buffer, zeroed on rayon's threads. `vec![0.0; n]` is calloc, and the binary
/// keeps freed memory (`keep_freed_memory`), so calloc memsets recycled memory on the calling thread:
/// with the fused kernels' outputs that was the largest single-threaded part of a 2-thread train step
/// (3% of its CPU samples at the bench shape, `perf`), and single-threaded parts are what keep 2
/// threads from 2× of 1.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    if len < 2 * CHUNK || rayon::current_num_threads() < 2 {
        return vec![0f32; len];
    }
    par_build(len, CHUNK, |_, _| {})
}

/// A `len`-element buffer whose chunks of `chunk` elements are written by `fill(chunk index, chunk)` on
/// rayon's threads. Each chunk is zeroed by its own task just before `fill` (in cache, nearly free), not
/// by one memset on the calling thread first (see [`zeroed`]).
pub(crate) fn par_build(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut().par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, c)| {
        c.fill(std::mem::MaybeUninit::new(0.0));
        // SAFETY: every element of `c` was initialised on the line above; MaybeUninit<f32> has f32's layout.
        let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
        fill(i, c);
    });
    // SAFETY: the chunks cover the whole capacity of `len` elements, and each was initialised above.
    unsafe { v.set_len(len) };
    v
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
// Backward: x̂ = x·r, dx = r · (g∘w − x̂ · mean(g∘w∘x̂)), dw = Σ_rows g∘x̂.

struct RmsNorm {
    eps: f64,
}

fn inv_rms(row: &[f32], eps: f64) -> f32 {
    (1.0 / (simd::sum_map(row, |v| v * v) / row.len() as f64 + eps).sqrt()) as f32
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("rms_norm.fwd", 0.0);
        let (x, w) = (data(xs, xl, self.name())?, data(ws, wl, self.name())?);
        let h = row_width(xl, w.len(), None, self.name())?;
        let chunk = h * rows_per_task(h);
        let out = par_build(x.len(), chunk, |c, o| {
            let x = &x[c * chunk..c * chunk + o.len()];
            simd::dispatch(#[inline(always)] || {
                for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                    let r = inv_rms(x, self.eps);
                    for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                        *o = w * (x * r);
                    }
                }
            })
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let _t = crate::profile::span("rms_norm.bwd", 0.0);
        let (dx, dw) = with_data(&[x, w, g], self.name(), |s| {
            let (x, w, g) = (s[0], s[1], s[2]);
            let (h, chunk) = (w.len(), w.len() * rows_per_task(w.len()));
            let mut dx = zeroed(x.len());
            let dw = dx
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                .map(|(dx, (x, g))| {
                    simd::dispatch(#[inline(always)] || {
                        let mut dw = vec![0f32; h];
                        for ((dx, x), g) in dx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(g.chunks_exact(h)) {
                            let r = inv_rms(x, self.eps);
                            let mut dot = 0f64;
                            for ((&x, &g), &w) in x.iter().zip(g).zip(w) {
                                dot += (x * g * w) as f64;
                            }
                            let m = (dot * r as f64 / h as f64) as f32;
                            for ((((d, &x), &g), &w), dw) in dx.iter_mut().zip(x).zip(g).zip(w).zip(dw.iter_mut()) {
                                let xh = x * r;
                                *d = r * (g * w - xh * m);
                                *dw += g * xh;
                            }
                        }
                        dw
                    })
                })
                .collect::<Vec<_>>();
            Ok((dx, sum_in_order(dw)))
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Fused RMSNorm over the last dim (the caller checks [`applies`]).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
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
        let chunk = h * rows_per_task(h);
        let out = par_build(x.len(), chunk, |c, o| {
            let x = &x[c * chunk..c * chunk + o.len()];
            simd::dispatch(#[inline(always)] || {
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
            let mut dx = zeroed(x.len());
            // One partial vector per task: dw in [0, h), db in [h, 2h).
            let dwb = dx
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                .map(|(dx, (x, g))| {
                    simd::dispatch(#[inline(always)] || {
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

/// `x` is read at `start + b·st[0] + h·st[1] + t·st[2]` for row (b, h, t).
fn rope_rows(x: &[f32], start: usize, st: [usize; 3], cos: &[f32], sin: &[f32], dims: [usize; 4], backward: bool) -> Vec<f32> {
    let [_, h, t, d] = dims;
    let half = d / 2;
    let rows = dims.iter().product::<usize>() / d.max(1);
    let per = rows_per_task(d);
    par_build(rows * d, d * per, |c, o| {
        // The row's (batch, head, position) is stepped along, not divided out of its index: that was
        // three integer divisions for every 64-wide row.
        let r0 = c * per;
        let (mut bi, mut hi, mut ti) = (r0 / (h * t), (r0 / t) % h, r0 % t);
        simd::dispatch(#[inline(always)] || {
            for o in o.chunks_exact_mut(d) {
                let tab = (bi * t + ti) * d;
                // Equal-length halves zipped, so the loop has no bounds checks and vectorises (indexing
                // `sn[half + j]` kept it scalar).
                let ((c1, c2), (s1, s2)) = (cos[tab..tab + d].split_at(half), sin[tab..tab + d].split_at(half));
                let xo = start + bi * st[0] + hi * st[1] + ti * st[2];
                let (x1, x2) = x[xo..xo + d].split_at(half);
                let (o1, o2) = o.split_at_mut(half);
                let row = o1.iter_mut().zip(o2.iter_mut()).zip(x1.iter().zip(x2)).zip(c1.iter().zip(c2).zip(s1.iter().zip(s2)));
                for (((o1, o2), (&x1, &x2)), ((&c1, &c2), (&s1, &s2))) in row {
                    if backward {
                        *o1 = x1 * c1 + x2 * s2;
                        *o2 = x2 * c2 - x1 * s1;
                    } else {
                        *o1 = x1 * c1 - x2 * s1;
                        *o2 = x2 * c2 + x1 * s2;
                    }
                }
                ti += 1;
                if ti == t {
                    (ti, hi) = (0, hi + 1);
                    if hi == h {
                        (hi, bi) = (0, bi + 1);
                    }
                }
            }
        })
    })
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
        let rows = rope_rows(x, xl.start_offset(), [st[0], st[1], st[2]], cos, sin, [b, h, t, d], false);
        Ok((CpuStorage::F32(rows), Shape::from((b, h, t, d))))
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
        let dx = with_data(&[g, cos, sin], self.name(), |s| Ok(rope_rows(s[0], 0, [h * t * d, t * d, d], s[1], s[2], [b, h, t, d], true)))?;
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
        let out = par_build(a.len(), 16384, |c, o| {
            let (a, u) = (&a[c * 16384..c * 16384 + o.len()], &u[c * 16384..c * 16384 + o.len()]);
            simd::dispatch(#[inline(always)] || {
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
            let (mut da, mut du) = (zeroed(a.len()), zeroed(a.len()));
            da.par_chunks_mut(16384)
                .zip(du.par_chunks_mut(16384))
                .zip(a.par_chunks(16384).zip(u.par_chunks(16384)).zip(g.par_chunks(16384)))
                .for_each(|((da, du), ((a, u), g))| {
                    simd::dispatch(#[inline(always)] || {
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
        let out = par_build(x.len(), 16384, |c, o| {
            for (o, &x) in o.iter_mut().zip(&x[c * 16384..]) {
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
        let dx = par_build(s[0].len(), 16384, |c, d| {
            let (y, g) = (&s[0][c * 16384..], &s[1][c * 16384..]);
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

// ---------------------------------------------------------------------------------------------------
// Embedding lookup with a one-pass backward. candle's index_select backward is a zeros tensor of the
// table's shape, then index_add, which copies it into a second zeroed buffer before adding: two memsets
// and a copy of the whole table, all on the calling thread (154 MB each at OPT-125M's 50,272 × 768).
// Here each task owns a block of table rows: it zeroes them and adds their tokens' gradient rows in
// position order, index_add's order, so the bits are the same for any thread count. A tied table's
// gradient is then this plus the head's, as torch's autograd sums the two uses' gradients (candle's own
// backward added the rows into the head's gradient one by one: the last bits differ).

struct Embedding {
    ids: Vec<u32>,
}

impl candle_core::CustomOp1 for Embedding {
    fn name(&self) -> &'static str {
        "fused-embedding"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::span("embedding.fwd", 0.0);
        let table = data(s, l, self.name())?;
        let &[v, h] = l.dims() else { bail!("{}: expects a [vocab, hidden] table, got {:?}", self.name(), l.dims()) };
        if let Some(&bad) = self.ids.iter().find(|&&id| id as usize >= v) {
            bail!("{}: token id {bad} is outside the table's {v} rows", self.name());
        }
        let per = rows_per_task(h);
        let out = par_build(self.ids.len() * h, h * per, |c, o| {
            for (row, &id) in o.chunks_exact_mut(h).zip(&self.ids[c * per..]) {
                row.copy_from_slice(&table[id as usize * h..(id as usize + 1) * h]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((self.ids.len(), h))))
    }

    fn bwd(&self, table: &Tensor, _out: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let _t = crate::profile::span("embedding.bwd", 0.0);
        let (v, h) = table.dims2()?;
        // Positions grouped by token id, each group in position order (a counting sort).
        let mut first = vec![0usize; v + 1];
        for &id in &self.ids {
            first[id as usize + 1] += 1;
        }
        for i in 0..v {
            first[i + 1] += first[i];
        }
        let mut next = first.clone();
        let mut positions = vec![0usize; self.ids.len()];
        for (p, &id) in self.ids.iter().enumerate() {
            positions[next[id as usize]] = p;
            next[id as usize] += 1;
        }
        let per = rows_per_task(h);
        let dw = with_data(&[g], self.name(), |s| {
            let g = s[0];
            Ok(par_build(v * h, h * per, |c, o| {
                for (i, row) in o.chunks_exact_mut(h).enumerate() {
                    let id = c * per + i;
                    for &p in &positions[first[id]..first[id + 1]] {
                        for (d, &x) in row.iter_mut().zip(&g[p * h..(p + 1) * h]) {
                            *d += x;
                        }
                    }
                }
            }))
        })?;
        Ok(Some(Tensor::from_vec(dw, (v, h), table.device())?))
    }
}

/// Rows of `table: [V, H]` for `ids` (u32, any shape) → `[ids…, H]` (the caller checks [`applies`]).
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let mut shape = ids.dims().to_vec();
    shape.push(table.dim(1)?);
    let ids = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    table.contiguous()?.apply_op1(Embedding { ids })?.reshape(shape)
}
