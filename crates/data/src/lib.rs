//! crossfeed-data — every byte of text that reaches a model.
//!
//! Table of contents (one file per concept):
//! - [`error`] — [`DataError`].
//! - [`custom`] — `kind = "custom"`: any parquet/JSONL/CSV/text file with `{{column}}` templates.
//! - [`example`] — [`Example`] (prompt + completion) and [`LossMask`].
//! - [`template`] — `{field}` [`Template`]s.
//! - [`task`] — [`TaskKind`], hub layouts, columns and the documented default templates.
//! - [`mixture`] — the alpha/beta mixture sampler [`sample_mixture`] and its [`MixtureConfig`].
//! - [`topology`] — who reads whom: [`Topology`] (`all`, `self`, `ring`, a K×K matrix).
//! - [`prompts`] — [`generation_prompts`] for synthetic-data generation.
//! - [`manifest`] — the JSONL training manifest.
//! - [`rng`] — deterministic per-(generation, entity) random streams.
//! - [`source`] — [`SourceConfig`], [`TaskConfig`], [`DataConfig`] and [`load_task`] → [`TaskData`].
//! - [`files`] — parquet / JSONL row readers (schema checks name file and column).
//! - [`hub`] — Hugging Face hub + cache resolution, offline mode.
//! - [`passages`] — BookCorpus streaming passage sampler.
//! - [`fixtures`] — writers of the small test fixtures in the real hub schemas (feature `fixtures`).
//! - [`bench`] — the mixture benchmark over a large generated BookCorpus-schema file (feature `fixtures`).
//! - [`toy`] — the procedurally generated toy world.
#[cfg(feature = "fixtures")]
pub mod bench;
pub mod custom;
pub mod error;
pub mod example;
pub mod files;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod hub;
pub mod manifest;
pub mod mixture;
pub mod passages;
pub mod prompts;
pub mod rng;
pub mod source;
pub mod task;
pub mod template;
pub mod topology;
pub mod toy;

#[cfg(feature = "fixtures")]
pub use bench::bench_mixture;
pub use custom::{CustomAccuracy, CustomTask, OptionColumns, TextUnit};
pub use error::{DataError, Result};
pub use example::{Example, LossMask};
pub use files::{read_rows, FileFormat};
pub use hub::{default_cache_dir, offline_from_env, Hub, ResolvedFile};
pub use manifest::{append_manifest, manifest_records, read_manifest, write_manifest_jsonl, write_manifest_jsonl_read, ManifestRecord};
pub use mixture::{
    allocate, mixture_weights, placeholder_pool, sample_mixture, Allocation, Drawn, Mixture, MixtureConfig, Origin, PoolPolicy,
    Replacement, Rounding, SourceKind, SourceSlot, SyntheticSample,
};
pub use passages::{sample_passages, whitespace_tokens, MemoryCorpus, ParquetCorpus, PassageConfig, PassageSet, SentenceSource};
pub use prompts::{generation_prompts, prefix_of, prompt_count, synthetic_count, GenerationPrompt, PrefixLength, PromptConfig, PromptSource};
pub use source::{custom_choice_docs, custom_match_docs, load_task, load_task_with, ChoiceRow, task_files, task_rows, DataConfig, SourceConfig, TaskConfig, TaskData, TaskRows};
pub use task::{gsm8k_final_answer, strip_calculator, Cell, ColumnKind, TaskKind};
pub use template::Template;
pub use topology::Topology;
pub use toy::{toy_world, ToySizes, ToyTask, ToyWorld};
