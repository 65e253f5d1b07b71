//! Differentiable building blocks. candle's fused `layer_norm`, `rms_norm`, `softmax_last_dim` and
//! `rope` kernels have no backward pass (candle 0.11): gradients would silently stop at them, so every
//! op here is composed of primitive ops that autograd understands — the device-generic path. On the
//! CPU the norms, RoPE, SwiGLU and attention take the project's own fused kernels instead (`fused.rs`,
//! `attention.rs`, with hand-written backward passes), when [`crate::fastpath::cpu_fast`] allows.

use candle_core::{DType, Device, Result, Tensor, D};

/// A linear layer over f32 master weights, cast to the activation dtype at use so that mixed
/// precision keeps the optimizer's copy in f32 (the cast is differentiable).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Reads `weight: [out, in]` (and `bias: [out]`) under `vb`, named as the checkpoint names them.
    pub fn load(vb: candle_nn::VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out, inp), "weight")?;
        let bias = if bias { Some(vb.get(out, "bias")?) } else { None };
        Ok(Self { weight, bias })
    }

    /// `x: [.., in]` → `[.., out]`; `weight: [out, in]` as PyTorch stores it.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// `forward` of `x` cast to `dtype` by a cast of its own, as torch.autocast casts a linear's input at
    /// every call: where one f32 tensor feeds several linears (q/k/v, gate/up), their input gradients
    /// come back through separate casts and are summed in f32, not in `dtype`.
    pub fn forward_as(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        self.forward(&cast(x, dtype)?)
    }

    /// `relu(forward(x))`; on the CPU's many-row path the ReLU is part of the same op.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        if x.dtype() != DType::F32 && crate::fastpath::cpu_fast(x.device()) {
            // torch.autocast on the CPU (oneDNN) multiplies the low-precision values with f32
            // accumulation, bias included, and rounds the output once; so does this (and the f32
            // kernels are the fast ones here). The casts round the gradients where torch's do.
            let low = x.dtype();
            let round = |t: &Tensor| cast(&cast(t, low)?, DType::F32);
            let lin = Linear { weight: round(&self.weight)?, bias: self.bias.as_ref().map(round).transpose()? };
            return cast(&lin.forward_act(&cast(x, DType::F32)?, relu)?, low);
        }
        let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1);
        if crate::fused::applies(x) && self.weight.dtype() == DType::F32 && rows > crate::skinny::MAX_ROWS {
            // Many rows (training, prefill): one gemm with the bias folded in, dW written row-major.
            let (lead, k) = (&x.dims()[..x.rank() - 1], x.dim(candle_core::D::Minus1)?);
            let y = crate::linear::linear(&x.reshape((rows, k))?, &self.weight, self.bias.as_ref(), relu)?;
            let mut shape = lead.to_vec();
            shape.push(self.weight.dim(0)?);
            return y.reshape(shape);
        }
        let y = self.forward_composed(x)?;
        if relu {
            relu_op(&y)
        } else {
            Ok(y)
        }
    }

    fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        if self.weight.dtype() != x.dtype() {
            WEIGHT_CASTS.with(|c| c.set(c.get() + 1));
        }
        let w = cast(&self.weight, x.dtype())?;
        let y = match x.dims() {
            [b, t, k] => crate::skinny::linear(&x.reshape((b * t, *k))?, &w)?.reshape((*b, *t, ()))?,
            [_, _] => crate::skinny::linear(x, &w)?,
            _ => x.broadcast_matmul(&w.t()?)?, // not on any model's path (inputs are 2-d or 3-d)
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&cast(b, x.dtype())?),
            None => Ok(y),
        }
    }
}

/// Rows of `table: [V, H]` for `ids: [B, T]` (u32) → `[B, T, H]`; differentiable in `table`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(table) {
        return crate::fused::embedding(table, ids);
    }
    let (b, t) = ids.dims2()?;
    crate::cuda_rules::index_select(table, &ids.flatten_all()?, 0)?.reshape((b, t, ()))
}

