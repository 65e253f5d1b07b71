//! BookCorpus-style public passages, streamed from a sentence-per-row corpus that may be far larger
//! than memory (BookCorpus: ~74M rows).
//!
//! The corpus rows are cut into fixed *blocks* of `block_sentences` consecutive rows. A passage is
//! built from one block: its non-empty sentences (trimmed) in order, joined by single spaces,
//! stopping before the sentence that would take the token count over `passage_tokens` (at least one
//! sentence is kept, even if it alone is longer). Token counts are summed per sentence with the
//! caller's counter (default: whitespace words). Blocks never overlap, so passages are distinct.
//! The last `heldout_fraction` of blocks (at least one) are reserved for evaluation — BookCorpus has
//! a single split, and this tail is never in the training pool. Train and eval passages are blocks
//! sampled without replacement from their regions (seeded), returned in corpus order.
//! Only the sampled rows are decoded: parquet row groups holding none of them are skipped, the rest
//! are read with their column reader, skipping (not decoding) the rows between selected runs.

use crate::error::{DataError, Result};
use crate::files::{check_schema, open_parquet, Leaves, StrColumn};
use crate::rng::Stream;
use crate::task::ColumnKind;
use parquet::file::reader::FileReader;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

fn d_tokens() -> usize {
    128
}
fn d_block() -> usize {
    64
}
fn d_heldout() -> f64 {
    0.01
}

/// How passages are cut (BookCorpus / any sentence-per-row corpus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassageConfig {
    /// Maximum tokens per passage (caller's counter; default whitespace words). Default 128.
    #[serde(default = "d_tokens")]
    pub passage_tokens: usize,
    /// Rows per block; a passage never crosses a block. Default 64.
    #[serde(default = "d_block")]
    pub block_sentences: usize,
    /// Fraction of blocks at the end of the corpus held out for evaluation (at least one block).
    /// Default 0.01.
    #[serde(default = "d_heldout")]
    pub heldout_fraction: f64,
}

impl Default for PassageConfig {
    fn default() -> Self {
        PassageConfig {
            passage_tokens: d_tokens(),
            block_sentences: d_block(),
            heldout_fraction: d_heldout(),
        }
    }
}

/// Default token counter: whitespace-separated words.
pub fn whitespace_tokens(s: &str) -> usize {
    s.split_whitespace().count()
}

/// A sentence-per-row corpus that can be read by row ranges.
pub trait SentenceSource {
    fn total_rows(&self) -> u64;
    /// Call `f(row, sentence)` for every row in `ranges` (`(start, len)`, sorted, disjoint), in
    /// ascending row order.
    fn read_ranges(&mut self, ranges: &[(u64, u64)], f: &mut dyn FnMut(u64, &str)) -> Result<()>;
}

/// An in-memory corpus (JSONL sources, tests).
pub struct MemoryCorpus(pub Vec<String>);

impl SentenceSource for MemoryCorpus {
    fn total_rows(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_ranges(&mut self, ranges: &[(u64, u64)], f: &mut dyn FnMut(u64, &str)) -> Result<()> {
        for &(s, l) in ranges {
            for r in s..s + l {
                f(r, &self.0[r as usize]);
            }
        }
        Ok(())
    }
}

/// Parquet shards with a `text: string` column, read lazily (only footers are read on open).
pub struct ParquetCorpus {
    /// Per file: path, first global row, and the row count of each row group.
    files: Vec<(PathBuf, u64, Vec<u64>)>,
    total: u64,
}

impl ParquetCorpus {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut total = 0u64;
        for p in paths {
            let reader = open_parquet(p)?;
            check_schema(p, reader.metadata().file_metadata().schema_descr(), &[("text", ColumnKind::Str)])?;
            let rgs: Vec<u64> = reader.metadata().row_groups().iter().map(|rg| rg.num_rows() as u64).collect();
            let n: u64 = rgs.iter().sum();
            files.push((p.clone(), total, rgs));
            total += n;
        }
        Ok(ParquetCorpus { files, total })
    }
}

impl SentenceSource for ParquetCorpus {
    fn total_rows(&self) -> u64 {
        self.total
    }

