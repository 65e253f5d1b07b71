//! Where a task's rows come from (hub, local directory, toy world) and [`load_task`], which turns
//! a [`TaskConfig`] into fixed train and eval lists of [`Example`]s.

use crate::custom::{self, CustomAccuracy, CustomTask, Row};
use crate::error::{DataError, Result};
use crate::example::{Example, LossMask};
use crate::files::{read_rows, FileFormat};
use crate::hub::{default_cache_dir, file_matches_split, offline_from_env, walk, Hub, ResolvedFile};
use crate::mixture::MixtureConfig;
use crate::passages::{sample_passages, whitespace_tokens, MemoryCorpus, ParquetCorpus, PassageConfig, SentenceSource};
use crate::prompts::PromptConfig;
use crate::rng::Stream;
use crate::task::{Cell, ColumnKind, TaskKind};
use crate::template::Template;
use crate::toy::{toy_world, ToySizes};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The Hugging Face hub (default), through the standard cache.
    Hub {
        /// Default: the task's repo (`allenai/sciq`, `openai/gsm8k`, `allenai/ai2_arc`, `bookcorpus`).
        #[serde(default)]
        repo: Option<String>,
        /// Pin this (branch, ref or commit; record it in the run). Default `main`, or
        /// `refs/convert/parquet` for BookCorpus.
        #[serde(default)]
        revision: Option<String>,
        /// Config directory in the repo. Default `data` (SciQ), `main` (GSM8K), `ARC-Challenge` /
        /// `ARC-Easy`, `plain_text` (BookCorpus; use `default` for a mirror's conversion).
        #[serde(default)]
        config: Option<String>,
        /// Only read the cache. Default: `HF_HUB_OFFLINE`.
        #[serde(default)]
        offline: Option<bool>,
        /// Default: `HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`.
        #[serde(default)]
        cache_dir: Option<PathBuf>,
        /// Explicit repo file list (filtered by split); default: the known path, or for
        /// BookCorpus the repo listing.
        #[serde(default)]
        files: Option<Vec<String>>,
    },
    /// A local directory of parquet or JSONL files in the hub schema (air-gapped clusters). Files
    /// are matched to splits as on the hub (`<split>-*.parquet`, `<split>.jsonl`, `<split>/…`),
    /// inside the `config` subdirectory when it exists.
    Local {
        dir: PathBuf,
        /// Default: the task's hub config directory name (used only if that subdirectory exists).
        #[serde(default)]
        config: Option<String>,
    },
    /// The procedurally generated toy world ([`crate::toy`]); needs a `toy_*` task kind.
    Toy {
        #[serde(default)]
        seed: u64,
    },
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Hub {
            repo: None,
            revision: None,
            config: None,
            offline: None,
            cache_dir: None,
            files: None,
        }
    }
}

fn d_eval_size() -> Option<usize> {
    Some(500)
}

/// One task's data settings (embedded in the loop's TOML config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub kind: TaskKind,
    /// Default: the hub.
    #[serde(default)]
    pub source: SourceConfig,
    /// Default `train`.
    #[serde(default)]
    pub train_split: Option<String>,
    /// Default `test` (the split lm-evaluation-harness scores; GSM8K has no validation). Never the
    /// training pool. BookCorpus: ignored, eval passages come from the held-out tail.
    #[serde(default)]
    pub eval_split: Option<String>,
    /// Training examples kept (a seeded subset). Default: the whole split; passages: 12,500.
    /// More than the split holds is an error.
    #[serde(default)]
    pub train_size: Option<usize>,
    /// Eval examples kept (a seeded subset). Default 500; a size above the split's keeps the whole
    /// split (ARC-Challenge validation has 299 rows). Passages: exactly this many.
    #[serde(default = "d_eval_size")]
    pub eval_size: Option<usize>,
    /// Seed for the subsets (and passage sampling). Default 0. Independent of the run seed, so the
    /// eval set is the same in every generation and run.
    #[serde(default)]
    pub subset_seed: u64,
    /// Override the task's default template ([`TaskKind::default_template`]).
    #[serde(default)]
    pub template: Option<Template>,
    /// Passage cutting (BookCorpus only).
    #[serde(default)]
    pub passages: PassageConfig,
    /// Columns, templates and accuracy of a `kind = "custom"` task (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomTask>,
}

