//! Model-agnostic optimizer-step driver: accumulation, loss normalisation, clipping, schedule,
//! AdamW, NaN guards and exact resume.
//!
//! The caller owns the model and the data; per optimizer step it hands over the micro-batches and
//! a closure returning each micro-batch's *summed* token cross-entropy and its number of predicted
//! tokens. The step loss is `Σ ce_sum / Σ tokens` over the step (transformers' current semantics).

use std::path::Path;

use candle_core::{DType, Tensor, Var};
use crossfeed_model::profile;
use serde::{Deserialize, Serialize};

use crate::accum::GradAccumulator;
use crate::adamw::{hf_decay, AdamW};
use crate::clip::clip_coefficient;
use crate::config::TrainConfig;
use crate::error::{BoxError, Result, TrainError};
use crate::grad_scaler::{GradScaler, GradScalerConfig};
use crate::order::DataCursor;
use crate::schedule::LrSchedule;
use crate::state::{
    TrainerState, OPTIMIZER_FILE, TRAINER_STATE_FILE, TRAINER_STATE_FORMAT,
};

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Optimizer steps completed, including this one (1-based, HF's `global_step`).
    pub step: u64,
    /// Mean cross-entropy over all predicted tokens of the step.
    pub loss: f64,
    /// Learning rate used for this update.
    pub lr: f64,
    /// Global gradient norm before clipping (of the token-mean loss), as HF logs it.
    pub grad_norm: f64,
    /// Whether clipping scaled the gradients.
    pub clipped: bool,
    /// Predicted tokens in the step.
    pub tokens: usize,
    /// Micro-batches in the step.
    pub micro_batches: usize,
    /// f16 loss scaling only: the gradients had inf/NaN, so the update was skipped (weights, moments
    /// and learning-rate schedule unchanged) and the scale backed off. `grad_norm` is then inf/NaN.
    #[serde(default)]
    pub skipped: bool,
    /// f16 loss scaling only: the scale this step's loss was multiplied by.
    #[serde(default)]
    pub loss_scale: Option<f64>,
}

/// Drives optimizer steps for any model whose trainable weights are f32 [`Var`]s.
pub struct Trainer {
    cfg: TrainConfig,
    opt: AdamW,
    schedule: LrSchedule,
    accum: GradAccumulator,
    step: u64,
    micro_batches_seen: u64,
    tokens_seen: u64,
    data: DataCursor,
    /// Dynamic loss scaling (f16 training); `None` for f32/bf16.
    scaler: Option<GradScaler>,
    /// Steps skipped by the scaler: they count as steps (data is consumed, as HF's `global_step`)
    /// but not as updates, so the schedule runs on `step - skipped` (HF skips `lr_scheduler.step()`).
    skipped: u64,
}

impl Trainer {
    /// Trainer with HF's weight-decay groups ([`hf_decay`]).
    pub fn new(params: Vec<(String, Var)>, cfg: TrainConfig) -> Result<Self> {
        Self::with_decay(params, cfg, hf_decay)
    }

    /// Trainer with a custom weight-decay rule (`true` = decay this parameter).
    pub fn with_decay(
        params: Vec<(String, Var)>,
        cfg: TrainConfig,
        decay: impl Fn(&str, &Var) -> bool,
    ) -> Result<Self> {
        cfg.validate()?;
        let schedule = cfg.lr_schedule()?;
        let accum = GradAccumulator::new(params.clone(), cfg.allow_missing_grads);
        let opt = AdamW::new(params, cfg.adamw(), decay)?;
        let data = DataCursor::new(0, cfg.seed);
        Ok(Trainer {
            cfg,
            opt,
            schedule,
            accum,
            step: 0,
            micro_batches_seen: 0,
            tokens_seen: 0,
            data,
            scaler: None,
            skipped: 0,
        })
    }

    /// Turns on dynamic loss scaling (f16 activations). Call before the first step.
    pub fn with_grad_scaler(mut self, cfg: GradScalerConfig) -> Result<Self> {
        self.scaler = Some(GradScaler::new(cfg)?);
        Ok(self)
    }

