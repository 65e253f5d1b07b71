//! The experiment commands: `run`, `resume`, `status`, `report`, `stage` (the loop lives in
//! crates/loop; this file parses arguments, prints progress and adds context to errors).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use crossfeed_loop::plan::plan;
use crossfeed_loop::{Event, ExperimentConfig, GenId, LoopError, RunDir, Runner, Stage, StageId};


#[derive(clap::Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Run an experiment (K entities trained on each other's outputs) into RUNS_DIR/NAME; an
    /// existing run of the same config is continued.
    Run(RunArgs),
    /// Continue a run from its last finished stage (optionally with more generations).
    Resume(ResumeArgs),
    /// Which stages of a run are done, with their wall time and tokens.
    Status(DirArgs),
    /// Write RUN_DIR/report.md (CE and accuracy init → final, similarity, collapse metrics and shared errors by generation) and print it.
    Report(DirArgs),
    /// Run a single stage of a run (its dependencies must be done).
    Stage(StageArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Experiment TOML; without one, `crossfeed run` runs the embedded demo (see `crossfeed demo`).
    pub config: Option<PathBuf>,
    /// Override a config key: --set alpha=0.5 --set train.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run name (default: the config's `name`).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Stop after one stage, e.g. `1:0:train` or `base::eval` (simulates an interruption; for tests).
    #[arg(long, hide = true)]
    pub stop_after: Option<String>,
    /// Print the stage plan with samples, tokens, memory and (with --bench) time per stage; run nothing.
    #[arg(long, requires = "config")]
    pub dry_run: bool,
    /// Measured throughputs for --dry-run's time estimate (JSON written by scripts/gpu-check.sh).
    #[arg(long, requires = "dry_run")]
    pub bench: Option<PathBuf>,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// How many stages run at once (default: one after another in this process).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ParallelArgs {
    /// Run independent stages at once in N worker processes on the config's device.
    #[arg(long, value_name = "N", conflicts_with = "devices")]
    pub workers: Option<usize>,
    /// One worker per device, e.g. --devices cuda:0,cuda:1 (overrides the config's device).
    #[arg(long, value_delimiter = ',', value_name = "DEV,...")]
    pub devices: Vec<String>,
}

impl ParallelArgs {
    /// Opens every device the run would use, before anything is written: a plain binary asked for
    /// `cuda` fails here naming `make cuda`, not in the first stage after the run directory exists.
    pub fn open_devices(&self, cfg: &ExperimentConfig) -> Result<()> {
        if self.devices.is_empty() {
            crossfeed_model::parse_device(&cfg.device).with_context(|| format!("{}: device = {:?}", cfg.name, cfg.device))?;
        }
        self.slots(cfg).map(|_| ())
    }

