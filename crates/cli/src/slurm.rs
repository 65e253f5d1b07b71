//! `crossfeed slurm CONFIG_OR_SWEEP [--submit | --resume]`: a run or a sweep as Slurm job arrays.
//!
//! One array per (generation, stage) over every (sweep point, entity) that still needs that stage;
//! each task runs `crossfeed stage … --if-needed`, so a requeued or repeated task finds its DONE
//! marker or redoes only its own stage, under the stage's lock. Arrays wait on the arrays holding
//! their dependencies with `afterany`, and the run directory is the truth: a task whose inputs are
//! not DONE (an ancestor failed or was cancelled) exits at once with an error naming the missing
//! stage. So a failed stage stops exactly its own descendants — `afterok` between arrays would also
//! cancel every other entity and sweep point in the next arrays. `--resume` submits only stages that
//! are neither done nor still in the queue. Scripts, task lists and `jobs.json` live in `slurm/` of
//! the sweep (or run) directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use crossfeed_loop::plan::{dependencies, plan, steps};
use crossfeed_loop::sweep::Sweep;
use crossfeed_loop::{ExperimentConfig, RunDir, StageId};
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// An experiment config or a sweep file (one with a `base` key).
    pub config: PathBuf,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Override a config key (every point of a sweep).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Submit the job arrays (without it the scripts and a submit.sh are only written).
    #[arg(long)]
    pub submit: bool,
    /// Submit only the stages that are neither done nor queued/running (after a failure or scancel).
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub partition: Option<String>,
    /// e.g. gpu:1
    #[arg(long)]
    pub gres: Option<String>,
    /// Time limit per task, e.g. 02:00:00
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory per task, e.g. 32G
    #[arg(long)]
    pub mem: Option<String>,
    #[arg(long)]
    pub qos: Option<String>,
    /// Any other sbatch option, as written after #SBATCH (repeatable), e.g. --extra-sbatch=--constraint=a100
    #[arg(long = "extra-sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub extra_sbatch: Vec<String>,
    /// Let Slurm requeue tasks (node failure, preemption); safe: a requeued task redoes only its stage.
    #[arg(long)]
    pub requeue: bool,
    /// Tasks read only the local hub cache (HF_HUB_OFFLINE=1; implied when HF_HUB_OFFLINE=1 is set here).
    #[arg(long)]
    pub offline: bool,
    /// The crossfeed binary the tasks run (default: this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// One array task: a stage of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub run: PathBuf,
    pub generation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<usize>,
    pub stage: String,
}

/// One submitted array.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArrayRecord {
    pub step: String,
    pub job: String,
    pub script: PathBuf,
    pub tasks: Vec<TaskRecord>,
}

fn record(run: &Path, id: &StageId) -> TaskRecord {
    TaskRecord { run: run.to_path_buf(), generation: id.gen.to_string(), entity: id.entity, stage: id.stage.name().to_string() }
}

/// The recorded arrays of a sweep/run and the states `squeue` reports for their tasks.
#[derive(Default)]
pub struct JobStates {
    arrays: Vec<ArrayRecord>,
    /// `ARRAYID_TASK` → state, for tasks squeue still lists (pending, running, …).
    queue: HashMap<String, String>,
    /// Why squeue gave no answer (not run when no jobs are recorded).
    squeue_error: Option<String>,
}

impl JobStates {
    /// Reads `slurm_dir/jobs.json` (none: empty) and asks squeue, if there is one, about the jobs.
    pub fn load(slurm_dir: &Path) -> Self {
        let arrays: Vec<ArrayRecord> = std::fs::read_to_string(slurm_dir.join("jobs.json")).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        if arrays.is_empty() {
            return JobStates::default();
        }
        let (queue, squeue_error) = match squeue() {
            Ok(q) => (q, None),
            Err(e) => (HashMap::new(), Some(e)),
        };
        JobStates { arrays, queue, squeue_error }
    }

    /// For a run directory: its own `slurm/` (a single run) or its sweep's.
    pub fn for_run(run_root: &Path) -> Self {
        let own = JobStates::load(&run_root.join("slurm"));
        if !own.arrays.is_empty() {
            return own;
        }
        run_root.parent().map(|p| JobStates::load(&p.join("slurm"))).unwrap_or_default()
    }

    /// The latest task that ran or runs `id` of `run`: (`ARRAYID_TASK`, state or "not in queue").
    pub fn state_of(&self, run: &Path, id: &StageId) -> Option<(String, String)> {
        let want = record(run, id);
        self.arrays.iter().rev().find_map(|a| {
            let i = a.tasks.iter().position(|t| t == &want)?;
            let key = format!("{}_{i}", a.job);
            let state = match (self.queue.get(&key), &self.squeue_error) {
                (Some(s), _) => s.clone(),
                (None, None) => "not in queue".into(),
                (None, Some(_)) => "squeue unavailable".into(),
            };
            Some((key, state))
        })
    }

