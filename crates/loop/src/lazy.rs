//! Lazy generation: which synthetic samples training reads, known before any is generated.
//!
//! train(t, e) draws its mixture from the seed, the real data and the *sizes* of the synthetic sets
//! (never their text), and its optimizer steps read the first `total_steps × grad_accum × batch_size`
//! positions of its seeded data order. Both are fixed from the config, so generate(t, p) can complete
//! just the prompts of producer p that some trainee reads, each with its list position as RNG stream
//! (`Generator::run_indexed`), and every sample read has the text eager generation gives it. The
//! derivation and its two traps are in docs/LAZY-GENERATION.md.

use std::collections::BTreeSet;

use crossfeed_data::{placeholder_pool, prompt_count, sample_mixture, Example, Mixture, PoolPolicy, SourceKind};
use crossfeed_train::DataCursor;

use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::seeds::derive;

/// `(producer, producing generation, set size)` of every synthetic set train(t, ·) pools, in the
/// order the pool lists them (generations ascending, then entities).
pub fn pool_sets(cfg: &ExperimentConfig, t: u64) -> Vec<(usize, u64, usize)> {
    if t == 0 {
        return Vec::new();
    }
    let first = if cfg.mixture.pool_policy == PoolPolicy::Accumulate { 1 } else { t };
    let mix = cfg.mixture();
    (first..=t)
        .flat_map(|g| (0..cfg.k).map(move |j| (j, g - 1)))
        .map(|(j, g)| (j, g, prompt_count(&cfg.prompts, &mix, g, j, cfg.k)))
        .collect()
}

/// Which sets of `pool_sets(cfg, t)` train(t, e) may draw from: those of the producers its topology
/// row reads (every set under `all`). The others still hold their places in the pool (the draw reads
/// only set sizes) but are never read, so train(t, e) neither waits for nor opens them.
pub fn read_by(cfg: &ExperimentConfig, t: u64, e: usize) -> Vec<bool> {
    let producers: Vec<usize> = cfg.mixture().effective_topology().row(e, cfg.k).into_iter().map(|(j, _)| j).collect();
    pool_sets(cfg, t).iter().map(|(j, _, _)| producers.contains(j)).collect()
}

/// Per position of train(t, e)'s mixture (length `n`): whether its optimizer steps read it.
pub fn read_positions(cfg: &ExperimentConfig, t: u64, e: usize) -> Vec<bool> {
    let tr = &cfg.train;
    let mut cursor = DataCursor::new(cfg.n, derive(cfg.seed, "train", t as i64, e as u64));
    let mut read = vec![false; cfg.n];
    // Past n·(epochs) reads, every position is read: stop early instead of walking every epoch.
    let mut left = tr.total_steps as usize * tr.grad_accum * tr.batch_size;
    while left > 0 && read.iter().any(|r| !r) {
        let take = left.min(cfg.n);
        for i in cursor.take(take) {
            read[i] = true;
        }
        left -= take;
    }
    read
}

/// train(t, e)'s mixture over text-free stand-ins of the synthetic sets: the same draw and order as
/// over the generated pool, with empty synthetic texts.
pub fn layout(cfg: &ExperimentConfig, t: u64, e: usize, private: &[Example], public: &[Example]) -> Result<Mixture> {
    let pool = placeholder_pool(&pool_sets(cfg, t));
    Ok(sample_mixture(&cfg.mixture(), cfg.seed, t, e, cfg.k, private, public, &pool)?)
}

/// The rows (prompt indices) of `producer`'s generation-(t-1) set that train(t, ·) read, over all
/// trainees; `privates[j]` is trainee j's private train split.
pub fn needed_rows(cfg: &ExperimentConfig, t: u64, producer: usize, privates: &[&[Example]], public: &[Example]) -> Result<BTreeSet<u64>> {
    let mut rows = BTreeSet::new();
    for (j, private) in privates.iter().enumerate().take(cfg.k) {
        let mix = layout(cfg, t, j, private, public)?;
        let read = read_positions(cfg, t, j);
        for (d, _) in mix.samples.iter().zip(read).filter(|(_, r)| *r) {
            let o = d.origin;
            if o.source == SourceKind::Synthetic && o.entity == Some(producer) && o.generation == Some(t - 1) {
                rows.insert(o.row);
            }
        }
    }
    Ok(rows)
}
