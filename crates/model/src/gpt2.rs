//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"), following
//! transformers' `modeling_gpt2.py`: pre-LN blocks, learned absolute positions (`wpe`, `n_positions`
//! rows), one fused q/k/v projection, `gelu_new` MLP, head tied to `wte`. Its projections are `Conv1D`s:
//! the checkpoint stores each weight `[in, out]` (transposed against `nn.Linear`), and so do the `Var`s
//! here, so a saved checkpoint is what transformers wrote; the layers read them through a transposed
//! view (sharing storage, so optimizer steps show through). Dropout where `GPT2LMHeadModel.train()` has
//! it: `embd_pdrop` on the embeddings, `attn_pdrop` on the attention probabilities, `resid_pdrop` after
//! each block's output projection.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::cache::KvCache;
use crate::config_keys::{self, key_error, TokenIds};
use crate::dropout::Dropout;
use crate::ops::{self, attention, attention_bias, attention_with_dropout, AttnImpl, Linear};

/// A GPT-2 `config.json`, field names as transformers writes them. Absent keys take `GPT2Config`'s
/// defaults (dropout rates 0.1 included: transformers trains with them); other keys are audited.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    /// Every other key (audited, see [`GPT2_HARMLESS`]).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_positions() -> usize {
    1024
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

/// GPT-2 keys that cannot change what crossfeed computes, and why.
pub const GPT2_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "initializer_range",
    // The old name of n_positions' causal-mask size; transformers 5 reads no line of it.
    "n_ctx",
    // The multiple-choice head of GPT2DoubleHeadsModel; a causal LM has none.
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "summary_last_dropout",
];

impl Gpt2Config {
    /// Reads `config.json` (`path` names it in errors) as transformers would, refusing every setting
    /// that would change the computation and that crossfeed does not implement.
    pub fn from_json(config: &Value, path: &Path) -> crate::Result<Self> {
        let cfg: Self = config_keys::parse(config, path)?;
        config_keys::audit(&cfg.other, GPT2_HARMLESS, "gpt2", path)?;
        // `gelu_pytorch_tanh` is the same tanh approximation (torch's fused kernel).
        if cfg.activation_function != "gelu_new" && cfg.activation_function != "gelu_pytorch_tanh" {
            return Err(key_error(path, "activation_function", format!("{:?} is not supported (supported: \"gelu_new\", \"gelu_pytorch_tanh\")", cfg.activation_function)));
        }
        if cfg.reorder_and_upcast_attn {
            return Err(key_error(path, "reorder_and_upcast_attn", "true is not supported (attention scores are computed as in the default eager path)"));
        }
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(key_error(path, "n_head", format!("{} must divide n_embd = {}", cfg.n_head, cfg.n_embd)));
        }
        for (k, p) in [("resid_pdrop", cfg.resid_pdrop), ("embd_pdrop", cfg.embd_pdrop), ("attn_pdrop", cfg.attn_pdrop)] {
            if !(0.0..1.0).contains(&p) {
                return Err(key_error(path, k, format!("{p} must be in [0, 1)")));
            }
        }
        Ok(cfg)
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// A `Conv1D` of the checkpoint (`weight: [in, out]`, `bias: [out]`) as a [`Linear`] over the
/// transposed view of its weight.
fn conv1d(vb: VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    Ok(Linear { weight: vb.get((inp, out), "weight")?.t()?, bias: Some(vb.get(out, "bias")?) })
}

#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }
    /// In a model that computes in `dtype` ([`ops::layer_norm_in`]).
    fn forward(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        ops::layer_norm_in(x, &self.weight, &self.bias, self.eps, dtype)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: Norm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: Norm,
    c_fc: Linear,
    mlp_proj: Linear,
    heads: usize,
    /// transformers' `scaling`: `head_dim^-0.5` (when `scale_attn_weights`), over `layer + 1` (when
    /// `scale_attn_by_inverse_layer_idx`).
    scale: f64,
    attn_pdrop: f64,
    resid_pdrop: f64,
    /// `gelu_pytorch_tanh` (torch's one-op tanh GELU) instead of `gelu_new`'s op-by-op formula: the
    /// same in f32, rounded differently in bf16/f16.
    pytorch_tanh: bool,
}

impl Block {
    fn new(cfg: &Gpt2Config, layer: usize, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (cfg.n_embd, cfg.inner_dim(), cfg.layer_norm_epsilon);
        let mut scale = if cfg.scale_attn_weights { ((h / cfg.n_head) as f64).powf(-0.5) } else { 1.0 };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Ok(Self {
            ln_1: Norm::new(vb.pp("ln_1"), h, eps)?,
            c_attn: conv1d(vb.pp("attn").pp("c_attn"), h, 3 * h)?,
            attn_proj: conv1d(vb.pp("attn").pp("c_proj"), h, h)?,
            ln_2: Norm::new(vb.pp("ln_2"), h, eps)?,
            c_fc: conv1d(vb.pp("mlp").pp("c_fc"), h, i)?,
            mlp_proj: conv1d(vb.pp("mlp").pp("c_proj"), i, h)?,
            heads: cfg.n_head,
            scale,
            attn_pdrop: cfg.attn_pdrop,
            resid_pdrop: cfg.resid_pdrop,
            pytorch_tanh: cfg.activation_function == "gelu_pytorch_tanh",
        })
    }

