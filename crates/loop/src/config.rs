//! The experiment config: one TOML file per experiment, every section `deny_unknown_fields`, plus
//! dotted `key=value` overrides. The resolved config (defaults filled in, base model path made
//! absolute) is what the run directory stores and what a later run is compared against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crossfeed_data::{LossMask, MixtureConfig, PoolPolicy, PromptConfig, Replacement, Rounding, TaskConfig, Topology};
use crossfeed_generate::GenerationConfig;
use crossfeed_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::error::{LoopError, Result};

fn d_device() -> String {
    "cpu".into()
}
fn d_dtype() -> String {
    "f32".into()
}
// The mixture's defaults are crossfeed-data's, stated once there.
fn d_alpha() -> f64 {
    MixtureConfig::default().alpha
}
fn d_beta() -> f64 {
    MixtureConfig::default().beta
}
fn d_n() -> usize {
    MixtureConfig::default().n
}
fn d_shuffle() -> bool {
    MixtureConfig::default().shuffle
}
fn d_true() -> bool {
    true
}
fn d_one() -> u32 {
    1
}
fn d_max_len() -> usize {
    512
}
fn d_prompts_per_set() -> usize {
    16
}
fn d_eval_batch() -> usize {
    8
}
fn d_acc_tokens() -> usize {
    256
}

/// The mixture knobs other than alpha/beta/n (which sit at the top level because they are what an
/// experiment varies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSection {
    /// Default `largest_remainder`.
    #[serde(default)]
    pub rounding: Rounding,
    /// Default `latest` (only the previous generation's outputs are in the pool).
    #[serde(default)]
    pub pool_policy: PoolPolicy,
    /// Default `fallback` (draw with replacement, with a warning in the manifest log).
    #[serde(default)]
    pub replacement: Replacement,
    /// Default true.
    #[serde(default = "d_shuffle")]
    pub shuffle: bool,
    /// Who reads whom: `"all"`, `"self"`, `"ring"` or a K×K weight matrix (row k: how trainee k's
    /// synthetic share splits over the producers). Unset: `all` (`self` under `pool_policy = replace`);
    /// left out of the resolved config then, so run directories made before topologies still match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

impl Default for MixtureSection {
    fn default() -> Self {
        MixtureSection {
            rounding: Rounding::default(),
            pool_policy: PoolPolicy::default(),
            replacement: Replacement::default(),
            shuffle: d_shuffle(),
            topology: None,
        }
    }
}

/// Which samples of each synthetic set the generate stage produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticPool {
    /// `lazy` under `pool_policy` latest/replace, `full` under accumulate (the default).
    #[default]
    Auto,
    /// Every prompt of the set is completed (D_{t,k} whole, for analysis or other consumers).
    Full,
    /// Only the samples some trainee's optimizer steps read (docs/LAZY-GENERATION.md); each has the
    /// text eager generation gives it.
    Lazy,
}

/// `[generation]`: the engine's settings (sampling, lengths, batch) and which samples exist at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSection {
    #[serde(flatten)]
    pub engine: GenerationConfig,
    /// `auto` (default), `full` or `lazy`; see [`SyntheticPool`].
    #[serde(default)]
    pub pool: SyntheticPool,
    /// Split each generate stage into this many `generate-shard-N` stages (contiguous slices of the
    /// prompts) that workers or Slurm array tasks run at once; the generate stage merges them. The
    /// samples are the same for any value. Default 1 (no shards).
    #[serde(default = "d_one")]
    pub shards: u32,
}

impl Default for GenerationSection {
    fn default() -> Self {
        GenerationSection { engine: GenerationConfig::default(), pool: SyntheticPool::default(), shards: 1 }
    }
}

