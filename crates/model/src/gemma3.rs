//! Gemma 3 text (`gemma3_text`; Gemma Team 2025, "Gemma 3 Technical Report"), following transformers'
//! `modeling_gemma3.py` (`Gemma3ForCausalLM`): embeddings scaled by `sqrt(hidden_size)`, RMSNorm with
//! `(1 + w)` computed in f32 and cast back to its input's dtype, norms before and after attention and
//! MLP, q/k RMSNorm per head, scores scaled by `query_pre_attn_scalar^-0.5`, GeGLU (gelu-tanh), local
//! layers (`layer_types`, or 4.x's `sliding_window_pattern`) attending over the last `sliding_window`
//! tokens with their own RoPE base, global layers with optional linear RoPE scaling, optional final
//! logit soft-capping, tied head.
//!
//! The multimodal `gemma3` config (Gemma 3 4B and up) is read as its text model ([`text_part`],
//! [`text_weight_name`]).
//!
//! Gemma 2 (`gemma2`, transformers' `modeling_gemma2.py`) is the same model without the q/k norms, with
//! attention logit soft-capping and one RoPE: [`crate::gemma2`] reads its config into a
//! [`Gemma3Config`] with [`GemmaFamily::Gemma2`].
//!
//! The sliding window counts positions (a key is visible when its position is within `sliding_window`
//! of the query's). transformers counts cache slots (`kv_idx > q_idx - sliding_window`, masking_utils'
//! `sliding_window_overlay`); in a right-padded batch the two are equal, and in a left-padded one a
//! row's slots are its positions shifted by its pad count, so the window holds the same tokens. Measured
//! with transformers 5.25: greedy `generate` over a left-padded batch gives each prompt the tokens it gets
//! alone (windows 2-6, eager and sdpa, 16 new tokens, 64 rows: every token equal, logits within 2.1e-5);
//! `scripts/make_model_fixtures.py` asserts it for the fixture, whose golden is the batch.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::cache::KvCache;
use crate::config_keys::{self, key_error, TokenIds};
use crate::dropout::Dropout;
use crate::llama::{rope_tables, RopeParameters};
use crate::ops::{self, attention, attention_bias, attention_with_dropout, AttnImpl, Linear, MASK_MIN};

/// The keys of a multimodal `gemma3` config (`Gemma3ForConditionalGeneration`: Gemma 3 4B and up) besides
/// `text_config`, none of which changes the text model: the vision tower's config, the image-token ids
/// and count (text never holds an image token), init scale, and bookkeeping. `tie_word_embeddings` and
/// the special-token ids are checked or carried over by [`text_part`].
const MULTIMODAL_KEYS: &[&str] = &[
    "architectures", "model_type", "text_config", "vision_config", "boi_token_index", "eoi_token_index",
    "image_token_index", "mm_tokens_per_image", "initializer_range", "tie_word_embeddings", "transformers_version",
    "dtype", "torch_dtype", "_name_or_path", "_commit_hash", "bos_token_id", "eos_token_id", "pad_token_id",
];

