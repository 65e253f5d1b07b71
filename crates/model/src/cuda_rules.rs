//! The ops of the device-generic path whose CUDA implementation (candle 0.11.1) is stricter than the CPU
//! one, called through here. When checking is on — inside [`crate::fastpath::with_generic`] (the
//! generic-twin tests) or with `CROSSFEED_CUDA_RULES=1` — each asserts CUDA's precondition on any
//! device, so a CPU test fails where a GPU run would. Off, they are the plain candle op.
//!
//! The rules, with where candle 0.11.1 states them (docs/ARCHITECTURE.md lists them too):
//! - `matmul`: each operand needs a unit stride in one of its two last dims (with the other the row
//!   length), and batch dims that merge into one stride (`cuda_backend/mod.rs` `gemm_config`,
//!   ~1405–1485: `MatMulNonContiguous`). The CPU gemm takes any strides.
//! - `sort_last_dim`: contiguous input; one block per row with `next_pow2(cols) × 4` bytes of shared
//!   memory, never opted in above the 48 KiB default (`sort.rs` ~93–97, kernel `sort.cu`), so rows longer
//!   than 8,192 fail: never sort a vocabulary on the device.
//! - `gather`, `index_select`, `index_add`, `scatter_add`, `slice_set`: contiguous source and indices
//!   (each op's `Map` impl in `cuda_backend/mod.rs`; `slice_set` copies with `copy2d` from a contiguous
//!   source).
//! - `argmax`: the CUDA reduction (`reduce.cu` ~555–597) keeps the index held by the lowest *thread*
//!   among equal maxima, not the lowest index (the CPU kernel and torch return the first): [`argmax`]
//!   is the one argmax of the project, tie-safe on every backend.
//! - element counts: launch sizes and kernel loops are u32 (cudarc `launch.rs` ~31, `unary.cu` ~17,
//!   reduction grids `dst_el as u32`): a tensor of 2³² elements or more is silently wrong.
//!   [`element_count`] refuses the logits of such a batch on every device but the CPU fast path.

use std::sync::OnceLock;

use candle_core::{bail, DType, Result, Tensor, D};

/// The shared memory candle's sort kernel may use per block without an opt-in.
pub const SORT_SHARED_BYTES: usize = 48 * 1024;

fn from_env() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var("CROSSFEED_CUDA_RULES").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on")))
}

/// Whether CUDA's rules are asserted on this thread.
pub fn checking() -> bool {
    crate::fastpath::generic_forced() || from_env()
}

fn contiguous(op: &str, what: &str, t: &Tensor) -> Result<()> {
    if checking() && !t.is_contiguous() {
        bail!("CUDA rule ({op}): {what} must be contiguous, got dims {:?} strides {:?}", t.dims(), t.stride());
    }
    Ok(())
}

/// cuBLAS's layout test for one operand `[.., rows, cols]` (candle's `gemm_config`).
fn gemm_operand_ok(t: &Tensor) -> bool {
    let (d, s) = (t.dims(), t.stride());
    let r = d.len();
    if r < 2 {
        return false;
    }
    let (rows, cols, s2, s1) = (d[r - 2], d[r - 1], s[r - 2], s[r - 1]);
    let plain = (s1 == 1 || cols == 1) && (s2 == cols || rows == 1);
    let transposed = (s1 == rows || cols == 1) && (s2 == 1 || rows == 1);
    let batch = match (&d[..r - 2], &s[..r - 2]) {
        ([], []) | ([_], [_]) => true,
        ([d0, d1], [s0, s1b]) => *s0 == s1b * d1 || *d0 == 1 || *d1 == 1,
        _ => false,
    };
    (plain || transposed) && batch
}