/// What is measured after every generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Prompts per eval set (public and each task) that every entity completes for the
    /// homogenization metrics. Default 16.
    #[serde(default = "d_prompts_per_set")]
    pub prompts_per_set: usize,
    /// At most this many eval examples per set for the CE matrix; 0 = the task's whole eval split
    /// (its size is the task's `eval_size`). Default 0.
    #[serde(default)]
    pub max_examples: usize,
    /// Sequences per CE forward pass. Default 8.
    #[serde(default = "d_eval_batch")]
    pub batch_size: usize,
    /// Sentence-embedding model for the cosine-similarity metric (dir or hub id); empty (default)
    /// skips the metric (distinct-n diversity is always computed).
    #[serde(default)]
    pub embed_model: String,
    /// New tokens per homogenization completion; 0 (default) = `generation.max_new_tokens`.
    #[serde(default)]
    pub max_new_tokens: usize,
    /// Evaluate the base model as generation -1. Default true.
    #[serde(default = "d_true")]
    pub base: bool,
    /// Task accuracy of every model on every private task with an accuracy form (lm-evaluation-harness's
    /// `sciq`, `arc_easy`, `arc_challenge`, `gsm8k`; the toy tasks' own), next to the CE matrix. Default true.
    #[serde(default = "d_true")]
    pub accuracy: bool,
    /// At most this many examples per task for accuracy (the first of the CE eval set); 0 (default) =
    /// the whole CE eval set.
    #[serde(default)]
    pub accuracy_examples: usize,
    /// Few-shot examples for generation tasks (gsm8k); unset = lm-evaluation-harness's task default
    /// (gsm8k: 5, drawn as it draws them), 0 for the toy tasks.
    #[serde(default)]
    pub accuracy_fewshot: Option<usize>,
    /// New tokens per generated answer (lm-evaluation-harness's `max_gen_toks`). Default 256.
    #[serde(default = "d_acc_tokens")]
    pub accuracy_max_new_tokens: usize,
    /// Self-BLEU of an entity's completions of one eval set uses the first this many (each against
    /// the others); 0 (default) = all `prompts_per_set`. Its cost grows with the n-grams, not their square.
    #[serde(default)]
    pub self_bleu_samples: usize,
    /// Perplexity of every entity's completions under the base model (the generation-0 starting
    /// point: collapse shows as text the base finds ever more likely). The similarity stage then
    /// loads the base model. Default true.
    #[serde(default = "d_true")]
    pub perplexity: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            prompts_per_set: d_prompts_per_set(),
            max_examples: 0,
            batch_size: d_eval_batch(),
            embed_model: String::new(),
            max_new_tokens: 0,
            base: true,
            accuracy: true,
            accuracy_examples: 0,
            accuracy_fewshot: None,
            accuracy_max_new_tokens: d_acc_tokens(),
            self_bleu_samples: 0,
            perplexity: true,
        }
    }
}

/// One experiment. Generations are numbered `0..generations`: generation 0 fine-tunes the base
/// on real data only, every later one adds the pooled synthetic data of the previous generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Run name: the run directory is `<runs_dir>/<name>`.
    pub name: String,
    /// Every random choice of the run derives from this (see `seeds.rs`). Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Base model: a local directory (made absolute when the config is resolved) or a hub id.
    pub base_model: String,
    /// cpu, cuda, cuda:N, metal. Default cpu.
    #[serde(default = "d_device")]
    pub device: String,
    /// Activation dtype: f32, bf16, f16 (weights stay f32). Default f32.
    #[serde(default = "d_dtype")]
    pub dtype: String,
    /// Number of entities; entity k's private task is `private[k]`.
    pub k: usize,
    /// Share of synthetic data in generations >= 1. Default 0.5.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Share of private data within the real data. Default 0.5.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// Training samples per entity per generation. Default 12,500 (the paper's n).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Generations run, generation 0 included.
    pub generations: u64,
    /// true (default): generation t starts from the entity's generation t-1 model; false: every
    /// generation restarts from the base model.
    #[serde(default = "d_true")]
    pub warm_start: bool,
    /// Training sequences are cut to this many tokens. Default 512.
    #[serde(default = "d_max_len")]
    pub max_len: usize,
    /// `full` (default) or `completion_only`; used for training and for the eval CE.
    #[serde(default)]
    pub loss_mask: LossMask,
    /// Keep the model checkpoints of only the last this-many generations; 0 (default) keeps all.
    #[serde(default)]
    pub keep_last: u64,
    /// The public real data (BookCorpus or toy_public).
    pub public: TaskConfig,
    /// Private tasks; the first `k` are used.
    pub private: Vec<TaskConfig>,
    #[serde(default)]
    pub mixture: MixtureSection,
    /// Per generation; `total_steps` is the steps per generation (paper: 100). Its `seed` is
    /// replaced by a per-(generation, entity) seed derived from the run seed.
    #[serde(default)]
    pub train: TrainConfig,
    /// Synthetic-data generation; its `seed` is likewise replaced per (generation, entity).
    #[serde(default)]
    pub generation: GenerationSection,
    /// Which prompts the synthetic data is generated from.
    #[serde(default)]
    pub prompts: PromptConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

