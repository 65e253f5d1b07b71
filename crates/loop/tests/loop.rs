//! The loop end to end on the tiny config: artefacts, byte-identical resume, config errors, K = 1.

use std::path::{Path, PathBuf};

use crossfeed_loop::plan::plan;
use crossfeed_loop::{Event, ExperimentConfig, GenId, LoopError, RunDir, Runner, Stage, StageId};

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

fn quiet() -> impl FnMut(&Event) {
    |_: &Event| {}
}

fn run(runs: &Path, cfg: &ExperimentConfig, stop: Option<StageId>) -> Result<(), LoopError> {
    let dir = RunDir::create(runs, cfg)?;
    let mut r = Runner::new(dir, cfg.clone(), None)?;
    r.run(stop, &mut quiet()).map(|_| ())
}

#[test]
fn tiny_run_artefacts_and_byte_identical_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&[]).unwrap();
    let straight = tmp.path().join("a");
    run(&straight, &cfg, None).unwrap();
    let root = straight.join("tiny");
    for f in ["config.toml", "metrics.jsonl", "metrics.csv", "gen-base/eval.jsonl", "gen-base/eval.DONE", "gen-base/similarity.DONE"] {
        assert!(root.join(f).is_file(), "missing {f}");
    }
    for t in 0..cfg.generations {
        let g = root.join(format!("gen-{t:03}"));
        assert!(g.join("similarity.jsonl").is_file());
        for e in 0..cfg.k {
            let d = g.join(format!("entity-{e}"));
            let mut files = vec!["model/model.safetensors", "model/optimizer.safetensors", "manifest.jsonl", "train_log.jsonl", "eval.jsonl", "outputs.jsonl", "train.DONE", "eval.DONE"];
            if t >= 1 {
                files.extend(["synthetic.jsonl", "generate.DONE"]);
            }
            for f in files {
                assert!(d.join(f).is_file(), "missing gen {t} entity {e} {f}");
            }
        }
    }
    // One CE line per generation × entity × eval set (2 tasks + public), plus the base model's 3.
    let metrics = std::fs::read_to_string(root.join("metrics.jsonl")).unwrap();
    let ce = metrics.lines().filter(|l| l.contains("\"metric\":\"ce\"")).count();
    assert_eq!(ce, 3 + 3 * 2 * 3);
    assert!(metrics.contains("distinct_2"));
    // Generation 1 trains on synthetic data of both entities (alpha = 0.5, K = 2).
    let manifest = std::fs::read_to_string(root.join("gen-001/entity-0/manifest.jsonl")).unwrap();
    assert!(manifest.contains("\"source\":\"synthetic\",\"entity\":1"));
    assert!(manifest.contains("\"source\":\"synthetic\",\"entity\":0"));
    // Generation 0 trains on real data only.
    assert!(!std::fs::read_to_string(root.join("gen-000/entity-1/manifest.jsonl")).unwrap().contains("synthetic"));

    // Interrupted twice (after a train stage mid-generation, and after an eval stage), then resumed
    // in fresh runners: same bytes.
    let interrupted = tmp.path().join("b");
    let stop1 = StageId { gen: GenId::Gen(1), entity: Some(0), stage: Stage::Train };
    assert!(matches!(run(&interrupted, &cfg, Some(stop1)), Err(LoopError::Stopped(_))));
    let stop2 = StageId { gen: GenId::Gen(2), entity: Some(1), stage: Stage::Eval };
    assert!(matches!(run(&interrupted, &cfg, Some(stop2)), Err(LoopError::Stopped(_))));
    // A half-written stage (files but no marker) is redone.
    let half = interrupted.join("tiny/gen-002/similarity.jsonl");
    std::fs::write(&half, "garbage").unwrap();
    let (dir, stored) = RunDir::open(&interrupted.join("tiny")).unwrap();
    let mut skipped = 0;
    Runner::new(dir, stored, None)
        .unwrap()
        .run(None, &mut |e: &Event| {
            if matches!(e, Event::Skipped(_)) {
                skipped += 1
            }
        })
        .unwrap();
    assert!(skipped > 10, "resume should skip finished stages");
    for f in ["metrics.jsonl", "metrics.csv", "gen-002/entity-1/synthetic.jsonl", "gen-002/entity-0/manifest.jsonl", "gen-002/entity-1/model/model.safetensors"] {
        assert_eq!(std::fs::read(root.join(f)).unwrap(), std::fs::read(interrupted.join("tiny").join(f)).unwrap(), "{f} differs after resume");
    }

    // Every stage of the plan is done, and its checksums still match.
    let (dir, stored) = RunDir::open(&root).unwrap();
    for id in plan(&stored) {
        assert!(dir.is_done(&id), "{id}");
        assert!(dir.verify(&id).unwrap().is_empty(), "{id} checksum");
    }

    // The same run dir with a different config is refused, naming the key; nothing changes.
    let before = std::fs::read(root.join("config.toml")).unwrap();
    let other = tiny(&["alpha=0.25"]).unwrap();
    match RunDir::create(&straight, &other) {
        Err(LoopError::ConfigMismatch { diffs, .. }) => assert!(diffs.iter().any(|d| d.starts_with("alpha:")), "{diffs:?}"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
    assert_eq!(before, std::fs::read(root.join("config.toml")).unwrap());
    // The same config reopens it (idempotent).
    RunDir::create(&straight, &cfg).unwrap();

    // Report.
    let mut r = Runner::new(dir.clone(), stored.clone(), None).unwrap();
    let names = r.eval_set_names().unwrap();
    let rep = crossfeed_loop::write_report(&dir, &stored, &names).unwrap();
    assert!(rep.markdown.contains("| M1 | toy_arithmetic"), "{}", rep.markdown);
    assert!(root.join("report.md").is_file());
    for f in ["ce.svg", "ce.png", "similarity.svg", "similarity.png"] {
        assert!(root.join(f).is_file(), "report did not write {f}");
    }
}

#[test]
fn k1_is_the_classic_self_consuming_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&["k=1", "name=\"tiny-k1\"", "generations=2", "alpha=1.0", "keep_last=1"]).unwrap();
    run(tmp.path(), &cfg, None).unwrap();
    let root = tmp.path().join("tiny-k1");
    let manifest = std::fs::read_to_string(root.join("gen-001/entity-0/manifest.jsonl")).unwrap();
    assert!(manifest.lines().all(|l| l.contains("\"source\":\"synthetic\",\"entity\":0")));
    assert!(root.join("metrics.jsonl").is_file());
    assert!(!root.join("gen-001/entity-1").exists());
    // keep_last = 1: only the last generation's checkpoint is kept.
    assert!(!root.join("gen-000/entity-0/model").exists());
    assert!(root.join("gen-001/entity-0/model/model.safetensors").is_file());
}

