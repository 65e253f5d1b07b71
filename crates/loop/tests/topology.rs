//! Sharing topologies end to end on the tiny config: the per-source counts the config asks for under
//! every pool policy, full and lazy generation alike; `all` is today's run; config errors name the key.

use std::path::{Path, PathBuf};

use crossfeed_loop::{Event, ExperimentConfig, LoopError, RunDir, Runner};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn tiny(extra: &[&str]) -> Result<ExperimentConfig, LoopError> {
    let text = std::fs::read_to_string(repo().join("configs/tiny.toml")).unwrap();
    let mut sets = vec![format!("base_model=\"{}\"", repo().join("tests/fixtures/models/llama32").display())];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut cfg = ExperimentConfig::from_toml_str(&text, "tiny.toml", &sets)?;
    cfg.resolve_base_model()?;
    Ok(cfg)
}

fn run(runs: &Path, cfg: &ExperimentConfig) {
    let dir = RunDir::create(runs, cfg).unwrap();
    let mut r = Runner::new(dir, cfg.clone(), None).unwrap();
    r.run(None, &mut |_: &Event| {}).unwrap();
}

/// Synthetic count per producer in train(t, e)'s `mixture.json` (producers absent from it: 0).
fn synthetic_counts(root: &Path, t: u64, e: usize, k: usize) -> Vec<usize> {
    let p = root.join(format!("gen-{t:03}/entity-{e}/mixture.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut out = vec![0; k];
    for a in v["allocation"].as_array().unwrap() {
        if a["slot"]["kind"] == "synthetic" {
            out[a["slot"]["entity"].as_u64().unwrap() as usize] = a["count"].as_u64().unwrap() as usize;
        }
    }
    out
}

/// Producers of the synthetic lines of train(t, e)'s manifest, counted.
fn manifest_producers(root: &Path, t: u64, e: usize, k: usize) -> Vec<usize> {
    let m = std::fs::read_to_string(root.join(format!("gen-{t:03}/entity-{e}/manifest.jsonl"))).unwrap();
    let mut out = vec![0; k];
    for l in m.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["origin"]["source"] == "synthetic" {
            out[v["origin"]["entity"].as_u64().unwrap() as usize] += 1;
        }
    }
    out
}

#[test]
fn topologies_give_the_configured_counts_under_every_pool_policy_full_and_lazy() {
    // K = 3, n = 24, alpha = 0.5: 12 synthetic samples per trainee, split by the topology's row.
    let topologies: [(&str, [[usize; 3]; 3]); 3] = [
        ("\"self\"", [[12, 0, 0], [0, 12, 0], [0, 0, 12]]),
        ("\"ring\"", [[0, 0, 12], [12, 0, 0], [0, 12, 0]]),
        ("[[1, 1, 0], [0, 0, 1], [2, 0, 1]]", [[6, 6, 0], [0, 0, 12], [8, 0, 4]]),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (ti, (topo, want)) in topologies.into_iter().enumerate() {
        for (policy, pool) in [("latest", "full"), ("latest", "lazy"), ("replace", "lazy"), ("accumulate", "full")] {
            let sets = [
                "k=3".to_string(),
                "n=24".into(),
                "generations=3".into(),
                format!("mixture.topology={topo}"),
                format!("mixture.pool_policy=\"{policy}\""),
                format!("generation.pool=\"{pool}\""),
            ];
            let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
            let cfg = tiny(&refs).unwrap();
            let runs = tmp.path().join(format!("{ti}-{policy}-{pool}"));
            run(&runs, &cfg);
            let root = runs.join("tiny");
            for t in 1..3 {
                for (e, want) in want.iter().enumerate() {
                    let at = format!("{topo} {policy} {pool} gen {t} entity {e}");
                    assert_eq!(synthetic_counts(&root, t, e, 3), want.to_vec(), "{at}: mixture.json");
                    assert_eq!(manifest_producers(&root, t, e, 3), want.to_vec(), "{at}: manifest.jsonl");
                }
            }
        }
        // Lazy generation makes exactly the run full generation makes.
        let full = tmp.path().join(format!("{ti}-latest-full/tiny"));
        let lazy = tmp.path().join(format!("{ti}-latest-lazy/tiny"));
        let mut files = vec!["metrics.jsonl".to_string()];
        for t in 0..3 {
            for e in 0..3 {
                for f in ["model/model.safetensors", "manifest.jsonl", "eval.jsonl"] {
                    files.push(format!("gen-{t:03}/entity-{e}/{f}"));
                }
            }
        }
        for f in &files {
            assert_eq!(std::fs::read(full.join(f)).unwrap(), std::fs::read(lazy.join(f)).unwrap(), "{topo}: {f} differs between full and lazy");
        }
    }
}

#[test]
fn explicit_all_is_the_default_run_to_the_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let default = tiny(&[]).unwrap();
    let all = tiny(&["mixture.topology=\"all\""]).unwrap();
    // Unset, the key stays out of the resolved config (run directories made before it still match).
    assert!(!default.to_toml().unwrap().contains("topology"));
    run(&tmp.path().join("default"), &default);
    run(&tmp.path().join("all"), &all);
    let mut files = vec!["metrics.jsonl".to_string()];
    for t in 0..3 {
        for e in 0..2 {
            for f in ["manifest.jsonl", "mixture.json", "model/model.safetensors"] {
                files.push(format!("gen-{t:03}/entity-{e}/{f}"));
            }
        }
    }
    for f in &files {
        let (a, b) = (tmp.path().join("default/tiny").join(f), tmp.path().join("all/tiny").join(f));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(b).unwrap(), "{f}");
        // And both draw what the tiny run drew before topologies existed.
        if !f.ends_with(".safetensors") && f.starts_with("gen-") {
            let before = repo().join("tests/fixtures/topology-all").join(f);
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(before).unwrap(), "{f} differs from the run before topologies");
        }
    }
}

