//! `y = x·Wᵀ + b` on the CPU for many rows (training, prefill) as one differentiable op over direct `gemm`
//! calls. candle's composed version (`x.matmul(&w.t())` then `broadcast_add`) makes the bias add and its
//! backward (a row sum) separate passes over `y`, and its matmul backward returns `dW` as a transposed
//! view of a `[in, out]` product, which every later add (the tied head's two gradients) and the
//! optimizer then read with a column stride. Here the bias is the initial value of the output that
//! gemm accumulates into, and `dW` is written `[out, in]` row-major by gemm directly.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

fn mat<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Mat<'a>> {
    let CpuStorage::F32(v) = s else { bail!("fused-linear: {what} must be f32") };
    let (&[rows, cols], &[rs, cs]) = (l.dims(), l.stride()) else { bail!("fused-linear: {what} must be 2-d, got {:?}", l.dims()) };
    Ok(Mat { data: &v[l.start_offset()..], rows, cols, rs: rs as isize, cs: cs as isize })
}

/// Blocks of the output that run as separate single-threaded `gemm` calls, one rayon task each.
/// gemm's own threading (`Parallelism::Rayon`) took the bench model's linears from 1 to 2 threads at
/// only 1.33x (Sapphire Rapids, `bench train --profile`): it synchronises its threads around every
/// packed block. Independent blocks scale with the cores, and give the same bits as one call: gemm's
/// depth blocking (`kc`) depends on k and the caches only, so every output element sums its products
/// in the same order whichever block holds it. Blocks keep at least `MIN_BLOCK` rows or columns, so a
/// block never drops into gemm's path for outputs of at most 64 x 64, which blocks the depth differently.
const MIN_BLOCK: usize = 128;

/// How many blocks to cut the split dimension (`len`) into: one per thread, none below ~1 MFLOP of
/// work (a second thread costs more than it saves there) or `MIN_BLOCK` long.
fn blocks(len: usize, flops: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads < 2 || flops < 1 << 20 {
        return 1;
    }
    threads.min(len / MIN_BLOCK).max(1)
}

/// `a·b` as a new contiguous `[m, n]`, with no zeroing pass first: gemm writes every element of its
/// output and, told not to accumulate, reads none. (Zeroing the outputs was ~9% of a train step's CPU
/// time, `perf` at the bench shape, and on one thread: calloc's memset.)
fn product(m: usize, n: usize, k: usize, a: (&[f32], isize, isize), b: (&[f32], isize, isize)) -> Vec<f32> {
    if k == 0 {
        return vec![0f32; m * n];
    }
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: `out` has capacity for m·n elements, all of which gemm writes (k > 0, no accumulation)
    // before the length is set; operands as in `mm_raw`.
    unsafe {
        mm_raw(out.as_mut_ptr(), m, n, k, false, a, b);
        out.set_len(m * n);
    }
    out
}

/// `dst[m×n] += a·b` into an initialised contiguous `[m, n]` (a bias-filled output).
fn mm_acc(dst: &mut [f32], m: usize, n: usize, k: usize, a: (&[f32], isize, isize), b: (&[f32], isize, isize)) {
    assert_eq!(dst.len(), m * n, "fused-linear: output buffer");
    // SAFETY: dst is a live [m, n] buffer; operands as in `mm_raw`.
    unsafe { mm_raw(dst.as_mut_ptr(), m, n, k, true, a, b) }
}

