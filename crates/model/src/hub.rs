//! Where a model comes from: a local directory, or a hub id fetched through `crossfeed-hub`'s one
//! resolver (the endpoint, token, offline mode and cache that datasets and the embedder use too); this
//! file only names the files a transformers checkpoint needs and reads a sharded index. In offline mode
//! (`HF_HUB_OFFLINE=1` or `HubOptions::offline`) only the cache is read. `HF_TOKEN` is passed to the
//! hub for gated repos and never logged.

use std::path::{Path, PathBuf};

use crossfeed_hub::{Files, ResolveError};

use crate::error::{ModelError, Result};

/// Offline mode and revision of a hub id: crossfeed-hub's options, named as this crate always named them.
pub use crossfeed_hub::ResolveOptions as HubOptions;

/// Files a checkpoint directory may hold; all but `config.json` and the weights are optional.
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

const INDEX: &str = "model.safetensors.index.json";

/// The weights, in transformers' order of preference; an index brings its shards.
const WEIGHTS: &[&str] = &["model.safetensors", INDEX, "pytorch_model.bin"];

const FILES: Files = Files { required: &["config.json"], optional: OPTIONAL_FILES, one_of: WEIGHTS };

/// Resolves `spec` (a directory or a hub id such as `facebook/opt-350m`) to a local directory holding
/// the checkpoint files (for a hub id, `<cache>/models--owner--name/snapshots/<commit>`).
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let hub = |e: ResolveError| match e {
        ResolveError::NotAnId { .. } => ModelError::Invalid(format!("{spec}: no such model directory (and not a hub id like owner/name)")),
        ResolveError::Missing { revision, file, .. } => {
            ModelError::Hub(format!("{spec} (revision `{revision}`) has no {file}: not a transformers checkpoint"))
        }
        ResolveError::NoneOf { revision, .. } => ModelError::Hub(format!(
            "{spec} (revision `{revision}`) has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
        )),
        ResolveError::Hub(e) => ModelError::Hub(e.to_string()),
    };
    let found = crossfeed_hub::resolve(spec, opts, &FILES).map_err(hub)?;
    if found.chosen.as_deref() == Some(INDEX) {
        for shard in shard_files(&found.dir.join(INDEX))? {
            found.get(&shard).map_err(hub)?;
        }
    }
    Ok(found.dir)
}

/// The shard file names of a `model.safetensors.index.json`, deduplicated, in order.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.into(), source })?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Invalid(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
    // A shard name becomes a path (and a hub download): `../..` or an absolute path would read or
    // write outside the checkpoint, so it is refused whether the index came from the hub or a folder.
    if let Some((f, why)) = files.iter().find_map(|f| crossfeed_hub::unsafe_file_name(f).map(|w| (f, w))) {
        return Err(ModelError::Invalid(format!("{}: weight_map names the shard {f:?}: {why}; refused", index.display())));
    }
    files.sort();
    files.dedup();
    Ok(files)
}