impl TaskConfig {
    /// A config with every default for `kind`.
    pub fn new(kind: TaskKind) -> Self {
        TaskConfig {
            kind,
            source: if kind.is_toy() { SourceConfig::Toy { seed: 0 } } else { SourceConfig::default() },
            train_split: None,
            eval_split: None,
            train_size: None,
            eval_size: d_eval_size(),
            subset_seed: 0,
            template: None,
            passages: PassageConfig::default(),
            custom: None,
        }
    }

    /// Checks the `custom` section against the kind (files are checked when read).
    pub fn check(&self) -> Result<()> {
        custom_spec(self).map(|_| ())
    }

    /// The task's name in metrics and reports: the custom task's `name`, else the kind's.
    pub fn name(&self) -> String {
        match &self.custom {
            Some(c) if self.kind == TaskKind::Custom => c.name.clone(),
            _ => self.kind.name().to_string(),
        }
    }
}

/// The whole data section of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The public real data (BookCorpus or `toy_public`).
    pub public: TaskConfig,
    /// Private task of each entity (K = its length).
    pub private: Vec<TaskConfig>,
    #[serde(default)]
    pub mixture: MixtureConfig,
    #[serde(default)]
    pub prompts: PromptConfig,
    /// Default `full`.
    #[serde(default)]
    pub loss_mask: LossMask,
}

/// A task's fixed train and eval examples, with provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskData {
    pub kind: TaskKind,
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    /// Files read (with the resolved hub commit, to record in the run).
    pub files: Vec<ResolvedFile>,
    /// For each train example, its row in the split (files concatenated in order); for passages,
    /// the corpus row its block starts at.
    pub train_rows: Vec<u64>,
    pub eval_rows: Vec<u64>,
}

/// `k` sorted indices out of `0..len` (all when `size` is `None` or equals `len`).
fn subset(len: usize, size: Option<usize>, seed: u64, purpose: &str, what: &str) -> Result<Vec<u64>> {
    match size {
        None => Ok((0..len as u64).collect()),
        Some(k) if k > len => Err(DataError::NotEnough {
            source_name: what.to_string(),
            requested: k,
            available: len,
        }),
        Some(k) if k == len => Ok((0..len as u64).collect()),
        Some(k) => {
            let mut v = Stream::new(seed, purpose, 0, 0).sample_indices(len as u64, k);
            v.sort_unstable();
            Ok(v)
        }
    }
}

struct Resolver<'a> {
    kind: TaskKind,
    src: &'a SourceConfig,
}

impl Resolver<'_> {
    fn split_files(&self, split: &str) -> Result<Vec<ResolvedFile>> {
        match self.src {
            SourceConfig::Hub {
                repo,
                revision,
                config,
                offline,
                cache_dir,
                files,
            } => {
                let hub = Hub::new(
                    &repo.clone().or(self.kind.hub_repo().map(str::to_string)).ok_or_else(|| {
                        DataError::Config(format!("task {} has no hub repo; set source.repo", self.kind.name()))
                    })?,
                    &revision.clone().unwrap_or_else(|| self.kind.hub_revision().to_string()),
                    offline.unwrap_or_else(offline_from_env),
                    cache_dir.clone().unwrap_or_else(default_cache_dir),
                );
                let config = config.clone().or(self.kind.hub_config().map(str::to_string));
                let names: Vec<String> = match (files, self.kind.hub_file(config.as_deref().unwrap_or(""), split)) {
                    (Some(list), _) => list.iter().filter(|f| file_matches_split(f, None, split)).cloned().collect(),
                    (None, Some(f)) => vec![f],
                    (None, None) => hub
                        .list()?
                        .into_iter()
                        .filter(|f| file_matches_split(f, config.as_deref(), split))
                        .filter(|f| !f.starts_with('.'))
                        .collect(),
                };
                if names.is_empty() {
                    let (repo, revision) = hub.name();
                    return Err(DataError::NoFiles {
                        dir: PathBuf::from(format!("{repo}@{revision}")),
                        split: split.to_string(),
                        hint: format!("no repo file matches config {config:?}; set source.config or source.files"),
                    });
                }
                names.iter().map(|f| hub.get(f)).collect()
            }
            SourceConfig::Local { dir, config } => {
                let config = config.clone().or(self.kind.hub_config().map(str::to_string));
                let config = config.filter(|c| dir.join(c).is_dir());
                let mut all = Vec::new();
                walk(dir, dir, &mut all);
                all.sort();
                let picked: Vec<ResolvedFile> = all
                    .into_iter()
                    .filter(|f| file_matches_split(f, config.as_deref(), split))
                    .map(|f| ResolvedFile {
                        repo: dir.display().to_string(),
                        revision: "local".into(),
                        commit: None,
                        path: dir.join(&f),
                        file: f,
                    })
                    .collect();
                if picked.is_empty() {
                    return Err(DataError::NoFiles {
                        dir: dir.clone(),
                        split: split.to_string(),
                        hint: format!(
                            "expected files like `{}{split}-00000-of-00001.parquet`, `{split}.jsonl` or `{split}/0000.parquet`",
                            config.map(|c| format!("{c}/")).unwrap_or_default()
                        ),
                    });
                }
                Ok(picked)
            }
            SourceConfig::Toy { .. } => Err(DataError::Config("toy source has no files".into())),
        }
    }
}