/// `config` itself, or for a multimodal `gemma3` config its text model as a `gemma3_text` config
/// (`Gemma3ForCausalLM`). crossfeed trains and samples text: the vision tower and projector are not
/// loaded, and a saved checkpoint is the text model, which transformers loads as `Gemma3ForCausalLM`.
/// The hub's text_config lists only what differs from `Gemma3TextConfig`'s defaults, so the sizes it
/// leaves out take those defaults (vocab 262,208, hidden 2,304, MLP 9,216, 26 layers, 8 heads); the
/// top-level token ids carry over where the text part has none (generate reads `eos_token_id` there).
pub fn text_part(config: Value, path: &Path) -> crate::Result<Value> {
    if config.get("model_type").and_then(Value::as_str) != Some("gemma3") {
        return Ok(config);
    }
    let top = config.as_object().cloned().unwrap_or_default();
    if let Some(key) = top.keys().find(|k| !MULTIMODAL_KEYS.contains(&k.as_str())) {
        return Err(key_error(path, key, "not a key of a Gemma 3 multimodal config that crossfeed knows; it may change the text model"));
    }
    let Some(Value::Object(mut text)) = top.get("text_config").cloned() else {
        return Err(key_error(path, "text_config", "missing or not an object: a Gemma 3 multimodal config holds its text model there"));
    };
    match text.get("model_type").and_then(Value::as_str) {
        None | Some("gemma3_text") => {}
        Some(other) => return Err(key_error(path, "text_config.model_type", format!("{other:?} (expected \"gemma3_text\")"))),
    }
    let tie = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(true);
    if tie(top.get("tie_word_embeddings")) != tie(text.get("tie_word_embeddings")) {
        return Err(key_error(path, "tie_word_embeddings", "differs between the top level and text_config"));
    }
    for (key, default) in [("vocab_size", 262_208), ("hidden_size", 2304), ("intermediate_size", 9216), ("num_hidden_layers", 26), ("num_attention_heads", 8)] {
        text.entry(key).or_insert(Value::from(default));
    }
    for key in ["bos_token_id", "eos_token_id", "pad_token_id", "transformers_version"] {
        if let Some(v) = top.get(key).filter(|_| !text.contains_key(key)) {
            text.insert(key.into(), v.clone());
        }
    }
    // transformers' Gemma3ForConditionalGeneration ends at lm_head: it applies no final soft-capping,
    // whatever text_config says (the released 4B-27B configs set none anyway), so neither does the text
    // model read from it, nor the checkpoint saved from that.
    text.insert("final_logit_softcapping".into(), Value::Null);
    text.insert("model_type".into(), Value::from("gemma3_text"));
    text.insert("architectures".into(), serde_json::json!(["Gemma3ForCausalLM"]));
    Ok(Value::Object(text))
}

/// Whether checkpoint tensor `name` of a multimodal Gemma 3 belongs to what [`text_part`] keeps, and
/// under which name: the language model's `language_model.model.*` (as transformers writes it) or
/// `model.language_model.*` (its in-memory layout) is `model.*`; the vision tower and projector are not.
pub fn text_weight_name(name: &str) -> Option<String> {
    for prefix in ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."] {
        if name.starts_with(prefix) {
            return None;
        }
    }
    for prefix in ["language_model.model.", "model.language_model."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return Some(format!("model.{rest}"));
        }
    }
    Some(name.strip_prefix("language_model.").unwrap_or(name).to_string())
}

/// A `gemma3_text` `config.json`, field names as transformers writes them (4.x and 5.x). Absent keys
/// take `Gemma3TextConfig`'s defaults; other keys are audited by [`Gemma3Config::from_json`].
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_kv_heads")]
    pub num_key_value_heads: usize,
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_head_dim")]
    pub query_pre_attn_scalar: usize,
    #[serde(default = "default_window")]
    pub sliding_window: usize,
    /// 5.x: one of `sliding_attention` / `full_attention` per layer.
    pub layer_types: Option<Vec<String>>,
    /// 4.x: every `sliding_window_pattern`-th layer is global (default 6).
    pub sliding_window_pattern: Option<usize>,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    /// 4.x RoPE: global base, local base, global scaling.
    pub rope_theta: Option<f64>,
    pub rope_local_base_freq: Option<f64>,
    pub rope_scaling: Option<RopeParameters>,
    /// 5.x RoPE: `{"full_attention": {...}, "sliding_attention": {...}}`.
    pub rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    /// Every other key (audited, see [`GEMMA3_HARMLESS`]).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
    /// Per layer: (sliding, inverse RoPE frequencies), resolved by `from_json`.
    #[serde(skip)]
    pub layers: Vec<(bool, Vec<f64>)>,
    /// Which model the config builds, set by the reader (`from_json` or `gemma2::config_from_json`).
    #[serde(skip)]
    pub family: GemmaFamily,
}

/// Gemma 3 (q/k norms, no attention soft-capping) or Gemma 2 (no q/k norms, scores soft-capped at
/// `attn_logit_softcapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmaFamily {
    #[default]
    Gemma3,
    Gemma2,
}