/// Drivers creating one run at the same moment all open it (one writes the config, the rest find it);
/// a directory holding anything but a config is still refused, and one with a different config too.
#[test]
fn drivers_creating_one_run_at_once_all_open_it() {
    let cfg = tiny(&[]).unwrap();
    for round in 0..200 {
        let tmp = tempfile::tempdir().unwrap();
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (runs, cfg, barrier) = (tmp.path(), &cfg, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let dir = RunDir::create(runs, cfg).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    // What a driver writes next (its lock), while the others may still be looking.
                    std::fs::write(dir.run_lock_path(), "").unwrap();
                });
            }
        });
        let mut names: Vec<_> = std::fs::read_dir(tmp.path().join(&cfg.name)).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["config.toml", "run.lock"], "round {round}");
    }
    let tmp = tempfile::tempdir().unwrap();
    // A config temp file another driver left when it died is not in the way.
    std::fs::create_dir_all(tmp.path().join(&cfg.name)).unwrap();
    std::fs::write(tmp.path().join(&cfg.name).join("config.toml.tmp-1-0"), "half a con").unwrap();
    RunDir::create(tmp.path(), &cfg).unwrap();
    std::fs::remove_file(tmp.path().join(&cfg.name).join("config.toml")).unwrap();
    std::fs::write(tmp.path().join(&cfg.name).join("notes.txt"), "mine").unwrap();
    let e = RunDir::create(tmp.path(), &cfg).unwrap_err().to_string();
    assert!(e.contains("refusing to write into it"), "{e}");
}

