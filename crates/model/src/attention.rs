//! Scaled dot-product attention on the CPU as one differentiable op: per (sequence, head), `S = q·kᵀ`,
//! `P = softmax(scale·S + bias)` and `O = P·v` by direct `gemm` calls, one head per rayon task; the
//! backward pass is the four gemm products of the textbook derivation. The composed version
//! (`ops::attention`'s generic twin) runs candle's batched matmul — a loop over heads that splits every
//! small product over all threads — and keeps the raw scores, the scaled, masked and exponentiated copies
//! alive for backprop; this one keeps only each row's max and 1/sum, as torch's flash kernels keep a
//! log-sum-exp, and the backward pass recomputes `P` from them with the forward's own instructions (same
//! bits, one more `q·kᵀ` per head: ~1% of an OPT-350M step; keeping `P` held 805 MB there). The output is written
//! as `[B, Tq, H, D]`, the layout the output projection reads, so merging the heads needs no copy.
//! Grouped-query attention reads KV head `h / (Hq / Hkv)` in place, as `repeat_kv` would.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::simd;

/// A raw pointer that rayon tasks may share: each task writes only its own block (a (sequence, head)
/// block here, a block of rows or columns in `linear.rs`).
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: the tasks write disjoint blocks of the buffer the pointer addresses (see the call sites).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Through a method, so closures capture the `Shared` (Send + Sync), not its raw-pointer field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A strided 4-d operand: data, start offset and element strides.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    off: usize,
    st: [usize; 4],
}

impl View<'_> {
    /// Pointer to the `[T, D]` block of sequence `b`, head `h`.
    fn block(&self, b: usize, h: usize) -> *const f32 {
        self.data[self.off + b * self.st[0] + h * self.st[1]..].as_ptr()
    }
}

fn view<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<View<'a>> {
    let CpuStorage::F32(data) = s else { bail!("fused-attention: {what} must be f32") };
    let st = l.stride();
    if l.dims().len() != 4 {
        bail!("fused-attention: {what} must be [B, H, T, D], got {:?}", l.dims());
    }
    Ok(View { data, off: l.start_offset(), st: [st[0], st[1], st[2], st[3]] })
}

/// `dst[m×n] = a[m×k]·b[k×n]` (or `+=` with `accumulate`), operands as (pointer, row stride, column
/// stride), on the calling thread.
///
/// # Safety
/// Every operand must address valid memory for its shape and strides; `dst` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (d_rs, d_cs): (usize, usize),
    accumulate: bool,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let i = |x: usize| x as isize;
    gemm::gemm(
        m,
        n,
        k,
        dst,
        i(d_cs),
        i(d_rs),
        accumulate,
        a,
        i(a_cs),
        i(a_rs),
        b,
        i(b_cs),
        i(b_rs),
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

struct Attention {
    scale: f32,
    /// `[B, 1, Tq, Tk]` additive mask, contiguous.
    bias: Tensor,
    /// Each row's softmax max and 1/sum, `[B, Hq, Tq, 2]`, kept by the forward pass for the backward
    /// pass (taken by it).
    stats: Mutex<Option<Vec<f32>>>,
    keep_stats: bool,
}

struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    tq: usize,
    tk: usize,
    d: usize,
}

impl Attention {
    fn dims(q: &[usize], k: &[usize], v: &[usize]) -> Result<Dims> {
        let (&[b, hq, tq, d], &[kb, hkv, tk, kd]) = (q, k) else { bail!("fused-attention: q {q:?}, k {k:?}") };
        if kb != b || kd != d || v != k || hkv == 0 || hq % hkv != 0 {
            bail!("fused-attention: q {q:?}, k {k:?}, v {v:?} do not fit");
        }
        Ok(Dims { b, hq, hkv, tq, tk, d })
    }

