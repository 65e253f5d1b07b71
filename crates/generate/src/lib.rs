//! Batched generation for crossfeed's models: a KV cache over ragged, continuously refilled batches
//! and seeded sampling done for the whole batch on the device. Reference: transformers'
//! `GenerationMixin.generate` (greedy parity is tested on the tiny fixtures).

pub mod engine;
pub mod sampling;

pub use engine::{sequence_rng, Completion, FinishReason, GenerationConfig, Generator};
pub use sampling::SamplingParams;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] crossfeed_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("prompt {0} is empty after tokenization (a BOS-less tokenizer needs a non-empty prompt)")]
    EmptyPrompt(usize),
    #[error("{prompts} prompts were given {streams} RNG streams (one per prompt)")]
    Streams { prompts: usize, streams: usize },
    #[error("internal: prompt {0} produced no completion")]
    Lost(usize),
}
