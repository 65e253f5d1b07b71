//! Tokenizers that give the ids `transformers.AutoTokenizer(text)` gives: from `tokenizer.json`
//! (Llama 3, whose post-processor prepends `<|begin_of_text|>`), or from GPT-2 style `vocab.json` +
//! `merges.txt` (OPT repos ship no tokenizer.json; transformers prepends `</s>` there because
//! `add_bos_token` is set in `tokenizer_config.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{ModelError, Result};

/// A tokenizer plus the special-token conventions transformers applies around it.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Prepended by us (vocab+merges path) when transformers would prepend it.
    manual_bos: Option<u32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    source: PathBuf,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s).map(Some).map_err(|source| ModelError::Json { path: path.into(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

/// A special token entry is either `"</s>"` or `{"content": "</s>", ...}`.
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
        let special = |key: &str| token_str(cfg.get(key)).or_else(|| token_str(map.get(key)));
        let tok_err = |path: &Path, e: Box<dyn std::error::Error + Send + Sync>| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        };

        let json_path = dir.join("tokenizer.json");
        let (mut inner, manual_bos, source) = if json_path.exists() {
            let t = Tokenizer::from_file(&json_path).map_err(|e| tok_err(&json_path, e))?;
            (t, None, json_path)
        } else {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            for p in [&vocab, &merges] {
                if !p.exists() {
                    return Err(ModelError::Tokenizer {
                        path: dir.to_path_buf(),
                        message: format!("no tokenizer.json and no {}", p.display()),
                    });
                }
            }
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| tok_err(&vocab, e))?;
            let mut t = Tokenizer::new(bpe);
            let add_prefix_space = cfg.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(false);
            t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::byte_level::ByteLevel::new(add_prefix_space, true, true)));
            t.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
            // transformers' GPT2 tokenizer prepends bos only when add_bos_token is set (OPT sets it).
            let add_bos = cfg.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
            let bos = special("bos_token").and_then(|s| t.token_to_id(&s));
            (t, if add_bos { bos } else { None }, vocab)
        };

        // Register the special tokens so they are never split or merged into text.
        let mut specials: Vec<AddedToken> = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .iter()
            .filter_map(|k| special(k))
            .map(|s| AddedToken::from(s, true))
            .collect();
        if let Some(Value::Object(added)) = cfg.get("added_tokens_decoder") {
            for v in added.values() {
                if let (Some(c), true) = (v.get("content").and_then(Value::as_str), v.get("special").and_then(Value::as_bool).unwrap_or(false)) {
                    specials.push(AddedToken::from(c.to_string(), true));
                }
            }
        }
        inner.add_special_tokens(specials).map_err(|e| tok_err(dir, e))?;

        let id = |k: &str| special(k).and_then(|s| inner.token_to_id(&s));
        Ok(Self { bos_id: id("bos_token"), eos_id: id("eos_token"), pad_id: id("pad_token"), manual_bos, inner, source })
    }

    /// Token ids exactly as `AutoTokenizer(text)["input_ids"]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::Tokenizer {
            path: self.source.clone(),
            message: format!("encoding failed: {e}"),
        })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.manual_bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Ids without any special token (for completions appended to a prompt).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer {
            path: self.source.clone(),
            message: format!("encoding failed: {e}"),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| ModelError::Tokenizer {
            path: self.source.clone(),
            message: format!("decoding failed: {e}"),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// A tokenizer that can emit ids the embedding table does not have would crash mid-run: refuse it at
/// load time, naming the config. Special added tokens past the table are allowed: Gemma 3's text models
/// (vocab 262,144) ship the multimodal tokenizer, whose `<image_soft_token>` (id 262,144) only a
/// processor inserts; ordinary text never encodes to it.
pub fn check_tokenizer_fits(tok: &TextTokenizer, vocab_size: usize, config_path: &Path) -> Result<()> {
    let past_table_is_special = || {
        let added = tok.inner.get_added_tokens_decoder();
        (vocab_size..tok.len()).all(|id| u32::try_from(id).ok().and_then(|id| added.get(&id)).is_some_and(|t| t.special))
    };
    if tok.len() > vocab_size && !past_table_is_special() {
        return Err(ModelError::VocabTooLarge { path: config_path.to_path_buf(), tokenizer: tok.len(), vocab: vocab_size });
    }
    Ok(())
}
