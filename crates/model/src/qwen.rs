//! Qwen2 / Qwen2.5 (`qwen2`) and Qwen3 (`qwen3`), following transformers' `modeling_qwen2.py` and
//! `modeling_qwen3.py`. Both are Llama with one change each, so the model is [`crate::llama::Llama`]
//! with its [`Family`] set: Qwen2 puts biases on q, k and v (never on o); Qwen3 normalises every head
//! of q and k with an RMSNorm (`q_norm`, `k_norm`) before RoPE and has an explicit `head_dim`. What is
//! theirs is the reading of `config.json`: other defaults, and the sliding-window keys, refused unless
//! off (transformers' default for both).

use std::path::Path;

use serde_json::Value;

use crate::config_keys::key_error;
use crate::llama::{Family, LlamaConfig};

/// Keys of a Qwen2/Qwen3 config that cannot change what crossfeed computes, and why.
pub const QWEN_HARMLESS: &[&str] = &[
    // Initialisation of weights a checkpoint lacks; crossfeed requires every weight.
    "initializer_range",
    // Training-time regularisation on the attention probabilities, applied in training (`crate::dropout`).
    "attention_dropout",
    // The sliding-window keys: checked below (`use_sliding_window` must be false, and then transformers
    // ignores `sliding_window` and `max_window_layers`; `layer_types` must name full attention only).
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    // Qwen2-VL's multimodal RoPE switch, false in every text Qwen2 config (checked below).
    "use_mrope",
];

/// Reads a `qwen2` or `qwen3` `config.json` (`path` names it in errors) as transformers 4.x or 5.x
/// would, refusing every setting that would change the computation and that crossfeed does not implement.
pub fn config_from_json(config: &Value, path: &Path) -> crate::Result<LlamaConfig> {
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default();
    let family = match model_type {
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        other => return Err(key_error(path, "model_type", format!("{other:?} is not a Qwen model type (\"qwen2\", \"qwen3\")"))),
    };
    let mut json = config.clone();
    if let Value::Object(o) = &mut json {
        // transformers' Qwen defaults where they differ from Llama's (which `LlamaConfig` takes).
        o.entry("max_position_embeddings").or_insert(32768.into());
        if family == Family::Qwen3 {
            o.entry("head_dim").or_insert(128.into());
        }
        // Qwen2's modeling ignores these two (q/k/v always have a bias, o and the MLP none): a config
        // that sets them asks for a model transformers would not build.
        if family == Family::Qwen2 {
            for k in ["attention_bias", "mlp_bias"] {
                if o.get(k).is_some_and(|v| v != &Value::Bool(false)) {
                    return Err(key_error(path, k, "is not read by transformers' Qwen2 (q/k/v always carry a bias, o_proj and the MLP never)"));
                }
            }
        }
        if family == Family::Qwen3 && o.get("mlp_bias").is_some_and(|v| v != &Value::Bool(false)) {
            return Err(key_error(path, "mlp_bias", "is not read by transformers' Qwen3 (the MLP has no bias)"));
        }
    }
    let mut cfg = LlamaConfig::from_json_as(&json, path, QWEN_HARMLESS, model_type)?;
    cfg.family = family;
    let flag = |k: &str| cfg.other.get(k).filter(|v| !v.is_null());
    if let Some(v) = flag("use_sliding_window").filter(|v| *v != &Value::Bool(false)) {
        return Err(key_error(path, "use_sliding_window", format!("{v} is not supported (sliding-window attention is implemented for Gemma 2 and 3 only; Qwen checkpoints ship it off)")));
    }
    if let Some(v) = flag("use_mrope").filter(|v| *v != &Value::Bool(false)) {
        return Err(key_error(path, "use_mrope", format!("{v} is not supported (multimodal RoPE belongs to Qwen2-VL)")));
    }
    if let Some(types) = flag("layer_types") {
        let full = types.as_array().is_some_and(|a| a.len() == cfg.num_hidden_layers && a.iter().all(|t| t == "full_attention"));
        if !full {
            return Err(key_error(path, "layer_types", format!("{types} is not supported (one \"full_attention\" per layer)")));
        }
    }
    Ok(cfg)
}