thread_local! {
    static WEIGHT_CASTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Weight casts made by linears on the generic (GPU) path on this thread so far: a frozen model in
/// bf16/f16 makes none per forward (`CausalLm::frozen` casts once), which a test pins.
pub fn weight_casts() -> u64 {
    WEIGHT_CASTS.with(std::cell::Cell::get)
}

pub fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else {
        t.to_dtype(dtype)
    }
}

/// `x * s` as torch multiplies a bf16/f16 tensor by a Python float: the product in f32 and one rounding.
/// candle's `x * s` first rounds `s` to the tensor's dtype (`affine` takes `T::from_f64(s)`), which moves
/// every product by the rounding of `s` (head_dim 8's 8^-0.5 by 1.5e-4 in bf16): a systematic
/// difference, not noise. The backward rounds `g * s` once, as torch's does.
pub fn mul_scalar(x: &Tensor, s: f64) -> Result<Tensor> {
    let low = x.dtype();
    if low == DType::F32 || low == DType::F64 || s == 1.0 {
        return x * s;
    }
    cast(&(cast(x, DType::F32)? * s)?, low)
}

/// SiLU as torch computes it for any dtype: in f32, rounded once to the input's dtype (candle's bf16/f16
/// `silu` evaluates `v / (1 + exp(-v))` in the low dtype, rounding at each of its three steps).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let low = x.dtype();
    if low == DType::F32 || low == DType::F64 {
        return candle_nn::ops::silu(x);
    }
    let wide = cast(x, DType::F32)?;
    let y = if crate::fused::applies(&wide) { crate::torch_cpu::silu(&wide)? } else { candle_nn::ops::silu(&wide)? };
    cast(&y, low)
}

/// [`layer_norm`] of the f32 residual stream of a model that computes in `dtype`: under bf16/f16
/// autocast on the CPU with torch's forward bits (`torch_cpu.rs`), since the result is rounded to
/// `dtype` at the next linear; otherwise the fused f32 kernel.
pub fn layer_norm_in(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, dtype: DType) -> Result<Tensor> {
    if crate::torch_cpu::applies(x, dtype) {
        return crate::torch_cpu::layer_norm(x, weight, bias, eps);
    }
    layer_norm(x, weight, bias, eps)
}

/// LayerNorm over the last dim as `torch.nn.LayerNorm` (biased variance), computed in f32.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::fused::applies(x) {
        return crate::fused::layer_norm(x, weight, bias, eps);
    }
    let dtype = x.dtype();
    let x = cast(x, DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let y = y.broadcast_mul(&cast(weight, DType::F32)?)?.broadcast_add(&cast(bias, DType::F32)?)?;
    cast(&y, dtype)
}

/// [`rms_norm`] of the f32 residual stream of a model that computes in `dtype`: under bf16/f16
/// autocast on the CPU in torch's rounding order (`torch_cpu.rs`), since the result is rounded to
/// `dtype` at the next linear; otherwise the fused f32 kernel.
pub fn rms_norm_in(x: &Tensor, weight: &Tensor, eps: f64, dtype: DType) -> Result<Tensor> {
    if crate::torch_cpu::applies(x, dtype) {
        return crate::torch_cpu::rms_norm(x, weight, eps);
    }
    rms_norm(x, weight, eps)
}

/// RMSNorm as transformers' `LlamaRMSNorm`: normalise in f32, cast back, then scale.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::fused::applies(x) {
        return crate::fused::rms_norm(x, weight, eps);
    }
    let dtype = x.dtype();
    let xf = cast(x, DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    cast(&y, dtype)?.broadcast_mul(&cast(weight, dtype)?)
}