#[test]
fn topology_errors_name_the_key_and_dry_run_prints_the_matrix() {
    let err = |sets: &[&str]| tiny(sets).unwrap_err().to_string();
    let e = err(&["mixture.topology=[[1, 0], [0, 1], [1, 1]]"]);
    assert!(e.contains("mixture.topology") && e.contains("2×2"), "{e}");
    let e = err(&["mixture.topology=[[1, -1], [0, 1]]"]);
    assert!(e.contains("mixture.topology") && e.contains("non-negative"), "{e}");
    let e = err(&["k=1", "mixture.topology=\"ring\""]);
    assert!(e.contains("mixture.topology") && e.contains("k = 1"), "{e}");
    let e = err(&["mixture.topology=\"star\""]);
    assert!(e.contains("mixture.topology") && e.contains("star"), "{e}");
    assert!(tiny(&["k=1", "mixture.topology=\"self\""]).is_ok());

    // The resolved config (what a run directory stores and resumes compare) round-trips a matrix.
    let c = tiny(&["mixture.topology=[[3, 1], [0, 1]]"]).unwrap();
    assert_eq!(ExperimentConfig::from_toml_str(&c.to_toml().unwrap(), "resolved", &[]).unwrap(), c);
    let table = crossfeed_loop::dryrun::topology_table(&tiny(&["mixture.topology=[[3, 1], [0, 1]]"]).unwrap());
    assert!(table.contains("topology a 2×2 matrix"), "{table}");
    assert!(table.contains("0.750   0.250") && table.contains("0.000   1.000"), "{table}");
    let table = crossfeed_loop::dryrun::topology_table(&tiny(&["mixture.pool_policy=\"replace\""]).unwrap());
    assert!(table.contains("\"self\" (the default for this pool_policy)"), "{table}");
}

#[test]
fn classic_collapse_configs_parse_with_their_topologies() {
    use crossfeed_data::{PoolPolicy, Topology};
    let load = |name: &str| ExperimentConfig::load(&repo().join("configs").join(name), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = load("collapse-opt350m-k1-replace.toml");
    assert_eq!((c.k, c.alpha, c.beta, c.mixture.pool_policy), (1, 1.0, 0.0, PoolPolicy::Replace));
    assert_eq!(c.mixture().effective_topology(), Topology::SelfOnly);
    let c = load("collapse-opt350m-k1-accumulate.toml");
    assert_eq!((c.k, c.beta, c.mixture.pool_policy), (1, 0.0, PoolPolicy::Accumulate));
    let c = load("collapse-opt350m-k2-self.toml");
    assert_eq!(c.mixture.topology, Some(Topology::SelfOnly));
    // The self config is the paper's config but for the topology.
    let mut paper = load("paper-opt350m-k2-b0.5-a0.5.toml");
    paper.name = c.name.clone();
    paper.mixture.topology = Some(Topology::SelfOnly);
    assert_eq!(paper, c);
}

/// A trainee waits only for the producers its topology row reads: under `self` train(t, e) depends on
/// generate(t, e) alone (and its own warm start), under `ring` on generate(t, e-1); `all` on everyone.
#[test]
fn train_stages_wait_only_for_the_producers_they_read() {
    use crossfeed_loop::plan::dependencies;
    use crossfeed_loop::{GenId, Stage, StageId};
    let generates = |cfg: &ExperimentConfig, t: u64, e: usize| -> Vec<usize> {
        let id = StageId { gen: GenId::Gen(t), entity: Some(e), stage: Stage::Train };
        dependencies(cfg, &id).into_iter().filter(|d| d.stage == Stage::Generate).filter_map(|d| d.entity).collect()
    };
    for (topology, policy, want) in [
        ("\"self\"", "latest", vec![vec![0], vec![1], vec![2]]),
        ("\"ring\"", "latest", vec![vec![2], vec![0], vec![1]]),
        ("\"all\"", "latest", vec![vec![0, 1, 2]; 3]),
        ("[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]", "latest", vec![vec![1], vec![1], vec![0, 2]]),
        ("\"self\"", "accumulate", vec![vec![0, 0], vec![1, 1], vec![2, 2]]),
    ] {
        let cfg = tiny(&["k=3", &format!("mixture.topology={topology}"), &format!("mixture.pool_policy=\"{policy}\"")]).unwrap();
        for (e, w) in want.iter().enumerate() {
            let t = if policy == "accumulate" { 2 } else { 1 };
            assert_eq!(&generates(&cfg, t, e), w, "{topology} {policy}: train({t}, {e})");
        }
    }
}