/// `dst[m×n] (=|+=) a·b` with (row stride, column stride) per operand; dst is contiguous `[m, n]`.
/// Split over rows when `m >= n`, else over columns (the longer side keeps the blocks largest).
///
/// # Safety
/// `dst` is valid for writes of m·n elements (and reads, with `accumulate`); `a` holds the `[m, k]`
/// operand and `b` the `[k, n]` one at the given strides.
#[allow(clippy::too_many_arguments)]
unsafe fn mm_raw(dst: *mut f32, m: usize, n: usize, k: usize, accumulate: bool, a: (&[f32], isize, isize), b: (&[f32], isize, isize)) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    let parts = blocks(len, 2 * m * n * k);
    // A multiple of 16 per block (a whole number of gemm's register tiles), the last block the rest.
    let per = len.div_ceil(parts).next_multiple_of(16);
    // Each task writes only its own rows (or columns) of the output.
    let dst = crate::attention::Shared(dst);
    let run = |start: usize| {
        let size = per.min(len - start);
        // SAFETY: dst holds m·n elements written with strides (n, 1); this block is rows (or columns)
        // start..start+size of it, written by this task only. a is read at i·rs + j·cs for i < m, j < k
        // and b at j·rs + l·cs for j < k, l < n, inside their slices because the callers build them from
        // layouts of tensors with those shapes; the block's operand offsets stay within those ranges.
        unsafe {
            let (rows, cols, d, a_ptr, b_ptr) = if by_rows {
                (size, n, dst.get().add(start * n), a.0.as_ptr().offset(start as isize * a.1), b.0.as_ptr())
            } else {
                (m, size, dst.get().add(start), a.0.as_ptr(), b.0.as_ptr().offset(start as isize * b.2))
            };
            gemm::gemm(rows, cols, k, d, 1, n as isize, accumulate, a_ptr, a.2, a.1, b_ptr, b.2, b.1, 1.0, 1.0, false, false, false, gemm::Parallelism::None);
        }
    };
    if parts == 1 {
        run(0);
    } else {
        (0..len).into_par_iter().step_by(per).for_each(run);
    }
}

fn forward(x: &Mat, w: &Mat, bias: Option<&[f32]>, relu: bool) -> Result<(CpuStorage, Shape)> {
    if x.cols != w.cols {
        bail!("fused-linear: x is [{}, {}] but W is [{}, {}]", x.rows, x.cols, w.rows, w.cols);
    }
    let (m, n, k) = (x.rows, w.rows, x.cols);
    let _t = crate::profile::span("linear.fwd", 2.0 * (m * n * k) as f64);
    // Wᵀ: element (j, l) = W[l, j].
    let (xa, wt) = ((x.data, x.rs, x.cs), (w.data, w.cs, w.rs));
    let mut y = match bias {
        Some(b) => {
            if b.len() != n {
                bail!("fused-linear: bias has {} elements for {n} outputs", b.len());
            }
            let mut y = vec![0f32; m * n];
            y.par_chunks_mut(n.max(1)).for_each(|row| row.copy_from_slice(&b[..n]));
            mm_acc(&mut y, m, n, k, xa, wt);
            y
        }
        None => product(m, n, k, xa, wt),
    };
    if relu {
        y.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
    }
    Ok((CpuStorage::F32(y), Shape::from((m, n))))
}

