//! OPT (Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models"), following
//! transformers' `modeling_opt.py`. Both variants: 125m-style pre-LN with a final layer norm, and
//! 350m-style post-LN (`do_layer_norm_before = false`) with `project_in`/`project_out` between
//! `word_embed_proj_dim` and `hidden_size`. Learned positions carry OPT's offset of 2 and are derived
//! from the attention mask. The LM head is tied to `embed_tokens`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::config_keys::{self, key_error, TokenIds};

use crate::cache::KvCache;
use crate::dropout::Dropout;
use crate::ops::{self, attention, attention_bias, attention_with_dropout, AttnImpl, Linear};

/// OPT's learned positional embedding table is offset by 2 (a fairseq legacy).
const POSITION_OFFSET: i64 = 2;

/// An OPT `config.json`, field names as transformers writes them (4.x and 5.x). Absent keys take
/// transformers' `OPTConfig` defaults; keys not listed here are audited by [`OptConfig::from_json`].
#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_true")]
    pub do_layer_norm_before: bool,
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "default_relu")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub enable_bias: bool,
    #[serde(default = "default_true")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default)]
    pub _remove_final_layer_norm: bool,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Every other key (audited, see [`OPT_HARMLESS`]).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_true() -> bool {
    true
}
fn default_relu() -> String {
    "relu".into()
}
fn default_max_pos() -> usize {
    2048
}

/// OPT keys that cannot change what crossfeed computes, and why.
pub const OPT_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "init_std",
    // Training-time regularisation: `dropout` and `attention_dropout` are applied in training
    // (`crate::dropout`); `activation_dropout` is read by no line of transformers' modeling_opt.py;
    // `layerdrop` is not applied (see `unapplied_training_settings`).
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "layerdrop",
];

/// Training-only OPT keys crossfeed does not apply.
pub const OPT_TRAINING_ONLY: &[&str] = &["layerdrop"];

impl OptConfig {
    /// Reads `config.json` (`path` names it in errors) as transformers 4.x or 5.x would, refusing
    /// every setting that would change the computation and that crossfeed does not implement.
    pub fn from_json(config: &Value, path: &Path) -> crate::Result<Self> {
        let cfg: Self = config_keys::parse(config, path)?;
        config_keys::audit(&cfg.other, OPT_HARMLESS, "opt", path)?;
        if cfg.activation_function != "relu" {
            return Err(key_error(path, "activation_function", format!("{:?} is not supported (supported: \"relu\")", cfg.activation_function)));
        }
        if !cfg.layer_norm_elementwise_affine {
            return Err(key_error(path, "layer_norm_elementwise_affine", "false is not supported (layer norms with weight and bias only)"));
        }
        if !cfg.tie_word_embeddings {
            return Err(key_error(path, "tie_word_embeddings", "false is not supported for OPT (the head is the token embedding)"));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(key_error(path, "num_attention_heads", format!("{} must divide hidden_size = {}", cfg.num_attention_heads, cfg.hidden_size)));
        }
        Ok(cfg)
    }

    pub fn embed_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
    /// `dropout` (after the attention and feed-forward blocks) and `attention_dropout` (on the
    /// attention probabilities), 0 when absent as in `OPTConfig`.
    pub fn dropout_rates(&self) -> (f64, f64) {
        let rate = |k: &str| self.other.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        (rate("dropout"), rate("attention_dropout"))
    }
    fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self._remove_final_layer_norm
    }
}

#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")? })
    }
    /// In a model that computes in `dtype` ([`ops::layer_norm_in`]).
    fn forward(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        ops::layer_norm_in(x, &self.weight, &self.bias, 1e-5, dtype)
    }
}


#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
    attention_dropout: f64,
}

impl Attention {
    fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let b = cfg.enable_bias;
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), h, h, b)?,
            k_proj: Linear::load(vb.pp("k_proj"), h, h, b)?,
            v_proj: Linear::load(vb.pp("v_proj"), h, h, b)?,
            out_proj: Linear::load(vb.pp("out_proj"), h, h, b)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            attention_dropout: cfg.dropout_rates().1,
        })
    }

    /// `x` from the f32 residual stream; projections and attention run in `dtype` (autocast).
    fn forward(&self, x: &Tensor, bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor| y.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2);
        // transformers scales the query projection, not the scores (its comment: "keep the original
        // order of scaling"); in bf16 the two round differently.
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split(ops::mul_scalar(&self.q_proj.forward_as(x, dtype)?, scale)?)?;
        let k = split(self.k_proj.forward_as(x, dtype)?)?;
        let v = split(self.v_proj.forward_as(x, dtype)?)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k.contiguous()?, &v.contiguous()?)?,
            None => (k, v),
        };
        let y = match drop.filter(|_| self.attention_dropout > 0.0) {
            Some(d) => attention_with_dropout(&q, &k, &v, bias, 1.0, |p| d.apply(p, self.attention_dropout))?,
            None => attention(&q, &k, &v, bias, 1.0, attn)?,
        };
        let y = y.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?;
        self.out_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    self_attn: Attention,
    self_attn_layer_norm: Norm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: Norm,
    pre_ln: bool,
    dropout: f64,
}

