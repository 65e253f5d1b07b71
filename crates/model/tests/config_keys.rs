//! Every config.json setting that would change the computation and that crossfeed does not apply is
//! refused with an error naming the key (never run with a default in its place); the keys known to be
//! harmless load.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use crossfeed_model::CausalLm;
use serde_json::{json, Map, Value};

type Edit = fn(&mut Map<String, Value>);

fn edited(variant: &str, f: Edit) -> tempfile::TempDir {
    let tmp = copy_fixture(variant);
    let p = tmp.path().join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    tmp
}

fn load(dir: &Path) -> crossfeed_model::Result<CausalLm> {
    CausalLm::load_dir(dir, &Device::Cpu, DType::F32)
}

fn rope(c: &mut Map<String, Value>) -> &mut Map<String, Value> {
    c.get_mut("rope_parameters").unwrap().as_object_mut().unwrap()
}

const LLAMA5: &str = "formats/tf5-llama32";
const LLAMA4: &str = "formats/tf4-llama32-bf16";
const OPT: &str = "formats/tf4-opt350-f16-bin";

#[test]
fn each_unsupported_setting_is_an_error_naming_its_key() {
    let cases: Vec<(&str, &str, Edit)> = vec![
        (LLAMA5, "rope_parameters.rope_type", |c| {
            rope(c).insert("rope_type".into(), json!("yarn"));
        }),
        (LLAMA4, "rope_scaling.type", |c| {
            c.insert("rope_scaling".into(), json!({"type": "linear", "factor": 2.0}));
        }),
        (LLAMA4, "rope_scaling.rope_type", |c| {
            c.insert("rope_scaling".into(), json!({"rope_type": "dynamic", "factor": 2.0}));
        }),
        (LLAMA5, "rope_parameters.factor", |c| {
            rope(c).remove("factor");
        }),
        (LLAMA5, "rope_parameters.low_freq_factor", |c| {
            rope(c).remove("low_freq_factor");
        }),
        (LLAMA5, "rope_parameters.factor", |c| {
            c.insert("rope_parameters".into(), json!({"rope_type": "default", "rope_theta": 10000.0, "factor": 4.0}));
        }),
        (LLAMA5, "rope_parameters.attention_factor", |c| {
            rope(c).insert("attention_factor".into(), json!(1.2));
        }),
        (LLAMA5, "rope_parameters.partial_rotary_factor", |c| {
            rope(c).insert("partial_rotary_factor".into(), json!(0.5));
        }),
        (LLAMA5, "partial_rotary_factor", |c| {
            c.insert("partial_rotary_factor".into(), json!(0.5));
        }),
        (LLAMA5, "rope_theta", |c| {
            c.insert("rope_theta".into(), json!(10000.0));
        }),
        (LLAMA5, "rope_scaling", |c| {
            c.insert("rope_scaling".into(), json!({"rope_type": "default"}));
        }),
        (LLAMA5, "hidden_act", |c| {
            c.insert("hidden_act".into(), json!("gelu"));
        }),
        (LLAMA5, "num_key_value_heads", |c| {
            c.insert("num_key_value_heads".into(), json!(3));
        }),
        (LLAMA5, "sliding_window", |c| {
            c.insert("sliding_window".into(), json!(4096));
        }),
        (LLAMA5, "use_sliding_window", |c| {
            c.insert("use_sliding_window".into(), json!(true));
        }),
        (LLAMA5, "layer_types", |c| {
            c.insert("layer_types".into(), json!(["full_attention", "sliding_attention"]));
        }),
        (LLAMA5, "attn_logit_softcapping", |c| {
            c.insert("attn_logit_softcapping".into(), json!(50.0));
        }),
        (LLAMA5, "quantization_config", |c| {
            c.insert("quantization_config".into(), json!({"quant_method": "bitsandbytes", "load_in_4bit": true}));
        }),
        (LLAMA5, "auto_map", |c| {
            c.insert("auto_map".into(), json!({"AutoModelForCausalLM": "modeling_custom.MyLlama"}));
        }),
        (LLAMA5, "pruned_heads", |c| {
            c.insert("pruned_heads".into(), json!({"0": [1]}));
        }),
        (LLAMA5, "is_encoder_decoder", |c| {
            c.insert("is_encoder_decoder".into(), json!(true));
        }),
        (OPT, "activation_function", |c| {
            c.insert("activation_function".into(), json!("gelu"));
        }),
        (OPT, "layer_norm_elementwise_affine", |c| {
            c.insert("layer_norm_elementwise_affine".into(), json!(false));
        }),
        (OPT, "tie_word_embeddings", |c| {
            c.insert("tie_word_embeddings".into(), json!(false));
        }),
        (OPT, "num_attention_heads", |c| {
            c.insert("num_attention_heads".into(), json!(5));
        }),
        (OPT, "hidden_act", |c| {
            // Llama's key in an OPT config: OPT reads activation_function, so this one is unknown.
            c.insert("hidden_act".into(), json!("relu"));
        }),
        (OPT, "rope_theta", |c| {
            c.insert("rope_theta".into(), json!(10000.0));
        }),
    ];
    for (variant, key, edit) in cases {
        let tmp = edited(variant, edit);
        let e = load(tmp.path()).expect_err(key).to_string();
        assert!(e.contains(&format!("key {key:?}")) && e.contains("config.json"), "{variant} {key}: {e}");
    }
}