    /// Whether squeue still lists the latest task of `id` (pending, running, …).
    fn active(&self, run: &Path, id: &StageId) -> Option<String> {
        let (key, _) = self.state_of(run, id)?;
        self.queue.contains_key(&key).then(|| key.split('_').next().unwrap_or_default().to_string())
    }

    /// "slurm: 2 RUNNING, 5 PENDING" over the tasks of one run that squeue lists.
    pub fn summary(&self, run: &Path) -> Vec<String> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for a in &self.arrays {
            for (i, t) in a.tasks.iter().enumerate() {
                if t.run == run {
                    if let Some(s) = self.queue.get(&format!("{}_{i}", a.job)) {
                        *counts.entry(s.clone()).or_default() += 1;
                    }
                }
            }
        }
        if counts.is_empty() {
            return Vec::new();
        }
        vec![format!("slurm: {}", counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", "))]
    }
}

/// This user's queued/running array tasks (`squeue -r`), or why squeue gave no answer.
fn squeue() -> std::result::Result<HashMap<String, String>, String> {
    let out = Command::new("squeue").args(["--me", "-h", "-r", "-o", "%i|%T"]).output().map_err(|e| format!("running squeue: {e}"))?;
    if !out.status.success() {
        return Err(format!("squeue failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('|').map(|(i, s)| (i.trim().to_string(), s.trim().to_string()))).collect())
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Refuses runs whose device the tasks' binary was not built for, before anything is written: a plain
/// binary on `device = "cuda"` configs would queue every task only to fail on the compute node. The
/// login node may have no GPU, so this asks what the binary was built with, not whether a GPU opens.
fn check_backends(bin: &Path, this_binary: bool, runs: &Runs) -> Result<()> {
    let kinds: Vec<String> = if this_binary {
        crate::backends().into_iter().map(String::from).collect()
    } else {
        let out = Command::new(bin).arg("backends").output().with_context(|| format!("--bin {}: running it to ask which devices it supports", bin.display()))?;
        if !out.status.success() {
            bail!("--bin {}: `{} backends` failed ({}); is it a crossfeed binary?", bin.display(), bin.display(), out.status);
        }
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
    };
    for (root, cfg) in runs {
        let kind = cfg.device.split(':').next().unwrap_or_default();
        if !kinds.iter().any(|k| k == kind) {
            bail!(
                "{}: device = {:?}, but the binary the tasks would run ({}) supports only {}; nothing was written. \
                 Build the CUDA binary with `make cuda` and pass it with `--bin target/cuda/release/crossfeed` \
                 (or use --set device=cpu)",
                root.display(),
                cfg.device,
                bin.display(),
                kinds.join(", ")
            );
        }
    }
    Ok(())
}

/// Run directories and their configs.
type Runs = Vec<(PathBuf, ExperimentConfig)>;

/// The runs of a config or a sweep: (label, where slurm/ goes, runs).
fn load_runs(a: &SlurmArgs) -> Result<(String, PathBuf, Runs)> {
    if crossfeed_loop::sweep::is_sweep_file(&a.config)? {
        let sweep = Sweep::load(&a.config, &a.set).with_context(|| format!("sweep {}", a.config.display()))?;
        let dir = sweep.dir(&a.runs_dir);
        let runs = sweep.points.iter().map(|p| (dir.join(&p.name), p.cfg.clone())).collect();
        Ok((sweep.name.clone(), dir, runs))
    } else {
        let mut cfg = ExperimentConfig::load(&a.config, &a.set)?;
        cfg.resolve_base_model()?;
        let dir = a.runs_dir.join(&cfg.name);
        Ok((cfg.name.clone(), dir.clone(), vec![(dir, cfg)]))
    }
}

/// A (generation, stage) array being planned.
struct Array {
    step: String,
    tasks: Vec<(PathBuf, StageId)>,
    /// Indices of earlier arrays of this submission, and ids of jobs already queued, it waits on.
    after: Vec<usize>,
    after_queued: Vec<String>,
}

fn plan_arrays(runs: &[(PathBuf, ExperimentConfig)], jobs: &JobStates) -> Vec<Array> {
    let mut arrays: Vec<Array> = Vec::new();
    let mut where_: HashMap<(PathBuf, StageId), usize> = HashMap::new();
    for (gen, stage) in steps(runs.iter().map(|r| &r.1)) {
        let mut a = Array { step: format!("{}-{}", gen.dir_name(), stage), tasks: Vec::new(), after: Vec::new(), after_queued: Vec::new() };
        for (root, cfg) in runs {
            let dir = RunDir { root: root.clone() };
            for id in plan(cfg).into_iter().filter(|id| id.gen == gen && id.stage.group() == stage) {
                if dir.is_done(&id) || jobs.active(root, &id).is_some() {
                    continue;
                }
                for dep in dependencies(cfg, &id) {
                    if let Some(&i) = where_.get(&(root.clone(), dep)) {
                        a.after.push(i);
                    } else if let Some(job) = jobs.active(root, &dep) {
                        a.after_queued.push(job);
                    }
                }
                a.tasks.push((root.clone(), id));
            }
        }
        if a.tasks.is_empty() {
            continue;
        }
        a.after.sort();
        a.after.dedup();
        a.after_queued.sort();
        a.after_queued.dedup();
        for (root, id) in &a.tasks {
            where_.insert((root.clone(), *id), arrays.len());
        }
        arrays.push(a);
    }
    arrays
}

fn script(a: &SlurmArgs, name: &str, arr: &Array, tasks_file: &Path, logs: &Path, bin: &Path, cwd: &Path) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut d = |x: String| s.push_str(&format!("#SBATCH {x}\n"));
    d(format!("--job-name=cf-{name}-{}", arr.step));
    d(format!("--array=0-{}", arr.tasks.len() - 1));
    d(format!("--output={}/{}_%A_%a.out", logs.display(), arr.step));
    d("--open-mode=append".into());
    d(format!("--chdir={}", cwd.display()));
    d("--ntasks=1".into());
    d(if a.requeue { "--requeue".into() } else { "--no-requeue".into() });
    for (k, v) in [("partition", &a.partition), ("gres", &a.gres), ("time", &a.time), ("account", &a.account), ("mem", &a.mem), ("qos", &a.qos)] {
        if let Some(v) = v {
            d(format!("--{k}={v}"));
        }
    }
    if let Some(c) = a.cpus_per_task {
        d(format!("--cpus-per-task={c}"));
    }
    for x in &a.extra_sbatch {
        d(x.clone());
    }
    s.push_str("set -euo pipefail\n");
    if a.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        s.push_str("export HF_HUB_OFFLINE=1\n");
    }
    for var in ["HF_HOME", "HF_HUB_CACHE"] {
        if let Ok(v) = std::env::var(var) {
            s.push_str(&format!("export {var}='{}'\n", v.replace('\'', "'\\''")));
        }
    }
    s.push_str(&format!(
        "# Task i runs line i+1 of the task list: run dir, generation, entity (- for none), stage, log.\n\
         IFS=$'\\t' read -r run gen entity stage log < <(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" '{}')\n\
         args=(stage \"$run\" --generation \"$gen\" --stage \"$stage\" --if-needed)\n\
         if [ \"$entity\" != - ]; then args+=(--entity \"$entity\"); fi\n\
         mkdir -p \"$(dirname \"$log\")\"\n\
         echo \"== $(date -u +%FT%TZ) job ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname) (restart ${{SLURM_RESTART_COUNT:-0}})\" >> \"$log\"\n\
         '{}' \"${{args[@]}}\" 2>&1 | tee -a \"$log\"\n",
        tasks_file.display(),
        bin.display()
    ));
    s
}

pub fn run(a: SlurmArgs) -> Result<()> {
    // Every point is built and checked before anything is written or submitted.
    let (name, top, runs) = load_runs(&a)?;
    let submit = a.submit || a.resume;
    if submit && !on_path("sbatch") {
        bail!(
            "sbatch not found on PATH: submitting needs Slurm's client commands (sbatch, squeue, scancel). \
             Install them (Debian/Ubuntu: apt-get install slurm-client; a whole one-node cluster: apt-get install slurm-wlm munge) \
             or load your cluster's Slurm module; without --submit the scripts are only written"
        );
    }
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the crossfeed binary")?,
    };
    check_backends(&bin, a.bin.is_none(), &runs)?;
    // Resolved when submitting, on the login node (the jobs may have no network); writing the scripts
    // alone needs no network. Checked for every run before any run directory is written.
    if submit {
        for (root, cfg) in &runs {
            cfg.check_max_len().with_context(|| format!("run {}", root.display()))?;
        }
    }
    for (root, cfg) in &runs {
        let parent = root.parent().unwrap_or(Path::new("."));
        let dir = RunDir::create(parent, cfg).with_context(|| format!("run {}", root.display()))?;
        if submit {
            crate::fetch::record_provenance(&dir, cfg)?;
        }
    }
    let top = top.canonicalize().with_context(|| format!("resolving {}", top.display()))?;
    let runs: Vec<(PathBuf, ExperimentConfig)> =
        runs.into_iter().map(|(r, c)| Ok((r.canonicalize().with_context(|| format!("resolving {}", r.display()))?, c))).collect::<Result<_>>()?;
    let slurm_dir = top.join("slurm");
    let jobs = JobStates::load(&slurm_dir);
    // Unknown queue states are not an empty queue: submitting could duplicate jobs still queued.
    if let (true, Some(why)) = (submit, &jobs.squeue_error) {
        bail!("{why}\ncannot tell which recorded jobs of {} are still queued or running, so nothing was submitted; retry when squeue answers", top.display());
    }
    if a.submit && !a.resume && jobs.arrays.iter().any(|r| jobs.queue.keys().any(|k| k.split('_').next() == Some(r.job.as_str()))) {
        bail!("jobs of {} are still queued or running (see `crossfeed status`); use --resume to add only what is missing", top.display());
    }
    let arrays = plan_arrays(&runs, &jobs);
    if arrays.is_empty() {
        eprintln!("nothing to submit: every stage is done or queued");
        return Ok(());
    }
    let n = std::fs::read_dir(&slurm_dir).map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("sub-")).count()).unwrap_or(0);
    let sub = slurm_dir.join(format!("sub-{n:03}"));
    let logs = slurm_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let cwd = std::env::current_dir()?;
    let mut submit_sh = String::from("#!/bin/bash\n# Submits these arrays in order with their dependencies (what `crossfeed slurm --submit` does).\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
    let mut scripts = Vec::new();
    for (i, arr) in arrays.iter().enumerate() {
        let tasks_file = sub.join(format!("{}.tasks", arr.step));
        let mut lines = String::new();
        for (root, id) in &arr.tasks {
            let log = RunDir { root: root.clone() }.log_path(id);
            let e = id.entity.map_or("-".to_string(), |e| e.to_string());
            lines.push_str(&format!("{}\t{}\t{e}\t{}\t{}\n", root.display(), id.gen, id.stage.name(), log.display()));
        }
        crossfeed_loop::rundir::write_atomic(&tasks_file, lines.as_bytes())?;
        let path = sub.join(format!("{}.sbatch", arr.step));
        crossfeed_loop::rundir::write_atomic(&path, script(&a, &name, arr, &tasks_file, &logs, &bin, &cwd).as_bytes())?;
        let deps: Vec<String> = arr.after.iter().map(|j| format!("$j{j}")).chain(arr.after_queued.iter().cloned()).collect();
        let dep = if deps.is_empty() { String::new() } else { format!(" --dependency=afterany:{}", deps.join(":")) };
        submit_sh.push_str(&format!("j{i}=$(sbatch --parsable{dep} {}.sbatch); j{i}=${{j{i}%%;*}}; echo \"{} $j{i}\"\n", arr.step, arr.step));
        scripts.push(path);
    }
    crossfeed_loop::rundir::write_atomic(&sub.join("submit.sh"), submit_sh.as_bytes())?;
    let total: usize = arrays.iter().map(|a| a.tasks.len()).sum();
    eprintln!("{} arrays, {total} tasks: scripts in {}", arrays.len(), sub.display());
    if !submit {
        eprintln!("submit with `bash {}` or `crossfeed slurm {} --submit`", sub.join("submit.sh").display(), a.config.display());
        return Ok(());
    }
    let mut ids: Vec<String> = Vec::new();
    let mut records = jobs.arrays.clone();
    for (arr, path) in arrays.iter().zip(&scripts) {
        let deps: Vec<String> = arr.after.iter().map(|&j| ids[j].clone()).chain(arr.after_queued.iter().cloned()).collect();
        let mut c = Command::new("sbatch");
        c.arg("--parsable");
        if !deps.is_empty() {
            c.arg(format!("--dependency=afterany:{}", deps.join(":")));
        }
        let out = c.arg(path).output().context("running sbatch")?;
        if !out.status.success() {
            // Record what went in, so --resume knows about it.
            write_jobs(&slurm_dir, &records)?;
            bail!("sbatch {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
        eprintln!("  {:<28} job {id:<8} {} task(s){}", arr.step, arr.tasks.len(), if deps.is_empty() { String::new() } else { format!(", after {}", deps.join(",")) });
        records.push(ArrayRecord { step: arr.step.clone(), job: id.clone(), script: path.clone(), tasks: arr.tasks.iter().map(|(r, id)| record(r, id)).collect() });
        ids.push(id);
    }
    write_jobs(&slurm_dir, &records)?;
    println!("{}", top.display());
    Ok(())
}

fn write_jobs(slurm_dir: &Path, records: &[ArrayRecord]) -> Result<()> {
    let text = serde_json::to_string_pretty(records)?;
    crossfeed_loop::rundir::write_atomic(&slurm_dir.join("jobs.json"), text.as_bytes())?;
    Ok(())
}