    /// The loss scaler, when f16 loss scaling is on.
    pub fn grad_scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// Steps the loss scaler skipped so far.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Optimizer steps completed so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Learning rate the next call to [`Trainer::step`] will use.
    pub fn next_lr(&self) -> f64 {
        self.schedule.lr_at(self.updates())
    }

    /// Updates applied (steps not skipped by the loss scaler): the schedule's position.
    fn updates(&self) -> u64 {
        self.step - self.skipped
    }

    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Predicted tokens consumed so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    /// Micro-batches consumed so far.
    pub fn micro_batches_seen(&self) -> u64 {
        self.micro_batches_seen
    }

    /// Registers the dataset size so the trainer owns (and checkpoints) the data order.
    /// Resets the cursor to the start of epoch 0 unless the size is unchanged.
    pub fn set_dataset_len(&mut self, n: usize) {
        if self.data.n != n {
            self.data = DataCursor::new(n, self.cfg.seed);
        }
    }

    /// Current data position (saved by [`Trainer::save_state`]).
    pub fn data_cursor(&self) -> &DataCursor {
        &self.data
    }

    /// Example indices for the next optimizer step: `grad_accum` micro-batches of `batch_size`,
    /// from the seeded epoch permutations. Call [`Trainer::set_dataset_len`] first.
    pub fn next_micro_batches(&mut self) -> Result<Vec<Vec<usize>>> {
        if self.data.n == 0 {
            return Err(TrainError::Config(
                "dataset length not set (set_dataset_len) or zero".into(),
            ));
        }
        Ok((0..self.cfg.grad_accum)
            .map(|_| self.data.take(self.cfg.batch_size))
            .collect())
    }

    /// One optimizer step over `micro_batches` (exactly `grad_accum` of them).
    ///
    /// `loss_sum(b)` runs the model's forward on micro-batch `b` and returns the *summed*
    /// cross-entropy over its predicted tokens (a scalar tensor connected to the parameters) and
    /// the number of predicted tokens. Errors name the (1-based) optimizer step and the
    /// micro-batch index; after an error, parameters and optimizer state are unchanged.
    pub fn step<B, E, F>(&mut self, micro_batches: &[B], loss_sum: F) -> Result<StepStats>
    where
        F: FnMut(&B) -> std::result::Result<(Tensor, usize), E>,
        E: Into<BoxError>,
    {
        self.step_with_tokens(micro_batches, None, loss_sum)
    }

    /// [`Trainer::step`] when the step's total number of predicted tokens is known before the forward
    /// passes: each micro-batch then backpropagates `ce_sum / total_tokens` (times the loss scale), as
    /// HF does with `num_items_in_batch`. Under f16 loss scaling that keeps the gradients, and so the
    /// point where they overflow, the same as torch's; otherwise it only changes rounding.
    pub fn step_with_tokens<B, E, F>(&mut self, micro_batches: &[B], total_tokens: Option<usize>, mut loss_sum: F) -> Result<StepStats>
    where
        F: FnMut(&B) -> std::result::Result<(Tensor, usize), E>,
        E: Into<BoxError>,
    {
        let step = self.step + 1;
        if micro_batches.is_empty() {
            return Err(TrainError::NoMicroBatches { step });
        }
        if micro_batches.len() != self.cfg.grad_accum {
            return Err(TrainError::Config(format!(
                "optimizer step {step}: got {} micro-batches, grad_accum is {}",
                micro_batches.len(),
                self.cfg.grad_accum
            )));
        }
        self.accum.clear();
        let result = self.step_inner(step, micro_batches, total_tokens, &mut loss_sum);
        if result.is_err() {
            self.accum.clear();
        }
        result
    }

