//! `crossfeed theory`: the linear recursive-training model (crates/theory, docs/theory.md).

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct TheoryArgs {
    /// TOML config (defaults: K = 4 low-rank, see configs/theory-k4-lowrank.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dotted key=value overrides, e.g. --set alpha=0.5 --set sweep.steps=11.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Output directory for config.toml, CSVs and plots.
    #[arg(long, default_value = "runs/theory")]
    pub out: PathBuf,
}

pub fn run(a: TheoryArgs) -> Result<()> {
    let summary = crossfeed_theory::run_cli(a.config.as_deref(), &a.set, &a.out)?;
    println!("{summary}");
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
