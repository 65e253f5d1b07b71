//! Learning-rate schedules with the exact semantics of `transformers.optimization`.
//!
//! HF builds a `torch.optim.lr_scheduler.LambdaLR`, whose learning rate for the optimizer step with
//! 0-based index `k` is `base_lr * lambda(k)` (the scheduler is stepped *after* each optimizer step,
//! so the first update uses `lambda(0)`, which is 0 whenever there is warmup). Values are computed in
//! f64 exactly as Python does, so they match HF bit for bit.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Shape of the learning-rate multiplier over training (HF `SchedulerType` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// `get_linear_schedule_with_warmup`: linear warmup from 0, then linear decay to 0 at `total`.
    #[default]
    Linear,
    /// `get_constant_schedule`: multiplier 1 throughout (warmup is ignored, as in HF).
    Constant,
    /// `get_constant_schedule_with_warmup`: linear warmup, then 1.
    ConstantWithWarmup,
    /// `get_cosine_schedule_with_warmup` with `num_cycles = 0.5`, `min_lr_rate = 0`.
    Cosine,
}

impl Schedule {
    /// The LambdaLR multiplier for 0-based optimizer step `step`.
    pub fn lambda(self, step: u64, warmup: u64, total: u64) -> f64 {
        // Python ints are unbounded; i128 keeps `total - step` exact when step > total.
        let (s, w, t) = (step as i128, warmup as i128, total as i128);
        match self {
            Schedule::Constant => 1.0,
            Schedule::ConstantWithWarmup => {
                if s < w {
                    s as f64 / (w.max(1)) as f64
                } else {
                    1.0
                }
            }
            Schedule::Linear => {
                if s < w {
                    return s as f64 / (w.max(1)) as f64;
                }
                let v = (t - s) as f64 / ((t - w).max(1)) as f64;
                v.max(0.0)
            }
            Schedule::Cosine => {
                if s < w {
                    return s as f64 / (w.max(1)) as f64;
                }
                let progress = (s - w) as f64 / ((t - w).max(1)) as f64;
                let num_cycles = 0.5f64;
                let factor =
                    0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos());
                // HF: factor * (1 - min_lr_rate) + min_lr_rate with min_lr_rate = 0.
                let factor = factor * (1.0 - 0.0) + 0.0;
                factor.max(0.0)
            }
        }
    }
}

/// HF `TrainingArguments.get_warmup_steps`: an explicit step count wins, otherwise
/// `math.ceil(num_training_steps * warmup_ratio)`.
pub fn warmup_steps(warmup_steps: Option<u64>, warmup_ratio: f64, total_steps: u64) -> Result<u64> {
    if let Some(w) = warmup_steps {
        return Ok(w);
    }
    if !(0.0..=1.0).contains(&warmup_ratio) {
        return Err(TrainError::Config(format!(
            "warmup_ratio must be in [0, 1], got {warmup_ratio}"
        )));
    }
    Ok((total_steps as f64 * warmup_ratio).ceil() as u64)
}

/// A schedule bound to a base learning rate and resolved warmup/total step counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub schedule: Schedule,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// Learning rate used by the optimizer step with 0-based index `step` (`base_lr * lambda(step)`).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.base_lr
            * self
                .schedule
                .lambda(step, self.warmup_steps, self.total_steps)
    }
}
