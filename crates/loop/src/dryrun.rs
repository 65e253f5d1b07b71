//! `crossfeed run CONFIG --dry-run`: what a run will do before a cluster is asked for it — the stage
//! plan, samples and tokens per stage, an estimate of peak memory per stage at the config's shapes and
//! dtype, and (given a benchmark file with measured throughputs) an estimate of the wall time.
//!
//! Token counts are upper bounds (every sequence at `max_len`, every generation to `max_new_tokens`).
//! Memory is a model, not a measurement: f32 master weights, gradients and AdamW moments (16 bytes per
//! parameter), the weights cast to the activation dtype kept for backward, activations as in Korthikanti
//! et al. 2022 (34·h + 5·a·s bytes per token per layer at 2-byte activations, scaled for f32) and
//! full-vocabulary logits in f32; generation adds the KV cache and the prefill logits. Expect ±30%.

use std::fmt::Write as _;
use std::path::Path;

use crossfeed_data::PrefixLength;
use serde::Deserialize;
use serde_json::Value;

use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};
use crate::plan::{plan, shard_range, GenId, Stage};

/// The shape numbers the estimate needs, from the base model's config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub params: u64,
}

impl Shape {
    /// From an OPT, Llama, Qwen2, Qwen3, GPT-2, Gemma 2 or Gemma 3 `config.json`; a missing key is an error naming it.
    pub fn from_config(cfg: &Value, origin: &str) -> Result<Shape> {
        // A multimodal Gemma 3 is estimated as the text model crossfeed loads from it.
        let text = crossfeed_model::gemma3::text_part(cfg.clone(), std::path::Path::new(origin)).map_err(|e| LoopError::Config(e.to_string()))?;
        let cfg = &text;
        let get = |k: &str| -> Result<usize> {
            cfg.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| LoopError::Config(format!("{origin}: config.json has no integer {k:?} (needed for the dry-run estimate)")))
        };
        let kind = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
        if kind == "gpt2" {
            let (v, h, l, a, pos) = (get("vocab_size")?, get("n_embd")?, get("n_layer")?, get("n_head")?, get("n_positions")?);
            let ffn = get("n_inner").unwrap_or(4 * h);
            // Conv1D q/k/v and output projections with biases, two LayerNorms, the MLP with biases.
            let per_layer = 3 * h * h + 3 * h + h * h + h + 4 * h + 2 * h * ffn + ffn + h;
            let params = v * h + pos * h + l * per_layer + 2 * h;
            return Ok(Shape { vocab: v, hidden: h, layers: l, heads: a, kv_heads: a, ffn, params: params as u64 });
        }
        let (v, h, l, a) = (get("vocab_size")?, get("hidden_size")?, get("num_hidden_layers")?, get("num_attention_heads")?);
        match kind {
            "llama" | "qwen2" | "qwen3" => {
                let kv = get("num_key_value_heads").unwrap_or(a);
                let hd = get("head_dim").unwrap_or(if kind == "qwen3" { 128 } else { h / a });
                let ffn = get("intermediate_size")?;
                let tied = cfg.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
                // Qwen2's q/k/v biases; Qwen3's per-head q/k norms.
                let extra = match kind {
                    "qwen2" => a * hd + 2 * kv * hd,
                    "qwen3" => 2 * hd,
                    _ => 0,
                };
                let per_layer = h * (a * hd) * 2 + h * (kv * hd) * 2 + 3 * h * ffn + 2 * h + extra;
                let params = v * h + l * per_layer + h + if tied { 0 } else { v * h };
                Ok(Shape { vocab: v, hidden: h, layers: l, heads: a, kv_heads: kv, ffn, params: params as u64 })
            }
            "gemma2" | "gemma3_text" => {
                let kv = get("num_key_value_heads").unwrap_or(4);
                let hd = get("head_dim").unwrap_or(256);
                let ffn = get("intermediate_size")?;
                let tied = cfg.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true);
                // q/k/v/o, Gemma 3's q/k norms, four norms per layer, GeGLU.
                let qk_norms = if kind == "gemma3_text" { 2 * hd } else { 0 };
                let per_layer = 2 * h * (a * hd) + 2 * h * (kv * hd) + qk_norms + 4 * h + 3 * h * ffn;
                let params = v * h + l * per_layer + h + if tied { 0 } else { v * h };
                Ok(Shape { vocab: v, hidden: h, layers: l, heads: a, kv_heads: kv, ffn, params: params as u64 })
            }
            "opt" => {
                let ffn = get("ffn_dim")?;
                let e = get("word_embed_proj_dim").unwrap_or(h);
                let pos = get("max_position_embeddings")? + 2;
                let per_layer = 4 * h * h + 4 * h + 2 * h * ffn + ffn + h + 4 * h;
                let proj = if e != h { 2 * e * h } else { 0 };
                let params = v * e + pos * h + proj + l * per_layer + 2 * h;
                Ok(Shape { vocab: v, hidden: h, layers: l, heads: a, kv_heads: a, ffn, params: params as u64 })
            }
            other => Err(LoopError::Config(format!("{origin}: model_type {other:?} (dry run knows \"opt\", \"llama\", \"qwen2\", \"qwen3\", \"gpt2\", \"gemma2\", \"gemma3_text\", \"gemma3\")"))),
        }
    }

    /// The two base models of the paper and the other families' paper-style configs, for a dry run on a
    /// machine whose hub cache does not have them.
    pub fn known(hub_id: &str) -> Option<Shape> {
        let cfg = match hub_id {
            "facebook/opt-350m" => serde_json::json!({"model_type": "opt", "vocab_size": 50272, "hidden_size": 1024,
                "num_hidden_layers": 24, "num_attention_heads": 16, "ffn_dim": 4096, "word_embed_proj_dim": 512,
                "max_position_embeddings": 2048}),
            "meta-llama/Llama-3.2-1B" => serde_json::json!({"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
                "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                "intermediate_size": 8192, "tie_word_embeddings": true}),
            "Qwen/Qwen3-0.6B" | "Qwen/Qwen3-0.6B-Base" => serde_json::json!({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
                "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                "intermediate_size": 3072, "tie_word_embeddings": true}),
            "google/gemma-3-1b-pt" => serde_json::json!({"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152,
                "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                "intermediate_size": 6912}),
            "google/gemma-2-2b" => serde_json::json!({"model_type": "gemma2", "vocab_size": 256000, "hidden_size": 2304,
                "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                "intermediate_size": 9216}),
            _ => return None,
        };
        Shape::from_config(&cfg, hub_id).ok()
    }
}

/// Measured throughputs (tokens per second) for the wall-time estimate; `scripts/gpu-check.sh` writes
/// one (`bench.json`). Rates are for the config's model, device and dtype.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub model: String,
    /// Training (forward + backward + optimizer), predicted tokens per second.
    pub train_tokens_per_s: f64,
    /// Generation, new tokens per second at the config's generation batch size.
    pub generate_tokens_per_s: f64,
    /// Scoring (forward only), tokens per second.
    pub score_tokens_per_s: f64,
}

impl Throughput {
    pub fn load(path: &Path) -> Result<Throughput> {
        let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
        let t: Throughput =
            serde_json::from_str(&text).map_err(|e| LoopError::Json { path: path.to_path_buf(), message: e.to_string() })?;
        for (k, v) in [("train_tokens_per_s", t.train_tokens_per_s), ("generate_tokens_per_s", t.generate_tokens_per_s), ("score_tokens_per_s", t.score_tokens_per_s)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(LoopError::Config(format!("{}: {k} must be a positive number, got {v}", path.display())));
            }
        }
        Ok(t)
    }
}

/// One stage of the plan with its estimates.
#[derive(Debug, Clone)]
pub struct StageEstimate {
    pub id: String,
    pub stage: Stage,
    pub samples: u64,
    /// Generate stages: the size of the synthetic set (what `generation.pool = "full"` generates);
    /// `samples` is what this config generates (fewer when lazy).
    pub set_size: Option<u64>,
    /// Upper bound on the tokens processed (see the module docs).
    pub tokens: u64,
    pub memory_bytes: u64,
    pub seconds: Option<f64>,
}

fn dtype_bytes(dtype: &str) -> u64 {
    if dtype == "f32" {
        4
    } else {
        2
    }
}

/// Peak bytes of a training micro-batch of `b` sequences of `s` tokens.
pub fn train_memory(sh: &Shape, dtype: &str, b: u64, s: u64, grad_accum: u64) -> u64 {
    let p = sh.params;
    let e = dtype_bytes(dtype);
    let states = 16 * p + if grad_accum > 1 { 4 * p } else { 0 };
    let casts = if e < 4 { e * p } else { 0 };
    let (h, a, l) = (sh.hidden as u64, sh.heads as u64, sh.layers as u64);
    let act = l * b * s * (34 * h + 5 * a * s) * e / 2;
    let logits = b * s * sh.vocab as u64 * (8 + e);
    states + casts + act + logits
}

/// Peak bytes of generation with batch `b`, prompts of `prompt` tokens and `new` new tokens.
pub fn generate_memory(sh: &Shape, dtype: &str, b: u64, prompt: u64, new: u64) -> u64 {
    let e = dtype_bytes(dtype);
    let hd = (sh.hidden / sh.heads) as u64;
    let kv = 2 * sh.layers as u64 * b * (prompt + new) * sh.kv_heads as u64 * hd * e;
    let prefill_logits = b * prompt * sh.vocab as u64 * 4;
    let prefill_act = b * prompt * (sh.hidden as u64 * 8 + sh.heads as u64 * prompt * 4 + sh.ffn as u64 * 2) * e;
    4 * sh.params + kv + prefill_logits + prefill_act
}

/// Peak bytes of scoring a batch of `b` sequences of `s` tokens (no autograd graph).
pub fn score_memory(sh: &Shape, dtype: &str, b: u64, s: u64) -> u64 {
    let e = dtype_bytes(dtype);
    let per_layer = b * s * (sh.hidden as u64 * 8 + sh.heads as u64 * s * 4 + sh.ffn as u64 * 2) * e;
    4 * sh.params + per_layer + 2 * b * s * sh.vocab as u64 * 4
}

/// Prompt length assumed for generation: ~1.5 tokens per word, ~4 characters per token, at least 16.
fn prompt_tokens(cfg: &ExperimentConfig) -> u64 {
    let t = match cfg.prompts.prefix {
        PrefixLength::Words(w) => w * 3 / 2,
        PrefixLength::Chars(c) => c / 4,
        PrefixLength::Prompt => 64,
    };
    (t as u64).max(16)
}

/// The stage plan with per-stage samples, tokens, memory and (given throughputs) seconds.
pub fn estimate(cfg: &ExperimentConfig, sh: &Shape, bench: Option<&Throughput>) -> Result<Vec<StageEstimate>> {
    let mix = cfg.mixture();
    let max_len = cfg.max_len as u64;
    let tr = &cfg.train;
    let step_samples = (tr.batch_size * tr.grad_accum) as u64;
    let eval_examples: u64 = cfg
        .private
        .iter()
        .take(cfg.k)
        .chain(std::iter::once(&cfg.public))
        .map(|t| {
            let n = t.eval_size.unwrap_or(0) as u64;
            if cfg.eval.max_examples > 0 { n.min(cfg.eval.max_examples as u64) } else { n }
        })
        .sum();
    let eval_sets = cfg.k as u64 + 1;
    let eval_new = if cfg.eval.max_new_tokens > 0 { cfg.eval.max_new_tokens } else { cfg.generation.engine.max_new_tokens } as u64;
    let gen_new = cfg.generation.engine.max_new_tokens as u64;
    let prompt = prompt_tokens(cfg);
    let mut out = Vec::new();
    for id in plan(cfg) {
        let mut set_size = None;
        let (samples, tokens, memory, rate) = match (id.stage, id.gen) {
            (Stage::Generate, GenId::Gen(t)) => {
                let e = id.entity.unwrap_or(0);
                let set = crossfeed_data::prompt_count(&cfg.prompts, &mix, t - 1, e, cfg.k) as u64;
                let n = if cfg.lazy_generation() { lazy_count(cfg, t, e)? } else { set };
                set_size = Some(set);
                if cfg.generation.shards > 1 {
                    // Merges its shards' files: no model, no tokens.
                    (n, 0, 0, None)
                } else {
                    let b = (cfg.generation.engine.batch_size as u64).min(n.max(1));
                    (n, n * gen_new, generate_memory(sh, &cfg.dtype, b, prompt, gen_new), bench.map(|x| x.generate_tokens_per_s))
                }
            }
            (Stage::GenerateShard(i), GenId::Gen(t)) => {
                let e = id.entity.unwrap_or(0);
                let all = if cfg.lazy_generation() { lazy_count(cfg, t, e)? } else { crossfeed_data::prompt_count(&cfg.prompts, &mix, t - 1, e, cfg.k) as u64 };
                let n = shard_range(all as usize, cfg.generation.shards, i).len() as u64;
                let b = (cfg.generation.engine.batch_size as u64).min(n.max(1));
                (n, n * gen_new, generate_memory(sh, &cfg.dtype, b, prompt, gen_new), bench.map(|x| x.generate_tokens_per_s))
            }
            (Stage::Train, _) => {
                let samples = tr.total_steps * step_samples;
                (samples, samples * max_len, train_memory(sh, &cfg.dtype, tr.batch_size as u64, max_len, tr.grad_accum as u64), bench.map(|x| x.train_tokens_per_s))
            }
            (Stage::Eval, _) => {
                let b = cfg.eval.batch_size as u64;
                (eval_examples, eval_examples * max_len, score_memory(sh, &cfg.dtype, b, max_len), bench.map(|x| x.score_tokens_per_s))
            }
            (Stage::Similarity, _) => {
                let per_entity = eval_sets * cfg.eval.prompts_per_set as u64;
                let models = if id.gen == GenId::Base { 1 } else { cfg.k as u64 };
                let n = per_entity * models;
                let b = (cfg.eval.prompts_per_set as u64).max(1);
                (n, n * eval_new, generate_memory(sh, &cfg.dtype, b, prompt, eval_new), bench.map(|x| x.generate_tokens_per_s))
            }
            (Stage::Generate | Stage::GenerateShard(_), GenId::Base) => (0, 0, 0, None),
        };
        out.push(StageEstimate { id: id.to_string(), stage: id.stage, samples, set_size, tokens, memory_bytes: memory, seconds: rate.map(|r| tokens as f64 / r) });
    }
    Ok(out)
}

/// Samples generate(t, e) produces under lazy generation. The real data is not loaded here: its
/// splits stand in at `train_size` (else `n`) empty rows, which moves the draw (its random stream
/// depends on the sizes) but not the expected count.
fn lazy_count(cfg: &ExperimentConfig, t: u64, e: usize) -> Result<u64> {
    let rows = |t: &crossfeed_data::TaskConfig| vec![crossfeed_data::Example::new("", ""); t.train_size.unwrap_or(cfg.n)];
    let public = rows(&cfg.public);
    let privates: Vec<Vec<crossfeed_data::Example>> = cfg.private.iter().take(cfg.k).map(rows).collect();
    let refs: Vec<&[crossfeed_data::Example]> = privates.iter().map(Vec::as_slice).collect();
    Ok(crate::lazy::needed_rows(cfg, t, e, &refs, &public)?.len() as u64)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
}

/// Who reads whom: the topology's K×K shares of each trainee's synthetic budget alpha·n.
pub fn topology_table(cfg: &ExperimentConfig) -> String {
    let mix = cfg.mixture();
    let t = mix.effective_topology();
    let mut s = String::new();
    let how = if mix.topology.is_none() { " (the default for this pool_policy)" } else { "" };
    let policy = serde_json::to_value(mix.pool_policy).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let _ = writeln!(s, "topology {}{how}, pool_policy {policy}: share of trainee k's synthetic budget alpha·n from producer j", t.describe());
    let _ = write!(s, "  {:>10}", "k \\ j");
    for j in 0..cfg.k {
        let _ = write!(s, " {:>7}", j);
    }
    s.push('\n');
    for (k, row) in t.shares(cfg.k).iter().enumerate() {
        let _ = write!(s, "  {:>10}", k);
        for w in row {
            let _ = write!(s, " {:>7.3}", w);
        }
        s.push('\n');
    }
    s
}

/// The report `crossfeed run CONFIG --dry-run` prints.
pub fn render(cfg: &ExperimentConfig, sh: &Shape, shape_from: &str, bench: Option<(&Throughput, &Path)>, stages: &[StageEstimate]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "dry run: {} — K = {}, alpha = {}, beta = {}, n = {}, {} generations, device {}, dtype {}", cfg.name, cfg.k, cfg.alpha, cfg.beta, cfg.n, cfg.generations, cfg.device, cfg.dtype);
    let _ = writeln!(
        s,
        "model {} ({shape_from}): {:.0}M parameters, {} layers, hidden {}, {} heads ({} KV), vocab {}",
        cfg.base_model,
        sh.params as f64 / 1e6,
        sh.layers,
        sh.hidden,
        sh.heads,
        sh.kv_heads,
        sh.vocab
    );
    let _ = writeln!(
        s,
        "train: {} steps x {} x {} samples of <= {} tokens per entity and generation",
        cfg.train.total_steps, cfg.train.batch_size, cfg.train.grad_accum, cfg.max_len
    );
    let _ = write!(s, "{}", topology_table(cfg));
    match bench {
        Some((b, p)) => {
            let _ = writeln!(s, "throughput from {} ({} {}): train {:.0}, generate {:.0}, score {:.0} tok/s", p.display(), b.model, b.device, b.train_tokens_per_s, b.generate_tokens_per_s, b.score_tokens_per_s);
        }
        None => {
            let _ = writeln!(s, "no --bench file: wall time not estimated (scripts/gpu-check.sh writes one)");
        }
    }
    let (made, sets): (u64, u64) = stages.iter().filter_map(|e| e.set_size.map(|n| (e.samples, n))).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    if sets > 0 {
        let mode = if cfg.lazy_generation() { "lazy: only the samples some trainee's optimizer steps read" } else { "full: every sample of every set" };
        let _ = writeln!(
            s,
            "generation.pool = {mode}; generate stages produce {made} of {sets} synthetic samples ({:.1}%), <= {} of {} new tokens",
            100.0 * made as f64 / sets as f64,
            made * cfg.generation.engine.max_new_tokens as u64,
            sets * cfg.generation.engine.max_new_tokens as u64
        );
        if cfg.lazy_generation() {
            let _ = writeln!(s, "  (lazy counts use the real splits' train_size, else n, as stand-in sizes: exact in expectation, within a few samples per stage)");
        }
    }
    let _ = writeln!(s, "{:<36} {:>13} {:>13} {:>11} {:>11}", "stage", "samples", "tokens (max)", "memory", "time (max)");
    for e in stages {
        let t = e.seconds.map_or_else(|| "-".into(), hms);
        let samples = match e.set_size {
            Some(n) => format!("{}/{n}", e.samples),
            None => e.samples.to_string(),
        };
        let _ = writeln!(s, "{:<36} {:>13} {:>13} {:>11} {:>11}", e.id, samples, e.tokens, gib(e.memory_bytes), t);
    }
    let peak = stages.iter().map(|e| e.memory_bytes).max().unwrap_or(0);
    let tokens: u64 = stages.iter().map(|e| e.tokens).sum();
    let _ = write!(s, "total: {} stages, <= {tokens} tokens, peak memory ~{} per worker", stages.len(), gib(peak));
    if stages.iter().all(|e| e.seconds.is_some() || e.tokens == 0) && bench.is_some() {
        let secs: f64 = stages.iter().filter_map(|e| e.seconds).sum();
        let _ = write!(s, ", wall time <= {} on one worker", hms(secs));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_models_have_their_published_sizes() {
        // transformers reports 331,196,416 (OPT-350M) and 1,235,814,400 (Llama 3.2 1B) parameters.
        let opt = Shape::known("facebook/opt-350m").unwrap();
        assert!((opt.params as f64 / 331_196_416.0 - 1.0).abs() < 0.001, "{}", opt.params);
        let llama = Shape::known("meta-llama/Llama-3.2-1B").unwrap();
        assert_eq!(llama.params, 1_235_814_400);
        // Qwen3-0.6B's safetensors hold 596,049,920 parameters (tied head stored once).
        assert_eq!(Shape::known("Qwen/Qwen3-0.6B").unwrap().params, 596_049_920);
        // transformers' Gemma3ForCausalLM at gemma-3-1b-pt's shape: 999,885,952 (counted on the meta device).
        assert_eq!(Shape::known("google/gemma-3-1b-pt").unwrap().params, 999_885_952);
        // transformers' Gemma2ForCausalLM at gemma-2-2b's shape: 2,614,341,888 (counted on the meta device).
        assert_eq!(Shape::known("google/gemma-2-2b").unwrap().params, 2_614_341_888);
        // google/gemma-3-4b-pt's config.json as the hub has it (vision config trimmed): the text model
        // transformers builds from it holds 3,880,263,168 parameters (Gemma3ForCausalLM, meta device).
        let gemma3_4b = serde_json::json!({"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
            "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02,
            "mm_tokens_per_image": 256, "model_type": "gemma3", "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
            "vision_config": {"model_type": "siglip_vision_model"}});
        assert_eq!(Shape::from_config(&gemma3_4b, "gemma-3-4b-pt").unwrap().params, 3_880_263_168);
    }
}