#[test]
fn config_errors_are_clear() {
    let err = |sets: &[&str]| tiny(sets).unwrap_err().to_string();
    let e = err(&["alpah=0.5"]);
    assert!(e.contains("alpah") && e.contains("alpha"), "{e}");
    let e = err(&["train.lrr=1e-4"]);
    assert!(e.contains("lrr") && e.contains("lr"), "{e}");
    // Inside the flattened generation section too.
    let e = err(&["generation.temprature=0.5"]);
    assert!(e.contains("generation.temprature") && e.contains("temperature"), "{e}");
    let e = err(&["alpha=1.5"]);
    assert!(e.contains("alpha = 1.5") && e.contains("[0, 1]"), "{e}");
    let e = err(&["generation.top_p=1.5"]);
    assert!(e.contains("generation.top_p = 1.5") && e.contains("0 < top_p <= 1"), "{e}");
    let e = err(&["beta=-0.1"]);
    assert!(e.contains("beta"), "{e}");
    let e = err(&["k=4"]);
    assert!(e.contains("k = 4") && e.contains("3 private task"), "{e}");
    let e = err(&["base_model=\"/nonexistent/model/dir\""]);
    assert!(e.contains("/nonexistent/model/dir") && e.contains("does not exist"), "{e}");
    let e = err(&["eval.self_bleu_samples=1"]);
    assert!(e.contains("eval.self_bleu_samples = 1") && e.contains("at least 2"), "{e}");
    let e = err(&["noequals"]);
    assert!(e.contains("noequals"), "{e}");
    let e = err(&["attention=\"flash\""]);
    assert!(e.contains("attention") && e.contains("\"flash\"") && e.contains("sdpa, eager"), "{e}");
    assert_eq!(tiny(&[]).unwrap().attention, "sdpa");
    assert_eq!(tiny(&["attention=\"eager\""]).unwrap().attention, "eager");
    // Overrides reach nested keys and list entries.
    let c = tiny(&["train.lr=1e-4", "private.0.train_size=8", "mixture.pool_policy=\"accumulate\""]).unwrap();
    assert_eq!(c.train.lr, 1e-4);
    assert_eq!(c.private[0].train_size, Some(8));
}

#[test]
fn missing_model_dir_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(tiny(&["base_model=\"./relative/missing\""]).is_err());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn every_shipped_config_parses() {
    let dir = repo().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "tiny.toml" || (name.starts_with("paper-") && name.ends_with(".toml")) {
            let c = ExperimentConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The resolved form round-trips.
            let back = ExperimentConfig::from_toml_str(&c.to_toml().unwrap(), &name, &[]).unwrap();
            assert_eq!(c, back, "{name}");
            n += 1;
        }
    }
    assert!(n >= 1);
}