fn read_split(kind: TaskKind, files: &[ResolvedFile]) -> Result<Vec<(PathBuf, usize, Vec<Cell>)>> {
    let mut out = Vec::new();
    for f in files {
        for (i, row) in read_rows(&f.path, kind.columns())?.into_iter().enumerate() {
            out.push((f.path.clone(), i, row));
        }
    }
    Ok(out)
}

fn render(kind: TaskKind, t: &Template, rows: &[(PathBuf, usize, Vec<Cell>)], pick: &[u64]) -> Result<Vec<Example>> {
    pick.iter()
        .map(|&i| {
            let (path, r, cells) = &rows[i as usize];
            t.render(&kind.fields(cells, path, *r)?)
        })
        .collect()
}

/// The files [`load_task`] reads, resolved (downloaded when online) but not read: what
/// `crossfeed fetch` gets and a run records as its provenance. Toy tasks have none.
pub fn task_files(cfg: &TaskConfig) -> Result<Vec<ResolvedFile>> {
    if matches!(cfg.source, SourceConfig::Toy { .. }) {
        return Ok(Vec::new());
    }
    let (dtrain, deval) = cfg.kind.default_splits();
    let resolver = Resolver { kind: cfg.kind, src: &cfg.source };
    let (train, eval) = (cfg.train_split.as_deref().unwrap_or(dtrain), cfg.eval_split.as_deref().unwrap_or(deval));
    let mut files = resolver.split_files(train)?;
    if !cfg.kind.is_passages() && eval != train {
        files.extend(resolver.split_files(eval)?);
    }
    Ok(files)
}

/// Load a task with the default token counter (whitespace words).
pub fn load_task(cfg: &TaskConfig) -> Result<TaskData> {
    load_task_with(cfg, &whitespace_tokens)
}

