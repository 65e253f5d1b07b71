//! Mixture sampler: shares, determinism, edge cases, replacement and pool policies.

use crossfeed_data::*;
use std::collections::HashSet;

fn examples(tag: &str, m: usize) -> Vec<Example> {
    (0..m).map(|i| Example::new(format!("{tag} q{i}:"), format!(" a{i}"))).collect()
}

fn pool(k: usize, gens: &[u64], m: usize) -> Vec<SyntheticSample> {
    let mut v = Vec::new();
    for &g in gens {
        for e in 0..k {
            for i in 0..m {
                v.push(SyntheticSample { entity: e, generation: g, index: i as u64, text: format!("syn e{e} g{g} #{i}") });
            }
        }
    }
    v
}

fn cfg(alpha: f64, beta: f64, n: usize) -> MixtureConfig {
    MixtureConfig { alpha, beta, n, ..Default::default() }
}

#[test]
fn largest_remainder_shares_are_exact() {
    let (private, public) = (examples("priv", 5000), examples("pub", 5000));
    let p = pool(2, &[0], 5000);
    let m = sample_mixture(&cfg(0.5, 0.5, 12_500), 7, 1, 0, 2, &private, &public, &p).unwrap();
    assert_eq!(m.samples.len(), 12_500);
    assert_eq!(m.count(SourceKind::Private, None), 3125);
    assert_eq!(m.count(SourceKind::Public, None), 3125);
    assert_eq!(m.count(SourceKind::Synthetic, Some(0)), 3125);
    assert_eq!(m.count(SourceKind::Synthetic, Some(1)), 3125);
    assert!(m.warnings.is_empty());
    // Private samples are the trainee's own; synthetic ones come from generation 0.
    assert!(m.samples.iter().filter(|d| d.origin.source == SourceKind::Private).all(|d| d.origin.entity == Some(0)));
    assert!(m.samples.iter().filter(|d| d.origin.source == SourceKind::Synthetic).all(|d| d.origin.generation == Some(0)));

    // A non-divisible case, worked by hand: K=3, n=11 → quotas 2.75, 2.75, 1.833×3 →
    // floors 2,2,1,1,1 (7) + 4 leftovers to the three .833s then private (tie with public → earlier).
    let p3 = pool(3, &[0], 50);
    let m = sample_mixture(&cfg(0.5, 0.5, 11), 1, 1, 2, 3, &private, &public, &p3).unwrap();
    let counts: Vec<usize> = m.allocation.iter().map(|a| a.count).collect();
    assert_eq!(counts, vec![3, 2, 2, 2, 2]);
    // The prompt count for a producer is exactly what every trainee will draw from it.
    for e in 0..3 {
        assert_eq!(synthetic_count(&cfg(0.5, 0.5, 11), 0, e, 3), 2);
    }
    // Ties between private and public (beta = 0.5, odd n) go to private.
    let m = sample_mixture(&cfg(0.0, 0.5, 3), 1, 0, 0, 1, &private, &public, &[]).unwrap();
    assert_eq!((m.count(SourceKind::Private, None), m.count(SourceKind::Public, None)), (2, 1));
}

#[test]
fn generation_zero_uses_beta_and_no_synthetic() {
    let (private, public) = (examples("priv", 100), examples("pub", 100));
    let p = pool(2, &[0], 100);
    let m = sample_mixture(&cfg(0.9, 0.3, 100), 3, 0, 1, 2, &private, &public, &p).unwrap();
    assert_eq!(m.count(SourceKind::Private, None), 30);
    assert_eq!(m.count(SourceKind::Public, None), 70);
    assert_eq!(m.count(SourceKind::Synthetic, None), 0);
}