    /// The worker slots (a device each), or None for the serial in-process driver.
    pub fn slots(&self, cfg: &ExperimentConfig) -> Result<Option<Vec<String>>> {
        if !self.devices.is_empty() {
            for d in &self.devices {
                crossfeed_model::parse_device(d).with_context(|| format!("--devices {d}"))?;
            }
            return Ok(Some(self.devices.clone()));
        }
        match self.workers {
            Some(0) => bail!("--workers 0: at least one worker is needed"),
            Some(n) => Ok(Some(vec![cfg.device.clone(); n])),
            None => Ok(None),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    pub run_dir: PathBuf,
    /// Extend a run to this many generations.
    #[arg(long)]
    pub generations: Option<u64>,
    #[arg(long, hide = true)]
    pub stop_after: Option<String>,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

#[derive(clap::Args, Debug)]
pub struct DirArgs {
    pub run_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StageArgs {
    pub run_dir: PathBuf,
    /// `base` or a generation number.
    #[arg(long)]
    pub generation: String,
    /// Entity (omit for the `similarity` stage and the base model's `eval`).
    #[arg(long)]
    pub entity: Option<usize>,
    /// generate, generate-shard-N (with `generation.shards` > 1), train, eval or similarity.
    #[arg(long)]
    pub stage: String,
    /// Do nothing when the stage is done already (what workers and Slurm tasks run); without it a
    /// done stage is run again.
    #[arg(long)]
    pub if_needed: bool,
    /// Run on this device instead of the config's (a worker slot's device).
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run(c: ExperimentCommand) -> Result<()> {
    match c {
        ExperimentCommand::Run(a) => run_cmd(a),
        ExperimentCommand::Resume(a) => resume_cmd(a),
        ExperimentCommand::Status(a) => status_cmd(&a.run_dir),
        ExperimentCommand::Report(a) => report_cmd(&a.run_dir),
        ExperimentCommand::Stage(a) => stage_cmd(a),
    }
}

fn parse_stage_id(s: &str) -> Result<StageId> {
    let parts: Vec<&str> = s.split(':').collect();
    let [g, e, st] = parts[..] else { bail!("--stop-after {s:?}: expected GEN:ENTITY:STAGE, e.g. 1:0:train") };
    let gen = GenId::parse(g).with_context(|| format!("--stop-after {s:?}: bad generation {g:?}"))?;
    let entity = if e.is_empty() { None } else { Some(e.parse().with_context(|| format!("--stop-after {s:?}: bad entity {e:?}"))?) };
    let stage = Stage::parse(st).with_context(|| format!("--stop-after {s:?}: bad stage {st:?}"))?;
    Ok(StageId { gen, entity, stage })
}

fn printer() -> impl FnMut(&Event) {
    |ev: &Event| match ev {
        Event::Skipped(id) => eprintln!("  done already: {id}"),
        Event::Started(_) => {}
        Event::Done { id, wall_s, tokens, note } => {
            let rate = if *wall_s > 0.0 { *tokens as f64 / wall_s } else { 0.0 };
            eprintln!("  {:<36} {wall_s:>8.2}s {tokens:>9} tok {rate:>9.0} tok/s  {note}", id.to_string());
        }
        Event::Warning(w) => eprintln!("  warning: {w}"),
        Event::GenerationDone { gen, wall_s, tokens } => {
            eprintln!(
                "generation {gen} finished: {wall_s:.2}s, {tokens} tokens ({:.0} tok/s), peak memory {}",
                *tokens as f64 / wall_s.max(1e-9),
                peak_rss().map_or_else(|| "n/a".to_string(), |kb| format!("{:.0} MiB", kb as f64 / 1024.0))
            )
        }
    }
}

/// The process's peak resident set (VmHWM, KiB) where /proc exists.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn drive(runner: &mut Runner, stop_after: Option<String>) -> Result<()> {
    let stop = stop_after.as_deref().map(parse_stage_id).transpose()?;
    let start = std::time::Instant::now();
    let mut p = printer();
    match runner.run(stop, &mut p) {
        Ok(lines) => {
            eprintln!(
                "run finished in {:.2}s: {} metric lines in {}",
                start.elapsed().as_secs_f64(),
                lines.len(),
                runner.dir.root.join("metrics.jsonl").display()
            );
            println!("{}", runner.dir.root.display());
            Ok(())
        }
        Err(LoopError::Stopped(what)) => {
            eprintln!("stopped after {what}; continue with `crossfeed resume {}`", runner.dir.root.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("run {}", runner.dir.root.display())),
    }
}

/// Runs the unfinished stages of `dir` in worker processes (`crossfeed stage --if-needed`), one per slot.
pub(crate) fn drive_parallel(dir: &RunDir, cfg: &ExperimentConfig, slots: &[String], stop_after: Option<String>) -> Result<()> {
    if stop_after.is_some() {
        bail!("--stop-after works with the serial driver only (drop --workers/--devices)");
    }
    let exe = std::env::current_exe().context("locating the crossfeed binary for the workers")?;
    let root = dir.root.clone();
    let mut spawn = |id: &StageId, device: &str, log: std::fs::File| -> std::io::Result<std::process::Child> {
        let err = log.try_clone()?;
        let mut c = std::process::Command::new(&exe);
        c.arg("stage").arg(&root).arg("--generation").arg(id.gen.to_string()).arg("--stage").arg(id.stage.name());
        if let Some(e) = id.entity {
            c.arg("--entity").arg(e.to_string());
        }
        c.arg("--if-needed").arg("--device").arg(device).stdin(std::process::Stdio::null()).stdout(log).stderr(err).spawn()
    };
    eprintln!("{} worker(s): {}", slots.len(), slots.join(", "));
    let start = std::time::Instant::now();
    let mut p = printer();
    let lines = crossfeed_loop::parallel::run_parallel(dir, cfg, slots, &mut spawn, &mut p).with_context(|| format!("run {}", dir.root.display()))?;
    eprintln!("run finished in {:.2}s: {} metric lines in {}", start.elapsed().as_secs_f64(), lines.len(), dir.root.join("metrics.jsonl").display());
    println!("{}", dir.root.display());
    Ok(())
}

/// The serial or the parallel driver, under the run's driver lock.
pub(crate) fn drive_run(dir: RunDir, cfg: ExperimentConfig, parallel: &ParallelArgs, stop_after: Option<String>) -> Result<()> {
    let _lock = dir.lock_run("crossfeed run")?;
    // Every run, resume and sweep point records the commits its inputs resolve to now.
    crate::fetch::record_provenance(&dir, &cfg)?;
    if let Some(slots) = parallel.slots(&cfg)? {
        return drive_parallel(&dir, &cfg, &slots, stop_after);
    }
    let embedder = crate::common::load_embedder(&cfg)?;
    let mut runner = Runner::new(dir, cfg, embedder.as_ref().map(|e| e as &dyn crossfeed_loop::TextEmbedder))?;
    drive(&mut runner, stop_after)
}

fn run_cmd(a: RunArgs) -> Result<()> {
    let Some(path) = &a.config else {
        return crate::demo::run(crate::demo::DemoArgs { runs_dir: a.runs_dir, alphas: crate::demo::DEFAULT_ALPHAS.to_vec(), quick: false, set: a.set, check: false, seeds: Vec::new() });
    };
    let (text, origin) = (std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?, path.display().to_string());
    let mut cfg = ExperimentConfig::from_toml_str(&text, &origin, &a.set)?;
    if let Some(n) = &a.name {
        cfg.name = n.clone();
        cfg.validate()?;
    }
    if a.dry_run {
        return crate::dryrun::print(&cfg, a.bench.as_deref());
    }
    cfg.resolve_base_model()?;
    // Before anything is written: a refused run leaves no run directory behind.
    cfg.check_max_len()?;
    a.parallel.open_devices(&cfg)?;
    let dir = RunDir::create(&a.runs_dir, &cfg)?;
    eprintln!("run {} (K = {}, alpha = {}, beta = {}, {} generations) in {}", cfg.name, cfg.k, cfg.alpha, cfg.beta, cfg.generations, dir.root.display());
    drive_run(dir, cfg, &a.parallel, a.stop_after)
}

fn resume_cmd(a: ResumeArgs) -> Result<()> {
    let (dir, mut cfg) = RunDir::open(&a.run_dir)?;
    cfg.check_max_len()?;
    a.parallel.open_devices(&cfg)?;
    // Held only around the config change; drive_run takes it again for the run itself.
    let lock = dir.lock_run("crossfeed resume")?;
    if let Some(g) = a.generations {
        if g < cfg.generations {
            bail!("--generations {g} is fewer than the run's {} (a run is only ever extended)", cfg.generations);
        }
        if g != cfg.generations {
            cfg.generations = g;
            dir.store_config(&cfg)?;
            eprintln!("extended to {g} generations");
        }
    }
    drop(lock);
    drive_run(dir, cfg, &a.parallel, a.stop_after)
}

fn status_cmd(run_dir: &Path) -> Result<()> {
    let (dir, cfg) = RunDir::open(run_dir)?;
    let stages = plan(&cfg);
    let mut done = 0;
    let root = dir.root.canonicalize().unwrap_or(dir.root.clone());
    let jobs = crate::slurm::JobStates::for_run(&root);
    println!("{} ({} generations, K = {})", dir.root.display(), cfg.generations, cfg.k);
    for id in &stages {
        match dir.read_marker(id)? {
            Some(m) => {
                done += 1;
                println!("  done     {:<36} {:>8.2}s {:>9} tok", id.to_string(), m.wall_s, m.tokens);
            }
            None => {
                let job = jobs.state_of(&root, id).map(|(j, s)| format!("  [slurm {j} {s}]")).unwrap_or_default();
                match crossfeed_loop::lock::holder(&dir.lock_path(id))? {
                    Some(h) => println!("  running  {id}  ({h}){job}"),
                    None => println!("  pending  {id}{job}"),
                }
            }
        }
    }
    println!("{done}/{} stages done", stages.len());
    Ok(())
}

fn report_cmd(run_dir: &Path) -> Result<()> {
    let (dir, cfg) = RunDir::open(run_dir)?;
    let mut runner = Runner::new(dir.clone(), cfg.clone(), None)?;
    let names = runner.eval_set_names().context("loading the eval sets")?;
    let r = crossfeed_loop::write_report(&dir, &cfg, &names)?;
    println!("{}", r.markdown);
    eprintln!("wrote {}", dir.root.join("report.md").display());
    Ok(())
}

fn stage_cmd(a: StageArgs) -> Result<()> {
    let (dir, cfg) = RunDir::open(&a.run_dir)?;
    let gen = GenId::parse(&a.generation).with_context(|| format!("--generation {:?}: expected `base` or a number", a.generation))?;
    let stage = Stage::parse(&a.stage).with_context(|| format!("--stage {:?}: expected generate, generate-shard-N, train, eval or similarity", a.stage))?;
    let id = StageId { gen, entity: a.entity, stage };
    // The device is where the stage runs, not part of the run's config (a worker slot's choice).
    let mut on = cfg.clone();
    if let Some(d) = a.device {
        on.device = d;
    }
    let embedder = crate::common::load_embedder(&on)?;
    let mut runner = Runner::new(dir.clone(), on, embedder.as_ref().map(|e| e as &dyn crossfeed_loop::TextEmbedder))?;
    let mut p = printer();
    if a.if_needed {
        runner.run_stage_if_needed(&id, &mut p)?;
    } else {
        runner.run_stage(&id, &mut p)?;
    }
    // Any stage can be the last reader of an old checkpoint (an eval that ran late under Slurm).
    crossfeed_loop::finish::finish_stage(&dir, &cfg)?;
    Ok(())
}