/// (dx, dW, db) for `g = ∂L/∂y`; with `relu`, `y` is the activated output and `g` is masked by `y > 0`.
fn backward(x: &Tensor, w: &Tensor, g: &Tensor, with_bias: bool, relu: Option<&Tensor>) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (&[m, k], &[n, _]) = (x.dims(), w.dims()) else { bail!("fused-linear: x is {:?}, W is {:?}", x.dims(), w.dims()) };
    let _t = crate::profile::span("linear.bwd", 4.0 * (m * n * k) as f64);
    let g = match relu {
        Some(y) => crate::fused::relu_grad(y, g)?,
        None => g.contiguous()?,
    };
    let (gs, gl) = g.storage_and_layout();
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(gs), Storage::Cpu(xs), Storage::Cpu(ws)) = (&*gs, &*xs, &*ws) else { bail!("fused-linear: CPU tensors only") };
    let (g, xm, wm) = (mat(gs, gl, "grad")?, mat(xs, xl, "x")?, mat(ws, wl, "W")?);
    let dx = product(m, k, n, (g.data, g.rs, g.cs), (wm.data, wm.rs, wm.cs));
    // dW = gᵀ·x, written [out, in] row-major.
    let dw = product(n, k, m, (g.data, g.cs, g.rs), (xm.data, xm.rs, xm.cs));
    let db = with_bias.then(|| {
        let rows_per = (1usize << 14) / n.max(1) + 1;
        (0..m)
            .into_par_iter()
            .step_by(rows_per)
            .map(|r0| {
                let mut acc = vec![0f32; n];
                for r in r0..(r0 + rows_per).min(m) {
                    let row = &g.data[r * g.rs as usize..r * g.rs as usize + n];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                acc
            })
            .collect::<Vec<_>>()
    });
    // Summed in row order whatever the thread count (see `fused::sum_in_order`); no rows: zeros.
    let db = db.map(|parts| if parts.is_empty() { vec![0f32; n] } else { crate::fused::sum_in_order(parts) });
    let dev = x.device();
    Ok((
        Tensor::from_vec(dx, (m, k), dev)?,
        Tensor::from_vec(dw, (n, k), dev)?,
        db.map(|d| Tensor::from_vec(d, n, dev)).transpose()?,
    ))
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        forward(&mat(xs, xl, "x")?, &mat(ws, wl, "W")?, None, false)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, g, false, None)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// With `relu`, `y = max(0, x·Wᵀ + b)` (OPT's fc1): the pre-activation is never stored.
struct LinearBias {
    relu: bool,
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "fused-linear-bias"
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
        let CpuStorage::F32(b) = bs else { bail!("fused-linear: bias must be f32") };
        let Some((b0, b1)) = bl.contiguous_offsets() else { bail!("fused-linear: bias must be contiguous") };
        forward(&mat(xs, xl, "x")?, &mat(ws, wl, "W")?, Some(&b[b0..b1]), self.relu)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(x, w, g, true, self.relu.then_some(y))?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// `x: [m, k]`, `w: [n, k]`, `bias: [n]` → `[m, n]`, then ReLU if `relu` (the caller checks
/// [`crate::fused::applies`]).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    match bias {
        Some(b) => x.apply_op3(w, &b.contiguous()?, LinearBias { relu }),
        None if relu => crate::fused::relu(&x.apply_op2(w, Linear)?),
        None => x.apply_op2(w, Linear),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn on_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f)
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// y, dx, dW, db of one linear with a bias, as bit patterns.
    fn run(m: usize, n: usize, k: usize) -> Vec<Vec<u32>> {
        let dev = Device::Cpu;
        let x = Var::from_vec(values(m * k, 1), (m, k), &dev).unwrap();
        let w = Var::from_vec(values(n * k, 2), (n, k), &dev).unwrap();
        let b = Var::from_vec(values(n, 3), n, &dev).unwrap();
        let g = Tensor::from_vec(values(m * n, 4), (m, n), &dev).unwrap();
        let y = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), false).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
        vec![bits(&y), bits(grads.get(&x).unwrap()), bits(grads.get(&w).unwrap()), bits(grads.get(&b).unwrap())]
    }

    /// The blocks each thread computes give the bits of one gemm call, whichever side is split, with
    /// ragged last blocks and a depth past gemm's 512-wide depth blocks; and the product is the product.
    #[test]
    fn split_gemm_gives_the_bits_of_one_call() {
        for (m, n, k) in [(300, 1000, 70), (1000, 300, 600), (129, 4100, 64), (520, 257, 33)] {
            let one = on_threads(1, || run(m, n, k));
            for threads in [2, 3] {
                assert!(on_threads(threads, || run(m, n, k)) == one, "{m}x{n}x{k}: {threads} threads differ from 1");
            }
            // y = x·Wᵀ + b against a plain f64 dot product at a few entries.
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
                let want = b[j] as f64 + (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum::<f64>();
                let got = f32::from_bits(one[0][i * n + j]) as f64;
                assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{m}x{n}x{k} y[{i},{j}] = {got}, want {want}");
            }
        }
    }
}