impl ExperimentConfig {
    /// Reads `path`, applies `overrides` (`key=value`), fills defaults, validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses config text (`origin` names it in errors); see [`ExperimentConfig::load`].
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| LoopError::Parse { path: origin.to_string(), message: e.to_string() })?;
        apply_overrides(&mut table, overrides)?;
        let user = toml::Value::Table(table.clone());
        let cfg: ExperimentConfig = match toml::Value::Table(table).try_into() {
            Ok(c) => c,
            Err(e) => {
                let e: toml::de::Error = e;
                let message = e.to_string();
                // serde's message for a key inside the flattened generation section lists no valid
                // keys; find the key against a reference config and name the valid ones.
                if let Err(LoopError::UnknownKey { key, valid }) = check_keys(&user, &reference_value()?, "") {
                    let last = key.rsplit('.').next().unwrap_or(&key);
                    if message.contains(&format!("`{last}`")) {
                        return Err(LoopError::UnknownKey { key, valid });
                    }
                }
                return Err(LoopError::Parse { path: origin.to_string(), message });
            }
        };
        // serde's deny_unknown_fields does not see through `#[serde(flatten)]` (the generation
        // section), so check every key the user wrote against the resolved config as well.
        check_keys(&user, &cfg.to_value()?, "")?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn to_value(&self) -> Result<toml::Value> {
        toml::Value::try_from(self).map_err(|e| LoopError::Config(format!("cannot serialize config: {e}")))
    }

    /// The resolved config as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| LoopError::Config(format!("cannot serialize config: {e}")))
    }

    /// Range checks with messages that name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LoopError::Config(m));
        for (key, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{key} = {v} is outside [0, 1]"));
            }
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == "." || self.name == ".." {
            return bad(format!("name = {:?} must be a non-empty file name", self.name));
        }
        if self.k == 0 {
            return bad("k = 0: at least one entity is needed".into());
        }
        if self.k > self.private.len() {
            let kinds: Vec<&str> = self.private.iter().map(|t| t.kind.name()).collect();
            return bad(format!(
                "k = {} but only {} private task(s) are given (private = [{}]); add tasks or lower k",
                self.k,
                self.private.len(),
                kinds.join(", ")
            ));
        }
        if self.n == 0 {
            return bad("n = 0: every generation needs training samples".into());
        }
        if self.generations == 0 {
            return bad("generations = 0: at least generation 0 must run".into());
        }
        if self.max_len < 2 {
            return bad(format!("max_len = {} must be at least 2", self.max_len));
        }
        if self.eval.batch_size == 0 {
            return bad("eval.batch_size must be at least 1".into());
        }
        if self.eval.self_bleu_samples == 1 {
            return bad("eval.self_bleu_samples = 1: self-BLEU scores each sample against the others; use 0 (all) or at least 2".into());
        }
        if self.eval.accuracy && self.eval.accuracy_max_new_tokens == 0 {
            return bad("eval.accuracy_max_new_tokens = 0: generated answers need at least one token (or set eval.accuracy = false)".into());
        }
        crossfeed_model::parse_dtype(&self.dtype).map_err(|e| LoopError::Config(format!("dtype: {e}")))?;
        if !(self.device == "cpu" || self.device == "cuda" || self.device == "metal" || self.device.starts_with("cuda:")) {
            return bad(format!("device = {:?} (allowed: cpu, cuda, cuda:N, metal)", self.device));
        }
        self.train.validate().map_err(|e| LoopError::Config(format!("train: {e}")))?;
        // Flattened into [generation]: a sampling value transformers would refuse fails here, before any stage.
        self.generation.engine.sampling.validate().map_err(|e| LoopError::Config(format!("generation.{e}")))?;
        if self.generation.shards == 0 {
            return bad("generation.shards = 0: use 1 for unsharded generate stages".into());
        }
        if self.generation.pool == SyntheticPool::Lazy && self.mixture.pool_policy == PoolPolicy::Accumulate {
            return bad("generation.pool = \"lazy\" with mixture.pool_policy = \"accumulate\": a later generation can draw any \
                old sample, after its model is pruned; use generation.pool = \"auto\" or \"full\" (both generate every sample there)"
                .into());
        }
        self.mixture().validate_for(self.k)?;
        for (role, t) in std::iter::once(("public", &self.public)).chain(self.private.iter().take(self.k).map(|t| ("private", t))) {
            t.check().map_err(|e| LoopError::Config(format!("{role} task {}: {e}", t.name())))?;
            if role == "private" && t.custom.is_some() && t.name() == "public" {
                return bad("private task custom.name = \"public\": the public eval set has that name; pick another".into());
            }
            if role == "public" && t.custom.as_ref().is_some_and(|c| c.accuracy.is_some()) {
                return bad(format!("public task {}: custom.accuracy is measured on private tasks only; remove it", t.name()));
            }
            if let Some(crossfeed_data::CustomAccuracy::ExactMatch { regex: Some(re), .. }) = t.custom.as_ref().and_then(|c| c.accuracy.as_ref()) {
                regex::Regex::new(re).map_err(|e| LoopError::Config(format!("{role} task {}: custom.accuracy.regex = {re:?}: {e}", t.name())))?;
            }
        }
        Ok(())
    }

    /// Whether generate stages produce only the samples training reads (`generation.pool`).
    pub fn lazy_generation(&self) -> bool {
        match self.generation.pool {
            SyntheticPool::Full => false,
            SyntheticPool::Lazy => true,
            SyntheticPool::Auto => self.mixture.pool_policy != PoolPolicy::Accumulate,
        }
    }

    /// The sampler's config.
    pub fn mixture(&self) -> MixtureConfig {
        MixtureConfig {
            alpha: self.alpha,
            beta: self.beta,
            n: self.n,
            rounding: self.mixture.rounding,
            pool_policy: self.mixture.pool_policy,
            replacement: self.mixture.replacement,
            shuffle: self.mixture.shuffle,
            topology: self.mixture.topology.clone(),
        }
    }

    /// Makes a local base model path absolute (so the run does not depend on the working
    /// directory) and fails early when a path-like base model does not exist. A hub id
    /// (`owner/name`) is left as is.
    pub fn resolve_base_model(&mut self) -> Result<()> {
        let p = PathBuf::from(&self.base_model);
        if p.is_dir() {
            let abs = p.canonicalize().map_err(|e| LoopError::io(&p, e))?;
            self.base_model = abs.display().to_string();
            return Ok(());
        }
        if looks_like_path(&self.base_model) {
            return Err(LoopError::Config(format!(
                "base_model: directory {} does not exist (relative paths are relative to the working directory {})",
                self.base_model,
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Refuses a `max_len` longer than the base model's position table. Callers run it before anything
    /// is written (run directory, config, provenance) and in the dry run; else a train stage would fail
    /// mid-run on an embedding index.
    pub fn check_max_len(&self) -> Result<()> {
        self.check_max_len_in(&crossfeed_model::hub::resolve(&self.base_model, &crossfeed_model::HubOptions::from_env())?)
    }

    /// `check_max_len` against the base model's resolved directory (the dry run's, which never downloads).
    pub fn check_max_len_in(&self, dir: &Path) -> Result<()> {
        if let Some(limit) = crossfeed_model::CausalLm::max_positions_of_dir(dir)?.filter(|&l| self.max_len > l) {
            return Err(LoopError::Config(format!(
                "max_len = {} is longer than base_model's max_position_embeddings = {limit} ({}); use max_len <= {limit}",
                self.max_len,
                dir.join("config.json").display()
            )));
        }
        Ok(())
    }

    /// Keys whose resolved values differ between two configs (dotted paths).
    pub fn diff(&self, other: &Self) -> Result<Vec<String>> {
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &self.to_value()?, &mut a);
        flatten("", &other.to_value()?, &mut b);
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |m: &BTreeMap<String, String>, k: &String| m.get(k).cloned().unwrap_or_else(|| "(unset)".into());
        Ok(keys
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: {} (run dir) vs {} (now)", show(&a, k), show(&b, k)))
            .collect())
    }
}

/// A config with every default (only the sections with defaults matter): the key reference for
/// error messages.
fn reference_value() -> Result<toml::Value> {
    let mut private = TaskConfig::new(crossfeed_data::TaskKind::ToyArithmetic);
    private.train_size = Some(0);
    let c = ExperimentConfig {
        name: String::new(),
        seed: 0,
        base_model: String::new(),
        device: d_device(),
        dtype: d_dtype(),
        k: 1,
        alpha: d_alpha(),
        beta: d_beta(),
        n: d_n(),
        generations: 1,
        warm_start: true,
        max_len: d_max_len(),
        loss_mask: LossMask::default(),
        keep_last: 0,
        public: private.clone(),
        private: vec![private],
        // Set, so that error messages list it among the valid keys.
        mixture: MixtureSection { topology: Some(Topology::All), ..MixtureSection::default() },
        train: TrainConfig { warmup_steps: Some(0), ..TrainConfig::default() },
        generation: GenerationSection::default(),
        prompts: PromptConfig { count: Some(0), ..PromptConfig::default() },
        eval: EvalConfig::default(),
    };
    c.to_value()
}

/// Anything that is not exactly `owner/name` is taken for a path.
fn looks_like_path(s: &str) -> bool {
    s.starts_with(['/', '.', '~']) || s.matches('/').count() != 1 || s.contains('\\')
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&join(prefix, k), v, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&join(prefix, &i.to_string()), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// Every key of `user` must exist in `resolved` (the config serialized back).
fn check_keys(user: &toml::Value, resolved: &toml::Value, prefix: &str) -> Result<()> {
    match (user, resolved) {
        (toml::Value::Table(u), toml::Value::Table(r)) => {
            for (k, v) in u {
                match r.get(k) {
                    Some(rv) => check_keys(v, rv, &join(prefix, k))?,
                    None => {
                        return Err(LoopError::UnknownKey {
                            key: join(prefix, k),
                            valid: r.keys().map(|x| join(prefix, x)).collect(),
                        })
                    }
                }
            }
            Ok(())
        }
        (toml::Value::Array(u), toml::Value::Array(r)) => {
            for (i, (uv, rv)) in u.iter().zip(r).enumerate() {
                check_keys(uv, rv, &join(prefix, &i.to_string()))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies `key=value` overrides to a parsed TOML table. Keys are dotted paths (`train.lr`,
/// `private.0.train_size`); values are TOML (`0.5`, `true`, `"x"`, `[1, 2]`), and anything that does
/// not parse as TOML is taken as a string (`--set device=cuda`).
pub fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<()> {
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = apply_to_value(&mut root, overrides);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn apply_to_value(root: &mut toml::Value, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (key, raw) = o.split_once('=').ok_or_else(|| LoopError::Override(o.clone()))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(LoopError::Override(o.clone()));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
        let parts: Vec<&str> = key.split('.').collect();
        let mut cur: &mut toml::Value = &mut *root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            cur = match cur {
                toml::Value::Table(t) => {
                    if last {
                        t.insert(part.to_string(), value.clone());
                        break;
                    }
                    t.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
                }
                toml::Value::Array(a) => {
                    let idx: usize = part.parse().map_err(|_| {
                        LoopError::Config(format!("override {key}: `{part}` must be an index into the list {}", parts[..i].join(".")))
                    })?;
                    let len = a.len();
                    let slot = a.get_mut(idx).ok_or_else(|| {
                        LoopError::Config(format!("override {key}: index {idx} is out of range (the list has {len} entries)"))
                    })?;
                    if last {
                        *slot = value.clone();
                        break;
                    }
                    slot
                }
                _ => {
                    return Err(LoopError::Config(format!(
                        "override {key}: {} is a value, not a table",
                        parts[..i].join(".")
                    )))
                }
            };
        }
    }
    Ok(())
}