/// An old generation's eval that is still pending (or failed) when later generations finish — what
/// workers and Slurm's `afterany` allow — keeps its model: pruning waits for every stage that reads a
/// checkpoint, and the run then completes with the serial run's metrics.
#[test]
fn pruning_keeps_a_checkpoint_until_its_last_reader_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&["name=\"tiny-prune\"", "generations=3", "keep_last=1"]).unwrap();
    run(&tmp.path().join("serial"), &cfg, None).unwrap();

    let dir = RunDir::create(&tmp.path().join("late"), &cfg).unwrap();
    let root = dir.root.clone();
    let mut r = Runner::new(dir.clone(), cfg.clone(), None).unwrap();
    let late = [
        StageId { gen: GenId::Gen(0), entity: Some(0), stage: Stage::Eval },
        StageId { gen: GenId::Gen(0), entity: None, stage: Stage::Similarity },
    ];
    // Every other stage in plan order, each followed by what a worker or Slurm task does after it.
    for id in plan(&cfg).into_iter().filter(|id| !late.contains(id)) {
        r.run_stage_if_needed(&id, &mut quiet()).unwrap();
        crossfeed_loop::finish::finish_stage(&dir, &cfg).unwrap();
    }
    assert!(root.join("gen-000/entity-0/model/model.safetensors").is_file(), "pruned while its eval is pending");
    assert!(!root.join("gen-000/entity-1/model").exists(), "every reader of gen 0 entity 1 is done: pruned");
    assert!(!root.join("gen-001/entity-0/model").exists());
    for id in late {
        r.run_stage_if_needed(&id, &mut quiet()).unwrap();
        crossfeed_loop::finish::finish_stage(&dir, &cfg).unwrap();
    }
    assert!(!root.join("gen-000/entity-0/model").exists(), "its last reader is done: pruned");
    assert!(root.join("gen-002/entity-0/model/model.safetensors").is_file());
    let metrics = |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics(&root), metrics(&tmp.path().join("serial/tiny-prune")));
}

/// The plan is the one stage order: within a generation by `Stage::rank`, and Slurm's steps are the
/// plan's (generation, group) pairs in that order — shards before their merge.
#[test]
fn plan_order_is_the_stage_rank_and_slurm_steps_follow_it() {
    let cfg = tiny(&["generation.shards=2"]).unwrap();
    let p = plan(&cfg);
    let keys: Vec<(GenId, u8)> = p.iter().map(|id| (id.gen, id.stage.rank())).collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "plan out of rank order: {p:?}");
    let steps = crossfeed_loop::plan::steps([&cfg]);
    let mut want = vec![(GenId::Base, "eval"), (GenId::Base, "similarity")];
    for t in 0..cfg.generations {
        let g = GenId::Gen(t);
        if t >= 1 {
            want.extend([(g, "generate-shard"), (g, "generate")]);
        }
        want.extend([(g, "train"), (g, "eval"), (g, "similarity")]);
    }
    assert_eq!(steps, want);
    // Every stage's dependencies come earlier in the plan.
    for (i, id) in p.iter().enumerate() {
        for d in crossfeed_loop::plan::dependencies(&cfg, id) {
            assert!(p[..i].contains(&d), "{id} depends on {d}, planned later");
        }
    }
}

/// Two pruners interleaved: the second deletes the checkpoint between the first's look and its
/// delete (what two workers finishing at once did before pruning ran under the records lock). The first
/// must not fail a stage whose work is done; both leave the same tree.
#[test]
fn pruning_twice_at_once_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&["name=\"tiny-prune2\"", "generations=2", "keep_last=1"]).unwrap();
    // keep_last = 0 while running, so every checkpoint is still there for the pruners below.
    let mut keep_all = cfg.clone();
    keep_all.keep_last = 0;
    run(tmp.path(), &keep_all, None).unwrap();
    let dir = RunDir { root: tmp.path().join("tiny-prune2") };
    assert!(dir.model_dir(GenId::Gen(0), 0).is_dir());
    let mut inner = 0;
    crossfeed_loop::finish::prune_with(&dir, &cfg, &mut |d| {
        // The other pruner wins the race for this directory (and prunes everything it may).
        crossfeed_loop::finish::prune_with(&dir, &cfg, &mut |_| {}).unwrap();
        assert!(!d.exists());
        inner += 1;
    })
    .unwrap();
    assert_eq!(inner, 1, "the first pruner found one directory left to delete before the other won");
    for e in 0..cfg.k {
        assert!(!dir.model_dir(GenId::Gen(0), e).exists());
        assert!(dir.model_dir(GenId::Gen(1), e).join("model.safetensors").is_file());
    }
}

