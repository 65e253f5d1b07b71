//! `crossfeed fetch CONFIG…`: download everything a config needs (base model weights and tokenizer,
//! dataset files, the sentence embedder) into the hub cache, with a progress bar, and print what was
//! fetched. Compute nodes of a cluster often have no internet: fetch on the login node, then run
//! with `HF_HUB_OFFLINE=1` against the same cache. The same resolution records every run's inputs
//! (`provenance.json`: repo, revision, resolved commit, files, bytes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use crossfeed_loop::{ExperimentConfig, RunDir};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Experiment TOML files (e.g. configs/paper-*.toml).
    #[arg(required_unless_present = "verify")]
    pub configs: Vec<PathBuf>,
    /// Re-hash every LFS file in the hub cache against its sha256 (its blob's name) and list the ones
    /// that differ (exit 1 if any); fetches nothing.
    #[arg(long)]
    pub verify: bool,
    /// Override a config key, as for `crossfeed run` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// One input of a run: a hub repo at a resolved commit, or a local directory (`commit` = None).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    /// `base_model`, `embed_model`, `public`, `private.N`.
    pub role: String,
    /// `model`, `dataset` or `local`.
    pub kind: String,
    /// Hub id, or the local path.
    pub repo: String,
    pub revision: String,
    pub commit: Option<String>,
    pub files: Vec<String>,
    pub bytes: u64,
}

fn dir_files(dir: &Path) -> (Vec<String>, u64) {
    let mut files = Vec::new();
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(m), Ok(rel)) = (std::fs::metadata(&p), p.strip_prefix(dir)) {
                bytes += m.len();
                files.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    (files, bytes)
}

/// A model directory as an input: a hub snapshot (`…/models--o--n/snapshots/<commit>`) or local.
fn model_input(role: &str, spec: &str, revision: Option<&str>, dir: &Path) -> Input {
    let (files, bytes) = dir_files(dir);
    match crossfeed_hub::commit_of_snapshot_dir(dir) {
        Some((_, commit)) => Input { role: role.into(), kind: "model".into(), repo: spec.into(), revision: revision.unwrap_or("main").into(), commit: Some(commit), files, bytes },
        None => Input { role: role.into(), kind: "local".into(), repo: dir.display().to_string(), revision: "local".into(), commit: None, files, bytes },
    }
}

/// Resolves (downloading what is missing, unless offline) every input of `cfg`.
pub fn inputs(cfg: &ExperimentConfig) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let hub = crossfeed_model::HubOptions::from_env();
    let dir = crossfeed_model::hub::resolve(&cfg.base_model, &hub).with_context(|| format!("base_model {}", cfg.base_model))?;
    out.push(model_input("base_model", &cfg.base_model, hub.revision.as_deref(), &dir));
    let tasks = std::iter::once(("public".to_string(), &cfg.public)).chain(cfg.private[..cfg.k].iter().enumerate().map(|(i, t)| (format!("private.{i}"), t)));
    for (role, task) in tasks {
        let files = crossfeed_data::task_files(task).with_context(|| format!("{role} ({})", task.name()))?;
        // One input per (repo, revision): a task reads one repo, but a custom file list may not.
        let mut by_repo: BTreeMap<(String, String), Input> = BTreeMap::new();
        for f in files {
            let bytes = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
            let kind = if f.commit.is_some() { "dataset" } else { "local" };
            let e = by_repo.entry((f.repo.clone(), f.revision.clone())).or_insert_with(|| Input {
                role: role.clone(),
                kind: kind.into(),
                repo: f.repo.clone(),
                revision: f.revision.clone(),
                commit: f.commit.clone(),
                files: Vec::new(),
                bytes: 0,
            });
            e.files.push(f.file);
            e.bytes += bytes;
        }
        out.extend(by_repo.into_values());
    }
    if !cfg.eval.embed_model.is_empty() {
        let spec = &cfg.eval.embed_model;
        let dir = crossfeed_embed::resolve_model_dir(spec, &crossfeed_embed::ResolveOptions::from_env()).with_context(|| format!("eval.embed_model {spec}"))?;
        out.push(model_input("embed_model", spec, None, &dir));
    }
    Ok(out)
}