/// Qwen3's and Gemma 3's RMSNorm over each head of a projection `x: [.., head_dim]` (`q_norm`,
/// `k_norm`). On a bf16/f16 projection transformers normalises in f32, rounds to the projection's dtype
/// and multiplies by the f32 weight, so the result is f32 (the promotion of `f32 * bf16`).
pub fn head_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return rms_norm(x, weight, eps);
    }
    let xf = cast(x, DType::F32)?;
    if crate::fused::applies(&xf) {
        return crate::torch_cpu::rms_norm_rounded(&xf, weight, eps, x.dtype());
    }
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = cast(&xf.broadcast_div(&(ms + eps)?.sqrt()?)?, x.dtype())?;
    cast(&y, DType::F32)?.broadcast_mul(weight)
}

/// Rotate-half RoPE (transformers' `apply_rotary_pos_emb`): `x: [B, H, T, D]`, tables `[B, 1, T, D]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(x) {
        return crate::fused::rope(x, cos, sin);
    }
    let d = x.dim(D::Minus1)?;
    let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// RoPE of a bf16/f16 projection `x` with f32 `cos`/`sin`, as transformers computes it under autocast:
/// `x·cos` and `rotate_half(x)·sin` each promote to f32 and are summed in f32. What that fixes is the
/// backward: each branch's gradient is rounded to `x`'s dtype on its own (rotate_half's in that dtype)
/// and the two are summed in it — torch rounds three times where a cast-then-rotate in f32 rounds once.
/// An f32 `x` takes [`rope`].
pub fn rope_low(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return rope(x, cos, sin);
    }
    let d = x.dim(D::Minus1)?;
    let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    cast(x, DType::F32)?.broadcast_mul(cos)? + cast(&rotated, DType::F32)?.broadcast_mul(sin)?
}

/// ReLU (OPT's FFN activation).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    relu_op(x)
}

fn relu_op(x: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(x) {
        return crate::fused::relu(x);
    }
    x.relu()
}

/// GELU's tanh approximation (transformers' `gelu_new`, torch's `gelu(approximate="tanh")`): candle's
/// `gelu` is this formula, with a backward, on every backend. A bf16/f16 input is widened, activated in
/// f32 and rounded once.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let low = x.dtype();
    if low == DType::F32 || low == DType::F64 {
        return x.gelu();
    }
    cast(&cast(x, DType::F32)?.gelu()?, low)
}

/// transformers' `gelu_new` (GPT-2's `NewGELUActivation`): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
/// In f32 it is [`gelu_tanh`]. On a bf16/f16 tensor torch evaluates the formula op by op, none widened by
/// autocast, each rounded to the dtype (42% of bf16 outputs differ from the once-rounded [`gelu_tanh`]),
/// and so does its backward. Both are reproduced bit for bit (checked against torch 2.15 on 300k values
/// per dtype, `scripts/make_mixed_precision_fixtures.py` era):
/// - forward: `x³` is `(x·x)·x` rounded at each product in bf16 but once in f16 (torch's `pow` kernels
///   differ there); every other op rounds once;
/// - backward: `tanh` from its *rounded* output (`g·(1 − t²)`, once), `pow` as `g·(3·round(x·x))` with
///   all three roundings, and x's three gradients summed as autograd does: `(pow + add) + half`, rounded
///   after each sum.
///
/// The backward is built from zero-valued surrogates ([`grad_rounded`], [`value_rounded`]) so the one
/// composition runs on every device; without a gradient the forward alone runs.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    let low = x.dtype();
    if low == DType::F32 || low == DType::F64 {
        return x.gelu();
    }
    let s = (2.0 / std::f64::consts::PI).sqrt();
    let r = |t: &Tensor| -> Result<Tensor> { cast(&cast(t, low)?, DType::F32) };
    let xf = cast(x, DType::F32)?;
    let xd = xf.detach();
    let sq = xd.sqr()?;
    let sq_low = r(&sq)?;
    let cube = if low == DType::BF16 { r(&(&sq_low * &xd)?)? } else { r(&(sq * &xd)?)? };
    if !x.track_op() {
        let inner = r(&(&xd + r(&(cube * 0.044715)?)?)?)?;
        let t = r(&r(&(inner * s)?)?.tanh()?)?;
        return cast(&(r(&(&xd * 0.5)?)? * r(&(t + 1.0)?)?)?, low);
    }
    // x's three uses, merged as torch's autograd sums their gradients: pow's and the sum's first.
    let x_bc = grad_rounded(&xf, low)?;
    let (x_pow, x_half) = (grad_rounded(&x_bc, low)?, grad_rounded(&xf, low)?);
    // x³: the value above; the gradient round(g · round(3 · round(x·x))), through x_pow.
    let k = r(&(sq_low * 3.0)?)?;
    let cube = surrogate(&cube, &x_pow, &k)?;
    let c1 = value_rounded(&(grad_rounded(&cube, low)? * 0.044715)?, low)?;
    let inner = value_rounded(&(x_bc + c1)?, low)?;
    let z = value_rounded(&(grad_rounded(&inner, low)? * s)?, low)?;
    // tanh: its gradient from the rounded output, round(g · (1 − t²)).
    let t = r(&z.detach().tanh()?)?;
    let t = surrogate(&t, &grad_rounded(&z, low)?, &(1.0 - t.sqr()?)?)?;
    let half = value_rounded(&(x_half * 0.5)?, low)?;
    let onep = value_rounded(&(t + 1.0)?, low)?;
    cast(&(grad_rounded(&half, low)? * grad_rounded(&onep, low)?)?, low)
}

