//! Llama (Touvron et al. 2023; Llama 3.2, Meta 2024), following transformers' `modeling_llama.py`:
//! grouped-query attention, RMSNorm, SwiGLU, rotate-half RoPE with optional `llama3` frequency scaling,
//! tied or untied embeddings. Unlike candle-transformers' llama it returns logits for every position,
//! honours a padding mask, and uses only ops with a backward pass.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::config_keys::{self, key_error};

use crate::cache::KvCache;
use crate::dropout::Dropout;
use crate::ops::{self, attention, attention_bias, AttnImpl, Linear};

/// RoPE parameters: 4.x writes them as `rope_scaling` (with `rope_theta` at the top level), 5.x
/// as `rope_parameters` with `rope_theta` inside. Keys not listed land in `other` and are refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RopeParameters {
    pub rope_type: Option<String>,
    /// The 4.x name of `rope_type`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub partial_rotary_factor: Option<f64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// transformers' `_compute_llama3_parameters` inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The RoPE a config asks for, resolved from either era's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub llama3: Option<Llama3Scaling>,
}

impl Default for Rope {
    fn default() -> Self {
        Self { theta: 10000.0, llama3: None }
    }
}

pub use crate::config_keys::TokenIds;

/// A Llama `config.json`, field names as transformers writes them (4.x and 5.x). Absent keys take
/// transformers' `LlamaConfig` defaults; keys not listed here are audited by [`LlamaConfig::from_json`].
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// 4.x: the RoPE base at the top level (5.x moved it into `rope_parameters`).
    pub rope_theta: Option<f64>,
    /// 4.x RoPE scaling.
    pub rope_scaling: Option<RopeParameters>,
    /// 5.x RoPE parameters (type, theta, scaling).
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    /// Every other key (audited, see [`LLAMA_HARMLESS`]).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
    /// Resolved from `rope_theta` / `rope_scaling` / `rope_parameters` by `from_json`.
    #[serde(skip)]
    pub rope: Rope,
    /// Which Llama-shaped family this is; set by that family's `from_json` (`crate::qwen`).
    #[serde(skip)]
    pub family: Family,
}

/// The Llama-shaped families and what each changes in the layer (their configs: `crate::qwen`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Family {
    #[default]
    Llama,
    /// Qwen2 / Qwen2.5: biases on q, k and v (never on o).
    Qwen2,
    /// Qwen3: RMSNorm over each head of q and k (`q_norm`, `k_norm`) before RoPE.
    Qwen3,
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

/// Llama keys that cannot change what crossfeed computes, and why.
pub const LLAMA_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "initializer_range",
    // 4.x splits the projections into this many slices and sums them (the same function up to
    // summation order); 5.x ignores it.
    "pretraining_tp",
    // Training-time regularisation, applied in training on the attention probabilities (`crate::dropout`).
    "attention_dropout",
];

/// Training-only Llama keys crossfeed does not apply.
pub const LLAMA_TRAINING_ONLY: &[&str] = &[];

impl LlamaConfig {
    /// Reads `config.json` (`path` names it in errors) as transformers 4.x or 5.x would, refusing
    /// every setting that would change the computation and that crossfeed does not implement.
    pub fn from_json(config: &Value, path: &Path) -> crate::Result<Self> {
        Self::from_json_as(config, path, LLAMA_HARMLESS, "llama")
    }

    /// [`LlamaConfig::from_json`] for a Llama-shaped family whose other keys are audited against
    /// `harmless` (the family's own checks come after, in its module).
    pub(crate) fn from_json_as(config: &Value, path: &Path, harmless: &[&str], arch: &str) -> crate::Result<Self> {
        let mut cfg: Self = config_keys::parse(config, path)?;
        config_keys::audit(&cfg.other, harmless, arch, path)?;
        if cfg.hidden_act != "silu" && cfg.hidden_act != "swish" {
            return Err(key_error(path, "hidden_act", format!("{:?} is not supported (supported: \"silu\")", cfg.hidden_act)));
        }
        if cfg.num_attention_heads == 0 || cfg.kv_heads() == 0 || !cfg.num_attention_heads.is_multiple_of(cfg.kv_heads()) {
            return Err(key_error(
                path,
                "num_key_value_heads",
                format!("{} must divide num_attention_heads = {}", cfg.kv_heads(), cfg.num_attention_heads),
            ));
        }
        cfg.rope = cfg.resolve_rope(path)?;
        Ok(cfg)
    }