fn default_kv_heads() -> usize {
    4
}
fn default_head_dim() -> usize {
    256
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_max_pos() -> usize {
    131_072
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_window() -> usize {
    4096
}

/// Gemma 3 keys that cannot change what crossfeed computes, and why.
pub const GEMMA3_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "initializer_range",
    // Which KV-cache class generate builds ("hybrid"); the values are the same with any cache.
    "cache_implementation",
];

impl Gemma3Config {
    /// Reads `config.json` (`path` names it in errors) as transformers 4.x or 5.x would, refusing
    /// every setting that would change the computation and that crossfeed does not implement.
    pub fn from_json(config: &Value, path: &Path) -> crate::Result<Self> {
        refuse_null_window(config, path)?;
        let mut cfg: Self = config_keys::parse(config, path)?;
        config_keys::audit(&cfg.other, GEMMA3_HARMLESS, "gemma3_text", path)?;
        if let Some(c) = cfg.attn_logit_softcapping {
            // transformers 5's Gemma 3 reads no line of it (Gemma 2 caps the scores): refused rather than
            // guessed which era the checkpoint was made for.
            return Err(key_error(path, "attn_logit_softcapping", format!("{c} is not supported (Gemma 3 configs set null; transformers 5 ignores it)")));
        }
        cfg.check(path)?;
        let sliding = cfg.layer_kinds(path, 6)?;
        let (global, local) = cfg.rope_frequencies(path)?;
        cfg.layers = sliding.into_iter().map(|s| (s, if s { local.clone() } else { global.clone() })).collect();
        Ok(cfg)
    }

    /// The checks both families share.
    pub(crate) fn check(&self, path: &Path) -> crate::Result<()> {
        if self.hidden_activation != "gelu_pytorch_tanh" && self.hidden_activation != "gelu_new" {
            return Err(key_error(path, "hidden_activation", format!("{:?} is not supported (supported: \"gelu_pytorch_tanh\")", self.hidden_activation)));
        }
        if self.use_bidirectional_attention {
            return Err(key_error(path, "use_bidirectional_attention", "true is not supported (causal LMs only)"));
        }
        for (key, cap) in [("final_logit_softcapping", self.final_logit_softcapping), ("attn_logit_softcapping", self.attn_logit_softcapping)] {
            if cap.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                return Err(key_error(path, key, "must be a positive number or null"));
            }
        }
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(key_error(path, "num_key_value_heads", format!("{kv} must divide num_attention_heads = {h}")));
        }
        if self.sliding_window == 0 {
            return Err(key_error(path, "sliding_window", "must be at least 1"));
        }
        Ok(())
    }

    /// Per layer, sliding or not: `layer_types`, else every `p`-th layer global, `p` being 4.x's
    /// `sliding_window_pattern` or `default_pattern`.
    pub(crate) fn layer_kinds(&self, path: &Path, default_pattern: usize) -> crate::Result<Vec<bool>> {
        match (&self.layer_types, self.sliding_window_pattern) {
            (Some(types), _) => {
                if types.len() != self.num_hidden_layers {
                    return Err(key_error(path, "layer_types", format!("has {} entries for {} layers", types.len(), self.num_hidden_layers)));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(key_error(path, "layer_types", format!("{other:?} is not supported (\"sliding_attention\", \"full_attention\")"))),
                    })
                    .collect()
            }
            (None, pattern) => {
                let p = pattern.unwrap_or(default_pattern);
                if p == 0 {
                    return Err(key_error(path, "sliding_window_pattern", "must be at least 1"));
                }
                Ok((0..self.num_hidden_layers).map(|i| (i + 1) % p != 0).collect())
            }
        }
    }

    /// Inverse RoPE frequencies of one parameter set (`src` names it in errors): `default`, or `linear`
    /// (frequencies over `factor`), from `theta` unless `p` sets `rope_theta`.
    pub(crate) fn inv_freq(&self, src: &str, p: Option<&RopeParameters>, theta: f64, path: &Path) -> crate::Result<Vec<f64>> {
        let err = |k: &str, m: String| key_error(path, &format!("{src}.{k}"), m);
        let p = p.cloned().unwrap_or_default();
        if let Some((k, _)) = p.other.iter().next() {
            return Err(err(k, "not a RoPE parameter crossfeed applies; it may change the computation".into()));
        }
        let llama3_keys = [("low_freq_factor", p.low_freq_factor.is_some()), ("high_freq_factor", p.high_freq_factor.is_some()),
            ("original_max_position_embeddings", p.original_max_position_embeddings.is_some()),
            ("partial_rotary_factor", p.partial_rotary_factor.is_some_and(|f| f != 1.0))];
        if let Some((k, _)) = llama3_keys.iter().find(|(_, set)| *set) {
            return Err(err(k, "is not applied by Gemma's RoPE (\"default\" or \"linear\")".into()));
        }
        let theta = p.rope_theta.unwrap_or(theta);
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(err("rope_theta", format!("{theta} must be a positive number")));
        }
        let dim = self.head_dim;
        // transformers computes the base frequencies in float32, as for Llama.
        let base = (0..dim).step_by(2).map(|i| (1.0 / (theta as f32).powf(i as f32 / dim as f32)) as f64);
        match p.rope_type.as_deref().or(p.type_.as_deref()).unwrap_or("default") {
            "default" if p.factor.is_none() => Ok(base.collect()),
            "default" => Err(err("factor", "is not applied by rope_type \"default\"".into())),
            "linear" => {
                let f = p.factor.ok_or_else(|| err("factor", "missing (required by rope_type \"linear\")".into()))?;
                if f <= 0.0 {
                    return Err(err("factor", format!("{f} must be > 0")));
                }
                // transformers divides the f32 frequencies by the factor in f32.
                Ok(base.map(|x| (x as f32 / f as f32) as f64).collect())
            }
            other => Err(err("rope_type", format!("{other:?} is not supported (supported: \"default\", \"linear\")"))),
        }
    }

    /// (global, local) inverse frequencies: 5.x's per-layer-type `rope_parameters`, else 4.x's
    /// `rope_theta` (default 1e6) with `rope_scaling` for global layers and `rope_local_base_freq`
    /// (default 1e4) for local ones. RoPE types: `default` and `linear` (frequencies over `factor`).
    fn rope_frequencies(&self, path: &Path) -> crate::Result<(Vec<f64>, Vec<f64>)> {
        let freqs = |src: &str, p: Option<&RopeParameters>, theta: f64| self.inv_freq(src, p, theta, path);
        match &self.rope_parameters {
            Some(per_type) => {
                if let Some(k) = per_type.keys().find(|k| *k != "full_attention" && *k != "sliding_attention") {
                    return Err(key_error(path, &format!("rope_parameters.{k}"), "not a Gemma 3 layer type (\"full_attention\", \"sliding_attention\")"));
                }
                let theta_global = self.rope_theta.unwrap_or(1e6);
                let theta_local = self.rope_local_base_freq.unwrap_or(1e4);
                Ok((
                    freqs("rope_parameters.full_attention", per_type.get("full_attention"), theta_global)?,
                    freqs("rope_parameters.sliding_attention", per_type.get("sliding_attention"), theta_local)?,
                ))
            }
            None => Ok((
                freqs("rope_scaling", self.rope_scaling.as_ref(), self.rope_theta.unwrap_or(1e6))?,
                freqs("rope_local_base_freq", None, self.rope_local_base_freq.unwrap_or(1e4))?,
            )),
        }
    }
}

