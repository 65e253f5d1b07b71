//! crossfeed-pretrain: the demo's tiny base model, built by the project itself so `make demo` needs no
//! download.
//!
//! [`build_base`] fits a byte-level BPE tokenizer on the toy world's text (Llama 3 layout: bos
//! `<|begin_of_text|>` = 0 prepended by the post-processor, eos `<|end_of_text|>` = 1), writes a
//! small random Llama (`config.json`, `generation_config.json`, `model.safetensors` with
//! `LlamaForCausalLM` names), pretrains it with `crossfeed-train` on the world's **public** text only
//! (the BookCorpus stand-in: the base must not know the private tasks), and saves a checkpoint
//! directory that `CausalLm::load_dir` and `TextTokenizer::from_dir` (and transformers) load, plus
//! `base.json` ([`BaseReport`]). [`ensure_base`] skips the build when `base.json` records the same
//! config.
//!
//! ```no_run
//! # fn main() -> Result<(), crossfeed_pretrain::PretrainError> {
//! let cfg = crossfeed_pretrain::BaseConfig::default();
//! let dir = crossfeed_pretrain::ensure_base(&cfg, std::path::Path::new("runs/toybase"), |step, loss| {
//!     if step % 25 == 0 { println!("step {step}: loss {loss:.3}"); }
//! })?;
//! # let _ = dir; Ok(()) }
//! ```

pub mod error;
pub mod init;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use crossfeed_data::{toy_world, ToySizes};
use crossfeed_model::{Batch, CausalLm, TextTokenizer};
use crossfeed_train::{FineTune, Schedule, TrainConfig, Tokenized};
use serde::{Deserialize, Serialize};

pub use error::{PretrainError, Result};
pub use init::{padded_vocab, write_random_init, ModelShape};
pub use tokenizer::{fit_tokenizer, BOS, BOS_ID, EOS, EOS_ID};

/// File in the base directory recording how it was built.
pub const BASE_FILE: &str = "base.json";

/// How the base model is built. Every field has a default (the demo's base); unknown keys are
/// rejected. Two configs that compare equal build the same directory (bit-identical on CPU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaseConfig {
    /// Seed of the toy world whose text the tokenizer and the pretraining see. Default 0.
    pub world_seed: u64,
    /// Toy world sizes (public_train passages are the pretraining corpus). Default: `ToySizes::default()`
    /// (2,000 train / 200 eval per task, 2,000 / 200 public passages).
    pub sizes: ToySizes,
    /// Target tokenizer size, specials and the 256 byte symbols included. Default 512.
    pub vocab_size: usize,
    /// Model shape. Default: hidden 128, 4 layers, 4 heads, 2 kv heads, intermediate 344, context 512,
    /// rope_theta 10000, tied embeddings (~0.8M parameters).
    pub model: ModelShape,
    /// Pretraining optimizer steps. Default 150 (the public-text loss plateaus by ~100).
    pub steps: u64,
    /// Passages per step. Default 16.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay to 0). Default 3e-3.
    pub lr: f64,
    /// Linear warmup steps. Default 10.
    pub warmup_steps: u64,
    /// Decoupled weight decay (not on norms). Default 0.0.
    pub weight_decay: f64,
    /// Passages are cut to this many tokens (bos and eos included). Default 128.
    pub max_len: usize,
    /// Seed of the initialisation and the data order. Default 0.
    pub seed: u64,
    /// Where pretraining runs (`cpu`, `cuda`, `cuda:N`): the demo passes its run's device. Part of the
    /// cache key, since another device gives other bits. Default `cpu`.
    pub device: String,
}

impl BaseConfig {
    /// A seconds-long base (hidden 32, 2 layers, 10 steps, tiny toy sizes) for tests and the quick
    /// demo: it exercises every step of the build, not the quality of the result.
    pub fn micro() -> Self {
        BaseConfig {
            world_seed: 3,
            sizes: ToySizes { train: 40, eval: 10, public_train: 120, public_eval: 20 },
            vocab_size: 320,
            model: ModelShape {
                hidden_size: 32,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                intermediate_size: 64,
                max_position_embeddings: 128,
                ..ModelShape::default()
            },
            steps: 20,
            batch_size: 8,
            lr: 1e-2,
            warmup_steps: 2,
            max_len: 64,
            ..BaseConfig::default()
        }
    }
}