#[test]
fn alpha_beta_extremes() {
    let (private, public) = (examples("priv", 200), examples("pub", 200));
    let p = pool(3, &[0, 1], 200);
    // alpha = 0: no synthetic, even with a full pool (and an empty pool is fine).
    for pl in [&p[..], &[][..]] {
        let m = sample_mixture(&cfg(0.0, 0.5, 100), 1, 2, 0, 3, &private, &public, pl).unwrap();
        assert_eq!(m.count(SourceKind::Synthetic, None), 0);
        assert_eq!(m.samples.len(), 100);
    }
    // alpha = 1: no real data; real slices may even be empty.
    let m = sample_mixture(&cfg(1.0, 0.5, 99), 1, 2, 0, 3, &[], &[], &p).unwrap();
    assert_eq!(m.count(SourceKind::Private, None) + m.count(SourceKind::Public, None), 0);
    assert_eq!(m.samples.len(), 99);
    for e in 0..3 {
        assert_eq!(m.count(SourceKind::Synthetic, Some(e)), 33);
    }
    // beta = 1: no public data, at generation 0 and later.
    for g in [0, 1, 2] {
        let m = sample_mixture(&cfg(0.5, 1.0, 100), 1, g, 1, 3, &private, &[], &p).unwrap();
        assert_eq!(m.count(SourceKind::Public, None), 0);
    }
}

#[test]
fn manifests_are_deterministic_and_thread_independent() {
    let (private, public) = (examples("priv", 3000), examples("pub", 3000));
    let p = pool(3, &[0, 1], 3000);
    let run = |seed: u64, order: Vec<(u64, usize)>| -> Vec<(u64, usize, Vec<u8>)> {
        let handles: Vec<_> = order
            .into_iter()
            .map(|(g, e)| {
                let (private, public, p) = (private.clone(), public.clone(), p.clone());
                std::thread::spawn(move || {
                    let m = sample_mixture(&cfg(0.5, 0.5, 2000), seed, g, e, 3, &private, &public, &p).unwrap();
                    let mut buf = Vec::new();
                    write_manifest_jsonl(&mut buf, &m).unwrap();
                    (g, e, buf)
                })
            })
            .collect();
        let mut v: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        v.sort();
        v
    };
    let jobs: Vec<(u64, usize)> = (1..3).flat_map(|g| (0..3).map(move |e| (g, e))).collect();
    let mut rev = jobs.clone();
    rev.reverse();
    let a = run(42, jobs.clone());
    let b = run(42, rev);
    assert_eq!(a, b);
    let c = run(43, jobs);
    assert_ne!(a, c);
    // Different entities get different streams.
    assert_ne!(a[0].2, a[1].2);
}

#[test]
fn multinomial_shares_within_three_sigma() {
    let (private, public) = (examples("priv", 2000), examples("pub", 2000));
    let p = pool(2, &[0], 2000);
    let c = MixtureConfig { rounding: Rounding::Multinomial, ..cfg(0.4, 0.3, 1000) };
    let w = [0.6 * 0.3, 0.6 * 0.7, 0.2, 0.2];
    let seeds = 200u64;
    let mut sums = [0f64; 4];
    for seed in 0..seeds {
        let m = sample_mixture(&c, seed, 1, 0, 2, &private, &public, &p).unwrap();
        let counts = [
            m.count(SourceKind::Private, None),
            m.count(SourceKind::Public, None),
            m.count(SourceKind::Synthetic, Some(0)),
            m.count(SourceKind::Synthetic, Some(1)),
        ];
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        for (s, x) in sums.iter_mut().zip(counts) {
            *s += x as f64;
        }
    }
    for (i, wi) in w.iter().enumerate() {
        let mean = sums[i] / seeds as f64;
        let sigma = (1000.0 * wi * (1.0 - wi) / seeds as f64).sqrt();
        assert!((mean - 1000.0 * wi).abs() < 3.0 * sigma, "source {i}: mean {mean} vs {} (σ {sigma})", 1000.0 * wi);
    }
}

