//! Sharing topologies: exact per-producer counts for every topology and pool policy, the default
//! unchanged, and the config errors.

use crossfeed_data::*;

fn examples(tag: &str, m: usize) -> Vec<Example> {
    (0..m).map(|i| Example::new(format!("{tag} q{i}:"), format!(" a{i}"))).collect()
}

/// Sets of `size` samples for every entity at generations `0..gens`.
fn pool(k: usize, gens: u64, size: impl Fn(usize) -> usize) -> Vec<SyntheticSample> {
    let mut sets = Vec::new();
    for g in 0..gens {
        for j in 0..k {
            sets.push((j, g, size(j)));
        }
    }
    let mut p = placeholder_pool(&sets);
    for s in &mut p {
        s.text = format!("e{} g{} #{}", s.entity, s.generation, s.index);
    }
    p
}

fn cfg(policy: PoolPolicy, topology: Option<Topology>, n: usize) -> MixtureConfig {
    MixtureConfig { alpha: 0.5, beta: 0.5, n, pool_policy: policy, topology, ..Default::default() }
}

/// n = 120, alpha = 0.5: 30 private, 30 public, 60 synthetic split by the topology's row.
fn expected(t: &Topology, trainee: usize) -> Vec<usize> {
    match t {
        Topology::All => vec![20, 20, 20],
        Topology::SelfOnly => (0..3).map(|j| if j == trainee { 60 } else { 0 }).collect(),
        Topology::Ring => (0..3).map(|j| if (j + 1) % 3 == trainee { 60 } else { 0 }).collect(),
        Topology::Matrix(_) => [[30, 15, 15], [0, 60, 0], [15, 0, 45]][trainee].to_vec(),
    }
}

fn topologies() -> Vec<Topology> {
    vec![
        Topology::All,
        Topology::SelfOnly,
        Topology::Ring,
        Topology::Matrix(vec![vec![2.0, 1.0, 1.0], vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 3.0]]),
    ]
}