impl Default for BaseConfig {
    fn default() -> Self {
        BaseConfig {
            world_seed: 0,
            sizes: ToySizes::default(),
            vocab_size: 512,
            model: ModelShape::default(),
            steps: 150,
            batch_size: 16,
            lr: 3e-3,
            warmup_steps: 10,
            weight_decay: 0.0,
            max_len: 128,
            seed: 0,
            device: "cpu".into(),
        }
    }
}

impl BaseConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(PretrainError::Config(m));
        if self.steps == 0 || self.batch_size == 0 {
            return bad("steps and batch_size must be >= 1".into());
        }
        if self.max_len < 2 || self.max_len > self.model.max_position_embeddings {
            return bad(format!("max_len must be in 2..={} (model.max_position_embeddings), got {}", self.model.max_position_embeddings, self.max_len));
        }
        if self.sizes.public_train == 0 {
            return bad("sizes.public_train must be >= 1 (the pretraining corpus)".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be > 0, got {}", self.lr));
        }
        Ok(())
    }

    /// The trainer configuration of the pretraining run.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            schedule: Schedule::Cosine,
            warmup_steps: Some(self.warmup_steps.min(self.steps)),
            total_steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: 1,
            weight_decay: self.weight_decay,
            max_grad_norm: 1.0,
            seed: self.seed,
            ..TrainConfig::default()
        }
    }
}

/// What `base.json` records: the config and how the build went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseReport {
    pub config: BaseConfig,
    /// Tokens of the fitted tokenizer (added tokens included).
    pub tokenizer_size: usize,
    /// `config.json` vocab_size (tokenizer size rounded up to a multiple of 8).
    pub vocab_size: usize,
    pub num_params: usize,
    /// Training loss (token-mean CE, nats) of every optimizer step.
    pub loss_curve: Vec<f64>,
    /// Mean training loss over the last 10% of the steps (at least one).
    pub final_loss: f64,
    /// Token-mean CE on the public eval passages, at initialisation and after pretraining.
    pub public_eval_ce_before: f64,
    pub public_eval_ce_after: f64,
    /// Wall-clock seconds of the build.
    pub seconds: f64,
}