/// `a.matmul(b)`, refusing (when checking) layouts cuBLAS refuses.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if checking() {
        for (what, t) in [("lhs", a), ("rhs", b)] {
            if !gemm_operand_ok(t) {
                bail!("CUDA rule (matmul): {what} dims {:?} strides {:?} is a layout cuBLAS refuses (MatMulNonContiguous); make it contiguous", t.dims(), t.stride());
            }
        }
    }
    a.matmul(b)
}

/// Whether `t` can be a matmul operand on every backend as it is (no copy).
pub fn matmul_ready(t: &Tensor) -> bool {
    gemm_operand_ok(t)
}

/// `x.sort_last_dim(asc)`, refusing (when checking) rows too long for candle's CUDA sort kernel.
pub fn sort_last_dim(x: &Tensor, asc: bool) -> Result<(Tensor, Tensor)> {
    contiguous("sort_last_dim", "input", x)?;
    let cols = x.dims().last().copied().unwrap_or(0);
    if checking() && cols.next_power_of_two() * 4 > SORT_SHARED_BYTES {
        bail!("CUDA rule (sort_last_dim): rows of {cols} need {} bytes of shared memory per block, over CUDA's {SORT_SHARED_BYTES}", cols.next_power_of_two() * 4);
    }
    x.sort_last_dim(asc)
}

pub fn gather(x: &Tensor, ids: &Tensor, dim: usize) -> Result<Tensor> {
    contiguous("gather", "source", x)?;
    contiguous("gather", "indices", ids)?;
    x.gather(ids, dim)
}

pub fn index_select(x: &Tensor, ids: &Tensor, dim: usize) -> Result<Tensor> {
    contiguous("index_select", "source", x)?;
    contiguous("index_select", "indices", ids)?;
    x.index_select(ids, dim)
}

/// `dst.slice_set(src, dim, offset)` (in place).
pub fn slice_set(dst: &Tensor, src: &Tensor, dim: usize, offset: usize) -> Result<()> {
    contiguous("slice_set", "destination", dst)?;
    contiguous("slice_set", "source", src)?;
    dst.slice_set(src, dim, offset)
}

/// The index of the largest value of each row (last dim), `[..]` u32, the *lowest* index among equal
/// maxima as torch and candle's CPU kernel return it. Elsewhere candle's CUDA argmax may return any of
/// the tied indices (bf16 logits tie often), so the generic path takes the max, then the smallest index
/// whose value equals it; the indices come from [`crate::transfer::arange_u32`] (uploaded once).
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    if crate::fastpath::cpu_fast(x.device()) {
        return x.argmax(D::Minus1);
    }
    let v = x.dim(D::Minus1)?;
    let dev = x.device();
    let x = x.contiguous()?;
    let is_max = x.broadcast_eq(&x.max_keepdim(D::Minus1)?)?;
    let idx = crate::transfer::arange_u32(v, dev)?.broadcast_as(x.shape())?;
    let none = Tensor::full(v as u32, x.shape(), dev)?;
    // A row of NaNs has no element equal to its max; its index is clamped into range, not v.
    let last = Tensor::full(v.saturating_sub(1) as u32, (), dev)?;
    is_max.where_cond(&idx, &none)?.min(D::Minus1)?.broadcast_minimum(&last)?.to_dtype(DType::U32)
}

/// CUDA's element limit: candle's kernels index with u32.
pub const MAX_ELEMENTS: u64 = 1 << 32;

/// Refuses (on any device but the CPU fast path, and whenever checking) a tensor of `dims` with 2³²
/// elements or more, naming `what` and the shape: candle's CUDA kernels would compute it wrongly.
pub fn element_count(what: &str, dims: &[usize], device: &candle_core::Device) -> Result<()> {
    let n = dims.iter().map(|&d| d as u128).product::<u128>();
    if n >= MAX_ELEMENTS as u128 && (!crate::fastpath::cpu_fast(device) || checking()) {
        bail!("{what} of shape {dims:?} has {n} elements, past the 2^32 that candle's CUDA kernels index (u32): use a smaller batch");
    }
    Ok(())
}
