//! crossfeed-loop — the experiment loop of the paper: K entities, each fine-tuned generation after
//! generation on a mixture of its private task, public text and the pooled synthetic outputs of
//! every entity's previous model, evaluated after every generation.
//!
//! One file per concept:
//! - [`config`]: the experiment TOML ([`ExperimentConfig`]), `key=value` overrides, validation.
//! - [`rundir`]: the run directory layout, atomic writes, `DONE` markers, config comparison.
//! - [`lock`]: advisory per-stage and per-run locks (holder host/pid/Slurm job; stale ones taken over).
//! - [`seeds`]: per-(generation, entity, stage) seeds derived from the run seed.
//! - [`stages`]: the stages (generate, train, eval, similarity) and the driver that runs them in order.
//! - [`parallel`]: the driver that runs independent stages at once, one worker process per slot.
//! - [`lazy`]: which synthetic samples training reads, so generate stages produce only those.
//! - [`eval`]: token-level CE, eval prompts, the embedder seam.
//! - [`collapse`]: every diversity/homogenization/collapse metric (distinct-n, cosine, self-BLEU, Vendi,
//!   type-token ratio, perplexity, error consensus) as pure functions, checked against their references.
//! - [`similarity`]: the similarity stage's collapse lines (per entity, the real-data baseline, error consensus).
//! - [`metrics`]: `metrics.jsonl` / `metrics.csv`, rebuilt from stage outputs so they never depend on
//!   how often the run was interrupted.
//! - [`report`]: the markdown report in the paper's form.
//! - [`sweep`]: sweep files (base config + grid/list of overrides + seeds) expanded into named runs.
//! - [`sweep_report`]: the paper's table across a sweep's runs (mean ± sd over seeds), plots against alpha.
//! - [`plot`]: SVG/PNG figures of CE and similarity against generation.

pub mod accuracy;
pub mod accuracy_docs;
pub mod collapse;
pub mod config;
pub mod dryrun;
pub mod error;
pub mod eval;
pub mod finish;
pub mod lazy;
pub mod lock;
pub mod metrics;
pub mod parallel;
pub mod plan;
pub mod plot;
pub mod report;
pub mod rundir;
pub mod seeds;
pub mod similarity;
pub mod stages;
pub mod sweep;
pub mod sweep_report;
pub mod tensorboard;

pub use config::{apply_overrides, EvalConfig, ExperimentConfig, GenerationSection, MixtureSection, SyntheticPool};
pub use error::{LoopError, Result};
pub use collapse::distinct_n;
pub use eval::TextEmbedder;
pub use metrics::MetricLine;
pub use report::{write_report, Report};
pub use rundir::{RunDir, StageMarker};
pub use plan::{GenId, Stage, StageId};
pub use stages::{Event, Runner, StopAfter};