    /// transformers 5's reading of the RoPE keys: `rope_scaling` (4.x) or `rope_parameters` (5.x),
    /// `rope_theta` inside them or at the top level (default 10000), `type` as the old name of
    /// `rope_type`, llama3's `original_max_position_embeddings` defaulting to
    /// `max_position_embeddings`. Where transformers would warn and carry on (unknown or unused keys,
    /// two values for one setting) this is an error naming the key.
    fn resolve_rope(&self, path: &Path) -> crate::Result<Rope> {
        let (src, p) = match (&self.rope_scaling, &self.rope_parameters) {
            (Some(a), Some(b)) if a != b => {
                return Err(key_error(path, "rope_scaling", "differs from rope_parameters (4.x and 5.x names of the same setting): keep one"))
            }
            (Some(a), _) => ("rope_scaling", a.clone()),
            (None, Some(b)) => ("rope_parameters", b.clone()),
            (None, None) => ("rope_parameters", RopeParameters::default()),
        };
        let err = |k: &str, m: String| key_error(path, &format!("{src}.{k}"), m);
        let theta = match (self.rope_theta, p.rope_theta) {
            (Some(top), Some(inner)) if top != inner => {
                return Err(key_error(path, "rope_theta", format!("{top} conflicts with {src}.rope_theta = {inner}")))
            }
            (top, inner) => inner.or(top).unwrap_or(10000.0),
        };
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(err("rope_theta", format!("{theta} must be a positive number")));
        }
        let (type_key, rope_type) = match (&p.rope_type, &p.type_) {
            (Some(a), Some(b)) if a != b => return Err(err("type", format!("{b:?} conflicts with rope_type {a:?}"))),
            (Some(a), _) => ("rope_type", a.clone()),
            (None, Some(b)) => ("type", b.clone()),
            (None, None) => ("rope_type", "default".to_string()),
        };
        if let Some((k, _)) = p.other.iter().next() {
            return Err(err(k, format!("not a RoPE parameter crossfeed applies (rope_type {rope_type:?}); it may change the computation")));
        }
        if let Some(f) = p.partial_rotary_factor.filter(|f| *f != 1.0) {
            return Err(err("partial_rotary_factor", format!("{f} is not supported (only 1.0: RoPE on the whole head)")));
        }
        let llama3 = match rope_type.as_str() {
            "default" => {
                let unused = [("factor", p.factor), ("low_freq_factor", p.low_freq_factor), ("high_freq_factor", p.high_freq_factor)];
                if let Some((k, _)) = unused.iter().find(|(_, v)| v.is_some()) {
                    return Err(err(k, "is not applied by rope_type \"default\" (scaling needs rope_type \"llama3\")".into()));
                }
                None
            }
            "llama3" => {
                let need = |k: &str, v: Option<f64>| v.ok_or_else(|| err(k, "missing (required by rope_type \"llama3\")".into()));
                let factor = need("factor", p.factor)?;
                if factor <= 0.0 {
                    return Err(err("factor", format!("{factor} must be > 0")));
                }
                Some(Llama3Scaling {
                    factor,
                    low_freq_factor: need("low_freq_factor", p.low_freq_factor)?,
                    high_freq_factor: need("high_freq_factor", p.high_freq_factor)?,
                    original_max_position_embeddings: p.original_max_position_embeddings.unwrap_or(self.max_position_embeddings),
                })
            }
            other => return Err(err(type_key, format!("{other:?} is not supported (supported: \"default\", \"llama3\")"))),
        };
        Ok(Rope { theta, llama3 })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Inverse RoPE frequencies, with transformers' `_compute_llama3_parameters` when configured.
    pub fn inv_freq(&self) -> Vec<f64> {
        let dim = self.head_dim();
        // transformers computes the base frequencies in float32 (`torch.arange(...).float() / dim`).
        let base: Vec<f64> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / (self.rope.theta as f32).powf(i as f32 / dim as f32) as f64)
            .map(|f| f as f32 as f64)
            .collect();
        let Some(s) = self.rope.llama3.as_ref() else {
            return base;
        };
        let old = s.original_max_position_embeddings as f64;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        base.iter()
            .map(|&f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}


/// cos/sin tables `[B, 1, T, Dh]` for per-sequence positions (so left-padded rows rotate correctly).
pub(crate) fn rope_tables(inv_freq: &[f64], positions: &[Vec<i64>], dtype: DType, dev: &Device) -> Result<(Tensor, Tensor)> {
    let b = positions.len();
    let t = positions.first().map_or(0, |r| r.len());
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(b * t * half * 2);
    let mut sin = Vec::with_capacity(b * t * half * 2);
    for row in positions {
        for &p in row {
            // transformers multiplies in float32: freqs = inv_freq[f32] * position[f32].
            let angles: Vec<f32> = inv_freq.iter().map(|&f| f as f32 * p as f32).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
    }
    let shape = (b, 1, t, half * 2);
    Ok((
        crate::transfer::upload(cos, shape, dev)?.to_dtype(dtype)?,
        crate::transfer::upload(sin, shape, dev)?.to_dtype(dtype)?,
    ))
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3's per-head RMSNorm weights of q and k (`[head_dim]`).
    qk_norm: Option<(Tensor, Tensor)>,
    eps: f64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    attention_dropout: f64,
}

impl Attention {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd, b) = (cfg.hidden_size, cfg.head_dim(), cfg.attention_bias);
        let qkv_bias = b || cfg.family == Family::Qwen2;
        let qk_norm = match cfg.family {
            Family::Qwen3 => Some((vb.get(hd, "q_norm.weight")?, vb.get(hd, "k_norm.weight")?)),
            _ => None,
        };
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), h, cfg.num_attention_heads * hd, qkv_bias)?,
            k_proj: Linear::load(vb.pp("k_proj"), h, cfg.kv_heads() * hd, qkv_bias)?,
            v_proj: Linear::load(vb.pp("v_proj"), h, cfg.kv_heads() * hd, qkv_bias)?,
            o_proj: Linear::load(vb.pp("o_proj"), cfg.num_attention_heads * hd, h, b)?,
            qk_norm,
            eps: cfg.rms_norm_eps,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: hd,
            attention_dropout: cfg.other.get("attention_dropout").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
        drop: Option<&Dropout>,
        dtype: DType,
        attn: AttnImpl,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, h: usize| y.reshape((b, t, h, self.head_dim))?.transpose(1, 2);
        // transformers rotates with f32 cos/sin (they follow the f32 hidden states): q·cos promotes the
        // projection to f32; autocast's attention matmuls then take q and k back to `dtype`.
        let rotated = |y: Tensor, h: usize, norm: Option<&Tensor>| -> Result<Tensor> {
            let y = match norm {
                Some(w) => ops::head_rms_norm(&y.reshape((b, t, h, self.head_dim))?, w, self.eps)?.transpose(1, 2)?,
                None => split(y, h)?,
            };
            ops::rope_low(&y, &rope.0, &rope.1)
        };
        let norms = self.qk_norm.as_ref().map(|(q, k)| (q, k));
        let q = ops::cast(&rotated(self.q_proj.forward_as(x, dtype)?, self.heads, norms.map(|n| n.0))?, dtype)?;
        // The keys stay f32 until attention: torch repeats them per query head before autocast rounds them.
        let k = rotated(self.k_proj.forward_as(x, dtype)?, self.kv_heads, norms.map(|n| n.1))?;
        let v = split(self.v_proj.forward_as(x, dtype)?, self.kv_heads)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &ops::cast(&k, dtype)?.contiguous()?, &v.contiguous()?)?,
            None => (k, v),
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let y = match drop.filter(|_| self.attention_dropout > 0.0) {
            Some(d) => ops::attention_with_dropout(&q, &k, &v, bias, scale, |p| d.apply(p, self.attention_dropout))?,
            None => attention(&q, &k, &v, bias, scale, attn)?,
        };
        let y = y.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?;
        self.o_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        let (gate, up) = (self.gate_proj.forward_as(x, dtype)?, self.up_proj.forward_as(x, dtype)?);
        self.down_proj.forward(&ops::swiglu(&gate, &up)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    eps: f64,
}

