//! The stage graph of a run: its nouns (`GenId`, `Stage`, `StageId`), the plan (every stage in the
//! order a serial driver runs them), the dependencies between stages and the shard ranges. This module
//! knows nothing of how a stage runs: the executor (`stages.rs`), the parallel driver, Slurm, the dry run,
//! metrics, TensorBoard and pruning all read the graph from here, so adding a stage starts and ends here.

use std::fmt;

use crate::config::ExperimentConfig;
use crate::lazy;

/// A generation: the base model, or generation t of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GenId {
    Base,
    Gen(u64),
}

impl GenId {
    pub fn as_i64(self) -> i64 {
        match self {
            GenId::Base => -1,
            GenId::Gen(t) => t as i64,
        }
    }
    pub fn dir_name(self) -> String {
        match self {
            GenId::Base => "gen-base".into(),
            GenId::Gen(t) => format!("gen-{t:03}"),
        }
    }
    /// `base`, `-1` or a generation number.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "base" | "-1" => Some(GenId::Base),
            _ => s.parse().ok().map(GenId::Gen),
        }
    }
}

impl fmt::Display for GenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenId::Base => write!(f, "base"),
            GenId::Gen(t) => write!(f, "{t}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// One shard of a generate stage (`generation.shards` > 1): a contiguous slice of the prompts to
    /// complete, run by any worker; `Generate` then merges the shards in order.
    GenerateShard(u32),
    Generate,
    Train,
    Eval,
    Similarity,
}

impl Stage {
    /// The name in markers, logs, `--stage` and Slurm: `generate-shard-N`, `generate`, `train`, …
    pub fn name(self) -> String {
        match self {
            Stage::GenerateShard(i) => format!("generate-shard-{i}"),
            other => other.group().into(),
        }
    }
    /// The name without a shard number: what a Slurm array groups by.
    pub fn group(self) -> &'static str {
        match self {
            Stage::GenerateShard(_) => "generate-shard",
            Stage::Generate => "generate",
            Stage::Train => "train",
            Stage::Eval => "eval",
            Stage::Similarity => "similarity",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(i) = s.strip_prefix("generate-shard-") {
            return i.parse().ok().map(Stage::GenerateShard);
        }
        [Stage::Generate, Stage::Train, Stage::Eval, Stage::Similarity].into_iter().find(|x| x.group() == s)
    }
    /// Position within a generation: the order the serial driver runs a generation's stages in and the
    /// order of Slurm's arrays (every shard of a generate stage before the merge).
    pub fn rank(self) -> u8 {
        match self {
            Stage::GenerateShard(_) => 0,
            Stage::Generate => 1,
            Stage::Train => 2,
            Stage::Eval => 3,
            Stage::Similarity => 4,
        }
    }
}

/// One unit of work; `entity` is `None` for whole-generation stages and the base model's eval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StageId {
    pub gen: GenId,
    pub entity: Option<usize>,
    pub stage: Stage,
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entity {
            Some(e) => write!(f, "generation {} entity {} {}", self.gen, e, self.stage.name()),
            None => write!(f, "generation {} {}", self.gen, self.stage.name()),
        }
    }
}

/// Every stage of a config, in the order the driver runs them.
pub fn plan(cfg: &ExperimentConfig) -> Vec<StageId> {
    let mut out = Vec::new();
    let id = |gen, entity, stage| StageId { gen, entity, stage };
    if cfg.eval.base {
        out.push(id(GenId::Base, None, Stage::Eval));
        out.push(id(GenId::Base, None, Stage::Similarity));
    }
    for t in 0..cfg.generations {
        let g = GenId::Gen(t);
        if t >= 1 {
            let shards = cfg.generation.shards;
            if shards > 1 {
                out.extend((0..cfg.k).flat_map(|e| (0..shards).map(move |i| id(g, Some(e), Stage::GenerateShard(i)))));
            }
            out.extend((0..cfg.k).map(|e| id(g, Some(e), Stage::Generate)));
        }
        out.extend((0..cfg.k).map(|e| id(g, Some(e), Stage::Train)));
        out.extend((0..cfg.k).map(|e| id(g, Some(e), Stage::Eval)));
        out.push(id(g, None, Stage::Similarity));
    }
    out
}

/// The stages that must be done before `id` can run.
pub fn dependencies(cfg: &ExperimentConfig, id: &StageId) -> Vec<StageId> {
    let mk = |gen, entity, stage| StageId { gen, entity, stage };
    let all = |g: GenId, s: Stage| (0..cfg.k).map(move |e| mk(g, Some(e), s));
    match (id.gen, id.stage, id.entity) {
        (GenId::Base, Stage::Similarity, _) => vec![mk(GenId::Base, None, Stage::Eval)],
        (GenId::Base, _, _) => vec![],
        (GenId::Gen(t), Stage::GenerateShard(_), Some(e)) if t >= 1 => vec![mk(GenId::Gen(t - 1), Some(e), Stage::Train)],
        (GenId::Gen(t), Stage::Generate, Some(e)) if t >= 1 && cfg.generation.shards > 1 => {
            (0..cfg.generation.shards).map(|i| mk(GenId::Gen(t), Some(e), Stage::GenerateShard(i))).collect()
        }
        (GenId::Gen(t), Stage::Generate, Some(e)) if t >= 1 => vec![mk(GenId::Gen(t - 1), Some(e), Stage::Train)],
        (GenId::Gen(t), Stage::Train, Some(e)) => {
            let mut v = Vec::new();
            if t >= 1 {
                // The generate stage (generation g + 1) of every set of the pool this trainee's topology
                // row reads.
                let sets = lazy::pool_sets(cfg, t).into_iter().zip(lazy::read_by(cfg, t, e));
                v.extend(sets.filter(|(_, r)| *r).map(|((j, g, _), _)| mk(GenId::Gen(g + 1), Some(j), Stage::Generate)));
                if cfg.warm_start {
                    v.push(mk(GenId::Gen(t - 1), Some(e), Stage::Train));
                }
            }
            v
        }
        (g, Stage::Eval, Some(e)) => vec![mk(g, Some(e), Stage::Train)],
        (g, Stage::Similarity, None) => all(g, Stage::Eval).collect(),
        _ => vec![],
    }
}


/// The stages that read the output of `id`: every stage of the plan depending on it.
pub fn readers(cfg: &ExperimentConfig, id: &StageId) -> Vec<StageId> {
    plan(cfg).into_iter().filter(|s| dependencies(cfg, s).contains(id)).collect()
}

/// The (generation, stage group) steps of several runs' plans, in run order: what one Slurm array per
/// step submits. A step exists when some run has a stage in it.
pub fn steps<'a>(cfgs: impl IntoIterator<Item = &'a ExperimentConfig>) -> Vec<(GenId, &'static str)> {
    let mut keys: Vec<(GenId, u8, &'static str)> =
        cfgs.into_iter().flat_map(plan).map(|id| (id.gen, id.stage.rank(), id.stage.group())).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().map(|(g, _, s)| (g, s)).collect()
}

/// The prompts of shard `i` of `shards` over `n`: contiguous, sizes differing by at most one.
pub fn shard_range(n: usize, shards: u32, i: u32) -> std::ops::Range<usize> {
    let (s, i) = (shards.max(1) as usize, i as usize);
    (n * i / s)..(n * (i + 1) / s)
}