#[test]
fn harmless_keys_load() {
    let cases: Vec<(&str, Edit)> = vec![
        (LLAMA5, |c| {
            // Generation defaults and bookkeeping of old configs, and 4.x's sliced-projection switch.
            for (k, v) in [("max_length", json!(20)), ("do_sample", json!(true)), ("top_p", json!(0.9)), ("_name_or_path", json!("x")),
                ("pretraining_tp", json!(2)), ("pruned_heads", json!({})), ("torch_dtype", json!("bfloat16")), ("is_encoder_decoder", json!(false))]
            {
                c.insert(k.into(), v);
            }
        }),
        (LLAMA5, |c| {
            c.insert("hidden_act".into(), json!("swish"));
        }),
        (OPT, |c| {
            c.insert("layerdrop".into(), json!(0.1));
        }),
    ];
    for (variant, edit) in cases {
        let tmp = edited(variant, edit);
        load(tmp.path()).unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}

#[test]
fn a_tied_checkpoint_with_a_different_head_is_refused() {
    let tmp = copy_fixture(LLAMA5);
    let path = tmp.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let embed = tensors["model.embed_tokens.weight"].clone();
    // The same head as the embedding loads (transformers ties over it)...
    tensors.insert("lm_head.weight".into(), embed.clone());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    load(tmp.path()).unwrap();
    // ...a different one is a contradiction between the file and tie_word_embeddings.
    tensors.insert("lm_head.weight".into(), (embed + Tensor::ones_like(&tensors["model.embed_tokens.weight"]).unwrap()).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = load(tmp.path()).expect_err("differing head").to_string();
    assert!(e.contains("lm_head.weight") && e.contains("tie_word_embeddings"), "{e}");
}

#[test]
fn the_config_is_judged_before_the_weights_are_read() {
    let tmp = edited(LLAMA5, |c| {
        c.insert("sliding_window".into(), json!(4096));
    });
    std::fs::write(tmp.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    let e = load(tmp.path()).expect_err("refused").to_string();
    assert!(e.contains("key \"sliding_window\""), "{e}");
}

#[test]
fn qwen_settings_that_change_the_computation_are_errors_naming_their_key() {
    let cases: Vec<(&str, &str, Edit)> = vec![
        ("qwen2", "use_sliding_window", |c| {
            c.insert("use_sliding_window".into(), json!(true));
        }),
        ("qwen3", "layer_types", |c| {
            c.insert("layer_types".into(), json!(["full_attention", "sliding_attention"]));
        }),
        ("qwen2", "use_mrope", |c| {
            c.insert("use_mrope".into(), json!(true));
        }),
        ("qwen2", "attention_bias", |c| {
            c.insert("attention_bias".into(), json!(true));
        }),
        ("qwen3", "mlp_bias", |c| {
            c.insert("mlp_bias".into(), json!(true));
        }),
        ("qwen3", "attn_logit_softcapping", |c| {
            c.insert("attn_logit_softcapping".into(), json!(50.0));
        }),
        ("qwen2", "rope_scaling.rope_type", |c| {
            c.insert("rope_scaling".into(), json!({"rope_type": "yarn", "factor": 4.0}));
        }),
    ];
    for (variant, key, edit) in cases {
        let tmp = edited(variant, edit);
        let e = load(tmp.path()).expect_err(key).to_string();
        assert!(e.contains(&format!("key {key:?}")) && e.contains("config.json"), "{variant} {key}: {e}");
    }
}

#[test]
fn qwen_hub_keys_load() {
    // Keys Qwen2.5-0.5B's and Qwen3-0.6B's config.json carry besides the shape (sliding window off).
    let cases: Vec<(&str, Edit)> = vec![
        ("qwen2", |c| {
            for (k, v) in [("use_mrope", json!(false)), ("sliding_window", json!(32768)), ("max_window_layers", json!(24)),
                ("torch_dtype", json!("bfloat16")), ("use_cache", json!(true))]
            {
                c.insert(k.into(), v);
            }
        }),
        ("qwen3", |c| {
            for (k, v) in [("rope_scaling", Value::Null), ("sliding_window", Value::Null), ("layer_types", json!(["full_attention", "full_attention"]))] {
                c.insert(k.into(), v);
            }
        }),
    ];
    for (variant, edit) in cases {
        let tmp = edited(variant, edit);
        load(tmp.path()).unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}

#[test]
fn gpt2_and_gemma_settings_that_change_the_computation_are_errors_naming_their_key() {
    let cases: Vec<(&str, &str, Edit)> = vec![
        ("gpt2", "activation_function", |c| {
            c.insert("activation_function".into(), json!("relu"));
        }),
        ("gpt2", "reorder_and_upcast_attn", |c| {
            c.insert("reorder_and_upcast_attn".into(), json!(true));
        }),
        ("gpt2", "n_head", |c| {
            c.insert("n_head".into(), json!(5));
        }),
        ("gpt2", "rope_theta", |c| {
            c.insert("rope_theta".into(), json!(10000.0));
        }),
        ("gemma3", "attn_logit_softcapping", |c| {
            c.insert("attn_logit_softcapping".into(), json!(50.0));
        }),
        ("gemma3", "use_bidirectional_attention", |c| {
            c.insert("use_bidirectional_attention".into(), json!(true));
        }),
        ("gemma3", "hidden_activation", |c| {
            c.insert("hidden_activation".into(), json!("silu"));
        }),
        ("gemma3", "layer_types", |c| {
            c.insert("layer_types".into(), json!(["sliding_attention", "chunked_attention", "full_attention"]));
        }),
        ("gemma3", "rope_parameters.full_attention.rope_type", |c| {
            c.insert("rope_parameters".into(), json!({"full_attention": {"rope_type": "yarn", "factor": 8.0}}));
        }),
        ("gemma3", "rope_parameters.sliding_attention.factor", |c| {
            c.insert("rope_parameters".into(), json!({"sliding_attention": {"rope_type": "default", "factor": 8.0}}));
        }),
        ("gemma3", "use_sliding_window", |c| {
            c.insert("use_sliding_window".into(), json!(true));
        }),
        // Gemma 3's keys mean nothing to transformers' Gemma 2.
        ("gemma2", "sliding_window_pattern", |c| {
            c.insert("sliding_window_pattern".into(), json!(6));
        }),
        ("gemma2", "rope_local_base_freq", |c| {
            c.insert("rope_local_base_freq".into(), json!(10000.0));
        }),
        ("gemma2", "rope_parameters.rope_type", |c| {
            c.insert("rope_parameters".into(), json!({"rope_type": "yarn", "factor": 8.0}));
        }),
        ("gemma2", "rope_scaling", |c| {
            c.insert("rope_parameters".into(), json!({"rope_type": "default", "rope_theta": 10000.0}));
            c.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": 2.0}));
        }),
        ("gemma2", "attn_logit_softcapping", |c| {
            c.insert("attn_logit_softcapping".into(), json!(-1.0));
        }),
        ("gemma2", "sliding_window_size", |c| {
            c.insert("sliding_window_size".into(), json!(8));
        }),
        ("gemma2", "layer_types", |c| {
            c.insert("layer_types".into(), json!(["sliding_attention", "full_attention"]));
        }),
        ("gemma2", "use_sliding_window", |c| {
            c.insert("use_sliding_window".into(), json!(true));
        }),
        ("gemma2", "sliding_window", |c| {
            c.insert("sliding_window".into(), json!(null));
        }),
        ("gemma3", "sliding_window", |c| {
            c.insert("sliding_window".into(), json!(null));
        }),
        ("gemma2", "hidden_activation", |c| {
            c.insert("hidden_activation".into(), json!("gelu"));
        }),
    ];
    for (variant, key, edit) in cases {
        let tmp = edited(variant, edit);
        let e = load(tmp.path()).expect_err(key).to_string();
        assert!(e.contains(&format!("key {key:?}")) && e.contains("config.json"), "{variant} {key}: {e}");
    }
}

/// Gemma 3's 4.x keys (`rope_theta`, `rope_local_base_freq`, `rope_scaling`, `sliding_window_pattern`)
/// give the model its 5.x keys (`rope_parameters`, `layer_types`) give: the same logits.
#[test]
fn gemma3_4x_keys_compute_what_its_5x_keys_do() {
    let tmp = edited("gemma3", |c| {
        c.remove("rope_parameters");
        c.remove("layer_types");
        for (k, v) in [("rope_theta", json!(1000000.0)), ("rope_local_base_freq", json!(10000.0)),
            ("rope_scaling", json!({"rope_type": "linear", "factor": 8.0})), ("sliding_window_pattern", json!(2)),
            ("cache_implementation", json!("hybrid"))]
        {
            c.insert(k.into(), v);
        }
    });
    let g = golden("gemma3");
    let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
    let batch = crossfeed_model::Batch { input_ids: to_u32(&g.tensors["input_ids"]), attention_mask: to_u32(&g.tensors["attention_mask"]), label_mask: None, host: None };
    let old = load(tmp.path()).unwrap().forward_batch(&batch).unwrap();
    let new = load(&fixture("gemma3")).unwrap().forward_batch(&batch).unwrap();
    assert_eq!(max_abs_diff(&old, &new), 0.0);
}

fn forward_golden(dir: &Path, variant: &str) -> Tensor {
    let g = golden(variant);
    let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
    let batch = crossfeed_model::Batch { input_ids: to_u32(&g.tensors["input_ids"]), attention_mask: to_u32(&g.tensors["attention_mask"]), label_mask: None, host: None };
    load(dir).unwrap().forward_batch(&batch).unwrap()
}

/// The Gemma 2 fixture is written with 4.x's keys (top-level `rope_theta`, no `layer_types`); 5.x's
/// (`rope_parameters`, `layer_types`) and the hub configs' extras (`hidden_act`, `sliding_window_size`,
/// `cache_implementation`) give the same logits.
#[test]
fn gemma2_5x_keys_compute_what_its_4x_keys_do() {
    let tmp = edited("gemma2", |c| {
        c.remove("rope_theta");
        for (k, v) in [("rope_parameters", json!({"rope_type": "default", "rope_theta": 10000.0})),
            ("layer_types", json!(["sliding_attention", "full_attention", "sliding_attention"])),
            ("hidden_act", json!("gelu_pytorch_tanh")), ("sliding_window_size", json!(4)), ("cache_implementation", json!("hybrid")),
            ("use_bidirectional_attention", json!(null))]
        {
            c.insert(k.into(), v);
        }
    });
    assert_eq!(max_abs_diff(&forward_golden(tmp.path(), "gemma2"), &forward_golden(&fixture("gemma2"), "gemma2")), 0.0);
}

/// As transformers' `Gemma2Config`: an absent soft-capping key caps (attention at 50, logits at 30),
/// an explicit null does not.
#[test]
fn gemma2_soft_capping_defaults_apply_when_the_keys_are_absent() {
    let set = |attn: Value, last: Value| {
        let tmp = copy_fixture("gemma2");
        let p = tmp.path().join("config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let c = v.as_object_mut().unwrap();
        for (k, x) in [("attn_logit_softcapping", attn), ("final_logit_softcapping", last)] {
            if x == json!("absent") {
                c.remove(k);
            } else {
                c.insert(k.into(), x);
            }
        }
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        forward_golden(tmp.path(), "gemma2")
    };
    let absent = set(json!("absent"), json!("absent"));
    assert_eq!(max_abs_diff(&absent, &set(json!(50.0), json!(30.0))), 0.0);
    assert!(max_abs_diff(&absent, &set(json!(null), json!(null))) > 1e-3);
    assert!(max_abs_diff(&set(json!(null), json!(30.0)), &set(json!(50.0), json!(30.0))) > 0.0);
}