#[test]
fn every_topology_and_pool_policy_gets_exact_per_producer_counts() {
    let (private, public) = (examples("priv", 500), examples("pub", 500));
    let (k, t) = (3, 2u64);
    for policy in [PoolPolicy::Latest, PoolPolicy::Accumulate, PoolPolicy::Replace] {
        for topo in topologies() {
            for rounding in [Rounding::LargestRemainder, Rounding::Multinomial] {
                let c = MixtureConfig { rounding, ..cfg(policy, Some(topo.clone()), 120) };
                // Each producer's set is as large as the prompt count says: the most any trainee draws.
                let sizes: Vec<usize> = (0..k).map(|j| synthetic_count(&c, t - 1, j, k)).collect();
                if rounding == Rounding::LargestRemainder {
                    let most: Vec<usize> = (0..k).map(|j| (0..k).map(|e| expected(&topo, e)[j]).max().unwrap()).collect();
                    assert_eq!(sizes, most, "{policy:?} {topo:?}");
                }
                let p = pool(k, t, |j| sizes[j].max(1));
                for e in 0..k {
                    let m = sample_mixture(&c, 11, t, e, k, &private, &public, &p).unwrap();
                    let got: Vec<usize> = (0..k).map(|j| m.count(SourceKind::Synthetic, Some(j))).collect();
                    let reads = topo.shares(k)[e].clone();
                    for (j, &n) in got.iter().enumerate() {
                        assert!(reads[j] > 0.0 || n == 0, "{policy:?} {topo:?}: trainee {e} read producer {j}");
                    }
                    if rounding == Rounding::LargestRemainder {
                        assert_eq!(got, expected(&topo, e), "{policy:?} {topo:?} trainee {e}");
                        assert_eq!((m.count(SourceKind::Private, None), m.count(SourceKind::Public, None)), (30, 30));
                        // The manifest's allocation records the same per-source counts.
                        for a in m.allocation.iter().filter(|a| a.slot.kind == SourceKind::Synthetic) {
                            assert_eq!(a.count, got[a.slot.entity.unwrap()], "{policy:?} {topo:?}");
                        }
                        // Under the prompt counts' set sizes nobody draws with replacement.
                        assert!(m.warnings.is_empty(), "{policy:?} {topo:?}: {:?}", m.warnings);
                    }
                    // The pool policy picks the generations: latest/replace only t-1.
                    for d in m.samples.iter().filter(|d| d.origin.source == SourceKind::Synthetic) {
                        let g = d.origin.generation.unwrap();
                        match policy {
                            PoolPolicy::Accumulate => assert!(g < t),
                            _ => assert_eq!(g, t - 1),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn default_topology_is_all_and_replace_means_self() {
    let (private, public) = (examples("priv", 100), examples("pub", 100));
    let p = pool(3, 1, |_| 40);
    for (policy, same_as) in [(PoolPolicy::Latest, Topology::All), (PoolPolicy::Accumulate, Topology::All), (PoolPolicy::Replace, Topology::SelfOnly)] {
        for e in 0..3 {
            let implicit = sample_mixture(&cfg(policy, None, 120), 5, 1, e, 3, &private, &public, &p).unwrap();
            let explicit = sample_mixture(&cfg(policy, Some(same_as.clone()), 120), 5, 1, e, 3, &private, &public, &p).unwrap();
            assert_eq!(implicit, explicit, "{policy:?}");
        }
    }
    // A matrix of equal weights is "all", to the bit.
    let ones = Topology::Matrix(vec![vec![1.0; 3]; 3]);
    for e in 0..3 {
        let a = sample_mixture(&cfg(PoolPolicy::Latest, None, 121), 5, 1, e, 3, &private, &public, &p).unwrap();
        let b = sample_mixture(&cfg(PoolPolicy::Latest, Some(ones.clone()), 121), 5, 1, e, 3, &private, &public, &p).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn bad_topologies_name_the_key() {
    let err = |t: Topology, k: usize| cfg(PoolPolicy::Latest, Some(t), 10).validate_for(k).unwrap_err().to_string();
    let e = err(Topology::Matrix(vec![vec![1.0, 0.0], vec![0.0, 1.0]]), 3);
    assert!(e.contains("mixture.topology") && e.contains("3×3"), "{e}");
    let e = err(Topology::Matrix(vec![vec![1.0, 0.0], vec![0.0]]), 2);
    assert!(e.contains("mixture.topology") && e.contains("2×2"), "{e}");
    let e = err(Topology::Matrix(vec![vec![1.0, -0.5], vec![0.0, 1.0]]), 2);
    assert!(e.contains("mixture.topology") && e.contains("[0][1] = -0.5") && e.contains("non-negative"), "{e}");
    let e = err(Topology::Matrix(vec![vec![1.0, 0.0], vec![0.0, 0.0]]), 2);
    assert!(e.contains("mixture.topology") && e.contains("row 1 sums to 0"), "{e}");
    for t in [Topology::All, Topology::Ring, Topology::Matrix(vec![vec![1.0]])] {
        let e = err(t, 1);
        assert!(e.contains("mixture.topology") && e.contains("k = 1") && e.contains("\"self\""), "{e}");
    }
    assert!(cfg(PoolPolicy::Latest, Some(Topology::SelfOnly), 10).validate_for(1).is_ok());
    // sample_mixture checks it too.
    let c = cfg(PoolPolicy::Latest, Some(Topology::Matrix(vec![vec![1.0]])), 10);
    assert!(sample_mixture(&c, 0, 1, 0, 2, &[], &[], &[]).unwrap_err().to_string().contains("mixture.topology"));
}

#[test]
fn topology_parses_names_and_matrices() {
    #[derive(serde::Deserialize)]
    struct W {
        topology: Topology,
    }
    let parse = |s: &str| toml::from_str::<W>(&format!("topology = {s}")).map(|w| w.topology);
    assert_eq!(parse("\"all\"").unwrap(), Topology::All);
    assert_eq!(parse("\"self\"").unwrap(), Topology::SelfOnly);
    assert_eq!(parse("\"ring\"").unwrap(), Topology::Ring);
    assert_eq!(parse("[[1, 0.5], [0, 2]]").unwrap(), Topology::Matrix(vec![vec![1.0, 0.5], vec![0.0, 2.0]]));
    let e = parse("\"star\"").unwrap_err().to_string();
    assert!(e.contains("mixture.topology = \"star\"") && e.contains("ring"), "{e}");
}
