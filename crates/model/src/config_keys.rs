//! What crossfeed does with each key of a transformers `config.json` (4.x and 5.x). Every key is
//! either understood (a field of the architecture's serde `Config`), harmless (listed here or in the
//! architecture's list, with the reason it cannot change the numbers crossfeed computes), or an
//! error naming it: a key nobody has audited may change the computation, and a silent default is
//! how a checkpoint ends up scoring nats away from transformers.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};

/// `eos_token_id` (and, in 5.x typing, any special token id) is an int or a list of ints.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
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

pub(crate) fn key_error(path: &Path, key: &str, message: impl Into<String>) -> ModelError {
    ModelError::Config { path: path.to_path_buf(), key: key.to_string(), message: message.into() }
}

/// transformers reads `"key": null` as "not set": `"head_dim": null` means derived from the other
/// sizes, `"rope_scaling": null` no scaling. Dropping nulls lets the serde defaults say the same.
pub(crate) fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect()),
        other => other.clone(),
    }
}

/// Parses `config.json` into an architecture's config; serde errors keep the file name.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(config: &Value, path: &Path) -> Result<T> {
    serde_json::from_value(without_nulls(config)).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}

/// How a key outside an architecture's `Config` fields is treated.
enum Verdict {
    Harmless,
    Unsupported(String),
    Unknown,
}

/// Keys every `PretrainedConfig` (4.x) / `PreTrainedConfig` (5.x) may carry.
fn common(key: &str, value: &Value) -> Verdict {
    let falsy = |v: &Value| v.is_null() || v == &Value::Bool(false);
    match key {
        // Bookkeeping, outputs and tooling: no effect on the logits.
        "_name_or_path" | "_commit_hash" | "transformers_version" | "architectures" | "model_type" | "use_cache"
        | "output_attentions" | "output_hidden_states" | "return_dict" | "torchscript" | "use_bfloat16" | "xla_device"
        | "gradient_checkpointing" | "_attn_implementation" | "attn_implementation" | "_attn_implementation_autoset"
        | "tokenizer_class" | "prefix" | "sep_token_id" | "decoder_start_token_id" | "chunk_size_feed_forward"
        | "tie_encoder_decoder" | "cross_attention_hidden_size" | "is_decoder" => Verdict::Harmless,
        // The storage dtype: tensors are read in the dtype the weight file records and widened to f32
        // (as `from_pretrained(dtype=torch.float32)`); the activation dtype is crossfeed's `--dtype`.
        "torch_dtype" | "dtype" => Verdict::Harmless,
        // Classification heads: a causal LM has none.
        "id2label" | "label2id" | "num_labels" | "problem_type" | "finetuning_task" | "task_specific_params" => Verdict::Harmless,
        // Generation defaults of old configs: crossfeed's sampling comes from its own config and flags.
        "max_length" | "min_length" | "do_sample" | "early_stopping" | "num_beams" | "num_beam_groups" | "diversity_penalty"
        | "temperature" | "top_k" | "top_p" | "typical_p" | "repetition_penalty" | "length_penalty" | "no_repeat_ngram_size"
        | "encoder_no_repeat_ngram_size" | "bad_words_ids" | "num_return_sequences" | "output_scores" | "return_dict_in_generate"
        | "forced_bos_token_id" | "forced_eos_token_id" | "remove_invalid_values" | "exponential_decay_length_penalty"
        | "suppress_tokens" | "begin_suppress_tokens" => Verdict::Harmless,
        "pruned_heads" if value.as_object().is_none_or(|o| o.is_empty()) => Verdict::Harmless,
        "pruned_heads" => Verdict::Unsupported("pruned attention heads are not supported".into()),
        "is_encoder_decoder" | "add_cross_attention" if falsy(value) => Verdict::Harmless,
        "is_encoder_decoder" | "add_cross_attention" => Verdict::Unsupported("only decoder-only causal LMs are supported".into()),
        "quantization_config" => Verdict::Unsupported("quantized checkpoints are not supported (crossfeed reads f32/bf16/f16 weights)".into()),
        "auto_map" => Verdict::Unsupported("the checkpoint names custom modeling code (trust_remote_code), which crossfeed cannot run".into()),
        _ => Verdict::Unknown,
    }
}

/// Checks the keys a `Config` did not claim (`other`, its `#[serde(flatten)]` rest) against the
/// common list and the architecture's own `harmless` list; the first other key is an error.
pub(crate) fn audit(other: &BTreeMap<String, Value>, harmless: &[&str], arch: &str, path: &Path) -> Result<()> {
    for (key, value) in other {
        if harmless.contains(&key.as_str()) {
            continue;
        }
        match common(key, value) {
            Verdict::Harmless => {}
            Verdict::Unsupported(why) => return Err(key_error(path, key, format!("{value} is not supported: {why}"))),
            Verdict::Unknown => {
                return Err(key_error(
                    path,
                    key,
                    format!("not a {arch} config key crossfeed knows; it may change the computation, so the checkpoint is refused rather than run without it"),
                ))
            }
        }
    }
    Ok(())
}

/// Training-only regularisation keys of `other` whose value is not 0 (crossfeed trains without
/// dropout): reported by [`crate::CausalLm::unapplied_training_settings`].
pub(crate) fn nonzero(other: &BTreeMap<String, Value>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| other.get(*k).filter(|v| v.as_f64().is_some_and(|x| x != 0.0)).map(|v| format!("{k} = {v}")))
        .collect()
}
