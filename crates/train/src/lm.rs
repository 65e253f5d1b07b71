//! Fine-tuning a crossfeed-model [`CausalLm`] on text: tokenisation with an optional completion-only
//! label mask, right-padded micro-batches in the trainer's seeded order, and checkpoints that hold the
//! model (transformers-loadable) next to the optimizer and trainer state.

use std::path::Path;

use crossfeed_model::dropout::{derive_seed, seeded_mask, Dropout, MaskRequest};
use crossfeed_model::{Batch, CausalLm, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::grad_scaler::GradScalerConfig;
use crate::trainer::{StepStats, Trainer};

/// One training text: `prompt + completion`. With a completion-only loss, only the completion's tokens
/// are predicted; otherwise the whole text is (an empty prompt means the same either way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmExample {
    #[serde(default)]
    pub prompt: String,
    pub completion: String,
}

/// Token ids of every example and the position where its labels start.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub seqs: Vec<Vec<u32>>,
    /// None = full-sequence loss.
    pub label_starts: Option<Vec<usize>>,
}

/// Full-sequence: ids of `prompt + completion` as `AutoTokenizer` gives them. Completion-only:
/// `encode(prompt) ++ encode_plain(completion)` (TRL's split), labels from the completion on.
/// Sequences are cut to `max_len` tokens.
pub fn tokenize(tok: &TextTokenizer, examples: &[LmExample], max_len: usize, completion_only: bool) -> Result<Tokenized> {
    let mut seqs = Vec::with_capacity(examples.len());
    let mut starts = Vec::with_capacity(examples.len());
    for ex in examples {
        let mut ids = if completion_only {
            let mut p = tok.encode(&ex.prompt)?;
            starts.push(p.len());
            p.extend(tok.encode_plain(&ex.completion)?);
            p
        } else {
            tok.encode(&format!("{}{}", ex.prompt, ex.completion))?
        };
        ids.truncate(max_len);
        seqs.push(ids);
    }
    Ok(Tokenized { seqs, label_starts: completion_only.then_some(starts) })
}

/// Where one dropout mask of a training step is asked for: optimizer step (0-based), micro-batch
/// within it, the examples of that micro-batch (in batch row order), and the site.
pub struct MaskCall<'r> {
    pub step: u64,
    pub micro: usize,
    pub examples: &'r [usize],
    pub req: MaskRequest<'r>,
}

/// A test hook's mask source (see [`FineTune::inject_dropout_masks`]).
pub type InjectedMasks = Box<dyn Fn(&MaskCall) -> candle_core::Result<candle_core::Tensor>>;

/// A fine-tuning run over one model and one tokenized dataset.
pub struct FineTune<'a> {
    model: &'a CausalLm,
    data: Tokenized,
    trainer: Trainer,
    pad_id: u32,
    max_len: usize,
    injected: Option<InjectedMasks>,
}

impl<'a> FineTune<'a> {
    /// A model with f16 activations trains with dynamic loss scaling (torch's GradScaler defaults);
    /// f32 and bf16 need none.
    pub fn new(model: &'a CausalLm, data: Tokenized, cfg: TrainConfig, pad_id: u32, max_len: usize) -> Result<Self> {
        let scaler = (model.dtype == candle_core::DType::F16).then(GradScalerConfig::default);
        Self::with_grad_scaler(model, data, cfg, pad_id, max_len, scaler)
    }

    /// [`FineTune::new`] with an explicit loss-scaling choice (`None`: no scaling).
    pub fn with_grad_scaler(
        model: &'a CausalLm,
        data: Tokenized,
        cfg: TrainConfig,
        pad_id: u32,
        max_len: usize,
        scaler: Option<GradScalerConfig>,
    ) -> Result<Self> {
        if data.seqs.is_empty() {
            return Err(TrainError::Config("no training examples".into()));
        }
        let longest = data.seqs.iter().map(Vec::len).max().unwrap_or(0).min(max_len);
        if let Some(limit) = model.max_positions().filter(|&l| longest > l) {
            return Err(TrainError::Config(format!(
                "max_len = {max_len} lets a training sequence reach {longest} tokens, past the model's \
                 max_position_embeddings = {limit} ({}); use max_len <= {limit}",
                model.source_dir.join("config.json").display()
            )));
        }
        let mut trainer = Trainer::new(model.params.clone(), cfg)?;
        if let Some(s) = scaler {
            trainer = trainer.with_grad_scaler(s)?;
        }
        trainer.set_dataset_len(data.seqs.len());
        Ok(Self { model, data, trainer, pad_id, max_len, injected: None })
    }