impl Layer {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let m = vb.pp("mlp");
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp {
                gate_proj: Linear::load(m.pp("gate_proj"), h, i, b)?,
                up_proj: Linear::load(m.pp("up_proj"), h, i, b)?,
                down_proj: Linear::load(m.pp("down_proj"), i, h, b)?,
            },
            input_layernorm: vb.get(h, "input_layernorm.weight")?,
            post_attention_layernorm: vb.get(h, "post_attention_layernorm.weight")?,
            eps: cfg.rms_norm_eps,
        })
    }

    /// `x` is the f32 residual stream, as under torch.autocast (see `crate::opt`'s layer).
    fn forward(&self, x: &Tensor, rope: &(Tensor, Tensor), bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let h = self.self_attn.forward(&ops::rms_norm_in(x, &self.input_layernorm, self.eps, dtype)?, rope, bias, cache, drop, dtype, attn)?;
        let x = (x + ops::cast(&h, DType::F32)?)?;
        let h = self.mlp.forward(&ops::rms_norm_in(&x, &self.post_attention_layernorm, self.eps, dtype)?, dtype)?;
        x + ops::cast(&h, DType::F32)?
    }
}

/// `LlamaForCausalLM`.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Vec<f64>,
    pub config: LlamaConfig,
}

impl Llama {
    /// `vb` is rooted at the checkpoint root: tensors are `model.*` and `lm_head.weight` (absent when
    /// `tie_word_embeddings`, as transformers saves tied models). `cfg` comes from `from_json`.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        // Tied as transformers ties: the head is the embedding, whatever `lm_head.weight` the file
        // also carries (the loader refuses one that differs).
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?
        };
        Ok(Self {
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(cfg, m.pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            norm: m.get(cfg.hidden_size, "norm.weight")?,
            embed_tokens,
            lm_head,
            inv_freq: cfg.inv_freq(),
            config: cfg.clone(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Inference only ([`crate::CausalLm::frozen`]): a tied head becomes a copy cast to `dtype` once,
    /// while the embedding lookup keeps the f32 table (an untied head is cast with the other linears).
    pub(crate) fn cast_tied_head(&mut self, dtype: DType) -> Result<()> {
        if self.config.tie_word_embeddings {
            self.lm_head = ops::cast(&self.embed_tokens, dtype)?;
        }
        Ok(())
    }

    /// Logits `[B, T, V]` (f32); arguments as [`crate::opt::Opt::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        key_mask: &Tensor,
        positions: &[Vec<i64>],
        dtype: DType,
        attn: AttnImpl,
        mut cache: Option<&mut KvCache>,
        drop: Option<&Dropout>,
    ) -> Result<Tensor> {
        let t = input_ids.dim(1)?;
        let dev = input_ids.device();
        // Mixed precision as torch.autocast runs transformers' Llama: embeddings, RMSNorm, RoPE and the
        // residual stream in f32, every linear and attention matmul in `dtype`.
        let mut x = ops::cast(&ops::embedding(&self.embed_tokens, input_ids)?, DType::F32)?;
        let rope = rope_tables(&self.inv_freq, positions, DType::F32, dev)?;
        let bias = attention_bias(key_mask, t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &rope, &bias, cache.as_deref_mut().map(|c| (c, i)), drop, dtype, attn)?;
        }
        let x = ops::cast(&ops::rms_norm_in(&x, &self.norm, self.config.rms_norm_eps, dtype)?, dtype)?;
        let head = Linear { weight: self.lm_head.clone(), bias: None };
        ops::cast(&head.forward(&x)?, DType::F32)
    }
}

/// transformers' generate fills pad positions with 1 for Llama.
pub const PAD_POSITION: i64 = 1;
