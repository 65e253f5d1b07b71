//! `crossfeed run CONFIG --dry-run [--bench FILE]`: prints the plan and estimates of
//! `crossfeed_loop::dryrun` without loading a model or touching the run directory.

use std::path::Path;

use anyhow::{Context, Result};
use crossfeed_loop::dryrun::{estimate, render, Shape, Throughput};
use crossfeed_loop::ExperimentConfig;
use crossfeed_model::HubOptions;

/// The base model's shape: its config.json (local directory or hub cache, never the network), else the
/// built-in shape of the paper's two models.
fn shape(cfg: &ExperimentConfig) -> Result<(Shape, String)> {
    let local = Path::new(&cfg.base_model).join("config.json");
    let mut hub = HubOptions::from_env();
    hub.offline = true;
    let path = if local.is_file() {
        Some(local)
    } else {
        crossfeed_model::hub::resolve(&cfg.base_model, &hub).ok().map(|d| d.join("config.json")).filter(|p| p.is_file())
    };
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            cfg.check_max_len_in(dir)?;
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let json = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?;
        return Ok((Shape::from_config(&json, &p.display().to_string())?, p.display().to_string()));
    }
    match Shape::known(&cfg.base_model) {
        Some(s) => Ok((s, "built-in shape: not in the local hub cache".into())),
        None => anyhow::bail!(
            "base_model {}: no config.json in a local directory or the hub cache, and no built-in shape; \
             download it first (HF cache) or point base_model at a directory",
            cfg.base_model
        ),
    }
}

pub fn print(cfg: &ExperimentConfig, bench: Option<&Path>) -> Result<()> {
    let (sh, from) = shape(cfg)?;
    let bench = bench.map(|p| Throughput::load(p).map(|t| (t, p))).transpose()?;
    let stages = estimate(cfg, &sh, bench.as_ref().map(|(t, _)| t))?;
    print!("{}", render(cfg, &sh, &from, bench.as_ref().map(|(t, p)| (t, *p)), &stages));
    Ok(())
}
