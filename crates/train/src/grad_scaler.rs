//! Dynamic loss scaling for f16 training, with `torch.amp.GradScaler` semantics.
//!
//! f16 gradients underflow (below 6e-8 they become 0) long before f32 ones do, so the loss is
//! multiplied by a large scale before backward and the gradients divided by it before the update.
//! A step whose gradients contain inf/NaN (the scale was too large) is skipped: parameters, moments and
//! the learning-rate schedule stay as they are, and the scale is multiplied by `backoff_factor`. After
//! `growth_interval` consecutive good steps it is multiplied by `growth_factor`. torch keeps the
//! scale as an f32 tensor; here it is an f32 value too, so the sequence of scales is the same.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// torch's `GradScaler(init_scale=65536, growth_factor=2, backoff_factor=0.5, growth_interval=2000)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

/// The scale and the count of consecutive good steps; saved in `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradScaler {
    pub config: GradScalerConfig,
    scale: f32,
    growth_tracker: u64,
}

impl GradScaler {
    pub fn new(config: GradScalerConfig) -> Result<Self> {
        let c = &config;
        let ok = c.init_scale > 0.0
            && (c.init_scale as f32).is_finite()
            && c.growth_factor > 1.0
            && c.backoff_factor > 0.0
            && c.backoff_factor < 1.0
            && c.growth_interval >= 1;
        if !ok {
            return Err(TrainError::Config(format!(
                "grad scaler: need init_scale > 0 (finite in f32), growth_factor > 1, 0 < backoff_factor < 1, \
                 growth_interval >= 1; got {c:?}"
            )));
        }
        Ok(GradScaler { config, scale: c.init_scale as f32, growth_tracker: 0 })
    }

    /// The factor the loss is multiplied by before backward.
    pub fn scale(&self) -> f64 {
        self.scale as f64
    }

    /// Consecutive steps without inf/NaN since the last change of scale.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// torch's `GradScaler.update` after a step: back off on inf/NaN, grow after `growth_interval` good steps.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.config.backoff_factor as f32;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.config.growth_interval {
                let grown = self.scale * self.config.growth_factor as f32;
                // torch keeps the old scale when growing would overflow f32.
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_and_growth_follow_torch() {
        let mut s = GradScaler::new(GradScalerConfig { growth_interval: 3, ..Default::default() }).unwrap();
        assert_eq!(s.scale(), 65536.0);
        s.update(true);
        assert_eq!(s.scale(), 32768.0);
        s.update(false);
        s.update(false);
        assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 2));
        s.update(false);
        assert_eq!((s.scale(), s.growth_tracker()), (65536.0, 0));
        s.update(false);
        s.update(true);
        assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 0));
        assert!(GradScaler::new(GradScalerConfig { backoff_factor: 1.5, ..Default::default() }).is_err());
    }
}