    fn attention(&self, x: &Tensor, bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        let qkv = self.c_attn.forward_as(x, dtype)?;
        let split = |i: usize| qkv.narrow(2, i * h, h)?.reshape((b, t, self.heads, hd))?.transpose(1, 2);
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k.contiguous()?, &v.contiguous()?)?,
            None => (k, v),
        };
        let y = match drop.filter(|_| self.attn_pdrop > 0.0) {
            Some(d) => attention_with_dropout(&q, &k, &v, bias, self.scale, |p| d.apply(p, self.attn_pdrop))?,
            None => attention(&q, &k, &v, bias, self.scale, attn)?,
        };
        self.attn_proj.forward(&y.transpose(1, 2)?.reshape((b, t, h))?)
    }

    /// `x` is the f32 residual stream (autocast: layer norms in f32, linears and attention in `dtype`).
    fn forward(&self, x: &Tensor, bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let resid = |y: Tensor| -> Result<Tensor> {
            let y = match drop {
                Some(d) => d.apply(&y, self.resid_pdrop)?,
                None => y,
            };
            ops::cast(&y, DType::F32)
        };
        let x = (x + resid(self.attention(&self.ln_1.forward(x, dtype)?, bias, cache, drop, dtype, attn)?)?)?;
        let pre = self.c_fc.forward_as(&self.ln_2.forward(&x, dtype)?, dtype)?;
        let hidden = if self.pytorch_tanh { ops::gelu_tanh(&pre)? } else { ops::gelu_new(&pre)? };
        x + resid(self.mlp_proj.forward(&hidden)?)?
    }
}

/// `GPT2LMHeadModel`.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Tensor,
    pub config: Gpt2Config,
}

impl Gpt2 {
    /// `vb` is rooted at the checkpoint root: tensors are `transformer.*` (the loader adds the prefix
    /// that old hub checkpoints lack) and, untied, `lm_head.weight`. `cfg` comes from `from_json`.
    pub fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("transformer");
        let wte = m.get((cfg.vocab_size, cfg.n_embd), "wte.weight")?;
        let lm_head = if cfg.tie_word_embeddings { wte.clone() } else { vb.get((cfg.vocab_size, cfg.n_embd), "lm_head.weight")? };
        Ok(Self {
            wpe: m.get((cfg.n_positions, cfg.n_embd), "wpe.weight")?,
            blocks: (0..cfg.n_layer).map(|i| Block::new(cfg, i, m.pp("h").pp(i))).collect::<Result<_>>()?,
            ln_f: Norm::new(m.pp("ln_f"), cfg.n_embd, cfg.layer_norm_epsilon)?,
            wte,
            lm_head,
            config: cfg.clone(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Inference only ([`crate::CausalLm::frozen`]): a tied head becomes a copy of `wte` cast to `dtype`
    /// once, while the embedding lookup keeps the f32 table (an untied head is cast with the linears).
    pub(crate) fn cast_tied_head(&mut self, dtype: DType) -> Result<()> {
        if self.config.tie_word_embeddings {
            self.lm_head = ops::cast(&self.wte, dtype)?;
        }
        Ok(())
    }

    /// Logits `[B, T, V]` (f32); arguments as [`crate::opt::Opt::forward`] (positions index `wpe`).
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
        let f32 = |t: &Tensor| ops::cast(t, DType::F32);
        let pos = ops::position_tensor(positions, 0, input_ids.device())?;
        let mut x = (f32(&ops::embedding(&self.wte, input_ids)?)? + f32(&ops::embedding(&self.wpe, &pos)?)?)?;
        if let Some(d) = drop {
            x = d.apply(&x, self.config.embd_pdrop)?;
        }
        let bias = attention_bias(key_mask, t)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &bias, cache.as_deref_mut().map(|c| (c, i)), drop, dtype, attn)?;
        }
        let x = ops::cast(&self.ln_f.forward(&x, dtype)?, dtype)?;
        let head = Linear { weight: self.lm_head.clone(), bias: None };
        f32(&head.forward(&x)?)
    }

    /// Whether training applies any dropout.
    pub fn has_dropout(&self) -> bool {
        let c = &self.config;
        c.resid_pdrop > 0.0 || c.embd_pdrop > 0.0 || c.attn_pdrop > 0.0
    }
}

/// GPT-2's embedding tables (`wte`, `wpe`), which stay f32 in a frozen bf16/f16 model as every model's
/// `embed_*` tables do (autocast gathers f32 embeddings).
pub(crate) fn is_embedding_table(name: &str) -> bool {
    name.ends_with("wte.weight") || name.ends_with("wpe.weight")
}

/// transformers' generate fills pad positions with 1 (as for Llama).
pub const PAD_POSITION: i64 = 1;