#[test]
fn without_replacement_fallback_and_strict() {
    let (private, public) = (examples("priv", 500), examples("pub", 500));
    let m = sample_mixture(&cfg(0.0, 0.5, 1000), 5, 0, 0, 1, &private, &public, &[]).unwrap();
    let rows: HashSet<(SourceKind, u64)> = m.samples.iter().map(|d| (d.origin.source, d.origin.row)).collect();
    assert_eq!(rows.len(), 1000, "no repeats while sources are large enough");

    let small = examples("priv", 10);
    let m = sample_mixture(&cfg(0.0, 0.5, 100), 5, 0, 0, 1, &small, &public, &[]).unwrap();
    assert_eq!(m.count(SourceKind::Private, None), 50);
    assert!(m.allocation[0].with_replacement && m.allocation[0].available == 10);
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].contains("private"), "{}", m.warnings[0]);
    // Fallback is as even as possible: each of the 10 items exactly 5 times.
    let mut per_row = [0usize; 10];
    for d in m.samples.iter().filter(|d| d.origin.source == SourceKind::Private) {
        per_row[d.origin.row as usize] += 1;
    }
    assert_eq!(per_row, [5; 10]);

    let strict = MixtureConfig { replacement: Replacement::Strict, ..cfg(0.0, 0.5, 100) };
    let e = sample_mixture(&strict, 5, 0, 0, 1, &small, &public, &[]).unwrap_err().to_string();
    assert!(e.contains("private") && e.contains("10") && e.contains("50"), "{e}");

    // A synthetic set the pool lacks is an error, not a silent zero.
    let e = sample_mixture(&cfg(0.5, 0.5, 100), 5, 1, 0, 2, &private, &public, &[]).unwrap_err().to_string();
    assert!(e.contains("synthetic[entity 0]") && e.contains("empty"), "{e}");
}

#[test]
fn pool_policies() {
    let (private, public) = (examples("priv", 500), examples("pub", 500));
    let p = pool(2, &[0, 1, 2], 300);
    let base = cfg(1.0, 0.5, 400);
    // Latest: only generation t-1 = 2.
    let m = sample_mixture(&base, 1, 3, 0, 2, &private, &public, &p).unwrap();
    assert!(m.samples.iter().all(|d| d.origin.generation == Some(2)));
    assert_eq!(m.count(SourceKind::Synthetic, Some(1)), 200);
    // Accumulate: generations 0..t, never t itself or later.
    let acc = MixtureConfig { pool_policy: PoolPolicy::Accumulate, ..base.clone() };
    let m = sample_mixture(&acc, 1, 2, 0, 2, &private, &public, &p).unwrap();
    let gens: HashSet<u64> = m.samples.iter().map(|d| d.origin.generation.unwrap()).collect();
    assert_eq!(gens, HashSet::from([0, 1]));
    // Replace: only the trainee's own previous outputs.
    let rep = MixtureConfig { pool_policy: PoolPolicy::Replace, ..base };
    let m = sample_mixture(&rep, 1, 3, 1, 2, &private, &public, &p).unwrap();
    assert_eq!(m.count(SourceKind::Synthetic, Some(1)), 400);
    assert!(m.samples.iter().all(|d| d.origin.generation == Some(2)));
}

#[test]
fn prompts_follow_beta_and_count() {
    let (private, public) = (examples("priv", 100), examples("pub", 100));
    let mix = cfg(0.5, 0.75, 80);
    let pc = PromptConfig::default();
    let ps = generation_prompts(&pc, &mix, 9, 0, 1, 2, &private, &public).unwrap();
    assert_eq!(ps.len(), 20); // alpha·n/K
    assert_eq!(ps.len(), synthetic_count(&mix, 0, 1, 2));
    let n_priv = ps.iter().filter(|p| p.origin.unwrap().source == SourceKind::Private).count();
    assert_eq!(n_priv, 15);
    assert!(ps.iter().enumerate().all(|(i, p)| p.index == i as u64 && p.entity == 1));
    assert_eq!(ps, generation_prompts(&pc, &mix, 9, 0, 1, 2, &private, &public).unwrap());
    // Prefixes are cut from the sample text.
    let p0 = &ps[0];
    let o = p0.origin.unwrap();
    let src = if o.source == SourceKind::Private { &private } else { &public };
    assert!(src[o.row as usize].text().starts_with(&p0.prompt));

    let q = PromptConfig { source: PromptSource::TaskQuestions, count: Some(5), ..Default::default() };
    let ps = generation_prompts(&q, &mix, 9, 0, 1, 2, &private, &public).unwrap();
    assert!(ps.iter().all(|p| p.prompt.starts_with("priv q") && p.prompt.ends_with(':')));
    let e = PromptConfig { source: PromptSource::Empty, ..Default::default() };
    let ps = generation_prompts(&e, &mix, 9, 0, 1, 2, &private, &public).unwrap();
    assert!(ps.len() == 20 && ps.iter().all(|p| p.prompt.is_empty() && p.origin.is_none()));
}

