//! Measurements: token-level CE over an eval set, the shared homogenization prompts, distinct-n
//! diversity, and the optional embedding similarity (behind [`TextEmbedder`], so this crate does not
//! depend on an embedding model; the CLI supplies one when `eval.embed_model` is set).

use std::collections::HashSet;

use crossfeed_data::{prefix_of, Example, PrefixLength};
use crossfeed_model::{Batch, CausalLm, TextTokenizer};
use crossfeed_train::{tokenize, LmExample};

use crate::error::Result;

/// Sentence embeddings for the cosine-similarity metric.
pub trait TextEmbedder {
    /// One vector per text, in order.
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String>;
}

/// Token-mean CE of `model` on `examples` (loss on the completion only when `completion_only`):
/// returns (ce, predicted tokens). Sums are accumulated in f64 in a fixed batch order so the number
/// is reproducible.
pub fn token_ce(
    model: &CausalLm,
    tok: &TextTokenizer,
    pad_id: u32,
    examples: &[Example],
    max_len: usize,
    completion_only: bool,
    batch_size: usize,
) -> Result<(f64, u64)> {
    let lm: Vec<LmExample> = examples.iter().map(|e| LmExample { prompt: e.prompt.clone(), completion: e.completion.clone() }).collect();
    let data = tokenize(tok, &lm, max_len, completion_only)?;
    let model = &model.frozen()?;
    let (mut sum, mut tokens) = (0f64, 0u64);
    for start in (0..data.seqs.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(data.seqs.len());
        let seqs = &data.seqs[start..end];
        let starts = data.label_starts.as_ref().map(|s| &s[start..end]);
        let batch = Batch::right_padded(seqs, pad_id, max_len, starts, &model.device)?;
        let ce = model.ce(&batch)?;
        let per_row: Vec<f32> = ce.ce_sum.to_vec1()?;
        sum += per_row.iter().map(|&x| x as f64).sum::<f64>();
        tokens += ce.total_tokens() as u64;
    }
    Ok((if tokens == 0 { f64::NAN } else { sum / tokens as f64 }, tokens))
}

/// The homogenization prompts of one eval set: the task prompt of the first `count` eval examples
/// (for passages, which have no prompt, their first `prefix` words).
pub fn eval_prompts(examples: &[Example], count: usize, prefix: PrefixLength) -> Vec<String> {
    examples
        .iter()
        .take(count)
        .map(|e| if e.prompt.is_empty() { prefix_of(&e.completion, prefix) } else { e.prompt.clone() })
        .collect()
}

/// distinct-n: unique word n-grams / all word n-grams over `texts` (whitespace words; n-grams do
/// not cross text boundaries). 0 when there is no n-gram.
pub fn distinct_n(texts: &[String], n: usize) -> f64 {
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for t in texts {
        let words: Vec<&str> = t.split_whitespace().collect();
        if n == 0 || words.len() < n {
            continue;
        }
        for w in words.windows(n) {
            total += 1;
            seen.insert(w.join(" "));
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Cosine of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += *x as f64 * *y as f64;
        na += *x as f64 * *x as f64;
        nb += *y as f64 * *y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        d / (na.sqrt() * nb.sqrt())
    }
}

/// Mean over entity pairs (i < j) of the mean over prompts of cos(output_i[p], output_j[p]):
/// how alike the entities answer the same prompt. `None` with fewer than two entities.
pub fn mean_pairwise_cosine(per_entity: &[Vec<Vec<f32>>]) -> Option<f64> {
    let mut total = 0f64;
    let mut pairs = 0usize;
    for i in 0..per_entity.len() {
        for j in i + 1..per_entity.len() {
            let n = per_entity[i].len().min(per_entity[j].len());
            if n == 0 {
                continue;
            }
            let s: f64 = (0..n).map(|p| cosine(&per_entity[i][p], &per_entity[j][p])).sum();
            total += s / n as f64;
            pairs += 1;
        }
    }
    (pairs > 0).then(|| total / pairs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn distinct_counts_unique_ngrams() {
        let t = vec!["a b a b".to_string()];
        assert_eq!(distinct_n(&t, 1), 0.5);
        assert!((distinct_n(&t, 2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(distinct_n(&[], 2), 0.0);
    }
    #[test]
    fn pairwise_cosine() {
        let a = vec![vec![1.0, 0.0]];
        let b = vec![vec![1.0, 0.0]];
        let c = vec![vec![0.0, 1.0]];
        assert_eq!(mean_pairwise_cosine(&[a.clone(), b]), Some(1.0));
        assert_eq!(mean_pairwise_cosine(&[a.clone(), c]), Some(0.0));
        assert_eq!(mean_pairwise_cosine(&[a]), None);
    }
}
