//! crossfeed-train: the model-agnostic half of the fine-tuning engine.
//!
//! - [`AdamW`]: torch.optim.AdamW semantics, HF no-decay groups, resumable safetensors state,
//!   fused in-place CPU update.
//! - [`Schedule`] / [`LrSchedule`]: transformers' linear / constant / constant-with-warmup /
//!   cosine schedules (LambdaLR semantics).
//! - [`clip_grad_norm`]: torch.nn.utils.clip_grad_norm_ semantics.
//! - [`GradAccumulator`]: sums micro-batch gradients (token-mean loss per optimizer step).
//! - [`Trainer`]: step driver with NaN guards, seeded data order and exact resume.
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use crossfeed_train::{TrainConfig, Trainer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Var::from_tensor(&Tensor::ones((1, 3), DType::F32, &Device::Cpu)?)?;
//! let cfg = TrainConfig { lr: 1e-2, grad_accum: 2, total_steps: 10, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(vec![("proj.weight".to_string(), w.clone())], cfg)?;
//! let data = Tensor::new(&[[1f32, 2., 3.], [0., 1., 0.], [1., 0., 1.]], &Device::Cpu)?;
//! trainer.set_dataset_len(3);
//! for _ in 0..10 {
//!     let micro_batches = trainer.next_micro_batches()?; // grad_accum lists of example indices
//!     let stats = trainer.step(&micro_batches, |idx| -> candle_core::Result<(Tensor, usize)> {
//!         let ids = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), &Device::Cpu)?;
//!         let x = data.index_select(&ids, 0)?;
//!         // Stand-in for a model's summed token cross-entropy and its token count.
//!         let loss_sum = x.matmul(&w.as_tensor().t()?)?.sqr()?.sum_all()?;
//!         Ok((loss_sum, idx.len()))
//!     })?;
//!     assert!(stats.loss.is_finite());
//! }
//! let dir = std::env::temp_dir().join(format!("crossfeed-train-doc-{}", std::process::id()));
//! trainer.save_state(&dir)?; // optimizer.safetensors + trainer_state.json
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! Master weights and optimizer state are always f32; models cast to their compute dtype inside
//! their forward, so gradients arrive for f32 `Var`s.

pub mod accum;
pub mod adamw;
pub mod clip;
pub mod config;
pub mod error;
pub mod grad_scaler;
pub mod lm;
pub mod order;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use accum::{GradAccumulator, MicroBatchGrads};
pub use adamw::{hf_decay, hf_no_decay, AdamW, AdamWConfig};
pub use clip::{clip_coefficient, clip_grad_norm, grad_norm, sq_norms, tensor_sq_norm};
pub use config::TrainConfig;
pub use error::{BoxError, Result, TrainError};
pub use grad_scaler::{GradScaler, GradScalerConfig};
pub use lm::{tokenize, FineTune, InjectedMasks, LmExample, MaskCall, Tokenized};
pub use order::{epoch_order, DataCursor};
pub use schedule::{warmup_steps, LrSchedule, Schedule};
pub use state::{TrainerState, OPTIMIZER_FILE, TRAINER_STATE_FILE};
pub use trainer::{StepStats, Trainer};