/// `value` in the forward pass; in the backward the gradient times `slope` (detached) flows into `x`.
fn surrogate(value: &Tensor, x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let lin = (x * slope.detach())?;
    value.detach() + (&lin - lin.detach())?
}

/// SwiGLU's `silu(gate) ∘ up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(gate) {
        return crate::fused::swiglu(gate, up);
    }
    silu(gate)? * up
}

/// `softmax` over the last dim from primitive ops (max-subtracted, so fully masked rows stay finite).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Finite "minus infinity" for additive masks: a fully masked row (a left-pad query) must give a
/// uniform softmax, not NaN.
pub const MASK_MIN: f32 = -3.0e38;

/// Additive attention mask `[B, 1, Tq, Tk]` (f32): key j is visible to query i iff
/// `j <= past + i` and `key_mask[b, j] == 1`. `key_mask: [B, Tk]` with `Tk = past + Tq`.
pub fn attention_bias(key_mask: &Tensor, tq: usize) -> Result<Tensor> {
    let (b, tk) = key_mask.dims2()?;
    let past = tk - tq;
    let dev = key_mask.device();
    let causal: Vec<f32> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j <= past + i { 0.0 } else { MASK_MIN }))
        .collect();
    let causal = crate::transfer::upload(causal, (1, 1, tq, tk), dev)?;
    let keys = key_mask.to_dtype(DType::F32)?.reshape((b, 1, 1, tk))?;
    // (1 - mask) * MIN, then clamp the sum so two MINs do not overflow to -inf.
    let pad = ((keys.ones_like()? - keys)? * MASK_MIN as f64)?;
    causal.broadcast_add(&pad)?.clamp(MASK_MIN, 0f32)
}

/// Position ids from a `[B, T]` 0/1 mask as transformers derives them for padded batches:
/// `cumsum(mask) - 1` on real tokens; pad positions get `pad_value`.
pub fn positions_from_mask(mask: &Tensor, pad_value: i64) -> Result<Vec<Vec<i64>>> {
    Ok(positions_from_rows(&crate::transfer::vec2::<u32>(&mask.to_dtype(DType::U32)?)?, pad_value))
}

/// [`positions_from_mask`] from the host copy of the mask (no device read).
pub fn positions_from_rows(rows: &[Vec<u32>], pad_value: i64) -> Vec<Vec<i64>> {
    rows.iter()
        .map(|row| {
            let mut seen = 0i64;
            row.iter()
                .map(|&m| {
                    seen += m as i64;
                    if m == 1 {
                        seen - 1
                    } else {
                        pad_value
                    }
                })
                .collect()
        })
        .collect()
}