/// Load a task; `count_tokens` measures passage length (pass the model's tokenizer).
pub fn load_task_with(cfg: &TaskConfig, count_tokens: &dyn Fn(&str) -> usize) -> Result<TaskData> {
    let kind = cfg.kind;
    if let SourceConfig::Toy { seed } = cfg.source {
        return load_toy(cfg, seed);
    }
    if kind.is_toy() {
        return Err(DataError::Config(format!("task {} needs `source = {{ type = \"toy\" }}`", kind.name())));
    }
    if let Some(spec) = custom_spec(cfg)? {
        let c = load_custom(cfg, spec)?;
        let render = |rows: &[Row]| -> Result<Vec<Example>> {
            rows.iter()
                .map(|r| Ok(Example::new(custom::render(&spec.prompt, r, "custom.prompt")?, custom::render(&spec.answer, r, "custom.answer")?)))
                .collect()
        };
        return Ok(TaskData { kind, train: render(&c.train)?, eval: render(&c.eval)?, files: c.files, train_rows: c.train_rows, eval_rows: c.eval_rows });
    }
    let template = cfg.template.clone().unwrap_or_else(|| kind.default_template());
    template.validate(kind.field_names())?;
    let (dtrain, deval) = kind.default_splits();
    let train_split = cfg.train_split.as_deref().unwrap_or(dtrain);
    let resolver = Resolver { kind, src: &cfg.source };

    if kind.is_passages() {
        let files = resolver.split_files(train_split)?;
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let mut corpus: Box<dyn SentenceSource> = if paths.iter().all(|p| FileFormat::of(p) == Some(FileFormat::Parquet)) {
            Box::new(ParquetCorpus::open(&paths)?)
        } else {
            // JSONL corpora are read into memory; convert large corpora to parquet.
            let mut v = Vec::new();
            for p in &paths {
                v.extend(read_rows(p, &[("text", ColumnKind::Str)])?.into_iter().map(|mut r| match r.pop() {
                    Some(Cell::Str(s)) => s,
                    _ => String::new(),
                }));
            }
            Box::new(MemoryCorpus(v))
        };
        let set = sample_passages(
            corpus.as_mut(),
            &cfg.passages,
            cfg.train_size.unwrap_or(12_500),
            cfg.eval_size.unwrap_or(500),
            cfg.subset_seed,
            count_tokens,
        )?;
        let mk = |v: &[(u64, String)]| -> Result<Vec<Example>> {
            v.iter().map(|(_, text)| template.render(&[("text", text.clone())])).collect()
        };
        return Ok(TaskData {
            kind,
            train: mk(&set.train)?,
            eval: mk(&set.eval)?,
            files,
            train_rows: set.train.iter().map(|p| p.0).collect(),
            eval_rows: set.eval.iter().map(|p| p.0).collect(),
        });
    }

    let eval_split = cfg.eval_split.as_deref().unwrap_or(deval);
    if eval_split == train_split {
        return Err(DataError::Config(format!(
            "task {}: eval_split must differ from train_split (`{train_split}`)",
            kind.name()
        )));
    }
    let train_files = resolver.split_files(train_split)?;
    let eval_files = resolver.split_files(eval_split)?;
    let train_rows_all = read_split(kind, &train_files)?;
    let eval_rows_all = read_split(kind, &eval_files)?;
    let name = kind.name();
    let tr = subset(train_rows_all.len(), cfg.train_size, cfg.subset_seed, "subset-train", &format!("{name} {train_split} split"))?;
    let ev = subset(eval_rows_all.len(), cfg.eval_size.map(|e| e.min(eval_rows_all.len())), cfg.subset_seed, "subset-eval", &format!("{name} {eval_split} split"))?;
    let mut files = train_files;
    files.extend(eval_files);
    Ok(TaskData {
        kind,
        train: render(kind, &template, &train_rows_all, &tr)?,
        eval: render(kind, &template, &eval_rows_all, &ev)?,
        files,
        train_rows: tr,
        eval_rows: ev,
    })
}

/// A task's raw rows for scorers that build their own prompts (task accuracy, as
/// lm-evaluation-harness builds them): every row of the train split (its few-shot pool, files in
/// order) and exactly the eval rows [`load_task`] keeps, in the same order as `TaskData::eval`.
#[derive(Debug, Clone)]
pub struct TaskRows {
    pub kind: TaskKind,
    pub train: Vec<Vec<Cell>>,
    pub eval: Vec<Vec<Cell>>,
}

/// [`TaskRows`] of a task read from files (an error for passages and toy tasks, which have no rows);
/// the train split is read only when `with_train` (few-shot examples need it).
pub fn task_rows(cfg: &TaskConfig, with_train: bool) -> Result<TaskRows> {
    let kind = cfg.kind;
    if kind == TaskKind::Custom {
        return Err(DataError::Config(format!("task {}: custom tasks give their accuracy documents through custom_choice_docs", cfg.name())));
    }
    if kind.is_toy() || kind.is_passages() || matches!(cfg.source, SourceConfig::Toy { .. }) {
        return Err(DataError::Config(format!("task {} has no rows to score accuracy on", kind.name())));
    }
    let (dtrain, deval) = kind.default_splits();
    let train_split = cfg.train_split.as_deref().unwrap_or(dtrain);
    let eval_split = cfg.eval_split.as_deref().unwrap_or(deval);
    let resolver = Resolver { kind, src: &cfg.source };
    let train = if with_train { read_split(kind, &resolver.split_files(train_split)?)? } else { Vec::new() };
    let eval_all = read_split(kind, &resolver.split_files(eval_split)?)?;
    let name = kind.name();
    let ev = subset(eval_all.len(), cfg.eval_size.map(|e| e.min(eval_all.len())), cfg.subset_seed, "subset-eval", &format!("{name} {eval_split} split"))?;
    Ok(TaskRows {
        kind,
        train: train.into_iter().map(|r| r.2).collect(),
        eval: ev.iter().map(|&i| eval_all[i as usize].2.clone()).collect(),
    })
}

