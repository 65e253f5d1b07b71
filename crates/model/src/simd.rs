//! Row kernels shared by the fused CPU ops: a branch-free `exp`, max and sums written so that LLVM
//! vectorises them, and [`dispatch`], which runs a closure compiled for AVX-512 (or AVX2 + FMA) when the
//! CPU has it. The crate is built for baseline x86-64 (SSE2), so without the dispatch these loops would be
//! 4 lanes wide; the check is at run time, so the binary still runs on CPUs without AVX-512.

/// Runs `f` with the widest vector instructions this CPU offers (AVX-512 + FMA, else AVX2 + FMA, else as built).
/// `f` and the `#[inline(always)]` kernels it calls are compiled into the target-feature function —
/// only if `f` is marked `#[inline(always)]` itself (`dispatch(#[inline(always)] || ..)`): LLVM inlines
/// bottom-up by size, so a closure that grew by inlining its kernels otherwise stays a function of its
/// own, compiled for baseline x86-64 (SSE, and every `mul_add` a call to libm's `fmaf`). Every caller
/// had that until 2026-12-06: the fused kernels, attention's softmax and cross entropy ran SSE code.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX-512F and FMA (checked just above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
// FMA named too, so that `mul_add` in these kernels is one instruction, never a call to libm's `fmaf`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

const LANES: usize = 16;

/// 1.5·2²³: adding it to an integer-valued float below 2²² in magnitude leaves that integer in the low
/// mantissa bits ([`rounded_to_int`]); adding and subtracting it rounds a float to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// The integer `n` of `t = n + ROUND`, read from `t`'s bits: `t` and `ROUND` share an exponent, so their
/// bits differ by `n`. Rust's `n as i32` is the same number but saturates and maps NaN to 0, which LLVM
/// cannot vectorise: it took each exp lane by lane (convert, two compares, two conditional moves), the
/// exp-heavy kernels (cross entropy, softmax, SiLU) 2–4× slower than their vector code.
#[inline(always)]
fn rounded_to_int(t: f32) -> i32 {
    (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32)
}

/// 2^e as a float, for e in −126..=127 (other e give other bits: callers replace those results).
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits((e.wrapping_add(0x7f) as u32) << 23)
}

/// `e^x` in f32 to ~2 ulp (Cephes `expf`: Cody–Waite reduction, degree-6 polynomial), branch-free so
/// that loops over it vectorise (`f32::exp` is a libm call per element). Below −87.3 it is 0, as
/// `f32::exp` underflows there; above 88 it saturates at e^88.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let scale = pow2(rounded_to_int(t));
    if x < -87.3 {
        0.0
    } else {
        e * scale
    }
}

/// Largest element (−∞ for an empty row).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

/// Σ f(x[i]) accumulated in 16 f32 lanes, the lanes summed in f64.
#[inline(always)]
pub fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail
}

/// Σ f(a[i], b[i]) over two equally long rows, as [`sum_map`].
#[inline(always)]
pub fn sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &u), &v) in acc.iter_mut().zip(x).zip(y) {
            *s += f(u, v);
        }
    }
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(&u, &v)| f(u, v) as f64).sum();
    acc.iter().map(|&s| s as f64).sum::<f64>() + tail
}