/// `[B, T]` position ids to an i64-free u32 tensor (candle indexes with u32).
pub fn position_tensor(pos: &[Vec<i64>], offset: i64, dev: &Device) -> Result<Tensor> {
    let b = pos.len();
    let t = pos.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = pos.iter().flatten().map(|&p| (p + offset).max(0) as u32).collect();
    crate::transfer::upload(flat, (b, t), dev)
}

/// Which attention transformers runs (`attn_implementation`): in f32 the two are the same
/// computation; in bf16/f16 they round at different places (read in ATen's FlashAttentionKernel.cpp,
/// checked against torch 2.15 on CPU by crates/train/tests/attention_precision.rs):
/// - `Sdpa` (transformers' default): q, k, v arrive in the low dtype; `S = scale·q·kᵀ + bias`, its
///   row max `m`, `E = exp(S − m)` (on the CPU with torch's fast exp, [`crate::fexp`]) and the row sum
///   `l` stay f32; `E` is rounded to bf16/f16
///   *unnormalised* for the product with V (f32 accumulation), the output `(Ẽ·V)/l` rounded once. The
///   backward recomputes `P = exp(S − lse)` in f32, rounds P for `dV = Pᵀ·dO`, takes
///   `dS = P∘(dO·Vᵀ − rowsum(dO∘O))` with the rounded output O, rounds dS, then `dQ, dK` in f32 rounded
///   once. torch's CPU flash kernel and the GPU flash/memory-efficient kernels share this shape (the GPU
///   ones in tiles of the key axis, which moves single roundings, not where they happen).
/// - `Eager`: `q·kᵀ` rounded to the low dtype, the scaling rounded again, softmax in f32, the
///   probabilities rounded (normalised) before `·V`.
///
/// Attention dropout (training with `attention_dropout` > 0) always takes eager's rounding: the fused
/// kernels keep no hook for it, and torch's CPU flash kernel refuses dropout too (its math path runs;
/// not measured here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttnImpl {
    #[default]
    Sdpa,
    Eager,
}

impl AttnImpl {
    /// Parses `sdpa` / `eager` (transformers' `attn_implementation` names).
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "sdpa" => Ok(Self::Sdpa),
            "eager" => Ok(Self::Eager),
            _ => Err(crate::ModelError::Invalid(format!("unknown attention {s:?} (allowed: sdpa, eager)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sdpa => "sdpa",
            Self::Eager => "eager",
        }
    }
}

/// Scaled dot-product attention with an additive f32 bias; softmax runs in f32. `q: [B, Hq, Tq, Dh]`,
/// `k, v: [B, Hkv, Tk, Dh]` with `Hq` a multiple of `Hkv` (grouped-query attention: query head `h`
/// reads KV head `h / (Hq / Hkv)`, as transformers' `repeat_kv`). `bias: [B, 1, Tq, Tk]`. In bf16/f16
/// `imp` picks where the low dtype rounds ([`AttnImpl`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, imp: AttnImpl) -> Result<Tensor> {
    if crate::fused::applies(q) && crate::fused::applies(k) && crate::fused::applies(v) {
        return crate::attention::attention(q, k, v, bias, scale);
    }
    if imp == AttnImpl::Sdpa && q.dtype() != DType::F32 && q.dtype() != DType::F64 {
        return sdpa_low(q, k, v, bias, scale);
    }
    attention_with_dropout(q, k, v, bias, scale, |p| Ok(p.clone()))
}

/// `x` in the forward pass; its gradient rounded to `low` in the backward pass (a value of zero cast
/// to `low` and back carries the rounding, so no value can overflow f16 on the way).
fn grad_rounded(x: &Tensor, low: DType) -> Result<Tensor> {
    let zero = (x - x.detach())?;
    x.detach() + cast(&cast(&zero, low)?, DType::F32)?
}