/// The `custom` section of a `kind = "custom"` task (`None` for built-in kinds); a custom kind
/// without one, or one on a built-in kind, is an error.
fn custom_spec(cfg: &TaskConfig) -> Result<Option<&CustomTask>> {
    match (&cfg.custom, cfg.kind == TaskKind::Custom) {
        (Some(c), true) => {
            if cfg.template.is_some() {
                return Err(DataError::Config(format!(
                    "task {}: custom tasks take custom.prompt and custom.answer (`{{{{column}}}}` templates), not `template`",
                    c.name
                )));
            }
            c.validate()?;
            Ok(Some(c))
        }
        (None, true) => Err(DataError::Config(
            "kind = \"custom\" needs a `custom` section: `name`, and `prompt`/`answer` templates over the file's columns (README: Custom data)".into(),
        )),
        (Some(_), false) => Err(DataError::Config(format!("task {}: the `custom` section is only for kind = \"custom\"", cfg.kind.name()))),
        (None, false) => Ok(None),
    }
}

/// A custom task's kept rows, raw.
struct CustomRows {
    train: Vec<Row>,
    eval: Vec<Row>,
    files: Vec<ResolvedFile>,
    train_rows: Vec<u64>,
    eval_rows: Vec<u64>,
}

/// Reads a custom task's splits (default `train` and `test`) and keeps the seeded subsets. With
/// `eval_split` equal to `train_split` (one file, e.g. a text corpus), eval is a seeded held-out
/// subset of `eval_size` rows and train is drawn from the others.
fn load_custom(cfg: &TaskConfig, spec: &CustomTask) -> Result<CustomRows> {
    let resolver = Resolver { kind: cfg.kind, src: &cfg.source };
    let wanted = spec.columns()?;
    let train_split = cfg.train_split.as_deref().unwrap_or("train");
    let eval_split = cfg.eval_split.as_deref().unwrap_or("test");
    let read = |split: &str| -> Result<(Vec<ResolvedFile>, Vec<Row>)> {
        let files = resolver.split_files(split)?;
        let mut rows = Vec::new();
        for f in &files {
            rows.extend(custom::read_custom(&f.path, spec, &wanted)?);
        }
        if rows.is_empty() {
            let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
            return Err(DataError::EmptySplit { task: spec.name.clone(), split: split.to_string(), files: names.join(", ") });
        }
        Ok((files, rows))
    };
    let what = |split: &str| format!("{} {split} split", spec.name);
    let (mut files, train_all) = read(train_split)?;
    let pick = |all: &[Row], idx: &[u64]| -> Vec<Row> { idx.iter().map(|&i| all[i as usize].clone()).collect() };
    if eval_split == train_split {
        let n = train_all.len();
        let ev = subset(n, Some(cfg.eval_size.unwrap_or(500).min(n.saturating_sub(1))), cfg.subset_seed, "subset-eval", &what(eval_split))?;
        let rest: Vec<u64> = (0..n as u64).filter(|i| ev.binary_search(i).is_err()).collect();
        let tr: Vec<u64> = subset(rest.len(), cfg.train_size, cfg.subset_seed, "subset-train", &what(train_split))?.iter().map(|&p| rest[p as usize]).collect();
        return Ok(CustomRows { train: pick(&train_all, &tr), eval: pick(&train_all, &ev), files, train_rows: tr, eval_rows: ev });
    }
    let (eval_files, eval_all) = read(eval_split)?;
    let tr = subset(train_all.len(), cfg.train_size, cfg.subset_seed, "subset-train", &what(train_split))?;
    let ev = subset(eval_all.len(), cfg.eval_size.map(|e| e.min(eval_all.len())), cfg.subset_seed, "subset-eval", &what(eval_split))?;
    files.extend(eval_files);
    Ok(CustomRows { train: pick(&train_all, &tr), eval: pick(&eval_all, &ev), files, train_rows: tr, eval_rows: ev })
}