    fn step_inner<B, E, F>(
        &mut self,
        step: u64,
        micro_batches: &[B],
        total_tokens: Option<usize>,
        loss_sum: &mut F,
    ) -> Result<StepStats>
    where
        F: FnMut(&B) -> std::result::Result<(Tensor, usize), E>,
        E: Into<BoxError>,
    {
        let mut ce_total = 0f64;
        let mut tokens = 0usize;
        let mut last_sq = 0f64;
        // Backward runs on `ce_sum · seed`; the optimizer divides it out again.
        let loss_scale = self.scaler.as_ref().map(GradScaler::scale);
        let pre = match total_tokens {
            Some(0) => return Err(TrainError::NoTokens { step }),
            Some(n) => 1.0 / n as f64,
            None => 1.0,
        };
        let seed = pre * loss_scale.unwrap_or(1.0);
        let mut found_inf = false;
        for (i, b) in micro_batches.iter().enumerate() {
            let forward = profile::span("phase.forward", 0.0);
            let (ce, n) = loss_sum(b).map_err(|e| TrainError::LossFn {
                step,
                micro_batch: i,
                source: e.into(),
            })?;
            if ce.elem_count() != 1 {
                return Err(TrainError::LossNotScalar {
                    step,
                    micro_batch: i,
                    shape: ce.shape().clone(),
                });
            }
            let value = crossfeed_model::transfer::vec1::<f32>(&ce.flatten_all()?.to_dtype(DType::F32)?)?[0] as f64;
            drop(forward);
            if !value.is_finite() && self.scaler.is_some() {
                // An f16 forward overflowed: GradScaler would find inf/NaN gradients and skip the step.
                found_inf = true;
                ce_total += value;
                tokens += n;
                continue;
            }
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step,
                    micro_batch: i,
                    value,
                });
            }
            let backward = profile::span("phase.backward", 0.0);
            let grads = if seed == 1.0 { ce.backward()? } else { (ce * seed)?.backward()? };
            let report = self.accum.add(grads)?;
            drop(backward);
            if report.non_finite.is_some() && self.scaler.is_some() {
                // The scale was too large for f16: the step is skipped below.
                found_inf = true;
            } else if let Some(param) = report.non_finite {
                return Err(TrainError::NonFiniteGrad {
                    step,
                    micro_batch: i,
                    param,
                    sq_norm: report.sq_norm,
                });
            }
            last_sq = report.sq_norm;
            ce_total += value;
            tokens += n;
        }
        if tokens == 0 {
            return Err(TrainError::NoTokens { step });
        }
        if let Some(n) = total_tokens.filter(|&n| n != tokens) {
            return Err(TrainError::Config(format!(
                "optimizer step {step}: micro-batches predicted {tokens} tokens, the caller announced {n}"
            )));
        }
        // Gradients in the accumulator are `seed · Σ ∇ce_sum`; the token-mean gradient is that times `scale`.
        let scale = match total_tokens {
            Some(_) => 1.0 / loss_scale.unwrap_or(1.0),
            None => 1.0 / (tokens as f64 * seed),
        };
        let raw_sq = if found_inf {
            f64::INFINITY
        } else if micro_batches.len() == 1 {
            last_sq
        } else {
            self.accum.sq_norm()?
        };
        let grad_norm = raw_sq.sqrt() * scale;
        if let Some(scaler) = self.scaler.as_mut().filter(|_| !grad_norm.is_finite()) {
            // torch's GradScaler.step: inf/NaN found after unscaling, so no optimizer step.
            let lr = self.schedule.lr_at(self.step - self.skipped);
            scaler.update(true);
            self.accum.clear();
            self.skipped += 1;
            self.step = step;
            self.micro_batches_seen += micro_batches.len() as u64;
            self.tokens_seen += tokens as u64;
            return Ok(StepStats {
                step,
                loss: ce_total / tokens as f64,
                lr,
                grad_norm,
                clipped: false,
                tokens,
                micro_batches: micro_batches.len(),
                skipped: true,
                loss_scale,
            });
        }
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFiniteGrad {
                step,
                micro_batch: micro_batches.len() - 1,
                param: "<sum over micro-batches>".into(),
                sq_norm: raw_sq,
            });
        }
        let coef = clip_coefficient(grad_norm, self.cfg.max_grad_norm);
        let lr = self.schedule.lr_at(self.updates());
        let grads = self.accum.take();
        let optimizer = profile::span("phase.optimizer", 0.0);
        self.opt
            .step_scaled(&grads, lr, scale * coef.unwrap_or(1.0))?;
        drop(optimizer);
        if let Some(s) = self.scaler.as_mut() {
            s.update(false);
        }
        self.step = step;
        self.micro_batches_seen += micro_batches.len() as u64;
        self.tokens_seen += tokens as u64;
        Ok(StepStats {
            step,
            loss: ce_total / tokens as f64,
            lr,
            grad_norm,
            clipped: coef.is_some(),
            tokens,
            micro_batches: micro_batches.len(),
            skipped: false,
            loss_scale,
        })
    }

    /// Writes `optimizer.safetensors` then `trainer_state.json` into `dir` (created if needed),
    /// each atomically; the JSON is written last so its presence marks a complete checkpoint.
    pub fn save_state(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        self.opt.save(dir.join(OPTIMIZER_FILE))?;
        let state = TrainerState {
            format: TRAINER_STATE_FORMAT.to_string(),
            step: self.step,
            micro_batches_seen: self.micro_batches_seen,
            tokens_seen: self.tokens_seen,
            data: self.data.clone(),
            config: self.cfg.clone(),
            skipped_steps: self.skipped,
            grad_scaler: self.scaler.clone(),
        };
        let path = dir.join(TRAINER_STATE_FILE);
        let json = serde_json::to_vec_pretty(&state).map_err(|e| TrainError::StateFormat {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Ok(crossfeed_fsio::write_atomic(&path, &json)?)
    }

    /// Restores a checkpoint written by [`Trainer::save_state`]. The saved configuration must equal
    /// this trainer's (a changed schedule or horizon would not continue the same run); the error
    /// names the first differing key. Parameters themselves are the model's business (the caller
    /// saves/loads weights); this restores optimizer moments, step counters and data position.
    pub fn load_state(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let path = dir.join(TRAINER_STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        let state: TrainerState =
            serde_json::from_slice(&bytes).map_err(|e| TrainError::StateFormat {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        if state.format != TRAINER_STATE_FORMAT {
            return Err(TrainError::StateFormat {
                path,
                msg: format!(
                    "unknown format `{}` (expected `{TRAINER_STATE_FORMAT}`)",
                    state.format
                ),
            });
        }
        if state.config != self.cfg {
            return Err(config_diff(&path, &state.config, &self.cfg));
        }
        match (&state.grad_scaler, &self.scaler) {
            (Some(saved), Some(current)) if saved.config != current.config => {
                return Err(TrainError::ConfigMismatch {
                    path,
                    what: "grad_scaler".into(),
                    saved: format!("{:?}", saved.config),
                    current: format!("{:?}", current.config),
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(TrainError::StateFormat {
                    path,
                    msg: format!(
                        "checkpoint was written {} f16 loss scaling, this run {} it (same dtype needed to resume)",
                        if state.grad_scaler.is_some() { "with" } else { "without" },
                        if self.scaler.is_some() { "uses" } else { "does not use" }
                    ),
                })
            }
            _ => {}
        }
        self.opt.load(dir.join(OPTIMIZER_FILE))?;
        if self.opt.step_count() + state.skipped_steps != state.step {
            return Err(TrainError::StateFormat {
                path,
                msg: format!(
                    "optimizer is at step {} but trainer state says {} (files from different checkpoints?)",
                    self.opt.step_count(),
                    state.step
                ),
            });
        }
        self.step = state.step;
        self.skipped = state.skipped_steps;
        self.scaler = state.grad_scaler;
        self.micro_batches_seen = state.micro_batches_seen;
        self.tokens_seen = state.tokens_seen;
        self.data = state.data;
        self.accum.clear();
        Ok(())
    }
}

fn config_diff(path: &Path, saved: &TrainConfig, current: &TrainConfig) -> TrainError {
    let s = serde_json::to_value(saved).unwrap_or_default();
    let c = serde_json::to_value(current).unwrap_or_default();
    if let (Some(so), Some(co)) = (s.as_object(), c.as_object()) {
        for (k, sv) in so {
            let cv = co.get(k).cloned().unwrap_or_default();
            if *sv != cv {
                return TrainError::ConfigMismatch {
                    path: path.to_path_buf(),
                    what: format!("config.{k}"),
                    saved: sv.to_string(),
                    current: cv.to_string(),
                };
            }
        }
    }
    TrainError::ConfigMismatch {
        path: path.to_path_buf(),
        what: "config".into(),
        saved: s.to_string(),
        current: c.to_string(),
    }
}
