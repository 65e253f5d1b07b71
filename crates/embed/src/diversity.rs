//! Lexical diversity of a set of generations: distinct-n (share of unique n-grams) and Self-BLEU
//! (how much each text overlaps the others). Both tokenize on Unicode whitespace, case-sensitively,
//! with no other normalisation, so they are cheap and independent of any model's tokenizer.

use std::collections::HashMap;

fn tokens(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Unique n-grams / total n-grams, pooled over all `texts` (an n-gram never crosses texts).
/// Texts shorter than `n` contribute nothing. Returns 0.0 when there are no n-grams at all (or n = 0).
pub fn distinct_n(texts: &[String], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let mut seen: std::collections::HashSet<Vec<&str>> = std::collections::HashSet::new();
    let mut total = 0usize;
    for t in texts {
        let toks = tokens(t);
        for w in toks.windows(n) {
            total += 1;
            seen.insert(w.to_vec());
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Self-BLEU: the mean over i of BLEU(hypothesis = `texts[i]`, references = all other texts).
///
/// Exact definition (identical to NLTK `sentence_bleu(refs, hyp, weights=(1/max_n,)*max_n,
/// smoothing_function=SmoothingFunction().method2)` on whitespace tokens):
/// - p_n = m_n / c_n, where c_n is the number of hypothesis n-grams and m_n the clipped matches:
///   sum over hypothesis n-grams g of min(count_hyp(g), max over references r of count_r(g)).
///   c_n is taken as max(c_n, 1).
/// - Smoothing (Lin & Och 2004, NLTK method2): for n >= 2, p_n = (m_n + 1) / (c_n + 1); p_1 is unsmoothed.
/// - If m_1 = 0 the text's BLEU is 0.
/// - Brevity penalty: c = hypothesis length, r = the reference length closest to c (ties -> the shorter);
///   BP = 1 if c > r, else exp(1 - r / c).
/// - BLEU = BP * exp(sum_n (1/max_n) * ln p_n).
///
/// Higher Self-BLEU = less diverse. Returns 0.0 when fewer than two texts are given (or max_n = 0).
/// Cost is linear in the total number of n-grams (per-n-gram top-two counts stand in for the max over
/// the other texts), plus a sort of the lengths.
pub fn self_bleu(texts: &[String], max_n: usize) -> f64 {
    let m = texts.len();
    if m < 2 || max_n == 0 {
        return 0.0;
    }
    let toks: Vec<Vec<&str>> = texts.iter().map(|t| tokens(t)).collect();
    let lens: Vec<usize> = toks.iter().map(Vec::len).collect();
    let mut sorted_lens = lens.clone();
    sorted_lens.sort_unstable();

    // matches[i][n-1]: clipped n-gram matches of text i against the others
    let mut matches = vec![vec![0usize; max_n]; m];
    for n in 1..=max_n {
        // Per text: n-gram counts. Globally: top two (count, owner) per n-gram.
        let per_text: Vec<HashMap<&[&str], usize>> = toks
            .iter()
            .map(|t| {
                let mut c: HashMap<&[&str], usize> = HashMap::new();
                for w in t.windows(n) {
                    *c.entry(w).or_insert(0) += 1;
                }
                c
            })
            .collect();
        let mut top: HashMap<&[&str], [(usize, usize); 2]> = HashMap::new(); // [(count, owner); 2], best first
        for (i, c) in per_text.iter().enumerate() {
            for (&g, &cnt) in c {
                let e = top.entry(g).or_insert([(0, usize::MAX); 2]);
                if cnt > e[0].0 {
                    e[1] = e[0];
                    e[0] = (cnt, i);
                } else if cnt > e[1].0 {
                    e[1] = (cnt, i);
                }
            }
        }
        for (i, c) in per_text.iter().enumerate() {
            let mut mm = 0usize;
            for (&g, &cnt) in c {
                let e = top[g];
                let ref_max = if e[0].1 == i { e[1].0 } else { e[0].0 };
                mm += cnt.min(ref_max);
            }
            matches[i][n - 1] = mm;
        }
    }

    let mut total = 0f64;
    for i in 0..m {
        let c = lens[i];
        if matches[i][0] == 0 || c == 0 {
            continue; // BLEU 0
        }
        let mut log_sum = 0f64;
        for n in 1..=max_n {
            let cn = c.saturating_sub(n - 1).max(1) as f64;
            let mn = matches[i][n - 1] as f64;
            let p = if n == 1 { mn / cn } else { (mn + 1.0) / (cn + 1.0) };
            log_sum += p.ln() / max_n as f64;
        }
        let r = closest_other_len(&sorted_lens, c);
        let bp = if c > r { 1.0 } else { (1.0 - r as f64 / c as f64).exp() };
        total += bp * log_sum.exp();
    }
    total / m as f64
}

/// Closest length to `c` among all lengths but one occurrence of `c` itself (the hypothesis);
/// ties go to the shorter, as in NLTK's `closest_ref_length`.
fn closest_other_len(sorted: &[usize], c: usize) -> usize {
    let lo = sorted.partition_point(|&x| x < c);
    let hi = sorted.partition_point(|&x| x <= c);
    if hi - lo >= 2 {
        return c;
    }
    let below = if lo > 0 { Some(sorted[lo - 1]) } else { None };
    let above = sorted.get(hi).copied();
    match (below, above) {
        (Some(b), Some(a)) => {
            if c - b <= a - c {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => c, // unreachable with >= 2 texts
    }
}
