//! `y = x·Wᵀ` on the CPU for few rows of `x` (a decode step: one row per running sequence).
//!
//! candle hands `x·Wᵀ` to the `gemm` crate with a row-major output, for which gemm runs at about half
//! its speed when `x` has few rows, and always splits the work over threads, which for the small
//! matrices of a decode step costs more than it saves (measured on the bench model, 16 rows:
//! 256×256 in 37 µs on one thread vs 73 µs on two; `cargo run --release -p crossfeed-model --example
//! decode_ops`). Here gemm computes `yᵀ = W·xᵀ` (its fast orientation), on several threads only when
//! `W` is large, and the small `yᵀ` is transposed back. The op has a backward pass, so it is safe in
//! a training graph too.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// At most this many rows take this path; above it candle's own matmul is as fast or faster.
pub(crate) const MAX_ROWS: usize = 64;
/// `W` with at least this many elements is multiplied on all threads.
const PARALLEL_ELEMS: usize = 1 << 17;

struct SkinnyLinear;

impl CustomOp2 for SkinnyLinear {
    fn name(&self) -> &'static str {
        "skinny-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            candle_core::bail!("skinny-linear: f32 only");
        };
        let ([m, k], [n, k2]) = (xl.dims(), wl.dims()) else {
            candle_core::bail!("skinny-linear: expects 2-d x and W, got {:?} and {:?}", xl.dims(), wl.dims());
        };
        let (m, k, n) = (*m, *k, *n);
        if k != *k2 {
            candle_core::bail!("skinny-linear: x is [{m}, {k}] but W is [{n}, {k2}]");
        }
        let (xs0, xs1) = (xl.stride()[0] as isize, xl.stride()[1] as isize);
        let (ws0, ws1) = (wl.stride()[0] as isize, wl.stride()[1] as isize);
        let x = &x[xl.start_offset()..];
        let w = &w[wl.start_offset()..];
        let mut yt = vec![0f32; n * m];
        let par = if n * k >= PARALLEL_ELEMS && rayon::current_num_threads() > 1 {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        } else {
            gemm::Parallelism::None
        };
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: yt holds n×m elements written with strides (m, 1); W is read at i·ws0 + j·ws1 for
            // i < n, j < k and x at j·xs0 + l·xs1 for j < m, l < k, all inside the slices because the
            // layouts describe tensors of those shapes within their storage.
            unsafe {
                gemm::gemm(
                    n,
                    m,
                    k,
                    yt.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    w.as_ptr(),
                    ws1,
                    ws0,
                    x.as_ptr(),
                    xs0,
                    xs1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        Ok((CpuStorage::F32(transpose(yt, n, m)), Shape::from((m, n))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(crate::cuda_rules::matmul(grad_y, w)?), Some(crate::cuda_rules::matmul(&grad_y.t()?, x)?)))
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major, in blocks so both sides stay in cache. A
/// single row or column is its own transpose (a one-sequence decode step: no copy).
fn transpose(a: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
    if cols == 1 || rows == 1 {
        return a;
    }
    const BLOCK: usize = 32;
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        for c in 0..cols {
            let dst = &mut out[c * rows + r0..c * rows + r1];
            for (d, r) in dst.iter_mut().zip(r0..r1) {
                *d = a[r * cols + c];
            }
        }
    }
    out
}

/// `x·Wᵀ` for `x: [m, k]`, `w: [n, k]` → `[m, n]`; the skinny path when it applies, else candle's matmul.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let m = x.dim(0)?;
    if crate::fastpath::cpu_fast(x.device()) && x.dtype() == candle_core::DType::F32 && w.dtype() == x.dtype() && m <= MAX_ROWS {
        x.apply_op2(w, SkinnyLinear)
    } else {
        crate::cuda_rules::matmul(x, &w.t()?)
    }
}
