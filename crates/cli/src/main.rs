//! `crossfeed`: the one binary. Parses argv, adds context to library errors, prints results.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod accuracy;
mod bench;
mod common;
mod demo;
mod dryrun;
mod embed;
mod experiment;
mod fetch;
mod generate;
mod score;
mod slurm;
mod sweep;
mod theory;
mod train;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "crossfeed", version, about = "Several LLMs fine-tuned, generation after generation, on a pool of each other's outputs.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Token-level cross entropy of a model on a JSONL file of {"text": ...} lines.
    Score(score::ScoreArgs),
    /// Task accuracy (sciq, arc_easy, arc_challenge, gsm8k) as lm-evaluation-harness measures it.
    Accuracy(accuracy::AccuracyArgs),
    /// Fine-tune a model on a JSONL file ({"text"} or {"prompt","completion"} lines) with AdamW.
    Train(train::TrainArgs),
    /// Sentence embeddings (all-MiniLM-L6-v2 style): {"text"} lines gain "embedding".
    Embed(embed::EmbedArgs),
    /// Batched generation with a KV cache: {"prompt": ...} lines in, completions out.
    Generate(generate::GenerateArgs),
    /// The paper's linear model: relative-efficiency heatmaps and curves (CSV + SVG/PNG).
    Theory(theory::TheoryArgs),
    /// The embedded default: toy world, self-built base model, alpha in {0, 0.5, 1}, paper-style table.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    Experiment(experiment::ExperimentCommand),
    /// Sweeps: one file (base config + grid/list of overrides + seeds) expanded into runs.
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// A run or a sweep as Slurm job arrays (one per generation and stage); --submit, --resume.
    Slurm(slurm::SlurmArgs),
    /// Download everything configs need (weights, tokenizer, datasets, embedder) into the hub cache.
    Fetch(fetch::FetchArgs),
    /// Benchmarks (throughput, printed side by side with the PyTorch counterpart where one exists).
    Bench(bench::BenchArgs),
    /// The device kinds this binary was built for (cpu, cuda, metal); `slurm --bin` asks it.
    #[command(hide = true)]
    Backends,
}

/// The device kinds this binary can open (CUDA and Metal are compile-time features of candle).
pub fn backends() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if candle_core::utils::cuda_is_available() {
        v.push("cuda");
    }
    if candle_core::utils::metal_is_available() {
        v.push("metal");
    }
    v
}

fn main() {
    common::keep_freed_memory();
    common::one_thread_pool();
    let cli = Cli::parse();
    let result: Result<()> = common::on_pool(|| match cli.command {
        Command::Score(a) => score::run(a),
        Command::Accuracy(a) => accuracy::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Train(a) => train::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Theory(a) => theory::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Experiment(c) => experiment::run(c),
        Command::Sweep(c) => sweep::run(c),
        Command::Slurm(a) => slurm::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Backends => {
            println!("{}", backends().join(" "));
            Ok(())
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Arguments shared by every command that loads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory or hub id (owner/name).
    #[arg(long)]
    pub model: String,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Activation dtype: f32, bf16 or f16 (weights stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Which transformers attention bf16/f16 follows: sdpa (its default) or eager
    /// (`attn_implementation="eager"`); the same in f32.
    #[arg(long, default_value = "sdpa")]
    pub attention: String,
    /// Only read the hub cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}
