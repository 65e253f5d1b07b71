//! The trainer's hyper-parameters, apart from the trainer: the optimizer, the checkpoint state and
//! the loop's config read them without importing the step driver.

use serde::{Deserialize, Serialize};

use crate::adamw::AdamWConfig;
use crate::error::{Result, TrainError};
use crate::schedule::{warmup_steps, LrSchedule, Schedule};

/// Training hyper-parameters. Every field has a default (the paper's setting), so a config file
/// only lists what it changes; unknown keys are rejected so a typo cannot silently fall back to
/// a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Peak learning rate. Default 8e-6.
    pub lr: f64,
    /// Learning-rate schedule. Default `linear` (warmup then linear decay to 0).
    pub schedule: Schedule,
    /// Explicit warmup steps; overrides `warmup_ratio` when set. Default unset.
    pub warmup_steps: Option<u64>,
    /// Warmup as a fraction of `total_steps`, rounded up (HF). Default 0.025.
    pub warmup_ratio: f64,
    /// Number of optimizer steps of the run (the schedule's horizon). Default 100.
    pub total_steps: u64,
    /// Examples per micro-batch (used by the caller's loader / [`Trainer::next_micro_batches`]). Default 2.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 2.
    pub grad_accum: usize,
    /// Decoupled weight decay (never applied to biases and norm weights, HF rule). Default 0.0.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; 0 disables. Default 1.0.
    pub max_grad_norm: f64,
    /// Adam betas. Default [0.9, 0.999].
    pub betas: [f64; 2],
    /// Adam epsilon. Default 1e-8.
    pub eps: f64,
    /// Seed for the data order. Default 42 (HF's default seed).
    pub seed: u64,
    /// Skip parameters without gradient instead of failing. Default false.
    pub allow_missing_grads: bool,
    /// Dropout at the rates of the model's config.json, as HF's trainer trains (`model.train()`);
    /// masks from `seed`, per (optimizer step, micro-batch). False trains without. Default true.
    pub dropout: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 8e-6,
            schedule: Schedule::Linear,
            warmup_steps: None,
            warmup_ratio: 0.025,
            total_steps: 100,
            batch_size: 2,
            grad_accum: 2,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            seed: 42,
            allow_missing_grads: false,
            dropout: true,
        }
    }
}

impl TrainConfig {
    /// Checks ranges; called by [`Trainer::new`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.total_steps == 0 {
            return bad("total_steps must be >= 1".into());
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be >= 1".into());
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad(format!(
                "max_grad_norm must be finite and >= 0, got {}",
                self.max_grad_norm
            ));
        }
        warmup_steps(self.warmup_steps, self.warmup_ratio, self.total_steps)?;
        Ok(())
    }

    /// The optimizer configuration this implies.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: self.eps,
            weight_decay: self.weight_decay,
            allow_missing_grads: self.allow_missing_grads,
        }
    }

    /// The learning-rate schedule with warmup resolved as HF does.
    pub fn lr_schedule(&self) -> Result<LrSchedule> {
        Ok(LrSchedule {
            schedule: self.schedule,
            base_lr: self.lr,
            warmup_steps: warmup_steps(self.warmup_steps, self.warmup_ratio, self.total_steps)?,
            total_steps: self.total_steps,
        })
    }
}
