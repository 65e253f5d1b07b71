//! A procedurally generated, deterministic toy world: the stand-in for the real data so a demo runs
//! on a laptop CPU with no downloads.
//!
//! - public text ([`public`]): short passages of templated English (the BookCorpus stand-in);
//! - three private tasks in the shape of the real ones, each with disjoint train and eval splits:
//!   [`arithmetic`] (multi-step word problems, worked answer ending `#### N`, like GSM8K),
//!   [`facts`] (questions about a fixed knowledge table of invented creatures with a supporting
//!   sentence, like SciQ), [`choice`] (lettered multiple choice, like ARC).
//!
//! Vocabulary is small and regular (a few hundred words), and each task has its own words (people
//! and objects with numbers; creatures with colours, foods and homes; word categories), so a model
//! trained on one task has high loss on the others until their text reaches it.
//! Everything is a function of the seed: the knowledge table, the splits and their order.

pub mod arithmetic;
pub mod choice;
pub mod facts;
pub mod public;

use crate::example::Example;
use crate::rng::Stream;
use crate::task::TaskKind;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Split sizes of the toy world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToySizes {
    /// Train examples per private task. Default 2,000.
    #[serde(default = "d_train")]
    pub train: usize,
    /// Eval examples per private task. Default 200.
    #[serde(default = "d_eval")]
    pub eval: usize,
    /// Public train passages. Default 2,000.
    #[serde(default = "d_train")]
    pub public_train: usize,
    /// Public eval passages. Default 200.
    #[serde(default = "d_eval")]
    pub public_eval: usize,
}

fn d_train() -> usize {
    2000
}
fn d_eval() -> usize {
    200
}

impl Default for ToySizes {
    fn default() -> Self {
        ToySizes {
            train: d_train(),
            eval: d_eval(),
            public_train: d_train(),
            public_eval: d_eval(),
        }
    }
}

/// Train and eval examples of one toy task (disjoint: no eval prompt occurs in train).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToyTask {
    pub kind: TaskKind,
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
}

/// The whole toy world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToyWorld {
    pub seed: u64,
    /// The knowledge table behind the facts task.
    pub table: Vec<facts::Creature>,
    pub public: ToyTask,
    pub arithmetic: ToyTask,
    pub facts: ToyTask,
    pub choice: ToyTask,
}

impl ToyWorld {
    /// The task of a `toy_*` kind.
    pub fn task(&self, kind: TaskKind) -> Option<&ToyTask> {
        match kind {
            TaskKind::ToyPublic => Some(&self.public),
            TaskKind::ToyArithmetic => Some(&self.arithmetic),
            TaskKind::ToyFacts => Some(&self.facts),
            TaskKind::ToyChoice => Some(&self.choice),
            _ => None,
        }
    }

    /// The three private tasks, in the order arithmetic, facts, choice (entity k gets task k).
    pub fn private_tasks(&self) -> [&ToyTask; 3] {
        [&self.arithmetic, &self.facts, &self.choice]
    }

    /// Every text of the world (train and eval of all tasks, `prompt + completion`) — for fitting
    /// a tokenizer. For pretraining, use [`ToyWorld::train_text`], which leaves eval out.
    pub fn all_text(&self) -> Vec<String> {
        [&self.public, &self.arithmetic, &self.facts, &self.choice]
            .iter()
            .flat_map(|t| t.train.iter().chain(t.eval.iter()).map(Example::text))
            .collect()
    }

    /// Training texts only (all four tasks).
    pub fn train_text(&self) -> Vec<String> {
        [&self.public, &self.arithmetic, &self.facts, &self.choice]
            .iter()
            .flat_map(|t| t.train.iter().map(Example::text))
            .collect()
    }
}

/// Draw unique examples (by prompt, or by full text for passages) until `train + eval` exist or the
/// attempt budget (50 per example) runs out; the first `train` form the train split.
pub(crate) fn unique_split(
    kind: TaskKind,
    train: usize,
    eval: usize,
    rng: &mut Stream,
    mut gen: impl FnMut(&mut Stream) -> Example,
) -> ToyTask {
    let want = train + eval;
    let mut seen = HashSet::with_capacity(want);
    let mut out = Vec::with_capacity(want);
    let mut attempts = 0usize;
    while out.len() < want && attempts < 50 * want.max(1) {
        attempts += 1;
        let ex = gen(rng);
        let key = if ex.prompt.is_empty() { ex.completion.clone() } else { ex.prompt.clone() };
        if seen.insert(key) {
            out.push(ex);
        }
    }
    let eval_part = out.split_off(train.min(out.len()));
    ToyTask {
        kind,
        train: out,
        eval: eval_part,
    }
}

/// Pick one item.
pub(crate) fn pick<'a, T>(rng: &mut Stream, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

/// Generate the toy world for `seed`.
pub fn toy_world(seed: u64, sizes: &ToySizes) -> ToyWorld {
    let table = facts::knowledge_table(seed);
    let r = |tag: &str| Stream::new(seed, tag, 0, 0);
    ToyWorld {
        seed,
        public: unique_split(TaskKind::ToyPublic, sizes.public_train, sizes.public_eval, &mut r("toy-public"), public::passage),
        arithmetic: unique_split(TaskKind::ToyArithmetic, sizes.train, sizes.eval, &mut r("toy-arithmetic"), arithmetic::problem),
        facts: unique_split(TaskKind::ToyFacts, sizes.train, sizes.eval, &mut r("toy-facts"), |g| facts::question(g, &table)),
        choice: unique_split(TaskKind::ToyChoice, sizes.train, sizes.eval, &mut r("toy-choice"), choice::question),
        table,
    }
}
