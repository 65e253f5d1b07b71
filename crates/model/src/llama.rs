//! Llama (Touvron et al. 2023; Llama 3.2, Meta 2024), following transformers' `modeling_llama.py`:
//! grouped-query attention, RMSNorm, SwiGLU, rotate-half RoPE with optional `llama3` frequency scaling,
//! tied or untied embeddings. Unlike candle-transformers' llama it returns logits for every position,
//! honours a padding mask, and uses only ops with a backward pass.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::cache::KvCache;
use crate::ops::{self, attention, attention_bias, rms_norm, Linear};

#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default = "default_orig_max")]
    pub original_max_position_embeddings: usize,
}
fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn default_orig_max() -> usize {
    8192
}

/// `eos_token_id` is an int in most configs and a list in Llama 3 instruct ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// The fields of a Llama `config.json` that change the computation.
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
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
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
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
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
            .map(|i| 1.0 / (self.rope_theta as f32).powf(i as f32 / dim as f32) as f64)
            .map(|f| f as f32 as f64)
            .collect();
        let Some(s) = self.rope_scaling.as_ref().filter(|s| s.rope_type == "llama3") else {
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
fn rope_tables(inv_freq: &[f64], positions: &[Vec<i64>], dtype: DType, dev: &Device) -> Result<(Tensor, Tensor)> {
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
        Tensor::from_vec(cos, shape, dev)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, shape, dev)?.to_dtype(dtype)?,
    ))
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd, b) = (cfg.hidden_size, cfg.head_dim(), cfg.attention_bias);
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), h, cfg.num_attention_heads * hd, b)?,
            k_proj: Linear::load(vb.pp("k_proj"), h, cfg.kv_heads() * hd, b)?,
            v_proj: Linear::load(vb.pp("v_proj"), h, cfg.kv_heads() * hd, b)?,
            o_proj: Linear::load(vb.pp("o_proj"), cfg.num_attention_heads * hd, h, b)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, h: usize| y.reshape((b, t, h, self.head_dim))?.transpose(1, 2);
        let q = ops::rope(&split(self.q_proj.forward(x)?, self.heads)?, &rope.0, &rope.1)?;
        let k = ops::rope(&split(self.k_proj.forward(x)?, self.kv_heads)?, &rope.0, &rope.1)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k.contiguous()?, &v.contiguous()?)?,
            None => (k, v),
        };
        let y = attention(&q, &k, &v, bias, (self.head_dim as f64).powf(-0.5))?;
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
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate_proj.forward(x)?, self.up_proj.forward(x)?);
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

    fn forward(&self, x: &Tensor, rope: &(Tensor, Tensor), bias: &Tensor, cache: Option<(&mut KvCache, usize)>) -> Result<Tensor> {
        let h = self.self_attn.forward(&rms_norm(x, &self.input_layernorm, self.eps)?, rope, bias, cache)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&rms_norm(&x, &self.post_attention_layernorm, self.eps)?)?;
        x + h
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
    /// `vb` is rooted at the checkpoint root: tensors are `model.*` and `lm_head.weight`. The head is
    /// tied when the checkpoint has no `lm_head.weight` (as transformers saves tied models).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.hidden_act != "silu" {
            candle_core::bail!("Llama hidden_act {:?} is not supported (only \"silu\")", cfg.hidden_act);
        }
        if let Some(s) = &cfg.rope_scaling {
            if s.rope_type != "llama3" && s.rope_type != "default" {
                candle_core::bail!("rope_scaling.rope_type {:?} is not supported (\"llama3\", \"default\")", s.rope_type);
            }
        }
        let m = vb.pp("model");
        let embed_tokens = m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
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

    /// Logits `[B, T, V]` (f32); arguments as [`crate::opt::Opt::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        key_mask: &Tensor,
        positions: &[Vec<i64>],
        dtype: DType,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let t = input_ids.dim(1)?;
        let dev = input_ids.device();
        let mut x = ops::cast(&ops::embedding(&self.embed_tokens, input_ids)?, dtype)?;
        let rope = rope_tables(&self.inv_freq, positions, dtype, dev)?;
        let bias = attention_bias(key_mask, t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &rope, &bias, cache.as_deref_mut().map(|c| (c, i)))?;
        }
        let x = rms_norm(&x, &self.norm, self.config.rms_norm_eps)?;
        let head = Linear { weight: self.lm_head.clone(), bias: None };
        ops::cast(&head.forward(&x)?, DType::F32)
    }
}

/// transformers' generate fills pad positions with 1 for Llama.
pub const PAD_POSITION: i64 = 1;