    fn read_ranges(&mut self, ranges: &[(u64, u64)], f: &mut dyn FnMut(u64, &str)) -> Result<()> {
        let mut ri = 0usize;
        for (path, first, rgs) in &self.files {
            let file_end = first + rgs.iter().sum::<u64>();
            // Ranges clipped to this file, in file-local rows.
            let mut local: Vec<(u64, u64)> = Vec::new();
            while ri < ranges.len() && ranges[ri].0 < file_end {
                let (s, l) = ranges[ri];
                let (a, b) = (s.max(*first), (s + l).min(file_end));
                if a < b {
                    local.push((a - first, b - first));
                }
                if s + l <= file_end {
                    ri += 1;
                } else {
                    break;
                }
            }
            if local.is_empty() {
                continue;
            }
            // Row groups touched, each with its runs of selected rows (file-local, ascending).
            let mut touched: Vec<(usize, u64, Vec<(u64, u64)>)> = Vec::new();
            let mut rg_start = 0u64;
            let mut li = 0usize;
            for (g, &n) in rgs.iter().enumerate() {
                let rg_end = rg_start + n;
                while li < local.len() && local[li].1 <= rg_start {
                    li += 1;
                }
                let runs: Vec<(u64, u64)> = local[li..]
                    .iter()
                    .take_while(|r| r.0 < rg_end)
                    .map(|&(a, b)| (a.max(rg_start), b.min(rg_end)))
                    .collect();
                if !runs.is_empty() {
                    touched.push((g, rg_start, runs));
                }
                rg_start = rg_end;
            }
            let reader = open_parquet(path)?;
            let Some(&Leaves::Str(column)) = check_schema(path, reader.metadata().file_metadata().schema_descr(), &[("text", ColumnKind::Str)])?.first() else {
                return Err(DataError::parquet(path, "no `text` string column"));
            };
            // Only the touched row groups are read; within one, skipped rows are not decoded.
            for (g, rg_start, runs) in touched {
                let rg = reader.get_row_group(g).map_err(|e| DataError::parquet(path, e))?;
                let mut col = StrColumn::new(path, rg.as_ref(), column)?;
                let mut cursor = rg_start;
                for (a, b) in runs {
                    col.skip((a - cursor) as usize)?;
                    let mut row = first + a;
                    col.read((b - a) as usize, &mut |s| {
                        f(row, s);
                        row += 1;
                        Ok(())
                    })?;
                    cursor = b;
                }
            }
        }
        Ok(())
    }
}

/// Row count of a parquet file from its footer (cheap).
pub fn parquet_num_rows(path: &std::path::Path) -> Result<u64> {
    Ok(open_parquet(path)?.metadata().file_metadata().num_rows() as u64)
}

/// Train and eval passages; each with the corpus row its block starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassageSet {
    pub train: Vec<(u64, String)>,
    pub eval: Vec<(u64, String)>,
}

/// Sample `n_train` training and `n_eval` held-out passages (see the module docs).
pub fn sample_passages(
    src: &mut dyn SentenceSource,
    cfg: &PassageConfig,
    n_train: usize,
    n_eval: usize,
    seed: u64,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Result<PassageSet> {
    if cfg.block_sentences == 0 || cfg.passage_tokens == 0 || !(0.0..1.0).contains(&cfg.heldout_fraction) {
        return Err(DataError::Config(format!(
            "passages: block_sentences and passage_tokens must be > 0 and heldout_fraction in [0, 1): {cfg:?}"
        )));
    }
    let total = src.total_rows();
    let b = cfg.block_sentences as u64;
    let n_blocks = total.div_ceil(b);
    let held = if cfg.heldout_fraction > 0.0 {
        ((n_blocks as f64 * cfg.heldout_fraction).ceil() as u64).max(1)
    } else {
        0
    };
    let train_blocks = n_blocks.saturating_sub(held);
    if n_train as u64 > train_blocks {
        return Err(DataError::NotEnough {
            source_name: format!("passages (train region: {train_blocks} blocks of {b} rows out of {total} rows)"),
            requested: n_train,
            available: train_blocks as usize,
        });
    }
    if n_eval as u64 > held.min(n_blocks) {
        return Err(DataError::NotEnough {
            source_name: format!("passages (held-out region: {held} blocks of {b} rows)"),
            requested: n_eval,
            available: held as usize,
        });
    }
    let mut tr: Vec<u64> = Stream::new(seed, "passages-train", 0, 0).sample_indices(train_blocks, n_train);
    let mut ev: Vec<u64> = Stream::new(seed, "passages-eval", 0, 0)
        .sample_indices(held, n_eval)
        .into_iter()
        .map(|i| train_blocks + i)
        .collect();
    tr.sort_unstable();
    ev.sort_unstable();
    let mut all: Vec<u64> = tr.iter().chain(ev.iter()).copied().collect();
    all.sort_unstable();
    let ranges: Vec<(u64, u64)> = all.iter().map(|&blk| (blk * b, b.min(total - blk * b))).collect();

    // block → (passage, tokens, closed)
    let mut acc: HashMap<u64, (String, usize, bool)> = all.iter().map(|&k| (k, (String::new(), 0, false))).collect();
    src.read_ranges(&ranges, &mut |row, sentence| {
        let entry = acc.get_mut(&(row / b)).expect("row of a selected block");
        if entry.2 {
            return;
        }
        let s = sentence.trim();
        if s.is_empty() {
            return;
        }
        let t = count_tokens(s);
        if entry.1 > 0 && entry.1 + t > cfg.passage_tokens {
            entry.2 = true;
            return;
        }
        if !entry.0.is_empty() {
            entry.0.push(' ');
        }
        entry.0.push_str(s);
        entry.1 += t;
    })?;
    let take = |blocks: &[u64], acc: &mut HashMap<u64, (String, usize, bool)>| -> Vec<(u64, String)> {
        blocks.iter().map(|blk| (blk * b, acc.remove(blk).map(|e| e.0).unwrap_or_default())).collect()
    };
    let train = take(&tr, &mut acc);
    let eval = take(&ev, &mut acc);
    Ok(PassageSet { train, eval })
}