    /// `scale·q·kᵀ + bias` of sequence `bi`, query head `h` into `p` (`[tq, tk]`).
    ///
    /// # Safety
    /// `q` and `k` must describe their storages and hold sequence `bi`, heads `h` and `h / group`.
    unsafe fn scores(&self, p: &mut [f32], q: &View, k: &View, bias: &[f32], (bi, h, group): (usize, usize, usize), (tq, tk, d): (usize, usize, usize)) {
        mm((tq, tk, d), p.as_mut_ptr(), (tk, 1), false, q.block(bi, h), (q.st[2], q.st[3]), k.block(bi, h / group), (k.st[3], k.st[2]));
        simd::dispatch(#[inline(always)] || {
            for (i, row) in p.chunks_exact_mut(tk).enumerate() {
                let brow = &bias[(bi * tq + i) * tk..(bi * tq + i + 1) * tk];
                for (x, &m) in row.iter_mut().zip(brow) {
                    *x = *x * self.scale + m;
                }
            }
        });
    }

    /// Scores → probabilities in place, each row's `[max, 1/sum]` into `stats` (`[tq, 2]`).
    fn softmax(p: &mut [f32], stats: &mut [f32], tk: usize) {
        simd::dispatch(#[inline(always)] || {
            for (row, st) in p.chunks_exact_mut(tk).zip(stats.chunks_exact_mut(2)) {
                let max = simd::max(row);
                for x in row.iter_mut() {
                    *x = simd::exp(*x - max);
                }
                let inv = (1.0 / simd::sum_map(row, |x| x)) as f32;
                for x in row.iter_mut() {
                    *x *= inv;
                }
                st.copy_from_slice(&[max, inv]);
            }
        });
    }

    /// Scores → the probabilities [`Self::softmax`] made from them, from its `stats`: the same
    /// instructions on the same values, so the same bits.
    fn softmax_again(p: &mut [f32], stats: &[f32], tk: usize) {
        simd::dispatch(#[inline(always)] || {
            for (row, st) in p.chunks_exact_mut(tk).zip(stats.chunks_exact(2)) {
                let (max, inv) = (st[0], st[1]);
                for x in row.iter_mut() {
                    *x = simd::exp(*x - max);
                }
                for x in row.iter_mut() {
                    *x *= inv;
                }
            }
        });
    }

    fn with_bias<R>(&self, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
        let (s, l) = self.bias.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(data)), Some((a, e))) = (&*s, l.contiguous_offsets()) else {
            bail!("fused-attention: the bias must be a contiguous f32 CPU tensor")
        };
        f(&data[a..e])
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Dims { b, hq, hkv, tq, tk, d } = Self::dims(ql.dims(), kl.dims(), vl.dims())?;
        let (q, k, v) = (view(qs, ql, "q")?, view(ks, kl, "k")?, view(vs, vl, "v")?);
        let _t = crate::profile::span("attention.fwd", 4.0 * (b * hq * tq * tk * d) as f64);
        let group = hq / hkv;
        let mut stats = vec![0f32; b * hq * tq * 2];
        let mut out = crate::fused::zeroed(b * tq * hq * d);
        let out_ptr = Shared(out.as_mut_ptr());
        self.with_bias(|bias| {
            if bias.len() != b * tq * tk {
                bail!("fused-attention: bias has {} elements, expected [{b}, 1, {tq}, {tk}]", bias.len());
            }
            stats.par_chunks_mut((tq * 2).max(1)).enumerate().for_each_init(
                || vec![0f32; tq * tk],
                |p, (bh, st)| {
                    let (bi, h) = (bh / hq, bh % hq);
                    // SAFETY: q, k, v blocks lie inside their storages (their layouts describe them); p is
                    // this task's scratch; the output block (row stride hq·d, offset bi·tq·hq·d + h·d) is
                    // written by this task only.
                    unsafe { self.scores(p, &q, &k, bias, (bi, h, group), (tq, tk, d)) };
                    Self::softmax(p, st, tk);
                    unsafe {
                        let o = out_ptr.get().add(bi * tq * hq * d + h * d);
                        mm((tq, d, tk), o, (hq * d, 1), false, p.as_ptr(), (tk, 1), v.block(bi, h / group), (v.st[2], v.st[3]));
                    }
                },
            );
            Ok(())
        })?;
        if self.keep_stats {
            *self.stats.lock().map_err(|_| candle_core::Error::Msg("fused-attention: poisoned lock".into()))? = Some(stats);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, tq, hq, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { b, hq, hkv, tq, tk, d } = Self::dims(q.dims(), k.dims(), v.dims())?;
        let _t = crate::profile::span("attention.bwd", 8.0 * (b * hq * tq * tk * d) as f64);
        let group = hq / hkv;
        let stats = self.stats.lock().map_err(|_| candle_core::Error::Msg("fused-attention: poisoned lock".into()))?.take();
        let Some(stats) = stats else { bail!("fused-attention: backward ran twice or without a recorded forward") };
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs)) = (&*gs, &*qs, &*ks, &*vs) else {
            bail!("fused-attention: CPU tensors only")
        };
        let (g, qv, kv, vv) = (view(gs, gl, "grad")?, view(qs, ql, "q")?, view(ks, kl, "k")?, view(vs, vl, "v")?);
        let mut dq = crate::fused::zeroed(b * hq * tq * d);
        let mut dk = crate::fused::zeroed(b * hkv * tk * d);
        let mut dv = crate::fused::zeroed(b * hkv * tk * d);
        let dq_ptr = Shared(dq.as_mut_ptr());
        // One task per (sequence, KV head): the query heads of a group accumulate into the same dk, dv.
        self.with_bias(|bias| {
            dk.par_chunks_mut((tk * d).max(1)).zip(dv.par_chunks_mut((tk * d).max(1))).enumerate().for_each(|(bk, (dk, dv))| {
                let (bi, kh) = (bk / hkv, bk % hkv);
                let mut ds = vec![0f32; tq * tk];
                let mut p = vec![0f32; tq * tk];
                for (j, h) in (kh * group..(kh + 1) * group).enumerate() {
                    let bh = bi * hq + h;
                    // SAFETY: as in the forward pass; p and ds are task-local, dk/dv are this task's
                    // blocks, and the dq block of (bi, h) is written by this task only.
                    unsafe { self.scores(&mut p, &qv, &kv, bias, (bi, h, group), (tq, tk, d)) };
                    Self::softmax_again(&mut p, &stats[bh * tq * 2..(bh + 1) * tq * 2], tk);
                    // dO for (bi, h): rows of the [B, Tq, Hq, D] gradient, row stride hq·d.
                    let go = g.data[g.off + bi * tq * hq * d + h * d..].as_ptr();
                    unsafe {
                        mm((tq, tk, d), ds.as_mut_ptr(), (tk, 1), false, go, (hq * d, 1), vv.block(bi, kh), (vv.st[3], vv.st[2]));
                        mm((tk, d, tq), dv.as_mut_ptr(), (d, 1), j > 0, p.as_ptr(), (1, tk), go, (hq * d, 1));
                    }
                    simd::dispatch(#[inline(always)] || {
                        for (row, p) in ds.chunks_exact_mut(tk).zip(p.chunks_exact(tk)) {
                            let dot = simd::sum_zip(row, p, |a, b| a * b) as f32;
                            for (x, &p) in row.iter_mut().zip(p) {
                                *x = self.scale * p * (*x - dot);
                            }
                        }
                    });
                    unsafe {
                        let dqb = dq_ptr.get().add(bh * tq * d);
                        mm((tq, d, tk), dqb, (d, 1), false, ds.as_ptr(), (tk, 1), kv.block(bi, kh), (kv.st[2], kv.st[3]));
                        mm((tk, d, tq), dk.as_mut_ptr(), (d, 1), j > 0, ds.as_ptr(), (1, tk), qv.block(bi, h), (qv.st[2], qv.st[3]));
                    }
                }
            });
            Ok(())
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `softmax(scale·q·kᵀ + bias)·v` for `q: [B, Hq, Tq, D]`, `k, v: [B, Hkv, Tk, D]` (any strides),
/// `bias: [B, 1, Tq, Tk]` → `[B, Hq, Tq, D]` (a transposed view of a contiguous `[B, Tq, Hq, D]`).
/// The caller checks [`crate::fused::applies`] on q, k and v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let keep_stats = q.track_op() || k.track_op() || v.track_op();
    let op = Attention { scale: scale as f32, bias: bias.contiguous()?, stats: Mutex::new(None), keep_stats };
    q.apply_op3(k, v, op)?.transpose(1, 2)
}