/// `n` views of `x` for `n` consumers whose gradients torch accumulates into a `low` tensor in turn:
/// the first view's gradient is rounded and added to the second's, that sum rounded and added to the
/// third's, and so on into `x` (whose caller rounds the last sum).
fn rounded_chain(x: &Tensor, n: usize, low: DType) -> Result<Vec<Tensor>> {
    let mut chain = vec![x.clone()];
    for i in 1..n {
        let next = grad_rounded(&chain[i - 1], low)?;
        chain.push(next);
    }
    chain.reverse();
    Ok(chain)
}

/// `x` in the forward pass; its gradient multiplied by `s` (one f32 rounding) in the backward pass.
fn grad_scaled(x: &Tensor, s: f64) -> Result<Tensor> {
    let scaled = (x * s)?;
    x.detach() + (&scaled - scaled.detach())?
}

/// `x` rounded to `low` (as f32) in the forward pass; the gradient passes unrounded.
fn value_rounded(x: &Tensor, low: DType) -> Result<Tensor> {
    cast(&cast(&x.detach(), low)?, DType::F32)? + (x - x.detach())?
}

/// bf16/f16 attention as torch's `scaled_dot_product_attention` computes it ([`AttnImpl::Sdpa`]).
/// The forward value is computed detached; when a gradient is wanted, a surrogate whose value is
/// exactly zero (`g − g.detach()`) is added whose gradient is sdpa's backward: `g = round(P)·V −
/// rowsum(P)∘O_low` gives `dV = round(P)ᵀ·dO` and `dP = dO·Vᵀ − rowsum(dO∘O_low)`; P's exp gives
/// `dS = P∘dP`, rounded by [`grad_rounded`]; the casts of q, k, v round dQ, dK, dV once. K and V are
/// repeated per query head as transformers does when a mask is passed (no `enable_gqa`), so each
/// head's dK/dV rounds before the group's sum, as the backward of `repeat_kv` does ([`autocast_repeat`]).
fn sdpa_low(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let low = q.dtype();
    let (b, hq, tq, d) = q.dims4()?;
    let hkv = k.dim(1)?;
    let n = hq / hkv;
    let widen = |x: &Tensor| cast(&autocast_repeat(x, n, low)?, DType::F32);
    let (q, k, v) = (cast(q, DType::F32)?, widen(k)?, widen(v)?);
    let cpu = crate::fastpath::cpu_fast(q.device());
    // The kernel's backward walks the queries in blocks (`q_split_size`) and adds each block's share of
    // dK and dV into the bf16/f16 gradient itself (gemm with beta = 1 on the low-precision output), so
    // the running sum is rounded to the low dtype after every block: dV = R(R(c₁) + c₂) + … for
    // c_b = round(P_b)ᵀ·dO_b, dK likewise with c_b = scale·dS_bᵀ·Q_b. Each block's product is its own
    // node here, reading K and V through a chain of gradient roundings (`rounded_chain`). That is the
    // CPU kernel's order only: the GPU's flash and memory-efficient kernels keep dK/dV in f32 across
    // query blocks and round once, so off the CPU all queries are one block.
    let split = if !cpu {
        tq.max(1)
    } else if tq >= 768 {
        256
    } else if tq >= 192 {
        64
    } else {
        32
    };
    let blocks: Vec<(usize, usize)> = if tq == 0 { vec![(0, 0)] } else { (0..tq).step_by(split).map(|m| (m, split.min(tq - m))).collect() };
    let (k_chain, v_chain) = (rounded_chain(&k, blocks.len(), low)?, rounded_chain(&v, blocks.len(), low)?);
    // The kernel's backward scales the products dS·K and dSᵀ·Q (gemm's alpha), not dS: with a scale
    // that is no power of two (head_dim 8) the two round differently.
    let q = grad_scaled(&q, scale)?.contiguous()?;
    let qk = blocks
        .iter()
        .zip(&k_chain)
        .map(|(&(m, len), k)| crate::cuda_rules::matmul(&q.narrow(2, m, len)?, &grad_scaled(k, scale)?.t()?))
        .collect::<Result<Vec<_>>>()?;
    let qk = Tensor::cat(&qk, 2)?;
    let qk = ((&qk * scale)?.detach() + (&qk - qk.detach())?)?;
    let scores = grad_rounded(&qk, low)?.broadcast_add(bias)?;
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let shifted = scores.broadcast_sub(&max)?;
    let e = if cpu { crate::fexp::attention_exp(&shifted.detach())? } else { shifted.detach().exp()? };
    let l = if cpu { crate::fexp::attention_sum(&e)? } else { e.sum_keepdim(D::Minus1)? };
    let e_low = cast(&cast(&e, low)?, DType::F32)?;
    // Normalised by the reciprocal of the sum, as the kernel does (a division rounds differently).
    let out = crate::cuda_rules::matmul(&e_low, &v.detach())?.broadcast_mul(&l.recip()?)?;
    let out = if q.track_op() || k.track_op() || v.track_op() {
        // P recomputed from the stored log-sum-exp `max + ln l`, as the kernel's backward does, and with
        // its exp (torch's vectorised one, not the forward's `exp_u20`).
        let p = scores.broadcast_sub(&(max + l.log()?)?)?;
        let p = if cpu { crate::fexp::torch_exp(&p)? } else { p.exp()? };
        let o_low = cast(&cast(&out, low)?, DType::F32)?;
        let p_low = value_rounded(&p, low)?;
        let pv = blocks.iter().zip(&v_chain).map(|(&(m, len), v)| crate::cuda_rules::matmul(&p_low.narrow(2, m, len)?, v)).collect::<Result<Vec<_>>>()?;
        let pv = Tensor::cat(&pv, 2)?;
        let g = (pv - p.sum_keepdim(D::Minus1)?.broadcast_mul(&o_low)?)?;
        (out + (&g - g.detach())?)?
    } else {
        out
    };
    debug_assert_eq!(out.dims(), &[b, hq, tq, d]);
    cast(&out, low)
}