/// One exact-match document: the context (the prompt template) and the target.
pub type MatchRow = (String, String);

/// A custom task's generation documents for exact-match accuracy: (context, target) for the eval
/// rows in `TaskData::eval` order and for the train rows (few-shot examples); `None` when the task's
/// accuracy is not `exact_match`. The rule itself is the task's `custom.accuracy`.
pub fn custom_match_docs(cfg: &TaskConfig) -> Result<Option<(Vec<MatchRow>, Vec<MatchRow>)>> {
    let Some(spec) = custom_spec(cfg)? else { return Ok(None) };
    let Some(CustomAccuracy::ExactMatch { target, .. }) = &spec.accuracy else { return Ok(None) };
    let c = load_custom(cfg, spec)?;
    let docs = |rows: &[Row]| -> Result<Vec<(String, String)>> {
        rows.iter().map(|r| Ok((custom::render(&spec.prompt, r, "custom.prompt")?, custom::render(target, r, "custom.accuracy.target")?))).collect()
    };
    Ok(Some((docs(&c.eval)?, docs(&c.train)?)))
}

/// One multiple-choice document: the context (the prompt template), the options, the gold index.
pub type ChoiceRow = (String, Vec<String>, usize);

/// A custom task's multiple-choice documents for task accuracy: (eval docs in `TaskData::eval`
/// order, train docs for few-shot examples); `None` when the task has no `custom.accuracy`.
pub fn custom_choice_docs(cfg: &TaskConfig) -> Result<Option<(Vec<ChoiceRow>, Vec<ChoiceRow>)>> {
    let Some(spec) = custom_spec(cfg)? else { return Ok(None) };
    let Some(CustomAccuracy::MultipleChoice { options, label }) = &spec.accuracy else { return Ok(None) };
    let c = load_custom(cfg, spec)?;
    let docs = |rows: &[Row], split: &str| -> Result<Vec<ChoiceRow>> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let opts = custom::row_options(r, options);
                let bad = |m: String| DataError::Config(format!("task {} {split} row {i} (of those kept): {m}", spec.name));
                if opts.len() < 2 {
                    return Err(bad(format!("custom.accuracy.options gives {} option(s)", opts.len())));
                }
                let gold = custom::label_index(&r.get(label).map(custom::Value::text).unwrap_or_default(), opts.len()).map_err(|m| bad(format!("custom.accuracy.label: {m}")))?;
                Ok((custom::render(&spec.prompt, r, "custom.prompt")?, opts, gold))
            })
            .collect()
    };
    Ok(Some((docs(&c.eval, "eval")?, docs(&c.train, "train")?)))
}

fn load_toy(cfg: &TaskConfig, seed: u64) -> Result<TaskData> {
    if !cfg.kind.is_toy() {
        return Err(DataError::Config(format!("the toy source serves only toy_* tasks, not {}", cfg.kind.name())));
    }
    if cfg.template.is_some() {
        return Err(DataError::Config("toy tasks have fixed formats; remove `template`".into()));
    }
    let d = ToySizes::default();
    let (train, eval) = (cfg.train_size.unwrap_or(d.train), cfg.eval_size.unwrap_or(d.eval));
    let sizes = ToySizes {
        train,
        eval,
        public_train: train,
        public_eval: eval,
    };
    let w = toy_world(seed, &sizes);
    let t = w.task(cfg.kind).expect("toy kind");
    let n = (t.train.len() as u64, t.eval.len() as u64);
    Ok(TaskData {
        kind: cfg.kind,
        train: t.train.clone(),
        eval: t.eval.clone(),
        files: Vec::new(),
        train_rows: (0..n.0).collect(),
        eval_rows: (0..n.1).collect(),
    })
}
