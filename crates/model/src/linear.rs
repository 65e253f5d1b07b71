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

fn par(flops: usize) -> gemm::Parallelism {
    let n = rayon::current_num_threads();
    // Below ~1 MFLOP a second thread costs more than it saves.
    if n > 1 && flops >= 1 << 20 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst[m×n] (=|+=) a·b` with (row stride, column stride) per operand; dst is contiguous `[m, n]`.
#[allow(clippy::too_many_arguments)]
fn mm(dst: &mut [f32], m: usize, n: usize, k: usize, accumulate: bool, a: (&[f32], isize, isize), b: (&[f32], isize, isize)) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: dst holds m·n elements written with strides (n, 1); a is read at i·rs + j·cs for i < m,
    // j < k and b at j·rs + l·cs for j < k, l < n, inside their slices because the callers build them
    // from layouts of tensors with those shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.0.as_ptr(),
            a.2,
            a.1,
            b.0.as_ptr(),
            b.2,
            b.1,
            1.0,
            1.0,
            false,
            false,
            false,
            par(2 * m * n * k),
        );
    }
}

fn forward(x: &Mat, w: &Mat, bias: Option<&[f32]>, relu: bool) -> Result<(CpuStorage, Shape)> {
    if x.cols != w.cols {
        bail!("fused-linear: x is [{}, {}] but W is [{}, {}]", x.rows, x.cols, w.rows, w.cols);
    }
    let (m, n, k) = (x.rows, w.rows, x.cols);
    let mut y = vec![0f32; m * n];
    if let Some(b) = bias {
        if b.len() != n {
            bail!("fused-linear: bias has {} elements for {n} outputs", b.len());
        }
        y.par_chunks_mut(n.max(1)).for_each(|row| row.copy_from_slice(&b[..n]));
    }
    // Wᵀ: element (j, l) = W[l, j].
    mm(&mut y, m, n, k, bias.is_some(), (x.data, x.rs, x.cs), (w.data, w.cs, w.rs));
    if relu {
        y.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
    }
    Ok((CpuStorage::F32(y), Shape::from((m, n))))
}

/// (dx, dW, db) for `g = ∂L/∂y`; with `relu`, `y` is the activated output and `g` is masked by `y > 0`.
fn backward(x: &Tensor, w: &Tensor, g: &Tensor, with_bias: bool, relu: Option<&Tensor>) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let g = match relu {
        Some(y) => crate::fused::relu_grad(y, g)?,
        None => g.contiguous()?,
    };
    let (gs, gl) = g.storage_and_layout();
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(gs), Storage::Cpu(xs), Storage::Cpu(ws)) = (&*gs, &*xs, &*ws) else { bail!("fused-linear: CPU tensors only") };
    let (g, xm, wm) = (mat(gs, gl, "grad")?, mat(xs, xl, "x")?, mat(ws, wl, "W")?);
    let (m, n, k) = (xm.rows, wm.rows, xm.cols);
    let mut dx = vec![0f32; m * k];
    mm(&mut dx, m, k, n, false, (g.data, g.rs, g.cs), (wm.data, wm.rs, wm.cs));
    let mut dw = vec![0f32; n * k];
    // dW = gᵀ·x, written [out, in] row-major.
    mm(&mut dw, n, k, m, false, (g.data, g.cs, g.rs), (xm.data, xm.rs, xm.cs));
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