/// Reads `base.json` of `dir`, if there is a readable one.
pub fn read_report(dir: &Path) -> Option<BaseReport> {
    let text = std::fs::read_to_string(dir.join(BASE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The report of `out_dir` when it holds a complete base built from exactly `cfg`.
pub fn cached_base(cfg: &BaseConfig, out_dir: &Path) -> Option<BaseReport> {
    let report = read_report(out_dir)?;
    let complete = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"].iter().all(|f| out_dir.join(f).is_file());
    (complete && report.config == *cfg).then_some(report)
}

/// Returns `out_dir` at once when it already holds the base of `cfg` ([`cached_base`]); otherwise
/// builds it ([`build_base`], replacing whatever was there).
pub fn ensure_base(cfg: &BaseConfig, out_dir: &Path, on_step: impl FnMut(u64, f64)) -> Result<PathBuf> {
    if cached_base(cfg, out_dir).is_some() {
        return Ok(out_dir.to_path_buf());
    }
    build_base(cfg, out_dir, on_step)
}

/// Builds the base model into `out_dir` (see the crate docs). The directory is assembled in
/// `<out_dir>.tmp-<pid>` and renamed into place, so a reader never sees a half-built base; an
/// existing `out_dir` is replaced. `on_step(step, loss)` is called after every optimizer step.
pub fn build_base(cfg: &BaseConfig, out_dir: &Path, mut on_step: impl FnMut(u64, f64)) -> Result<PathBuf> {
    cfg.validate()?;
    let start = Instant::now();
    let tmp = crossfeed_fsio::temp_sibling(out_dir, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| PretrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| PretrainError::io(&tmp, e))?;
    let result = build_into(cfg, &tmp, &mut on_step, start);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    write_json_atomic(&tmp.join(BASE_FILE), &report)?;
    crossfeed_fsio::replace_dir(&tmp, out_dir)?;
    Ok(out_dir.to_path_buf())
}

fn build_into(cfg: &BaseConfig, dir: &Path, on_step: &mut dyn FnMut(u64, f64), start: Instant) -> Result<BaseReport> {
    let world = toy_world(cfg.world_seed, &cfg.sizes);
    let tokenizer_size = fit_tokenizer(&world.all_text(), cfg.vocab_size, cfg.model.max_position_embeddings, dir)?;
    let vocab_size = padded_vocab(tokenizer_size);
    write_random_init(&cfg.model, vocab_size, cfg.seed, dir)?;

    let tok = TextTokenizer::from_dir(dir)?;
    if tok.bos_id != Some(BOS_ID) || tok.eos_id != Some(EOS_ID) {
        return Err(PretrainError::Tokenizer {
            path: dir.join("tokenizer.json"),
            message: format!("TextTokenizer reads bos {:?} / eos {:?}, expected {BOS_ID} / {EOS_ID}", tok.bos_id, tok.eos_id),
        });
    }
    let device = crossfeed_model::parse_device(&cfg.device)?;
    let model = CausalLm::load_dir(dir, &device, DType::F32)?;
    let num_params = model.params.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();

    let train_texts: Vec<String> = world.public.train.iter().map(|e| e.text()).collect();
    let eval_texts: Vec<String> = world.public.eval.iter().map(|e| e.text()).collect();
    let data = Tokenized { seqs: passages(&tok, &train_texts, cfg.max_len)?, label_starts: None };
    let eval = passages(&tok, &eval_texts, cfg.max_len)?;
    let public_eval_ce_before = mean_ce(&model, &eval, EOS_ID, cfg.max_len, 32)?;

    let mut ft = FineTune::new(&model, data, cfg.train_config(), EOS_ID, cfg.max_len)?;
    let mut loss_curve = Vec::with_capacity(cfg.steps as usize);
    while !ft.done() {
        let stats = ft.step()?;
        loss_curve.push(stats.loss);
        on_step(stats.step, stats.loss);
    }
    let public_eval_ce_after = mean_ce(&model, &eval, EOS_ID, cfg.max_len, 32)?;
    ft.save(dir)?;
    let tail = (loss_curve.len() / 10).max(1);
    let final_loss = loss_curve[loss_curve.len() - tail..].iter().sum::<f64>() / tail as f64;
    Ok(BaseReport {
        config: cfg.clone(),
        tokenizer_size,
        vocab_size,
        num_params,
        loss_curve,
        final_loss,
        public_eval_ce_before,
        public_eval_ce_after,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Pretraining sequences: `<|begin_of_text|> text <|end_of_text|>`, cut to `max_len` tokens.
pub fn passages(tok: &TextTokenizer, texts: &[String], max_len: usize) -> Result<Vec<Vec<u32>>> {
    texts
        .iter()
        .map(|t| {
            let mut ids = tok.encode(t)?;
            ids.push(EOS_ID);
            ids.truncate(max_len);
            Ok(ids)
        })
        .collect()
}

/// Token-mean next-token CE (nats) of `model` over `seqs`, in right-padded batches of `batch_size`.
pub fn mean_ce(model: &CausalLm, seqs: &[Vec<u32>], pad_id: u32, max_len: usize, batch_size: usize) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in seqs.chunks(batch_size.max(1)) {
        let batch = Batch::right_padded(chunk, pad_id, max_len, None, &model.device)?;
        let ce = model.ce(&batch)?;
        sum += ce.ce_sum.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        n += ce.total_tokens();
    }
    Ok(sum / n.max(1) as f64)
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| PretrainError::Json { path: path.to_path_buf(), source })?;
    Ok(crossfeed_fsio::write_atomic(path, text.as_bytes())?)
}