/// `x: [B, Hkv, T, D]` as autocast hands it to an attention matmul after transformers' `repeat_kv`:
/// repeated `n` times per KV head in f32, each query head's copy rounded to `low` (the result's dtype).
/// In the backward each query head's gradient is rounded to `low` (by the matmul that consumes it, or
/// by the caller's widening cast), the group's are summed in f32 (the backward of `repeat_kv`,
/// accumulated in f32 by torch), and rounded once more only if `x` itself is in `low` —
/// transformers' keys come out of RoPE in f32 (f32 cos/sin), so their gradient is not.
fn autocast_repeat(x: &Tensor, n: usize, low: DType) -> Result<Tensor> {
    let (b, hkv, t, d) = x.dims4()?;
    let wide = cast(x, DType::F32)?;
    let wide = if n == 1 { wide } else { wide.unsqueeze(2)?.broadcast_as((b, hkv, n, t, d))?.contiguous()?.reshape((b, hkv * n, t, d))? };
    cast(&wide, low)
}

/// [`attention`] with dropout on the probabilities (training with `attention_dropout` > 0): always the
/// composed ops, since the fused CPU kernel keeps no hook between softmax and `P·v`. `drop` gets the
/// probabilities `[B, Hq, Tq, Tk]` in the activation dtype, as transformers' eager attention drops them.
pub fn attention_with_dropout(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, drop: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    eager(q, k, v, bias, scale, None, drop)
}

/// Gemma 2's attention: the scaled scores soft-capped, `tanh(s / cap) · cap`, before the mask is added
/// (transformers' `eager_attention_forward` with `softcap`; Gemma 2 declares no sdpa support, so eager is
/// what a default load runs, whatever [`AttnImpl`] says). Always the composed ops (the fused CPU kernel
/// has no cap); `drop` as in [`attention_with_dropout`].
pub fn attention_softcapped(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, cap: f64, drop: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    eager(q, k, v, bias, scale, Some(cap), drop)
}

