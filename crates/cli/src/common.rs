//! Helpers shared by the subcommands: model loading with context, JSONL reading with line numbers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use crossfeed_model::{CausalLm, HubOptions, TextTokenizer};
use serde_json::Value;

use crate::ModelArgs;

/// Loads model + tokenizer and checks that the tokenizer fits the embedding table.
pub fn load_model(args: &ModelArgs) -> Result<(CausalLm, TextTokenizer)> {
    let device = crossfeed_model::parse_device(&args.device)?;
    let dtype = crossfeed_model::parse_dtype(&args.dtype)?;
    let attention = crossfeed_model::parse_attention(&args.attention)?;
    let mut hub = HubOptions::from_env();
    hub.offline |= args.offline;
    let mut model = CausalLm::load(&args.model, &device, dtype, &hub).with_context(|| format!("loading model {}", args.model))?;
    model.attention = attention;
    let tok = TextTokenizer::from_dir(&model.source_dir).with_context(|| format!("loading tokenizer of {}", args.model))?;
    crossfeed_model::check_tokenizer_fits(&tok, model.vocab_size(), &model.source_dir.join("config.json"))?;
    Ok((model, tok))
}

/// Reads a JSONL file into objects; an empty or non-JSON line is an error naming file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            bail!("{}:{n}: empty line (each line must be a JSON object)", path.display());
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => out.push(o),
            Ok(_) => bail!("{}:{n}: not a JSON object", path.display()),
            Err(e) => bail!("{}:{n}: invalid JSON: {e}", path.display()),
        }
    }
    Ok(out)
}

/// The string field `key` of every line, or an error naming the line that lacks it.
pub fn string_field(rows: &[serde_json::Map<String, Value>], key: &str, path: &Path) -> Result<Vec<String>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| match r.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => bail!("{}:{}: no string field {key:?}", path.display(), i + 1),
        })
        .collect()
}

/// A progress bar on stderr.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// One level of parallelism: rayon's pool (RAYON_NUM_THREADS, default one thread per core) runs every
/// GEMM, fused kernel and reduction, and, through the vendored candle-core's one change to its pool
/// (`vendor/README.md`), candle's large element-wise ops too. Upstream candle runs those on a second,
/// spinning barrier pool of CANDLE_NUM_THREADS workers (default one per core): on a 2-core machine the
/// two pools' workers took turns, the barrier workers spinning ~25k pauses after each op while rayon's
/// threads waited for a core, and with any other load the spinning barrier stalled outright (`bench train
/// --profile`, 2 threads, Sapphire Rapids, a build running beside it: candle's own ops 122–419 ms/step
/// with the pool, 47–49 ms without). So the barrier pool gets no workers unless the user sets the
/// variable. Bits are the same either way: candle's element-wise ops are per element.
pub fn one_thread_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any candle op: the pool reads the variable once, when first used. Single-threaded here.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs the command on a worker of rayon's pool rather than on the main thread. From outside the pool,
/// every parallel op hands its work to the pool and sleeps on a condition variable until it is done: two
/// thread switches per op, hundreds of ops per training step, and one thread more than cores (the main
/// thread beside RAYON_NUM_THREADS workers). Inside, the op's first part runs on the calling worker and
/// the rest is stolen. Bench shape (`bench train`, Sapphire Rapids, alternating, median of 4): 1 thread
/// 162.3 → 142.1 ms/step, 2 threads 84.9 → 80.8. Bits are the same: how work is split never depends on
/// which thread runs it (`determinism.rs`).
/// The stack is the main thread's size, not rayon's 2 MiB default: the command's whole call tree now
/// runs here (candle's backward walks the graph recursively, one frame per op in a chain).
pub fn on_pool<T: Send>(command: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    const STACK: usize = 8 << 20;
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(STACK)
        .thread_name(|i| format!("crossfeed-{i}"))
        .build()
        .context("starting rayon's thread pool (RAYON_NUM_THREADS)")?;
    pool.install(command)
}

/// Tells mimalloc never to return freed memory to the OS. candle allocates a fresh buffer for every
/// op; with the default 10 ms purge delay the freed buffers went back to the OS and the next step
/// faulted them in again, zeroed by the kernel (20k faults, most of them 2 MiB huge pages, in 13 steps
/// of `crossfeed bench train`; 855 with this). Peak memory is unchanged: only memory the process
/// already used is kept.
pub fn keep_freed_memory() {
    // mi_option_purge_delay, 15 in both mimalloc v2 and v3 (libmimalloc-sys does not name it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide allocator option; mimalloc reads it at each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}

/// crossfeed-embed's sentence embedder behind the loop's `TextEmbedder` seam.
pub(crate) struct SentenceEmbedder(crossfeed_embed::Embedder);

impl crossfeed_loop::TextEmbedder for SentenceEmbedder {
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts, 32).map_err(|e| e.to_string())
    }
}

/// The embedder named by `eval.embed_model`, or None when the cosine metric is off. Here rather than
/// in `experiment.rs` because the demo checks it too (and experiment runs the demo).
pub(crate) fn load_embedder(cfg: &crossfeed_loop::ExperimentConfig) -> Result<Option<SentenceEmbedder>> {
    if cfg.eval.embed_model.is_empty() {
        return Ok(None);
    }
    let device = crossfeed_model::parse_device(&cfg.device)?;
    let e = crossfeed_embed::Embedder::load(&cfg.eval.embed_model, &device).with_context(|| format!("loading eval.embed_model {}", cfg.eval.embed_model))?;
    print_embedder_notes(&e);
    Ok(Some(SentenceEmbedder(e)))
}

/// The defaults the embedder took because a file or key was absent (the library returns them; only
/// the CLI prints).
pub(crate) fn print_embedder_notes(e: &crossfeed_embed::Embedder) {
    for n in e.notes() {
        eprintln!("crossfeed-embed: note: {n}");
    }
}