/// `"sliding_window": null` is not "no window" (transformers' Gemma 2 and 3 fail on it), and dropping the
/// null would give the default 4096: refused.
pub(crate) fn refuse_null_window(config: &Value, path: &Path) -> crate::Result<()> {
    if config.get("sliding_window").is_some_and(Value::is_null) {
        return Err(key_error(path, "sliding_window", "null is not supported (transformers' Gemma models need a window size)"));
    }
    Ok(())
}

/// Gemma's RMSNorm: `x · rsqrt(mean(x²) + eps) · (1 + w)` in f32, cast back to `x`'s dtype, in a
/// model that computes in `dtype` ([`ops::rms_norm_in`]).
fn norm(x: &Tensor, w: &Tensor, eps: f64, dtype: DType) -> Result<Tensor> {
    let scale = (w + 1.0)?;
    ops::cast(&ops::rms_norm_in(&ops::cast(x, DType::F32)?, &scale, eps, dtype)?, x.dtype())
}

#[derive(Debug, Clone)]
struct Layer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Gemma 3's per-head q/k norms (Gemma 2 has none).
    qk_norms: Option<(Tensor, Tensor)>,
    /// Gemma 2's attention logit soft-capping.
    softcap: Option<f64>,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    pre_feedforward_layernorm: Tensor,
    post_feedforward_layernorm: Tensor,
    sliding: bool,
    inv_freq: Vec<f64>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    eps: f64,
    attention_dropout: f64,
}