#[test]
fn manifest_round_trip_and_loss_mask() {
    let (private, public) = (examples("priv", 50), examples("pub", 50));
    let m = sample_mixture(&cfg(0.0, 0.5, 20), 2, 0, 0, 1, &private, &public, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.jsonl");
    append_manifest(&path, &m).unwrap();
    let back = read_manifest(&path).unwrap();
    assert_eq!(back, manifest_records(&m));
    let d = m.samples.iter().find(|d| d.origin.source == SourceKind::Private).unwrap();
    let ex = &private[d.origin.row as usize];
    assert_eq!(d.text, ex.text());
    assert_eq!(LossMask::CompletionOnly.loss_start_byte(d.prompt_len_bytes), ex.prompt.len());
    assert_eq!(&d.text[d.prompt_len_bytes..], ex.completion);
    assert_eq!(LossMask::Full.loss_start_byte(d.prompt_len_bytes), 0);
}

#[test]
fn config_serde_snake_case_and_strict() {
    let c: MixtureConfig = serde_json::from_str(r#"{"alpha":0.25,"rounding":"multinomial","pool_policy":"accumulate"}"#).unwrap();
    assert_eq!(c.rounding, Rounding::Multinomial);
    assert_eq!((c.beta, c.n, c.pool_policy), (0.5, 12_500, PoolPolicy::Accumulate));
    assert!(serde_json::from_str::<MixtureConfig>(r#"{"alhpa":0.25}"#).is_err());
    let p: PromptConfig = serde_json::from_str(r#"{"source":"public_passages","prefix":{"chars":40}}"#).unwrap();
    assert_eq!(p.prefix, PrefixLength::Chars(40));
    assert!(cfg(1.5, 0.5, 10).validate().is_err());
}

/// Lazy generation (issue 22) rests on this: the draw reads only the sizes of the synthetic sets,
/// never their text, so the mixture (origins and order) can be fixed before any generation.
#[test]
fn draw_is_independent_of_synthetic_text() {
    let (private, public) = (examples("priv", 500), examples("pub", 500));
    let full = pool(3, &[0, 1, 2], 300);
    let blank: Vec<SyntheticSample> = full.iter().map(|s| SyntheticSample { text: String::new(), ..s.clone() }).collect();
    let sets: Vec<(usize, u64, usize)> = [0u64, 1, 2].iter().flat_map(|&g| (0..3).map(move |e| (e, g, 300))).collect();
    assert_eq!(placeholder_pool(&sets), blank);
    for policy in [PoolPolicy::Latest, PoolPolicy::Replace, PoolPolicy::Accumulate] {
        for rounding in [Rounding::LargestRemainder, Rounding::Multinomial] {
            for (alpha, beta) in [(0.5, 0.5), (0.05, 0.9), (1.0, 0.0)] {
                let c = MixtureConfig { pool_policy: policy, rounding, ..cfg(alpha, beta, 700) };
                for (t, e) in [(1, 0), (3, 2)] {
                    let a = sample_mixture(&c, 7, t, e, 3, &private, &public, &full).unwrap();
                    let b = sample_mixture(&c, 7, t, e, 3, &private, &public, &blank).unwrap();
                    let oa: Vec<_> = a.samples.iter().map(|d| d.origin).collect();
                    let ob: Vec<_> = b.samples.iter().map(|d| d.origin).collect();
                    assert_eq!(oa, ob, "{policy:?} {rounding:?} alpha {alpha} t {t} e {e}");
                }
            }
        }
    }
}