/// `tanh(x / cap) · cap` as torch computes it on a tensor of `x`'s dtype: each of the three steps in
/// f32, rounded to that dtype (no rounding in f32). In bf16/f16 the backward rounds where torch's does:
/// the division is a division (candle's `x / f64` multiplies by the reciprocal, another rounding), and
/// tanh's gradient `g·(1 − t²)` takes the rounded output `t`, after `g` itself was rounded.
pub fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    let low = x.dtype();
    if low == DType::F32 || low == DType::F64 {
        return (x / cap)?.tanh()? * cap;
    }
    let r = |t: &Tensor| -> Result<Tensor> { cast(&cast(t, low)?, DType::F32) };
    let xf = cast(x, DType::F32)?;
    let z = value_rounded(&xf.broadcast_div(&Tensor::new(&[cap as f32], x.device())?)?, low)?;
    let t = r(&z.detach().tanh()?)?;
    let t = if x.track_op() { grad_rounded(&surrogate(&t, &grad_rounded(&z, low)?, &(1.0 - t.sqr()?)?)?, low)? } else { t };
    cast(&(t * cap)?, low)
}

/// Eager attention, optionally soft-capped; see [`attention_with_dropout`].
fn eager(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, cap: Option<f64>, drop: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dtype = q.dtype();
    let (b, hq, tq, d) = q.dims4()?;
    let (_, hkv, tk, _) = k.dims4()?;
    let (k, v, hkv) = if k.dtype() != dtype || (hq != hkv && (k.track_op() || v.track_op())) {
        // Training (or a key still in f32 from RoPE): K and V repeated per query head in f32 and rounded
        // per head, as `repeat_kv` + autocast do, so each head's dK/dV rounds before the group's sum.
        let n = hq / hkv;
        (autocast_repeat(k, n, dtype)?, autocast_repeat(v, n, dtype)?, hq)
    } else {
        (k.clone(), v.clone(), hkv)
    };
    let n = hq / hkv;
    // Otherwise the n query heads that share a KV head are stacked along the query axis, so one matmul
    // per KV head serves them all and K/V are never repeated (copied) n times.
    let q = q.contiguous()?.reshape((b, hkv, n * tq, d))?;
    let scores = mul_scalar(&matmul_lp(&q, &matmul_operand(&k)?.t()?)?, scale)?;
    let scores = match cap {
        Some(c) => softcap(&scores, c)?,
        None => scores,
    };
    let scores = cast(&scores, DType::F32)?.reshape((b, hq, tq, tk))?.broadcast_add(bias)?;
    // Under autocast on the CPU the probabilities are rounded to bf16/f16, so their last f32 bit counts:
    // torch's own softmax order then (in f32 the composed ops are as good and need no custom op).
    let probs = if crate::torch_cpu::applies(&scores, dtype) { crate::torch_cpu::softmax_last(&scores)? } else { softmax_last(&scores)? };
    let probs = drop(&cast(&probs, dtype)?)?.reshape((b, hkv, n * tq, tk))?;
    matmul_lp(&probs, &matmul_operand(&v)?)?.reshape((b, hq, tq, d))
}

/// `a·b`; in bf16/f16 on the CPU with f32 accumulation and one rounding of the output, as torch's CPU
/// autocast computes it (see `Linear::forward_act`).
fn matmul_lp(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let low = a.dtype();
    if low != DType::F32 && crate::fastpath::cpu_fast(a.device()) {
        return cast(&crate::cuda_rules::matmul(&cast(a, DType::F32)?, &cast(b, DType::F32)?)?, low);
    }
    crate::cuda_rules::matmul(a, b)
}

/// `x` itself when every backend's matmul reads its layout as it is — cuBLAS's rule, which the CPU
/// gemm also meets: the narrowed KV-cache views (rows contiguous, the two batch dims mergeable), so a
/// decode step attends over the cache in place — else a contiguous copy.
fn matmul_operand(x: &Tensor) -> Result<Tensor> {
    if crate::cuda_rules::matmul_ready(x) {
        Ok(x.clone())
    } else {
        x.contiguous()
    }
}
