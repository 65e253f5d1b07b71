//! Every diversity, homogenization and collapse metric of the loop, as pure functions over texts,
//! embeddings and per-document decisions (no model here: the similarity stage feeds them). One
//! implementation per metric, one edge-case rule: a metric that is undefined on its input is `None`
//! (the stage then writes no line), never a NaN or a panic.
//!
//! Each metric is checked in `tests/collapse.rs`.

use std::collections::HashSet;

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

/// Cosine of two vectors, accumulated in f64 (0 when either is zero; extra entries of the longer
/// vector are ignored).
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
/// how alike the entities answer the same prompt. `None` with fewer than two entities or no prompt
/// (a pair compares the prompts both have).
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
