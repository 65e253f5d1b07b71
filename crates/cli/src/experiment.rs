//! The experiment commands (`run`, `resume`, `status`, `report`, `stage`): filled in with crates/loop.

use anyhow::Result;

#[derive(clap::Subcommand, Debug)]
pub enum ExperimentCommand {}

pub fn run(c: ExperimentCommand) -> Result<()> {
    match c {}
}
