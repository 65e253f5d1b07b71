//! Gradient accumulation over micro-batches.
//!
//! The accumulator sums the raw gradients of each micro-batch's *summed* cross-entropy. The
//! trainer divides by the step's total predicted-token count afterwards (folded into the optimizer
//! pass), which is the same as current transformers, where every micro-batch backpropagates
//! `ce_sum / num_items_in_batch`: the step loss is the mean over all predicted tokens of the step,
//! not a mean of per-micro-batch means. (Dividing after summing needs no look-ahead at the token
//! count; the difference is rounding only.)
//!
//! Each micro-batch's gradient norm is measured as it arrives, so a NaN/inf can be attributed to
//! the micro-batch that produced it.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::clip::sq_norms;
use crate::error::{Result, TrainError};

/// What [`GradAccumulator::add`] measured on one micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroBatchGrads {
    /// Squared L2 norm of this micro-batch's gradients (unscaled).
    pub sq_norm: f64,
    /// The first parameter whose gradient contains NaN/inf, if any.
    pub non_finite: Option<String>,
}

/// Sums [`GradStore`]s of successive micro-batches for a fixed list of parameters.
pub struct GradAccumulator {
    vars: Vec<(String, Var)>,
    sums: Vec<Option<Tensor>>,
    micro_batches: usize,
    allow_missing: bool,
}

impl GradAccumulator {
    /// `allow_missing`: accept parameters without a gradient (otherwise `add` fails naming them).
    pub fn new(vars: Vec<(String, Var)>, allow_missing: bool) -> Self {
        let n = vars.len();
        GradAccumulator {
            vars,
            sums: vec![None; n],
            micro_batches: 0,
            allow_missing,
        }
    }

    /// Number of micro-batches added since the last [`GradAccumulator::take`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Adds one micro-batch's gradients (moved in: the first micro-batch costs no copy).
    /// Checks for missing gradients before accumulating anything.
    pub fn add(&mut self, mut grads: GradStore) -> Result<MicroBatchGrads> {
        if !self.allow_missing {
            if let Some((name, _)) = self
                .vars
                .iter()
                .find(|(_, v)| grads.get(v.as_tensor()).is_none())
            {
                return Err(TrainError::MissingGrad { name: name.clone() });
            }
        }
        let mut taken = Vec::with_capacity(self.vars.len());
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.remove(var.as_tensor()) else {
                continue;
            };
            if g.shape() != var.shape() {
                return Err(TrainError::GradShape {
                    name: name.clone(),
                    grad: g.shape().clone(),
                    param: var.shape().clone(),
                });
            }
            taken.push((i, g));
        }
        // All norms of the micro-batch in one go: a single host sync on GPU devices.
        let norms = sq_norms(&taken.iter().map(|(_, g)| g).collect::<Vec<_>>())?;
        let mut sq_norm = 0f64;
        let mut non_finite = None;
        for ((i, g), s) in taken.into_iter().zip(norms) {
            if !s.is_finite() && non_finite.is_none() {
                non_finite = Some(self.vars[i].0.clone());
            }
            sq_norm += s;
            let sum = &mut self.sums[i];
            *sum = Some(match sum.take() {
                None => g,
                Some(prev) => (prev + g)?,
            });
        }
        self.micro_batches += 1;
        Ok(MicroBatchGrads {
            sq_norm,
            non_finite,
        })
    }

    /// Squared L2 norm of the accumulated (unscaled) gradients.
    pub fn sq_norm(&self) -> Result<f64> {
        let present: Vec<&Tensor> = self.sums.iter().flatten().collect();
        Ok(sq_norms(&present)?.iter().sum())
    }

    /// Returns the summed gradients as a [`GradStore`] keyed by the parameters, and resets.
    pub fn take(&mut self) -> GradStore {
        let mut store = GradStore::default();
        for ((_, var), sum) in self.vars.iter().zip(self.sums.iter_mut()) {
            if let Some(t) = sum.take() {
                store.insert(var.as_tensor(), t);
            }
        }
        self.micro_batches = 0;
        store
    }

    /// Drops any partial accumulation (e.g. after an error mid-step).
    pub fn clear(&mut self) {
        self.sums.iter_mut().for_each(|s| *s = None);
        self.micro_batches = 0;
    }
}
