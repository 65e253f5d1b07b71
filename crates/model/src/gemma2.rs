//! Gemma 2 (`gemma2`; Gemma Team 2024, "Gemma 2: Improving Open Language Models at a Practical Size"),
//! following transformers' `modeling_gemma2.py` (`Gemma2ForCausalLM`). It is Gemma 3's text model
//! ([`crate::gemma3::Gemma3`]) without the per-head q/k norms, with the attention scores soft-capped
//! (`tanh(s / attn_logit_softcapping) · attn_logit_softcapping`, after the `query_pre_attn_scalar^-0.5`
//! scaling and before the mask) and one RoPE for every layer; local layers alternate with global ones
//! (`layer_types`; without it, as in 4.x configs, transformers makes layer 0 local, 1 global, and so
//! on). What is its own is the reading of `config.json`: other defaults (soft-capping at 30 / 50 when
//! the keys are absent, `rope_theta` 1e4) and a flat `rope_parameters`.
//!
//! Attention: transformers' Gemma 2 declares no sdpa support (`_supports_sdpa = False`: torch's sdpa has
//! no soft-capping), so a default load runs eager attention and `attn_implementation="sdpa"` is an
//! error there. crossfeed runs eager's rounding for Gemma 2 whatever `attention` says (in f32 the two
//! are the same computation).

use std::path::Path;

use serde_json::Value;

use crate::config_keys::{self, key_error};
use crate::gemma3::{Gemma3Config, GemmaFamily};
use crate::llama::RopeParameters;

/// Keys of a Gemma 2 config that cannot change what crossfeed computes, and why.
pub const GEMMA2_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "initializer_range",
    // Which KV-cache class generate builds ("hybrid"); the values are the same with any cache.
    "cache_implementation",
    // The hub's Gemma 2 configs carry the activation twice; transformers' Gemma 2 (5.25's modeling file)
    // reads only `hidden_activation` (checked by `Gemma3Config::check`).
    "hidden_act",
    // A second name for `sliding_window` in some hub configs; transformers 5.25 does not read it. Checked
    // below to agree with `sliding_window`, so either reading computes the same.
    "sliding_window_size",
];

/// Keys [`Gemma3Config`] reads that transformers' Gemma 2 does not: a Gemma 2 config that sets one asks
/// for something transformers would not build.
const GEMMA3_ONLY: &[&str] = &["sliding_window_pattern", "rope_local_base_freq"];

/// Reads a `gemma2` `config.json` (`path` names it in errors) as transformers 4.x or 5.x would, into
/// the Gemma 3 model's config with [`GemmaFamily::Gemma2`], refusing every setting that would change
/// the computation and that crossfeed does not implement.
pub fn config_from_json(config: &Value, path: &Path) -> crate::Result<Gemma3Config> {
    crate::gemma3::refuse_null_window(config, path)?;
    let mut json = config.clone();
    let mut rope = None;
    if let Value::Object(o) = &mut json {
        if let Some(k) = GEMMA3_ONLY.iter().find(|k| o.contains_key(**k)) {
            return Err(key_error(path, k, "is a Gemma 3 key that transformers' Gemma 2 does not read"));
        }
        // transformers' Gemma 2 defaults where they differ from Gemma 3's. An absent soft-capping key
        // caps; only an explicit null turns it off.
        o.entry("final_logit_softcapping").or_insert(30.0.into());
        o.entry("attn_logit_softcapping").or_insert(50.0.into());
        o.entry("max_position_embeddings").or_insert(8192.into());
        // 5.x: one flat set of RoPE parameters (Gemma 3's is per layer type), read here.
        rope = o.remove("rope_parameters").filter(|v| !v.is_null());
    }
    let mut cfg: Gemma3Config = config_keys::parse(&json, path)?;
    cfg.family = GemmaFamily::Gemma2;
    config_keys::audit(&cfg.other, GEMMA2_HARMLESS, "gemma2", path)?;
    if let Some(v) = cfg.other.get("sliding_window_size").filter(|v| !v.is_null()) {
        if v.as_u64() != Some(cfg.sliding_window as u64) {
            return Err(key_error(path, "sliding_window_size", format!("{v} differs from sliding_window = {}; transformers reads only sliding_window", cfg.sliding_window)));
        }
    }
    cfg.check(path)?;
    let sliding = cfg.layer_kinds(path, 2)?;
    let inv_freq = match (rope, &cfg.rope_scaling) {
        (Some(_), Some(_)) => return Err(key_error(path, "rope_scaling", "is set beside rope_parameters; transformers 5 reads one of them")),
        (Some(p), None) => {
            let p: RopeParameters = serde_json::from_value(p).map_err(|e| key_error(path, "rope_parameters", e.to_string()))?;
            cfg.inv_freq("rope_parameters", Some(&p), cfg.rope_theta.unwrap_or(1e4), path)?
        }
        (None, scaling) => cfg.inv_freq("rope_scaling", scaling.as_ref(), cfg.rope_theta.unwrap_or(1e4), path)?,
    };
    cfg.layers = sliding.into_iter().map(|s| (s, inv_freq.clone())).collect();
    Ok(cfg)
}
