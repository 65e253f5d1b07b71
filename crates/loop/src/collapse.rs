//! Every diversity, homogenization and collapse metric of the loop, as pure functions over texts,
//! embeddings and per-document decisions (no model here: the similarity stage feeds them). One
//! implementation per metric, one edge-case rule: a metric that is undefined on its input is `None`
//! (the stage then writes no line), never a NaN or a panic.
//!
//! Each metric is checked against its reference on committed fixtures (`tests/collapse.rs`,
//! `scripts/make_collapse_fixtures.py`): self-BLEU against sacrebleu, Vendi against the `vendi-score`
//! package, the rest against numpy.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;

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

/// Python's `str.isspace`, which `str.split()` splits on: Unicode White_Space plus the ASCII
/// separators U+001C–U+001F (sacrebleu splits with `str.split()`).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_space).filter(|w| !w.is_empty())
}

/// sacrebleu's default `13a` tokenizer (mteval-v13a's), applied as sacrebleu applies it to a
/// segment (after `rstrip()`): the tokens, split as its n-gram counter splits them.
pub fn tokenize_13a(segment: &str) -> Vec<String> {
    static RES: OnceLock<[Regex; 4]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        // tokenizer_re.py's patterns; the first class spelled as code points ({-~ [-` space-& (-+ :-@ /).
        ["([\\x7B-\\x7E\\x5B-\\x60\\x20-\\x26\\x28-\\x2B\\x3A-\\x40/])", "([^0-9])([.,])", "([.,])([^0-9])", "([0-9])(-)"]
            .map(|p| Regex::new(p).expect("constant pattern"))
    });
    let mut line = segment.trim_end_matches(py_space).replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let line = format!(" {line} ");
    let line = res[0].replace_all(&line, " ${1} ");
    let line = res[1].replace_all(&line, "${1} ${2} ");
    let line = res[2].replace_all(&line, " ${1} ${2}");
    let line = res[3].replace_all(&line, "${1} ${2} ");
    py_split(&line).map(str::to_string).collect()
}

/// BLEU's n-gram order (sacrebleu's `MAX_NGRAM_ORDER`).
const BLEU_ORDER: usize = 4;

/// sacrebleu's `BLEU.compute_bleu` for one segment with `smooth_method = "exp"` and
/// `effective_order = True` (what `sacrebleu.sentence_bleu` uses), on the 0–100 scale.
fn bleu_from_stats(correct: &[u64; BLEU_ORDER], total: &[u64; BLEU_ORDER], sys_len: usize, ref_len: usize) -> f64 {
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 { (1.0 - ref_len as f64 / sys_len as f64).exp() } else { 0.0 };
    }
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0f64; BLEU_ORDER];
    let mut smooth = 1f64;
    let mut eff_order = BLEU_ORDER;
    for n in 0..BLEU_ORDER {
        if total[n] == 0 {
            break;
        }
        eff_order = n + 1;
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // sacrebleu's `my_log` floors log(0) to a large negative number instead of -inf.
    let log_sum: f64 = precisions[..eff_order].iter().map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() }).sum();
    bp * (log_sum / eff_order as f64).exp()
}