/// `tb/` holds every metric of metrics.jsonl and every train step, CRC-checked on the way back, and
/// is rewritten (never appended to) on a resume.
#[test]
fn tensorboard_events_hold_every_metric_and_train_step() {
    use crossfeed_loop::tensorboard::{crc32c, decode, event_file};
    // RFC 3720's check value for CRC-32C.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&["name=\"tiny-tb\"", "generations=2"]).unwrap();
    let stop = plan(&cfg).into_iter().find(|id| id.stage == Stage::Similarity && id.gen == GenId::Gen(0));
    assert!(matches!(run(tmp.path(), &cfg, stop), Err(LoopError::Stopped(_))));
    run(tmp.path(), &cfg, None).unwrap();
    let root = tmp.path().join("tiny-tb");
    let scalars = decode(&std::fs::read(event_file(&root)).unwrap()).unwrap();
    let metrics = std::fs::read_to_string(root.join("metrics.jsonl")).unwrap();
    let mut want = 0;
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let tag = match (m["entity"].as_u64(), m["peer"].as_u64()) {
            (Some(e), Some(p)) => format!("{}/{}/entity{e}-{p}", m["metric"].as_str().unwrap(), m["eval_set"].as_str().unwrap()),
            (Some(e), None) => format!("{}/{}/entity{e}", m["metric"].as_str().unwrap(), m["eval_set"].as_str().unwrap()),
            (None, _) => format!("{}/{}", m["metric"].as_str().unwrap(), m["eval_set"].as_str().unwrap()),
        };
        let step = m["generation"].as_i64().unwrap();
        let got: Vec<_> = scalars.iter().filter(|s| s.tag == tag && s.step == step).collect();
        assert_eq!(got.len(), 1, "{tag} at {step}: {got:?}");
        assert_eq!(got[0].value, m["value"].as_f64().unwrap() as f32, "{tag} at {step}");
        want += 1;
    }
    let steps = cfg.train.total_steps as usize;
    let train = scalars.iter().filter(|s| s.tag.starts_with("train/")).count();
    assert_eq!(train, cfg.generations as usize * cfg.k * steps * 3, "loss, lr, grad norm per step");
    assert_eq!(scalars.len(), want + train, "nothing else, nothing twice");
}

/// (generated, set size) of every generate stage of a finished run, from `generated.json`.
fn generated_counts(root: &Path, cfg: &ExperimentConfig) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for t in 1..cfg.generations {
        for e in 0..cfg.k {
            let p = root.join(format!("gen-{t:03}/entity-{e}/generated.json"));
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((v["generated"].as_u64().unwrap(), v["set_size"].as_u64().unwrap()));
        }
    }
    out
}