    /// Tokens the loss predicts in example `i` (what `Batch::right_padded` + `next_token_ce` count).
    fn predicted_tokens(&self, i: usize) -> usize {
        let len = self.data.seqs[i].len().min(self.max_len);
        let first = self.data.label_starts.as_ref().map_or(0, |s| s[i]).max(1);
        len.saturating_sub(first)
    }

    /// Continues from a checkpoint written by [`FineTune::save`] (the model itself must already have
    /// been loaded from that directory).
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        self.trainer.load_state(dir)
    }

    /// Test hook: dropout masks come from `masks` instead of the seed (a parity test feeds the masks
    /// torch drew). Applies only where dropout is on (`TrainConfig::dropout` and a nonzero rate).
    pub fn inject_dropout_masks(&mut self, masks: InjectedMasks) {
        self.injected = Some(masks);
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn done(&self) -> bool {
        self.trainer.step_count() >= self.trainer.config().total_steps
    }

    /// One optimizer step over `grad_accum` micro-batches of `batch_size` examples.
    pub fn step(&mut self) -> Result<StepStats> {
        let micro = self.trainer.next_micro_batches()?;
        // In bf16/f16 each micro-batch backpropagates ce_sum / step tokens, as torch + HF do: the 1/n
        // reaches the logits' gradient before it is rounded to the low dtype, so the roundings fall where
        // torch's do (dividing the gradients afterwards rounds other values), and under loss scaling f16
        // gradients overflow exactly where theirs do. In f32 the division after the backward is exact
        // enough and keeps the accumulated sums of token counts the old tests pin.
        let low = self.model.dtype != candle_core::DType::F32;
        let total = (low || self.trainer.grad_scaler().is_some()).then(|| micro.iter().flatten().map(|&i| self.predicted_tokens(i)).sum());
        let (model, data, pad, max_len) = (self.model, &self.data, self.pad_id, self.max_len);
        let dropout = self.trainer.config().dropout && model.has_dropout();
        let (seed, step) = (self.trainer.config().seed, self.trainer.step_count());
        let injected = self.injected.as_ref();
        let mut micro_index = 0usize;
        self.trainer.step_with_tokens(&micro, total, |idx: &Vec<usize>| -> std::result::Result<_, crossfeed_model::ModelError> {
            let seqs: Vec<Vec<u32>> = idx.iter().map(|&i| data.seqs[i].clone()).collect();
            let starts: Option<Vec<usize>> = data.label_starts.as_ref().map(|s| idx.iter().map(|&i| s[i]).collect());
            let batch = Batch::right_padded(&seqs, pad, max_len, starts.as_deref(), &model.device)?;
            let micro = micro_index;
            micro_index += 1;
            let ce = if dropout {
                // Masks depend on (seed, step, micro-batch, site) only: a resumed step draws the same.
                let micro_seed = derive_seed(seed, step, micro as u64);
                let masks = |req: MaskRequest| match injected {
                    Some(f) => f(&MaskCall { step, micro, examples: idx, req }),
                    None => seeded_mask(micro_seed, req, &model.device),
                };
                model.ce_train(&batch, &Dropout::new(&masks))?
            } else {
                model.ce(&batch)?
            };
            let tokens = ce.total_tokens();
            Ok((ce.ce_sum.sum_all()?, tokens))
        })
    }

    /// Writes the model (config, weights, tokenizer) and the optimizer/trainer state into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)?;
        self.trainer.save_state(dir)
    }
}
