//! The executor: how each stage of the plan (`plan.rs`) runs, and the serial driver that runs them in
//! plan order, skipping finished ones.
//!
//! Per generation t: `generate` (t >= 1: entity e's generation t-1 model completes its prompts;
//! the outputs go to `gen-t/entity-e/synthetic.jsonl`), `train` (pool every entity's synthetic set,
//! subsample the alpha/beta mixture, fine-tune), `eval` (CE matrix and completions of the shared eval
//! prompts), and once per generation `similarity` (distinct-n, optional embedding cosine). Every
//! stage reads its inputs from disk — never from memory left by an earlier stage — so running it in
//! a fresh process after an interruption gives the same bytes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use crossfeed_data::{
    generation_prompts, load_task, placeholder_pool, sample_mixture, write_manifest_jsonl_read, Example, GenerationPrompt, LossMask, SourceKind,
    SyntheticSample, TaskData,
};
use crossfeed_generate::{GenerationConfig, Generator};
use crossfeed_model::{CausalLm, HubOptions, TextTokenizer};
use crossfeed_train::{tokenize, FineTune, LmExample};
use serde::{Deserialize, Serialize};

use crate::accuracy::{self, AccuracyDocs, AccuracyOptions};
use crate::accuracy_docs::{self, ACCURACY_FILE};
use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};
use crate::lazy;
use crate::collapse::{distinct_n, mean_pairwise_cosine};
use crate::eval::{eval_prompts, token_ce, MemoEmbedder, TextEmbedder};
use crate::finish;
use crate::metrics::{to_jsonl, MetricLine, EVAL_FILE, SIMILARITY_FILE};
use crate::plan::{dependencies, plan, shard_range, GenId, Stage, StageId};
use crate::rundir::{write_atomic, RunDir, StageMarker};
use crate::seeds::derive;
use crate::similarity::{collapse_lines, read_decisions, CollapseInput};

/// Test/debug hook: stop the driver right after this stage (simulates an interruption).
pub type StopAfter = Option<StageId>;

/// Progress reported to the caller (the CLI prints it).
#[derive(Debug, Clone)]
pub enum Event {
    Skipped(StageId),
    Started(StageId),
    Done { id: StageId, wall_s: f64, tokens: u64, note: String },
    Warning(String),
    GenerationDone { gen: GenId, wall_s: f64, tokens: u64 },
}

/// A synthetic sample as stored in `synthetic.jsonl` (its origin kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyntheticLine {
    entity: usize,
    /// Generation of the model that produced it.
    generation: u64,
    index: u64,
    /// What enters the pool: prompt + completion.
    text: String,
    prompt: String,
    completion: String,
    finish_reason: String,
}

/// What a generate stage produced besides the samples: mode, set size, samples generated.
pub const GENERATED_FILE: &str = "generated.json";

/// The synthetic pool of a train stage and which of its samples exist.
struct SyntheticPoolData {
    samples: Vec<SyntheticSample>,
    /// `(entity, generation, index)` of every generated sample.
    generated: HashSet<(usize, u64, u64)>,
}

/// A completion of a shared eval prompt (`outputs.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutputLine {
    eval_set: String,
    index: usize,
    prompt: String,
    completion: String,
}

/// An eval set: a name (the task kind; `public` for the public data) and its examples.
struct EvalSet {
    name: String,
    examples: Vec<Example>,
    /// The task's accuracy documents and few-shot count (private tasks with an accuracy form, when
    /// `eval.accuracy`).
    accuracy: Option<(AccuracyDocs, usize)>,
}

struct Tasks {
    public: TaskData,
    private: Vec<TaskData>,
    sets: Vec<EvalSet>,
}

