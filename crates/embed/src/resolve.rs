//! Turns a model spec (a local directory, or a hub id such as `sentence-transformers/all-MiniLM-L6-v2`)
//! into a local directory through `crossfeed-hub`'s one resolver, with the files a sentence-transformers
//! repo needs (`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json` beside the BERT
//! checkpoint). With `HF_HUB_OFFLINE=1` (or `ResolveOptions::offline`) only the local hub cache is read.
//! Endpoint, token and cache come from `crossfeed-hub`, as for models and datasets; `HF_TOKEN` is passed
//! through, never logged.

use std::path::PathBuf;

use crossfeed_hub::{Files, ResolveError};
pub use crossfeed_hub::ResolveOptions;

use crate::error::EmbedError;

/// Files the embedder needs; the hub snapshot directory keeps the repo's layout, so `1_Pooling/...`
/// lands next to `config.json`.
pub const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
/// Absent in some repos; the loader falls back to documented defaults.
pub const OPTIONAL_FILES: &[&str] = &["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"];

/// A directory as given, or the hub-cache snapshot directory of a hub id (downloading unless offline).
pub fn resolve_model_dir(spec: &str, opts: &ResolveOptions) -> Result<PathBuf, EmbedError> {
    let files = Files { required: REQUIRED_FILES, optional: OPTIONAL_FILES, one_of: &[] };
    crossfeed_hub::resolve(spec, opts, &files).map(|r| r.dir).map_err(|e| EmbedError::Hub {
        spec: spec.into(),
        msg: match e {
            ResolveError::NotAnId { .. } => "no such directory, and not a hub id like owner/name".into(),
            ResolveError::Missing { revision, file, .. } => format!("revision `{revision}` has no {file}"),
            other => other.to_string(),
        },
    })
}