/// `sacrebleu.sentence_bleu(hypothesis, references).score`: 13a tokens, case-sensitive, n-gram counts
/// clipped by the max over the references, the closest reference length (the shorter on ties), exp
/// smoothing, effective order; 0–100. `None` without a reference.
pub fn sentence_bleu(hypothesis: &str, references: &[String]) -> Option<f64> {
    if references.is_empty() {
        return None;
    }
    let ngrams = |toks: &[String]| {
        let mut c: HashMap<Vec<String>, u64> = HashMap::new();
        for n in 1..=BLEU_ORDER {
            for g in toks.windows(n) {
                *c.entry(g.to_vec()).or_insert(0) += 1;
            }
        }
        c
    };
    let mut ref_max: HashMap<Vec<String>, u64> = HashMap::new();
    let mut ref_lens = Vec::new();
    for r in references {
        let toks = tokenize_13a(r);
        ref_lens.push(toks.len());
        for (g, c) in ngrams(&toks) {
            let e = ref_max.entry(g).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let hyp = tokenize_13a(hypothesis);
    let (mut correct, mut total) = ([0u64; BLEU_ORDER], [0u64; BLEU_ORDER]);
    for (g, c) in ngrams(&hyp) {
        total[g.len() - 1] += c;
        correct[g.len() - 1] += c.min(ref_max.get(&g).copied().unwrap_or(0));
    }
    ref_lens.sort_unstable();
    let closest = ref_lens.iter().copied().min_by_key(|&r| r.abs_diff(hyp.len())).expect("a reference");
    Some(bleu_from_stats(&correct, &total, hyp.len(), closest))
}

/// Self-BLEU of a set of texts: the mean over i of `sacrebleu.sentence_bleu(texts[i], references =
/// every other text)` — 13a tokens, case-sensitive, exp smoothing, effective order, 0–100 (higher =
/// the texts repeat each other more). `None` with fewer than two texts.
///
/// Equal to the mean of [`sentence_bleu`] over the texts, but linear in the total n-gram count, not
/// quadratic: per n-gram the two largest counts (and which text holds the largest) give the max over
/// "every other text", which is sacrebleu's reference count.
pub fn self_bleu(texts: &[String]) -> Option<f64> {
    let m = texts.len();
    if m < 2 {
        return None;
    }
    let toks: Vec<Vec<String>> = texts.iter().map(|t| tokenize_13a(t)).collect();
    let mut counts: Vec<HashMap<&[String], u64>> = vec![HashMap::new(); m];
    let mut top: HashMap<&[String], [(u64, usize); 2]> = HashMap::new();
    for (i, t) in toks.iter().enumerate() {
        for n in 1..=BLEU_ORDER {
            for g in t.windows(n) {
                *counts[i].entry(g).or_insert(0) += 1;
            }
        }
        for (&g, &c) in &counts[i] {
            let e = top.entry(g).or_insert([(0, usize::MAX); 2]);
            if c > e[0].0 {
                e[1] = e[0];
                e[0] = (c, i);
            } else if c > e[1].0 {
                e[1] = (c, i);
            }
        }
    }
    let mut lens: Vec<usize> = toks.iter().map(Vec::len).collect();
    lens.sort_unstable();
    let mut sum = 0f64;
    for (i, t) in toks.iter().enumerate() {
        let (mut correct, mut total) = ([0u64; BLEU_ORDER], [0u64; BLEU_ORDER]);
        for (&g, &c) in &counts[i] {
            let e = top[g];
            let ref_count = if e[0].1 == i { e[1].0 } else { e[0].0 };
            total[g.len() - 1] += c;
            correct[g.len() - 1] += c.min(ref_count);
        }
        sum += bleu_from_stats(&correct, &total, t.len(), closest_other_len(&lens, t.len()));
    }
    Some(sum / m as f64)
}

/// The length closest to `c` among `sorted` less one occurrence of `c` (the hypothesis itself);
/// ties go to the shorter, as sacrebleu's `_get_closest_ref_len`. `sorted` holds at least two.
fn closest_other_len(sorted: &[usize], c: usize) -> usize {
    let lo = sorted.partition_point(|&x| x < c);
    let hi = sorted.partition_point(|&x| x <= c);
    if hi - lo >= 2 {
        return c;
    }
    match (lo.checked_sub(1).map(|i| sorted[i]), sorted.get(hi).copied()) {
        (Some(b), Some(a)) => {
            if c - b <= a - c {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => c,
    }
}

/// Type-token ratio: per text, distinct 13a tokens / tokens (how much a text repeats itself), then
/// the mean over the texts that have a token. The ratio pooled over all texts is `distinct_1`.
/// `None` when no text has a token.
pub fn type_token_ratio(texts: &[String]) -> Option<f64> {
    let ratios: Vec<f64> = texts
        .iter()
        .map(|t| tokenize_13a(t))
        .filter(|t| !t.is_empty())
        .map(|t| t.iter().collect::<HashSet<_>>().len() as f64 / t.len() as f64)
        .collect();
    (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
}

/// The Vendi score of a set of embeddings with the cosine kernel, as `vendi_score.vendi.score_X`
/// computes it (q = 1): rows L2-normalised (a zero row stays zero), K = X·Xᵀ, and exp of the
/// Shannon entropy of the positive eigenvalues of K/n. Between 1 (all alike) and n (orthogonal):
/// the effective number of distinct samples. `None` for no embedding.
pub fn vendi_score(embeddings: &[Vec<f32>]) -> Option<f64> {
    let n = embeddings.len();
    if n == 0 {
        return None;
    }
    let unit: Vec<Vec<f64>> = embeddings
        .iter()
        .map(|v| {
            let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            v.iter().map(|&x| if norm > 0.0 { x as f64 / norm } else { 0.0 }).collect()
        })
        .collect();
    let k = nalgebra::DMatrix::from_fn(n, n, |i, j| unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum::<f64>() / n as f64);
    let entropy: f64 = k.symmetric_eigenvalues().iter().filter(|&&w| w > 0.0).map(|&w| -w * w.ln()).sum();
    Some(entropy.exp())
}

/// Perplexity from a token-mean negative log-likelihood (nats): exp(nll). `None` when no token was
/// scored.
pub fn perplexity(mean_nll: f64, tokens: u64) -> Option<f64> {
    (tokens > 0 && mean_nll.is_finite()).then(|| mean_nll.exp())
}

/// One model's decision on one accuracy document (from `accuracy.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub correct: bool,
    /// Multiple choice: the chosen option (argmax of the log-likelihoods, first on ties) and the
    /// number of options. `None` for a generated answer.
    pub choice: Option<(usize, usize)>,
}

/// How two models share errors on the same documents of one task, each a fraction of the documents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorConsensus {
    /// Both wrong.
    pub both_wrong: f64,
    /// What `both_wrong` would be if the two erred independently at their own error rates.
    pub both_wrong_chance: f64,
    /// Both wrong with the same option (multiple choice only).
    pub same_wrong: Option<f64>,
    /// What `same_wrong` would be if they erred independently and each error picked a wrong option
    /// uniformly: `both_wrong_chance` × the mean over documents of 1 / (options − 1).
    pub same_wrong_chance: Option<f64>,
}

/// Error consensus of two models over the same documents (`a[d]`, `b[d]` decide document d). `None`
/// for no document or when the lists differ in length (the models did not score the same documents).
pub fn error_consensus(a: &[Decision], b: &[Decision]) -> Option<ErrorConsensus> {
    let n = a.len();
    if n == 0 || b.len() != n {
        return None;
    }
    let frac = |k: usize| k as f64 / n as f64;
    let both = a.iter().zip(b).filter(|(x, y)| !x.correct && !y.correct).count();
    let both_wrong_chance = frac(a.iter().filter(|x| !x.correct).count()) * frac(b.iter().filter(|y| !y.correct).count());
    let choice = a.iter().zip(b).all(|(x, y)| x.choice.is_some() && y.choice.is_some());
    let (same_wrong, same_wrong_chance) = if choice {
        let same = a.iter().zip(b).filter(|(x, y)| !x.correct && !y.correct && x.choice.map(|c| c.0) == y.choice.map(|c| c.0)).count();
        let inv: f64 = a.iter().map(|x| x.choice.map_or(0.0, |(_, k)| if k >= 2 { 1.0 / (k - 1) as f64 } else { 0.0 })).sum::<f64>() / n as f64;
        (Some(frac(same)), Some(both_wrong_chance * inv))
    } else {
        (None, None)
    };
    Some(ErrorConsensus { both_wrong: frac(both), both_wrong_chance, same_wrong, same_wrong_chance })
}