impl Layer {
    fn new(cfg: &Gemma3Config, i: usize, vb: VarBuilder) -> Result<Self> {
        let (h, hd, b, m) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias, cfg.intermediate_size);
        let (a, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
        let (sliding, inv_freq) = cfg.layers[i].clone();
        Ok(Self {
            q_proj: Linear::load(a.pp("q_proj"), h, cfg.num_attention_heads * hd, b)?,
            k_proj: Linear::load(a.pp("k_proj"), h, cfg.num_key_value_heads * hd, b)?,
            v_proj: Linear::load(a.pp("v_proj"), h, cfg.num_key_value_heads * hd, b)?,
            o_proj: Linear::load(a.pp("o_proj"), cfg.num_attention_heads * hd, h, b)?,
            qk_norms: match cfg.family {
                GemmaFamily::Gemma3 => Some((a.get(hd, "q_norm.weight")?, a.get(hd, "k_norm.weight")?)),
                GemmaFamily::Gemma2 => None,
            },
            softcap: match cfg.family {
                GemmaFamily::Gemma3 => None,
                GemmaFamily::Gemma2 => cfg.attn_logit_softcapping,
            },
            gate_proj: Linear::load(mlp.pp("gate_proj"), h, m, false)?,
            up_proj: Linear::load(mlp.pp("up_proj"), h, m, false)?,
            down_proj: Linear::load(mlp.pp("down_proj"), m, h, false)?,
            input_layernorm: vb.get(h, "input_layernorm.weight")?,
            post_attention_layernorm: vb.get(h, "post_attention_layernorm.weight")?,
            pre_feedforward_layernorm: vb.get(h, "pre_feedforward_layernorm.weight")?,
            post_feedforward_layernorm: vb.get(h, "post_feedforward_layernorm.weight")?,
            sliding,
            inv_freq,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            scale: (cfg.query_pre_attn_scalar as f64).powf(-0.5),
            eps: cfg.rms_norm_eps,
            attention_dropout: cfg.attention_dropout,
        })
    }

    fn attention(&self, x: &Tensor, rope: &(Tensor, Tensor), bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, h: usize| y.reshape((b, t, h, self.head_dim));
        // q/k norms return the projection's dtype; RoPE with f32 tables promotes, attention casts back.
        let rotated = |y: Tensor, h: usize, w: Option<&Tensor>| -> Result<Tensor> {
            let y = heads(y, h)?;
            let y = match w {
                Some(w) => norm(&y, w, self.eps, dtype)?,
                None => y,
            };
            ops::rope_low(&y.transpose(1, 2)?, &rope.0, &rope.1)
        };
        let (qn, kn) = (self.qk_norms.as_ref().map(|n| &n.0), self.qk_norms.as_ref().map(|n| &n.1));
        let q = ops::cast(&rotated(self.q_proj.forward_as(x, dtype)?, self.heads, qn)?, dtype)?;
        // The keys stay f32 until attention: torch repeats them per query head (`repeat_kv`) before
        // autocast rounds them, so each head's dK rounds on its own and the group sums in f32.
        let k = rotated(self.k_proj.forward_as(x, dtype)?, self.kv_heads, kn)?;
        let v = heads(self.v_proj.forward_as(x, dtype)?, self.kv_heads)?.transpose(1, 2)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &ops::cast(&k, dtype)?.contiguous()?, &v.contiguous()?)?,
            None => (k, v),
        };
        let drop = drop.filter(|_| self.attention_dropout > 0.0);
        let y = match (self.softcap, drop) {
            (Some(cap), Some(d)) => ops::attention_softcapped(&q, &k, &v, bias, self.scale, cap, |p| d.apply(p, self.attention_dropout))?,
            (Some(cap), None) => ops::attention_softcapped(&q, &k, &v, bias, self.scale, cap, |p| Ok(p.clone()))?,
            (None, Some(d)) => attention_with_dropout(&q, &k, &v, bias, self.scale, |p| d.apply(p, self.attention_dropout))?,
            (None, None) => attention(&q, &k, &v, bias, self.scale, attn)?,
        };
        self.o_proj.forward(&y.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?)
    }

    /// `x` is the f32 residual stream; each block's output is normed in its own dtype, then widened.
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, x: &Tensor, rope: &(Tensor, Tensor), bias: &Tensor, cache: Option<(&mut KvCache, usize)>, drop: Option<&Dropout>, dtype: DType, attn: AttnImpl) -> Result<Tensor> {
        let h = self.attention(&norm(x, &self.input_layernorm, self.eps, dtype)?, rope, bias, cache, drop, dtype, attn)?;
        let x = (x + ops::cast(&norm(&h, &self.post_attention_layernorm, self.eps, dtype)?, DType::F32)?)?;
        let h = norm(&x, &self.pre_feedforward_layernorm, self.eps, dtype)?;
        let (gate, up) = (self.gate_proj.forward_as(&h, dtype)?, self.up_proj.forward_as(&h, dtype)?);
        let h = self.down_proj.forward(&(ops::gelu_tanh(&gate)? * up)?)?;
        x + ops::cast(&norm(&h, &self.post_feedforward_layernorm, self.eps, dtype)?, DType::F32)?
    }
}