/// Runs the stages of one run directory.
pub struct Runner<'a> {
    pub dir: RunDir,
    pub cfg: ExperimentConfig,
    device: Device,
    dtype: DType,
    embedder: Option<&'a dyn TextEmbedder>,
    tasks: Option<Tasks>,
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl<'a> Runner<'a> {
    pub fn new(dir: RunDir, cfg: ExperimentConfig, embedder: Option<&'a dyn TextEmbedder>) -> Result<Self> {
        let device = crossfeed_model::parse_device(&cfg.device)?;
        let dtype = crossfeed_model::parse_dtype(&cfg.dtype)?;
        Ok(Runner { dir, cfg, device, dtype, embedder, tasks: None })
    }

    fn tasks(&mut self) -> Result<&Tasks> {
        if self.tasks.is_none() {
            let public = load_task(&self.cfg.public)?;
            let private: Vec<TaskData> = self.cfg.private[..self.cfg.k].iter().map(load_task).collect::<std::result::Result<_, _>>()?;
            let cap = |v: &[Example]| -> Vec<Example> {
                let n = if self.cfg.eval.max_examples == 0 { v.len() } else { self.cfg.eval.max_examples.min(v.len()) };
                v[..n].to_vec()
            };
            let mut sets = Vec::new();
            let names = crate::sweep_report::set_names(&self.cfg);
            for (i, t) in private.iter().enumerate() {
                let name = names[i].clone();
                let examples = cap(&t.eval);
                let accuracy = if self.cfg.eval.accuracy { accuracy_docs::private_task_docs(&self.cfg, i, t, &examples)? } else { None };
                sets.push(EvalSet { name, examples, accuracy });
            }
            sets.push(EvalSet { name: "public".into(), examples: cap(&public.eval), accuracy: None });
            self.tasks = Some(Tasks { public, private, sets });
        }
        Ok(self.tasks.as_ref().expect("just set"))
    }

    /// Names of the eval sets: the k private tasks, then `public`.
    pub fn eval_set_names(&mut self) -> Result<Vec<String>> {
        Ok(self.tasks()?.sets.iter().map(|s| s.name.clone()).collect())
    }

    fn load_model(&self, g: GenId, entity: Option<usize>) -> Result<(CausalLm, TextTokenizer, u32)> {
        let model = match (g, entity) {
            (GenId::Gen(t), Some(e)) => CausalLm::load_dir(&self.dir.model_dir(GenId::Gen(t), e), &self.device, self.dtype)?,
            _ => CausalLm::load(&self.cfg.base_model, &self.device, self.dtype, &HubOptions::from_env())?,
        };
        let tok = TextTokenizer::from_dir(&model.source_dir)?;
        let pad = model.pad_id(&tok);
        Ok((model, tok, pad))
    }

    fn completion_only(&self) -> bool {
        self.cfg.loss_mask == LossMask::CompletionOnly
    }

    /// Runs every unfinished stage in plan order. Returns `Err(LoopError::Stopped)` when
    /// `stop_after` names a stage and it has just run.
    pub fn run(&mut self, stop_after: StopAfter, report: &mut dyn FnMut(&Event)) -> Result<Vec<MetricLine>> {
        let mut gen_start = Instant::now();
        let mut gen_tokens = 0u64;
        for id in plan(&self.cfg) {
            if self.dir.is_done(&id) {
                report(&Event::Skipped(id));
            } else if let Some(m) = self.run_stage_if_needed(&id, report)? {
                gen_tokens += m.tokens;
            }
            if id.stage == Stage::Similarity {
                finish::finish_stage(&self.dir, &self.cfg)?;
                report(&Event::GenerationDone { gen: id.gen, wall_s: secs(gen_start), tokens: gen_tokens });
                gen_start = Instant::now();
                gen_tokens = 0;
            }
            if stop_after == Some(id) {
                finish::record(&self.dir, &self.cfg)?;
                return Err(LoopError::Stopped(id.to_string()));
            }
        }
        finish::record(&self.dir, &self.cfg)
    }

    /// Runs one stage (again, if it was done), after checking its dependencies are done.
    pub fn run_stage(&mut self, id: &StageId, report: &mut dyn FnMut(&Event)) -> Result<StageMarker> {
        Ok(self.run_locked(id, true, report)?.expect("redo always runs"))
    }

    /// Runs one stage unless it is done; `None` when it was (possibly finished by another process
    /// while this one waited to look). This is what workers and Slurm tasks run.
    pub fn run_stage_if_needed(&mut self, id: &StageId, report: &mut dyn FnMut(&Event)) -> Result<Option<StageMarker>> {
        self.run_locked(id, false, report)
    }

    fn run_locked(&mut self, id: &StageId, redo: bool, report: &mut dyn FnMut(&Event)) -> Result<Option<StageMarker>> {
        if !plan(&self.cfg).contains(id) {
            return Err(LoopError::Config(format!("{id} is not a stage of this run (k = {}, generations = {})", self.cfg.k, self.cfg.generations)));
        }
        for dep in dependencies(&self.cfg, id) {
            if !self.dir.is_done(&dep) {
                return Err(LoopError::MissingStage { stage: id.to_string(), missing: dep.to_string() });
            }
        }
        // No two processes run one stage: the lock is taken before anything is written, and the
        // marker is looked at again under it (another process may have finished the stage since).
        let lock = self.dir.lock_stage(id)?;
        if let Some(h) = &lock.took_over {
            report(&Event::Warning(format!("{id}: taking over the lock of a process that stopped ({h})")));
        }
        if !redo && self.dir.is_done(id) {
            report(&Event::Skipped(*id));
            return Ok(None);
        }
        pause_for_tests(id);
        report(&Event::Started(*id));
        let start = Instant::now();
        // A re-run starts from a clean marker-less state: remove the old marker first.
        let marker = self.dir.marker_path(id);
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(|e| LoopError::io(&marker, e))?;
        }
        std::fs::create_dir_all(self.dir.stage_dir(id)).map_err(|e| LoopError::io(self.dir.stage_dir(id), e))?;
        let (seed, files, tokens, note) = match (id.stage, id.gen, id.entity) {
            (Stage::GenerateShard(i), GenId::Gen(t), Some(e)) => self.generate_shard(t, e, i)?,
            (Stage::Generate, GenId::Gen(t), Some(e)) if self.cfg.generation.shards > 1 => self.merge_shards(t, e)?,
            (Stage::Generate, GenId::Gen(t), Some(e)) => self.generate(t, e)?,
            (Stage::Train, GenId::Gen(t), Some(e)) => self.train(t, e, report)?,
            (Stage::Eval, g, e) => self.eval(g, e)?,
            (Stage::Similarity, g, None) => self.similarity(g)?,
            _ => return Err(LoopError::Config(format!("{id} is not a stage"))),
        };
        let wall = secs(start);
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let m = self.dir.mark_done(id, seed, &refs, wall, tokens)?;
        drop(lock);
        report(&Event::Done { id: *id, wall_s: wall, tokens, note });
        Ok(Some(m))
    }

    /// The synthetic-data generation config of (generation, entity): the configured one with a
    /// derived seed.
    fn gen_config(&self, seed: u64, max_new: Option<usize>) -> GenerationConfig {
        let mut g = self.cfg.generation.engine.clone();
        g.seed = seed;
        if let Some(m) = max_new.filter(|&m| m > 0) {
            g.max_new_tokens = m;
        }
        g
    }

    /// The prompts generate(t, e) completes, in index order: the whole list, or under lazy generation
    /// the samples some trainee reads; and the size of the whole list.
    fn prompts_to_generate(&mut self, t: u64, e: usize) -> Result<(Vec<GenerationPrompt>, usize)> {
        let (cfg, k) = (self.cfg.clone(), self.cfg.k);
        let tasks = self.tasks()?;
        let prompts = generation_prompts(&cfg.prompts, &cfg.mixture(), cfg.seed, t - 1, e, k, &tasks.private[e].train, &tasks.public.train)?;
        let set_size = prompts.len();
        if !cfg.lazy_generation() {
            return Ok((prompts, set_size));
        }
        let privates: Vec<&[Example]> = tasks.private.iter().map(|p| p.train.as_slice()).collect();
        let needed = lazy::needed_rows(&cfg, t, e, &privates, &tasks.public.train)?;
        Ok((prompts.into_iter().filter(|p| needed.contains(&p.index)).collect(), set_size))
    }

    /// Completes `prompts` with entity e's generation-(t-1) model: the `synthetic.jsonl` lines and the
    /// new-token count. A sample's RNG stream is its index in the whole prompt list, so its text does
    /// not depend on which other prompts run beside it (lazy subsets, shards).
    fn complete(&self, t: u64, e: usize, prompts: &[GenerationPrompt]) -> Result<(String, u64)> {
        let seed = derive(self.cfg.seed, "generate", t as i64, e as u64);
        let mut text = String::new();
        let mut tokens = 0u64;
        if prompts.is_empty() {
            return Ok((text, tokens));
        }
        let (model, tok, _) = self.load_model(GenId::Gen(t - 1), Some(e))?;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(&p.prompt)).collect::<std::result::Result<_, _>>()?;
        let streams: Vec<u64> = prompts.iter().map(|p| p.index).collect();
        let out = Generator::new(&model, &tok, self.gen_config(seed, None)).run_indexed(&ids, &streams, |_, _| {})?;
        for (p, c) in prompts.iter().zip(out) {
            tokens += c.token_ids.len() as u64;
            let line = SyntheticLine {
                entity: e,
                generation: t - 1,
                index: p.index,
                text: format!("{}{}", p.prompt, c.text),
                prompt: p.prompt.clone(),
                completion: c.text,
                finish_reason: serde_json::to_value(c.finish_reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            };
            text.push_str(&serde_json::to_string(&line).map_err(|er| LoopError::Json { path: "synthetic.jsonl".into(), message: er.to_string() })?);
            text.push('\n');
        }
        Ok((text, tokens))
    }

    fn generate(&mut self, t: u64, e: usize) -> Result<(u64, Vec<String>, u64, String)> {
        let (prompts, set_size) = self.prompts_to_generate(t, e)?;
        let (text, tokens) = self.complete(t, e, &prompts)?;
        self.write_synthetic(t, e, &text, prompts.len(), set_size, tokens)
    }

    /// Shard i of `generation.shards`: the i-th contiguous slice of the prompts to generate.
    fn generate_shard(&mut self, t: u64, e: usize, i: u32) -> Result<(u64, Vec<String>, u64, String)> {
        let (prompts, _) = self.prompts_to_generate(t, e)?;
        let range = shard_range(prompts.len(), self.cfg.generation.shards, i);
        let (text, tokens) = self.complete(t, e, &prompts[range.clone()])?;
        let dir = self.dir.stage_dir(&StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::GenerateShard(i) });
        let file = format!("synthetic.shard-{i}.jsonl");
        write_atomic(&dir.join(&file), text.as_bytes())?;
        let seed = derive(self.cfg.seed, "generate", t as i64, e as u64);
        Ok((seed, vec![file], tokens, format!("samples {}..{} of {}", range.start, range.end, prompts.len())))
    }

    /// The generate stage of a sharded config: the shards' lines in shard order, which is index order,
    /// so `synthetic.jsonl` is what one worker writes.
    fn merge_shards(&mut self, t: u64, e: usize) -> Result<(u64, Vec<String>, u64, String)> {
        let (prompts, set_size) = self.prompts_to_generate(t, e)?;
        let dir = self.dir.stage_dir(&StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::Generate });
        let mut text = String::new();
        for i in 0..self.cfg.generation.shards {
            let p = dir.join(format!("synthetic.shard-{i}.jsonl"));
            text.push_str(&std::fs::read_to_string(&p).map_err(|er| LoopError::io(&p, er))?);
        }
        let lines = text.lines().count();
        if lines != prompts.len() {
            return Err(LoopError::Json { path: dir, message: format!("the shards hold {lines} samples, {} expected; rerun the generate-shard stages", prompts.len()) });
        }
        let tokens = self.shard_tokens(t, e)?;
        self.write_synthetic(t, e, &text, prompts.len(), set_size, tokens)
    }

    /// New tokens of generate(t, e)'s shards, from their markers.
    fn shard_tokens(&self, t: u64, e: usize) -> Result<u64> {
        (0..self.cfg.generation.shards)
            .map(|i| Ok(self.dir.read_marker(&StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::GenerateShard(i) })?.map_or(0, |m| m.tokens)))
            .sum()
    }

    fn write_synthetic(&self, t: u64, e: usize, text: &str, generated: usize, set_size: usize, tokens: u64) -> Result<(u64, Vec<String>, u64, String)> {
        let seed = derive(self.cfg.seed, "generate", t as i64, e as u64);
        let dir = self.dir.stage_dir(&StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::Generate });
        write_atomic(&dir.join("synthetic.jsonl"), text.as_bytes())?;
        let mode = if self.cfg.lazy_generation() { "lazy" } else { "full" };
        let summary = serde_json::json!({"mode": mode, "set_size": set_size, "generated": generated, "new_tokens": tokens});
        write_atomic(&dir.join(GENERATED_FILE), format!("{summary:#}\n").as_bytes())?;
        Ok((seed, vec!["synthetic.jsonl".into(), GENERATED_FILE.into()], tokens, format!("{generated} of {set_size} samples ({mode})")))
    }

    /// The pool train(t, ·) draws from: every set at its full size (from the config), texts filled in
    /// from `synthetic.jsonl` where generated, empty stand-ins elsewhere (lazy sets). The draw reads
    /// only sizes, so it is the same whether a set was generated whole or lazily.
    fn synthetic_pool(&self, t: u64, e: usize) -> Result<SyntheticPoolData> {
        let sets = lazy::pool_sets(&self.cfg, t);
        let mut samples = placeholder_pool(&sets);
        let mut generated = HashSet::new();
        let mut offset = 0;
        for (&(j, g, size), read) in sets.iter().zip(lazy::read_by(&self.cfg, t, e)) {
            if !read {
                offset += size;
                continue;
            }
            let p = self.dir.gen_dir(GenId::Gen(g + 1)).join(format!("entity-{j}")).join("synthetic.jsonl");
            let text = std::fs::read_to_string(&p).map_err(|er| LoopError::io(&p, er))?;
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let s: SyntheticLine = serde_json::from_str(l).map_err(|er| LoopError::Json { path: p.clone(), message: er.to_string() })?;
                if s.entity != j || s.generation != g || s.index as usize >= size {
                    return Err(LoopError::Json {
                        path: p.clone(),
                        message: format!(
                            "sample (entity {}, generation {}, index {}) does not belong to entity {j}'s generation-{g} set of {size} samples",
                            s.entity, s.generation, s.index
                        ),
                    });
                }
                samples[offset + s.index as usize].text = s.text;
                generated.insert((j, g, s.index));
            }
            offset += size;
        }
        Ok(SyntheticPoolData { samples, generated })
    }

    fn train(&mut self, t: u64, e: usize, report: &mut dyn FnMut(&Event)) -> Result<(u64, Vec<String>, u64, String)> {
        let seed = derive(self.cfg.seed, "train", t as i64, e as u64);
        let cfg = self.cfg.clone();
        let pool = self.synthetic_pool(t, e)?;
        let completion_only = self.completion_only();
        let tasks = self.tasks()?;
        let mix = sample_mixture(&cfg.mixture(), cfg.seed, t, e, cfg.k, &tasks.private[e].train, &tasks.public.train, &pool.samples)?;
        for w in &mix.warnings {
            report(&Event::Warning(format!("generation {t} entity {e}: {w}")));
        }
        // Lazy sets hold only the samples some trainee reads; reading one that was not generated would
        // train on an empty stand-in, so it is an error (a bug in the layout), never a silent default.
        let read = lazy::read_positions(&cfg, t, e);
        for (pos, d) in mix.samples.iter().enumerate().filter(|&(p, _)| read[p]) {
            let o = d.origin;
            if o.source == SourceKind::Synthetic && !pool.generated.contains(&(o.entity.unwrap_or(usize::MAX), o.generation.unwrap_or(u64::MAX), o.row)) {
                return Err(LoopError::Config(format!(
                    "generation {t} entity {e}: training position {pos} reads sample {} of entity {:?}'s generation-{:?} set, which was not generated \
                     (the lazy layout and the train stage disagree; rerun with generation.pool = \"full\")",
                    o.row, o.entity, o.generation
                )));
            }
        }
        let dir = self.dir.stage_dir(&StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::Train });
        let mut manifest = Vec::new();
        write_manifest_jsonl_read(&mut manifest, &mix, Some(&read)).map_err(|er| LoopError::io(dir.join("manifest.jsonl"), er))?;
        write_atomic(&dir.join("manifest.jsonl"), &manifest)?;
        let alloc = serde_json::to_string_pretty(&serde_json::json!({"allocation": mix.allocation, "warnings": mix.warnings}))
            .map_err(|er| LoopError::Json { path: dir.join("mixture.json"), message: er.to_string() })?;
        write_atomic(&dir.join("mixture.json"), alloc.as_bytes())?;

        let examples: Vec<LmExample> = mix
            .samples
            .iter()
            .map(|d| {
                let cut = d.prompt_len_bytes.min(d.text.len());
                LmExample { prompt: d.text[..cut].to_string(), completion: d.text[cut..].to_string() }
            })
            .collect();
        let start_from = if t == 0 || !cfg.warm_start { (GenId::Base, None) } else { (GenId::Gen(t - 1), Some(e)) };
        let (model, tok, pad) = self.load_model(start_from.0, start_from.1)?;
        // transformers' Trainer would train with these on; crossfeed does not, so say so every time.
        for s in model.unapplied_training_settings() {
            report(&Event::Warning(format!("generation {t} entity {e}: config.json {s} is not applied (crossfeed trains without layer drop)")));
        }
        let data = tokenize(&tok, &examples, cfg.max_len, completion_only)?;
        let mut tcfg = cfg.train.clone();
        tcfg.seed = seed;
        let mut ft = FineTune::new(&model, data, tcfg, pad, cfg.max_len)?;
        let mut log = String::new();
        let mut tokens = 0u64;
        let mut last_loss = f64::NAN;
        while !ft.done() {
            let s = ft.step()?;
            tokens += s.tokens as u64;
            last_loss = s.loss;
            log.push_str(
                &serde_json::json!({"step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "clipped": s.clipped, "tokens": s.tokens})
                    .to_string(),
            );
            log.push('\n');
        }
        write_atomic(&dir.join("train_log.jsonl"), log.as_bytes())?;
        // Save beside the final place and rename, so `model/` is always a whole checkpoint.
        let model_dir = dir.join("model");
        let partial: PathBuf = dir.join("model.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|er| LoopError::io(&partial, er))?;
        }
        ft.save(&partial)?;
        crossfeed_fsio::replace_dir(&partial, &model_dir)?;
        Ok((
            seed,
            vec!["manifest.jsonl".into(), "mixture.json".into(), "train_log.jsonl".into(), "model/model.safetensors".into()],
            tokens,
            format!("{} samples, last loss {last_loss:.4}", mix.samples.len()),
        ))
    }

    fn eval(&mut self, g: GenId, e: Option<usize>) -> Result<(u64, Vec<String>, u64, String)> {
        let seed = derive(self.cfg.seed, "eval", g.as_i64(), e.map(|x| x as u64 + 1).unwrap_or(0));
        let cfg = self.cfg.clone();
        let completion_only = self.completion_only();
        let (model, tok, pad) = self.load_model(g, e)?;
        self.tasks()?;
        let tasks = self.tasks.as_ref().expect("loaded");
        let mut lines = Vec::new();
        let mut outputs = String::new();
        let mut acc_log = String::new();
        let mut tokens = 0u64;
        for (si, set) in tasks.sets.iter().enumerate() {
            let (ce, n) = token_ce(&model, &tok, pad, &set.examples, cfg.max_len, completion_only, cfg.eval.batch_size)?;
            tokens += n;
            lines.push(MetricLine {
                generation: g.as_i64(),
                entity: e,
                peer: None,
                eval_set: set.name.clone(),
                metric: "ce".into(),
                value: if ce.is_finite() { ce } else { 0.0 },
                tokens: Some(n),
                examples: None,
            });
            // A task whose eval rows give no document (all filtered out) has no accuracy, not a NaN.
            if let Some((docs, shots)) = set.accuracy.as_ref().filter(|(d, _)| !d.is_empty()) {
                let opts = AccuracyOptions {
                    num_fewshot: *shots,
                    batch_size: cfg.eval.batch_size,
                    max_gen_toks: cfg.eval.accuracy_max_new_tokens,
                    fewshot_seed: accuracy::FEWSHOT_SEED,
                };
                let res = accuracy::evaluate(&model, &tok, &set.name, "", docs, &opts)?;
                for m in &res.metrics {
                    lines.push(MetricLine {
                        generation: g.as_i64(),
                        entity: e,
                        peer: None,
                        eval_set: set.name.clone(),
                        metric: m.name.clone(),
                        value: m.value,
                        tokens: None,
                        examples: Some(res.examples as u64),
                    });
                }
                for (i, d) in res.per_doc.iter().enumerate() {
                    acc_log.push_str(&accuracy_docs::record(&set.name, i, d).to_string());
                    acc_log.push('\n');
                }
            }
            let prompts = eval_prompts(&set.examples, cfg.eval.prompts_per_set, cfg.prompts.prefix);
            if prompts.is_empty() {
                continue;
            }
            // The same seed for every entity and generation: completions differ only by the model.
            let gseed = derive(cfg.seed, "eval-generate", 0, si as u64);
            let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p)).collect::<std::result::Result<_, _>>()?;
            let max_new = (cfg.eval.max_new_tokens > 0).then_some(cfg.eval.max_new_tokens);
            let out = Generator::new(&model, &tok, self.gen_config(gseed, max_new)).run(&ids, |_, _| {})?;
            for (i, (p, c)) in prompts.iter().zip(out).enumerate() {
                tokens += c.token_ids.len() as u64;
                let l = OutputLine { eval_set: set.name.clone(), index: i, prompt: p.clone(), completion: c.text };
                outputs.push_str(&serde_json::to_string(&l).map_err(|er| LoopError::Json { path: "outputs.jsonl".into(), message: er.to_string() })?);
                outputs.push('\n');
            }
        }
        let dir = self.dir.stage_dir(&StageId { gen: g, entity: e, stage: Stage::Eval });
        write_atomic(&dir.join(EVAL_FILE), to_jsonl(&lines).as_bytes())?;
        write_atomic(&dir.join("outputs.jsonl"), outputs.as_bytes())?;
        write_atomic(&dir.join(ACCURACY_FILE), acc_log.as_bytes())?;
        let note = lines.iter().filter(|l| l.metric == "ce").map(|l| format!("{} {:.3}", l.eval_set, l.value)).collect::<Vec<_>>().join(", ");
        Ok((seed, vec![EVAL_FILE.into(), "outputs.jsonl".into(), ACCURACY_FILE.into()], tokens, format!("CE {note}")))
    }

    fn read_outputs(&self, g: GenId, e: Option<usize>) -> Result<Vec<OutputLine>> {
        let p = self.dir.stage_dir(&StageId { gen: g, entity: e, stage: Stage::Eval }).join("outputs.jsonl");
        let text = std::fs::read_to_string(&p).map_err(|er| LoopError::io(&p, er))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|er| LoopError::Json { path: p.clone(), message: er.to_string() }))
            .collect()
    }

    fn similarity(&mut self, g: GenId) -> Result<(u64, Vec<String>, u64, String)> {
        if !self.cfg.eval.embed_model.is_empty() && self.embedder.is_none() {
            return Err(LoopError::NoEmbedder(self.cfg.eval.embed_model.clone()));
        }
        // The cosine and the Vendi score read the same completions' embeddings: embed them once.
        let memo = self.embedder.map(MemoEmbedder::new);
        let embedder = memo.as_ref().map(|m| m as &dyn TextEmbedder);
        let entities: Vec<Option<usize>> = match g {
            GenId::Base => vec![None],
            GenId::Gen(_) => (0..self.cfg.k).map(Some).collect(),
        };
        let outputs: Vec<Vec<OutputLine>> = entities.iter().map(|&e| self.read_outputs(g, e)).collect::<Result<_>>()?;
        let names = self.eval_set_names()?;
        let mut lines = Vec::new();
        let line = |entity, set: &str, metric: &str, value| MetricLine {
            generation: g.as_i64(),
            entity,
            peer: None,
            eval_set: set.to_string(),
            metric: metric.to_string(),
            value,
            tokens: None,
            examples: None,
        };
        for set in &names {
            let per: Vec<Vec<String>> =
                outputs.iter().map(|o| o.iter().filter(|l| &l.eval_set == set).map(|l| l.completion.clone()).collect()).collect();
            if per.iter().all(|v| v.is_empty()) {
                continue;
            }
            for (e, texts) in entities.iter().zip(&per) {
                lines.push(line(*e, set, "distinct_1", distinct_n(texts, 1)));
                lines.push(line(*e, set, "distinct_2", distinct_n(texts, 2)));
            }
            if entities.len() > 1 {
                let pooled: Vec<String> = per.concat();
                lines.push(line(None, set, "distinct_1", distinct_n(&pooled, 1)));
                lines.push(line(None, set, "distinct_2", distinct_n(&pooled, 2)));
                if let Some(emb) = embedder {
                    let vecs: Vec<Vec<Vec<f32>>> = per.iter().map(|t| emb.embed(t)).collect::<std::result::Result<_, _>>().map_err(LoopError::Embed)?;
                    if let Some(c) = mean_pairwise_cosine(&vecs) {
                        lines.push(line(None, set, "cosine", c));
                    }
                }
            }
        }
        let (collapse, scored) = self.collapse(g, &entities, &outputs, &names, embedder)?;
        lines.extend(collapse);
        let dir = self.dir.stage_dir(&StageId { gen: g, entity: None, stage: Stage::Similarity });
        write_atomic(&dir.join(SIMILARITY_FILE), to_jsonl(&lines).as_bytes())?;
        Ok((0, vec![SIMILARITY_FILE.into()], scored, format!("{} lines", lines.len())))
    }

    /// The similarity stage's collapse lines (`similarity::collapse_lines`): its inputs read from the
    /// eval stages' files, the real continuations of the eval prompts at generation -1, and the base
    /// model loaded once when `eval.perplexity` asks for it; with the tokens it scored.
    fn collapse(
        &mut self,
        g: GenId,
        entities: &[Option<usize>],
        outputs: &[Vec<OutputLine>],
        names: &[String],
        embedder: Option<&dyn TextEmbedder>,
    ) -> Result<(Vec<MetricLine>, u64)> {
        let pairs = |o: &[OutputLine], set: &str| o.iter().filter(|l| l.eval_set == set).map(|l| (l.prompt.clone(), l.completion.clone())).collect::<Vec<_>>();
        let sets = names.iter().map(|s| (s.clone(), outputs.iter().map(|o| pairs(o, s)).collect())).collect();
        let real = if g == GenId::Base {
            let (count, prefix) = (self.cfg.eval.prompts_per_set, self.cfg.prompts.prefix);
            self.tasks()?
                .sets
                .iter()
                .map(|set| {
                    let prompts = eval_prompts(&set.examples, count, prefix);
                    // A passage's prompt is its own first words: the real continuation is the rest.
                    let real = set.examples.iter().zip(prompts).map(|(e, p)| {
                        let cont = if e.prompt.is_empty() { e.completion.strip_prefix(p.as_str()).unwrap_or(&e.completion) } else { &e.completion };
                        (p.clone(), cont.to_string())
                    });
                    (set.name.clone(), real.collect())
                })
                .collect()
        } else {
            Vec::new()
        };
        let decisions = entities
            .iter()
            .map(|&e| read_decisions(&self.dir.stage_dir(&StageId { gen: g, entity: e, stage: Stage::Eval }).join(ACCURACY_FILE)))
            .collect::<Result<_>>()?;
        let input = CollapseInput { generation: g.as_i64(), entities, sets, real, decisions };
        let cfg = self.cfg.clone();
        if !cfg.eval.perplexity {
            return Ok((collapse_lines(&input, &cfg.eval, embedder, None)?, 0));
        }
        let (model, tok, pad) = self.load_model(GenId::Base, None)?;
        let mut scored = 0u64;
        let mut score = |pairs: &[(String, String)]| {
            let examples: Vec<Example> = pairs.iter().map(|(p, c)| Example::new(p.clone(), c.clone())).collect();
            let (nll, tokens) = token_ce(&model, &tok, pad, &examples, cfg.max_len, true, cfg.eval.batch_size)?;
            scored += tokens;
            Ok((nll, tokens))
        };
        let lines = collapse_lines(&input, &cfg.eval, embedder, Some(&mut score))?;
        Ok((lines, scored))
    }
}

/// Test hook: `CROSSFEED_TEST_PAUSE_STAGE="generation 1 entity 0 train[@SECS]"` makes the process that
/// takes that stage's lock sit on it (default 60 s) before working, so a test can catch it mid-stage.
fn pause_for_tests(id: &StageId) {
    let Ok(v) = std::env::var("CROSSFEED_TEST_PAUSE_STAGE") else { return };
    let (stage, secs) = v.split_once('@').map_or((v.as_str(), 60), |(s, n)| (s, n.parse().unwrap_or(60)));
    if stage == id.to_string() {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}