/// Σ f(x[i]) in f32 in the order torch's CPU `sum` adds a contiguous row (ATen SumKernel.cpp,
/// `vectorized_inner_sum`), so that a norm's statistics carry torch's bits: under autocast an f32
/// ulp of the RMS moves which way the normalised values round to bf16/f16 at the next linear, and
/// on the fixtures those flips are a visible part of the distance from torch. The order: 8 lanes
/// (torch runs the AVX2 build of its sum kernel on AVX-512 CPUs too), 4 vectors side by side, their
/// partial sums cascaded every 16 groups, leftover vectors into the first, the four combined in
/// order; then the scalar tail from 0, then the 8 lanes one by one.
#[inline(always)]
pub fn torch_sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const W: usize = 8;
    const ILP: usize = 4;
    const LEVELS: usize = 4;
    let nv = x.len() / W;
    let groups = nv / ILP;
    let power = cascade_power(groups);
    let (step, mask) = (1usize << power, (1usize << power) - 1);
    let mut acc = [[[0f32; W]; ILP]; LEVELS];
    let add = |a: &mut [f32; W], v: usize| {
        for (a, &t) in a.iter_mut().zip(&x[v * W..v * W + W]) {
            *a += f(t);
        }
    };
    let mut i = 0;
    while i + step <= groups {
        for _ in 0..step {
            for k in 0..ILP {
                add(&mut acc[0][k], i * ILP + k);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..ILP {
                let low = std::mem::replace(&mut acc[j - 1][k], [0f32; W]);
                acc[j][k].iter_mut().zip(low).for_each(|(a, b)| *a += b);
            }
            if i & (mask << (j * power)) != 0 {
                break;
            }
        }
    }
    while i < groups {
        for k in 0..ILP {
            add(&mut acc[0][k], i * ILP + k);
        }
        i += 1;
    }
    let mut p = acc[0];
    for level in &acc[1..] {
        for (p, l) in p.iter_mut().zip(level) {
            p.iter_mut().zip(l).for_each(|(a, &b)| *a += b);
        }
    }
    for v in groups * ILP..nv {
        add(&mut p[0], v);
    }
    let [mut lanes, rest @ ..] = p;
    for r in rest {
        lanes.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    let mut s = 0f32;
    for &t in &x[nv * W..] {
        s += f(t);
    }
    lanes.iter().fold(s, |s, &l| s + l)
}

/// ATen's `CeilLog2`: ⌈log₂ n⌉, and 1 for n ≤ 2.
pub(crate) fn aten_ceil_log2(n: usize) -> usize {
    if n <= 2 {
        1
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// log₂ of the block ATen's 4-level cascade sums (`multi_row_sum`, `vectorized_inner_sum`) carry up
/// a level after, for `n` items.
fn cascade_power(n: usize) -> usize {
    (aten_ceil_log2(n) / 4).max(4)
}

/// ATen's `multi_row_sum` for one lane: `get(0..n)` added in order into the first of four levels,
/// each full block of 2^power values carried into the next level up, the levels summed at the end.
fn cascade(n: usize, get: impl Fn(usize) -> f32) -> f32 {
    const LEVELS: usize = 4;
    let power = cascade_power(n);
    let (step, mask) = (1usize << power, (1usize << power) - 1);
    let mut acc = [0f32; LEVELS];
    let mut i = 0;
    while i + step <= n {
        for _ in 0..step {
            acc[0] += get(i);
            i += 1;
        }
        for j in 1..LEVELS {
            acc[j] += acc[j - 1];
            acc[j - 1] = 0.0;
            if i & (mask << (j * power)) != 0 {
                break;
            }
        }
    }
    while i < n {
        acc[0] += get(i);
        i += 1;
    }
    acc[1..].iter().fold(acc[0], |s, &a| s + a)
}

/// Column sums of a row-major `[rows, h]` matrix in the order torch's CPU `sum` reduces leading dims
/// (ATen's `vectorized_outer_sum`, AVX2 build): columns in blocks of 32 each summed over all rows by
/// [`cascade`], the rest by `row_sum` (rows dealt round-robin to 4 partial sums, the leftover rows into
/// the first, the four then added in order). A norm's weight gradient is such a sum.
pub fn torch_col_sums(x: &[f32], h: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if h == 0 {
        return Vec::new();
    }
    let rows = x.len() / h;
    let blocked = h / 32 * 32;
    (0..h)
        .into_par_iter()
        .map(|j| {
            let at = |i: usize| x[i * h + j];
            if j < blocked {
                return cascade(rows, at);
            }
            let groups = rows / 4;
            let mut p: [f32; 4] = std::array::from_fn(|k| cascade(groups, |i| at(4 * i + k)));
            for i in groups * 4..rows {
                p[0] += at(i);
            }
            p[1..].iter().fold(p[0], |s, &a| s + a)
        })
        .collect()
}

/// `e^d` in f32 as torch's vectorised CPU kernels take it (SLEEF's `expf_u10` with FMA, which
/// `Vectorized<float>::exp` calls): within 1 ulp, and 1% of its results differ from the correctly
/// rounded `f32::exp`. Cross entropy's gradient is this exp of the log-probabilities, rounded to
/// bf16/f16 under autocast, so the last bit reaches every later gradient.
#[inline(always)]
#[allow(clippy::excessive_precision)] // SLEEF's constants as published
pub fn sleef_exp(d: f32) -> f32 {
    const R_LN2: f32 = 1.442_695_040_888_963_407_359_924_681_001_892_137;
    const L2U: f32 = 0.693_145_751_953_125;
    const L2L: f32 = 1.428_606_765_330_187_045e-6;
    let q = (d * R_LN2).round_ties_even();
    let s = q.mul_add(-L2U, d);
    let s = q.mul_add(-L2L, s);
    let mut u = 0.000_198_527_617_612_853_646_278_381_f32;
    u = u.mul_add(s, 0.001_393_043_552_525_341_510_772_71);
    u = u.mul_add(s, 0.008_333_360_776_305_198_669_433_59);
    u = u.mul_add(s, 0.041_666_485_369_205_474_853_515_6);
    u = u.mul_add(s, 0.166_666_671_633_720_397_949_219);
    u = u.mul_add(s, 0.5);
    let u = 1.0 + (s * s).mul_add(u, s);
    // ldexp in two steps, so that 2^q never overflows on its own. Where |q| ≥ 2²² (|d| > 2.9e6) the
    // integer is wrong, but the range checks below replace those results.
    let q = rounded_to_int(q + ROUND);
    let u = u * pow2(q >> 1) * pow2(q.wrapping_sub(q >> 1));
    if d < -104.0 {
        0.0
    } else if d > 100.0 {
        f32::INFINITY
    } else {
        u
    }
}

/// `Σ e^(x − max)` over a row as torch's `log_softmax` takes it (`map_reduce_all`, AVX-512): see
/// [`torch_lane_sum_zip`].
#[inline(always)]
pub fn torch_exp_sum(x: &[f32], max: f32) -> f32 {
    torch_lane_sum_zip(x, x, |v, _| sleef_exp(v - max))
}

/// `Σ f(a[i], b[i])` in the order of ATen's `reduce_all` / `map_reduce_all` over an f32 row with
/// 16-lane vectors: lanes seeded with the first vector, later vectors added lane-wise, the tail into
/// the first lanes, the lanes halved pairwise; fewer than 16 values are added in order.
#[inline(always)]
pub fn torch_lane_sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    if n < LANES {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).reduce(|s, t| s + t).unwrap_or(0.0);
    }
    let mut acc = [0f32; LANES];
    acc.iter_mut().zip(&a[..LANES]).zip(&b[..LANES]).for_each(|((s, &x), &y)| *s = f(x, y));
    let full = n / LANES * LANES;
    for (ca, cb) in a[LANES..full].chunks_exact(LANES).zip(b[LANES..full].chunks_exact(LANES)) {
        acc.iter_mut().zip(ca).zip(cb).for_each(|((s, &x), &y)| *s += f(x, y));
    }
    acc.iter_mut().zip(&a[full..]).zip(&b[full..]).for_each(|((s, &x), &y)| *s += f(x, y));
    halve_lanes(&mut acc)
}

/// The lanes of a vector summed as ATen's `vec_reduce_all` does: the upper half added onto the lower,
/// again and again, down to lane 0 (`lanes.len()` a power of two).
#[inline(always)]
pub fn halve_lanes(lanes: &mut [f32]) -> f32 {
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes.first().copied().unwrap_or(0.0)
}

#[cfg(test)]
pub(crate) mod tests {
    /// Every 97th f32 bit pattern (both signs, NaNs and infinities included), then the edges of the
    /// exp kernels' ranges: the inputs their bit-identity tests sweep.
    pub(crate) fn samples() -> impl Iterator<Item = f32> {
        (0..=u32::MAX / 97).map(|i| f32::from_bits(i * 97)).chain([0.0, -0.0, -87.0, -87.3, -104.0, 88.0, 100.0, f32::MIN, f32::MAX, f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
    }

    /// The integer step through `rounded_to_int` gives exactly what `as i32` gave.
    #[test]
    fn exps_keep_the_bits_of_the_as_cast() {
        #[allow(clippy::excessive_precision)]
        fn exp_as_cast(x: f32) -> f32 {
            let xc = x.clamp(-87.0, 88.0);
            let n = (xc * std::f32::consts::LOG2_E + super::ROUND) - super::ROUND;
            let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
            let mut p = 1.987_569_1e-4_f32;
            for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
                p = p * r + c;
            }
            let e = p * r * r + r + 1.0;
            if x < -87.3 {
                0.0
            } else {
                e * f32::from_bits(((n as i32 + 127) as u32) << 23)
            }
        }
        #[allow(clippy::excessive_precision)]
        fn sleef_as_cast(d: f32) -> f32 {
            let q = (d * 1.442_695_040_888_963_407_359_924_681_001_892_137).round_ties_even();
            let s = q.mul_add(-1.428_606_765_330_187_045e-6, q.mul_add(-0.693_145_751_953_125, d));
            let mut u = 0.000_198_527_617_612_853_646_278_381_f32;
            for c in [0.001_393_043_552_525_341_510_772_71, 0.008_333_360_776_305_198_669_433_59, 0.041_666_485_369_205_474_853_515_6, 0.166_666_671_633_720_397_949_219, 0.5] {
                u = u.mul_add(s, c);
            }
            let u = 1.0 + (s * s).mul_add(u, s);
            let q = q as i32;
            let pow2 = |e: i32| f32::from_bits((e.wrapping_add(0x7f) as u32) << 23);
            let u = u * pow2(q >> 1) * pow2(q.wrapping_sub(q >> 1));
            if d < -104.0 {
                0.0
            } else if d > 100.0 {
                f32::INFINITY
            } else {
                u
            }
        }
        for x in samples() {
            assert_eq!(super::exp(x).to_bits(), exp_as_cast(x).to_bits(), "exp({x:e})");
            assert_eq!(super::sleef_exp(x).to_bits(), sleef_as_cast(x).to_bits(), "sleef_exp({x:e})");
        }
    }
}