impl Layer {
    fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            self_attn_layer_norm: Norm::new(vb.pp("self_attn_layer_norm"), h)?,
            fc1: Linear::load(vb.pp("fc1"), h, cfg.ffn_dim, cfg.enable_bias)?,
            fc2: Linear::load(vb.pp("fc2"), cfg.ffn_dim, h, cfg.enable_bias)?,
            final_layer_norm: Norm::new(vb.pp("final_layer_norm"), h)?,
            pre_ln: cfg.do_layer_norm_before,
            dropout: cfg.dropout_rates().0,
        })
    }

    /// `x` is the f32 residual stream (torch.autocast keeps it f32: the embeddings and layer norms run
    /// in f32, an add of f32 and bf16 gives f32); the linears and attention run in `dtype`.
    fn forward(&self, x: &Tensor, bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        // The block's output (in `dtype`) dropped, then widened to join the residual stream.
        let block = |y: Tensor| -> Result<Tensor> {
            let y = match drop {
                Some(d) => d.apply(&y, self.dropout)?,
                None => y,
            };
            ops::cast(&y, DType::F32)
        };
        let h = if self.pre_ln { self.self_attn_layer_norm.forward(x, dtype)? } else { x.clone() };
        let mut x = (x + block(self.self_attn.forward(&h, bias, cache, drop, dtype, attn)?)?)?;
        if !self.pre_ln {
            x = self.self_attn_layer_norm.forward(&x, dtype)?;
        }
        let h = if self.pre_ln { self.final_layer_norm.forward(&x, dtype)? } else { x.clone() };
        let h = block(self.fc2.forward(&self.fc1.forward_relu(&ops::cast(&h, dtype)?)?)?)?;
        let mut x = (x + h)?;
        if !self.pre_ln {
            x = self.final_layer_norm.forward(&x, dtype)?;
        }
        Ok(x)
    }
}

/// `OPTForCausalLM`.
#[derive(Debug, Clone)]
pub struct Opt {
    embed_tokens: Tensor,
    /// The LM head: `embed_tokens` itself (tied), or its cast copy in a frozen bf16/f16 model.
    lm_head: Tensor,
    embed_positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    final_layer_norm: Option<Norm>,
    layers: Vec<Layer>,
    pub config: OptConfig,
}

impl Opt {
    /// `vb` is rooted at the checkpoint root: tensors are `model.decoder.*`. `cfg` comes from `from_json`.
    pub fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let d = vb.pp("model").pp("decoder");
        let (h, e) = (cfg.hidden_size, cfg.embed_dim());
        let projected = e != h;
        let embed_tokens = d.get((cfg.vocab_size, e), "embed_tokens.weight")?;
        Ok(Self {
            lm_head: embed_tokens.clone(),
            embed_tokens,
            embed_positions: d.get((cfg.max_position_embeddings + POSITION_OFFSET as usize, h), "embed_positions.weight")?,
            project_in: if projected { Some(Linear::load(d.pp("project_in"), e, h, false)?) } else { None },
            project_out: if projected { Some(Linear::load(d.pp("project_out"), h, e, false)?) } else { None },
            final_layer_norm: if cfg.has_final_layer_norm() { Some(Norm::new(d.pp("final_layer_norm"), h)?) } else { None },
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(cfg, d.pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            config: cfg.clone(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Inference only ([`crate::CausalLm::frozen`]): the tied head becomes a copy cast to `dtype` once,
    /// while the embedding lookup keeps the f32 table.
    pub(crate) fn cast_tied_head(&mut self, dtype: DType) -> Result<()> {
        self.lm_head = ops::cast(&self.embed_tokens, dtype)?;
        Ok(())
    }

    /// Logits `[B, T, V]` (f32) for `input_ids: [B, T]` (u32). `key_mask: [B, past + T]` is 1 on real
    /// tokens; `positions` are transformers' `cumsum(mask) - 1` for these T tokens.
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
        // Mixed precision as torch.autocast runs transformers' OPT: embeddings, norms and the residual
        // stream in f32, every linear and attention matmul in `dtype` (its input cast, its output kept).
        let f32 = |t: &Tensor| ops::cast(t, DType::F32);
        let mut x = f32(&ops::embedding(&self.embed_tokens, input_ids)?)?;
        if let Some(p) = &self.project_in {
            x = f32(&p.forward(&ops::cast(&x, dtype)?)?)?;
        }
        let pos = ops::position_tensor(positions, POSITION_OFFSET, dev)?;
        let pos = ops::embedding(&self.embed_positions, &pos)?;
        x = (x + f32(&pos)?)?;
        let bias = attention_bias(key_mask, t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &bias, cache.as_deref_mut().map(|c| (c, i)), drop, dtype, attn)?;
        }
        if let Some(n) = &self.final_layer_norm {
            x = n.forward(&x, dtype)?;
        }
        let mut x = ops::cast(&x, dtype)?;
        if let Some(p) = &self.project_out {
            x = p.forward(&x)?;
        }
        let head = Linear { weight: self.lm_head.clone(), bias: None };
        f32(&head.forward(&x)?)
    }
}

/// OPT pad positions: `(cumsum * mask) - 1` is -1 on pads, i.e. table row 1 after the offset.
pub const PAD_POSITION: i64 = -1;