#[test]
fn lazy_generation_gives_the_eager_runs_metrics_and_models() {
    // The tiny config reads 4 of 16 positions per trainee; the second reads a smaller share of a
    // larger mixture, with sampling settings and a batch size that make batches differ between modes.
    let cases: [&[&str]; 2] = [&[], &["n=48", "alpha=0.25", "generations=3", "generation.batch_size=3", "generation.top_k=20", "mixture.rounding=\"multinomial\""]];
    for extra in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut roots = Vec::new();
        for pool in ["full", "lazy"] {
            let mut sets: Vec<&str> = extra.to_vec();
            let p = format!("generation.pool=\"{pool}\"");
            sets.push(&p);
            let cfg = tiny(&sets).unwrap();
            run(&tmp.path().join(pool), &cfg, None).unwrap();
            roots.push((tmp.path().join(pool).join("tiny"), cfg));
        }
        let ((full, cfg), (lazy, _)) = (&roots[0], &roots[1]);
        let eager = generated_counts(full, cfg);
        let lean = generated_counts(lazy, cfg);
        assert!(eager.iter().all(|(g, n)| g == n), "full mode generates every sample: {eager:?}");
        let (made, all): (u64, u64) = lean.iter().fold((0, 0), |(a, b), (g, n)| (a + g, b + n));
        assert!(made < all, "{extra:?}: lazy generated {made} of {all}");
        let mut files = vec!["metrics.jsonl".to_string(), "metrics.csv".to_string()];
        for t in 0..cfg.generations {
            for e in 0..cfg.k {
                for f in ["model/model.safetensors", "train_log.jsonl", "manifest.jsonl", "eval.jsonl", "outputs.jsonl"] {
                    files.push(format!("gen-{t:03}/entity-{e}/{f}"));
                }
            }
        }
        for f in &files {
            assert_eq!(std::fs::read(full.join(f)).unwrap(), std::fs::read(lazy.join(f)).unwrap(), "{extra:?}: {f} differs between full and lazy generation");
        }
        // Every lazily generated sample is byte-for-byte the eager one.
        for t in 1..cfg.generations {
            for e in 0..cfg.k {
                let f = format!("gen-{t:03}/entity-{e}/synthetic.jsonl");
                let eager = std::fs::read_to_string(full.join(&f)).unwrap();
                for line in std::fs::read_to_string(lazy.join(&f)).unwrap().lines() {
                    assert!(eager.lines().any(|l| l == line), "{extra:?}: {f}: {line} is not an eager sample");
                }
            }
        }
        // The manifest says which positions the optimizer steps read.
        let m = std::fs::read_to_string(lazy.join("gen-001/entity-0/manifest.jsonl")).unwrap();
        let read = m.lines().filter(|l| l.contains("\"read\":true")).count();
        assert_eq!(read as u64, cfg.train.total_steps * (cfg.train.batch_size * cfg.train.grad_accum) as u64);
    }
    // Lazy cannot be exact under accumulate: refused, naming both keys.
    let err = tiny(&["generation.pool=\"lazy\"", "mixture.pool_policy=\"accumulate\""]).unwrap_err().to_string();
    assert!(err.contains("generation.pool") && err.contains("accumulate"), "{err}");
    // auto is lazy except under accumulate.
    assert!(tiny(&[]).unwrap().lazy_generation());
    assert!(!tiny(&["mixture.pool_policy=\"accumulate\""]).unwrap().lazy_generation());
}

/// Task accuracy sits next to CE for every (generation, model, private task with a form): exact match
/// for the GSM8K-shaped toy_arithmetic, acc/acc_norm for toy_facts; `eval.accuracy = false` removes it.
#[test]
fn accuracy_lines_next_to_ce() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(&["name=\"tiny-acc\"", "generations=1"]).unwrap();
    run(tmp.path(), &cfg, None).unwrap();
    let metrics = std::fs::read_to_string(tmp.path().join("tiny-acc/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |metric: &str, set: &str| lines.iter().filter(|l| l["metric"] == metric && l["eval_set"] == set).count();
    // The base model plus K = 2 entities at generation 0.
    assert_eq!(count("exact_match", "toy_arithmetic"), 3);
    assert_eq!(count("exact_match_flexible", "toy_arithmetic"), 3);
    assert_eq!((count("acc", "toy_facts"), count("acc_norm", "toy_facts")), (3, 3));
    assert_eq!(count("acc", "public"), 0);
    for l in lines.iter().filter(|l| l["metric"] == "acc") {
        let (v, n) = (l["value"].as_f64().unwrap(), l["examples"].as_u64().unwrap());
        assert!(n > 0 && (0.0..=1.0).contains(&v) && (v * n as f64).fract().abs() < 1e-9, "{l}");
    }
    let acc = std::fs::read_to_string(tmp.path().join("tiny-acc/gen-000/entity-0/accuracy.jsonl")).unwrap();
    assert!(acc.contains("\"generation\"") && acc.contains("\"loglikelihoods\""));

    let off = tiny(&["name=\"tiny-noacc\"", "generations=1", "eval.accuracy=false"]).unwrap();
    run(tmp.path(), &off, None).unwrap();
    let metrics = std::fs::read_to_string(tmp.path().join("tiny-noacc/metrics.jsonl")).unwrap();
    assert!(!metrics.contains("\"acc\"") && !metrics.contains("exact_match"));
}