/// `full` with every key more than `window - 1` positions before its query masked out. Key positions
/// are counted from `key_mask` (`cumsum - 1`, on the device: no host read), query positions are
/// `positions`. `full: [B, 1, Tq, Tk]`.
fn sliding_bias(full: &Tensor, key_mask: &Tensor, positions: &[Vec<i64>], window: usize) -> Result<Tensor> {
    let (b, tk) = key_mask.dims2()?;
    let tq = positions.first().map_or(0, Vec::len);
    let dev = key_mask.device();
    let k_pos = (key_mask.to_dtype(DType::F32)?.cumsum(1)? - 1.0)?.reshape((b, 1, 1, tk))?;
    let q: Vec<f32> = positions.iter().flatten().map(|&p| p as f32).collect();
    let q_pos = crate::transfer::upload(q, (b, 1, tq, 1), dev)?;
    let outside = q_pos.broadcast_sub(&k_pos)?.ge(window as f64)?.to_dtype(DType::F32)?;
    full.broadcast_add(&(outside * MASK_MIN as f64)?)?.clamp(MASK_MIN, 0f32)
}

/// `Gemma3ForCausalLM`.
#[derive(Debug, Clone)]
pub struct Gemma3 {
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    pub config: Gemma3Config,
}

impl Gemma3 {
    /// `vb` is rooted at the checkpoint root: tensors are `model.*` and, untied, `lm_head.weight`.
    /// `cfg` comes from `from_json`.
    pub fn new(cfg: &Gemma3Config, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings { embed_tokens.clone() } else { vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")? };
        Ok(Self {
            layers: (0..cfg.num_hidden_layers).map(|i| Layer::new(cfg, i, m.pp("layers").pp(i))).collect::<Result<_>>()?,
            norm: m.get(cfg.hidden_size, "norm.weight")?,
            embed_tokens,
            lm_head,
            config: cfg.clone(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Inference only ([`crate::CausalLm::frozen`]): a tied head becomes a copy of `embed_tokens` cast
    /// to `dtype` once, while the embedding lookup keeps the f32 table (an untied head is cast with the
    /// linears).
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
        // transformers scales by sqrt(hidden) as an f32 scalar in the (f32) embedding's dtype.
        let scale = (self.config.hidden_size as f64).sqrt() as f32 as f64;
        let mut x = (ops::cast(&ops::embedding(&self.embed_tokens, input_ids)?, DType::F32)? * scale)?;
        let full = attention_bias(key_mask, t)?;
        let needs = |sliding: bool| self.layers.iter().any(|l| l.sliding == sliding);
        let local = if needs(true) { Some(sliding_bias(&full, key_mask, positions, self.config.sliding_window)?) } else { None };
        // One pair of RoPE tables per distinct frequency set (global, local).
        let mut tables: Vec<(bool, (Tensor, Tensor))> = Vec::new();
        for s in [false, true] {
            if let Some(l) = self.layers.iter().find(|l| l.sliding == s) {
                tables.push((s, rope_tables(&l.inv_freq, positions, DType::F32, dev)?));
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = &tables.iter().find(|(s, _)| *s == layer.sliding).expect("tables of every layer kind").1;
            let bias = match (&local, layer.sliding) {
                (Some(l), true) => l,
                _ => &full,
            };
            x = layer.forward(&x, rope, bias, cache.as_deref_mut().map(|c| (c, i)), drop, dtype, attn)?;
        }
        let x = ops::cast(&norm(&x, &self.norm, self.config.rms_norm_eps, dtype)?, dtype)?;
        let head = Linear { weight: self.lm_head.clone(), bias: None };
        // The cap applies to the head's output in its own dtype, as transformers computes it under
        // autocast: division, tanh and product each rounded to bf16/f16.
        let logits = head.forward(&x)?;
        let logits = match self.config.final_logit_softcapping {
            Some(cap) => ops::softcap(&logits, cap)?,
            None => logits,
        };
        ops::cast(&logits, DType::F32)
    }
}

/// transformers' generate fills pad positions with 1 (as for Llama).
pub const PAD_POSITION: i64 = 1;
