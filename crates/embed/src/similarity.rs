//! Homogenization metric: how alike K entities' outputs on the same prompts are, measured as the mean
//! cosine similarity of their sentence embeddings. Rising values across rounds of cross-training mean
//! the models converge on saying the same things.

/// Cosine similarity of two vectors (f64 accumulation). 0.0 if either vector is all zeros.
/// Panics if the lengths differ (a programming error: vectors from different embedders).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine: vector lengths differ");
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// `sets[j][i]` is entity j's embedding of its output for prompt i. Returns the mean over prompts i and
/// entity pairs j<k of `cos(sets[j][i], sets[k][i])` -- every (prompt, pair) term weighted equally.
/// NaN when it is undefined (fewer than 2 entities, or no prompts). Panics if the entities hold
/// different numbers of prompts.
pub fn mean_pairwise_cosine(sets: &[Vec<Vec<f32>>]) -> f32 {
    let k = sets.len();
    if k < 2 {
        return f32::NAN;
    }
    let n = sets[0].len();
    assert!(
        sets.iter().all(|s| s.len() == n),
        "mean_pairwise_cosine: entities have different numbers of prompts"
    );
    if n == 0 {
        return f32::NAN;
    }
    let mut total = 0f64;
    for (j, a) in sets.iter().enumerate() {
        for b in &sets[j + 1..] {
            total += a.iter().zip(b).map(|(x, y)| cosine(x, y) as f64).sum::<f64>();
        }
    }
    (total / (n * k * (k - 1) / 2) as f64) as f32
}