/// Writes `provenance.json` (every input's resolved commit) into the run directory, atomically. A
/// resumed run whose inputs resolve to other commits than before (a branch moved on the hub) is
/// warned about: its later stages read different inputs than its earlier ones.
pub fn record_provenance(dir: &RunDir, cfg: &ExperimentConfig) -> Result<()> {
    let ins = inputs(cfg)?;
    let text = serde_json::to_string_pretty(&serde_json::json!({ "inputs": ins }))?;
    let path = dir.root.join("provenance.json");
    if let Ok(old) = std::fs::read_to_string(&path) {
        let commits = |t: &str| -> Vec<(String, String, Option<String>)> {
            let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
            let list = v["inputs"].as_array().cloned().unwrap_or_default();
            list.iter().map(|i| (i["role"].as_str().unwrap_or("").to_string(), i["repo"].as_str().unwrap_or("").to_string(), i["commit"].as_str().map(String::from))).collect()
        };
        let (was, now) = (commits(&old), commits(&text));
        let changed: Vec<String> = now.iter().filter(|n| !was.contains(n)).map(|(role, repo, c)| format!("{role} {repo} now at {}", c.as_deref().unwrap_or("local"))).collect();
        if !changed.is_empty() {
            eprintln!("warning: inputs changed since this run started ({}); pin revisions or run offline to keep them fixed", changed.join("; "));
        }
    }
    crossfeed_fsio::write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

/// `--verify`: every `blobs/<sha256>` of the cache re-hashed. (Non-LFS blobs are named by their git
/// blob sha1, which hashes a header too; their size was checked when they were downloaded.)
fn verify(cache: &Path) -> Result<()> {
    let (mut checked, mut bad) = (0, Vec::new());
    for repo in std::fs::read_dir(cache).with_context(|| format!("reading the hub cache {}", cache.display()))?.flatten() {
        let blobs = repo.path().join("blobs");
        for blob in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let name = blob.file_name().to_string_lossy().to_string();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            checked += 1;
            let got = crossfeed_hub::sha256_file(&blob.path())?;
            if got != name.to_ascii_lowercase() {
                bad.push(format!("{}: sha256 {got}", blob.path().display()));
            }
        }
    }
    println!("verified {checked} LFS file(s) in {}: {} differ from their sha256", cache.display(), bad.len());
    if bad.is_empty() {
        return Ok(());
    }
    for b in &bad {
        println!("  {b}");
    }
    bail!("{} cached file(s) are corrupt: delete them and run `crossfeed fetch` again", bad.len())
}

pub fn run(a: FetchArgs) -> Result<()> {
    crossfeed_hub::set_progress(true);
    let env = crossfeed_hub::HubEnv::from_env();
    if a.verify {
        return verify(&env.cache_dir);
    }
    eprintln!("hub {} → cache {}{}", env.endpoint, env.cache_dir.display(), if env.offline { " (offline: checking the cache only)" } else { "" });
    let mut total = 0;
    for path in &a.configs {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg = ExperimentConfig::from_toml_str(&text, &path.display().to_string(), &a.set)?;
        cfg.resolve_base_model()?;
        println!("{}:", path.display());
        for i in inputs(&cfg).with_context(|| format!("fetching the inputs of {}", path.display()))? {
            let commit = i.commit.as_deref().unwrap_or("-");
            println!("  {:<12} {:<8} {} @ {} → {}  {} files, {}", i.role, i.kind, i.repo, i.revision, commit, i.files.len(), human(i.bytes));
            total += i.bytes;
        }
    }
    println!("{} in the cache {}; on a machine without network, run with HF_HUB_OFFLINE=1 and the same HF_HUB_CACHE (or HF_HOME)", human(total), env.cache_dir.display());
    Ok(())
}
