//! The sentence-transformers pipeline `Transformer -> Pooling -> Normalize` on candle, matching
//! sentence-transformers numerically (fp32): texts are tokenized with `tokenizer.json`, truncated to
//! `max_seq_length` (from `sentence_bert_config.json`; special tokens count), padded to the batch's
//! longest (any fixed padding baked into `tokenizer.json` is ignored), run through [`crate::bert`]'s
//! `BertModel` (candle-transformers' BERT, vendored), pooled over the attention mask, and L2-normalised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{check_config_json, BertModel, Config as BertConfig};
use crate::error::EmbedError;
use crate::resolve::{resolve_model_dir, ResolveOptions};

/// Used when `sentence_bert_config.json` is absent: the sentence-transformers default for
/// all-MiniLM-L6-v2 (it is also capped by `max_position_embeddings`).
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// How token vectors become one sentence vector (`1_Pooling/config.json`). sentence-transformers
/// concatenates when several modes are on; we support exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// sum(h * mask) / max(sum(mask), 1e-9) -- all-MiniLM-L6-v2's mode.
    Mean,
    /// The first token's vector.
    Cls,
    /// Element-wise max over unmasked tokens.
    Max,
    /// sum(h * mask) / sqrt(max(sum(mask), 1e-9)).
    MeanSqrtLen,
}

/// A loaded sentence embedder. `embed` returns unit-norm vectors (sentence-transformers' Normalize
/// module is always applied, so cosine similarity is a dot product).
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pooling: Pooling,
    max_seq_length: usize,
    hidden_size: usize,
    pad_id: u32,
    dir: PathBuf,
    notes: Vec<String>,
}

impl Embedder {
    /// Loads `spec` (a directory, or a hub id resolved with `HF_HUB_OFFLINE` honoured).
    pub fn load(spec: &str, device: &Device) -> Result<Self, EmbedError> {
        Self::load_with(spec, device, &ResolveOptions::from_env())
    }

    pub fn load_with(spec: &str, device: &Device, opts: &ResolveOptions) -> Result<Self, EmbedError> {
        let dir = resolve_model_dir(spec, opts)?;
        Self::load_dir(&dir, device)
    }

    /// Loads a sentence-transformers directory (all-MiniLM-L6-v2 layout; the transformer may sit in a
    /// subfolder named by `modules.json`).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        let mut notes = Vec::new();
        let (tf_dir, pool_dir) = module_dirs(dir)?;

        let config_path = tf_dir.join("config.json");
        let raw_config: serde_json::Value = read_json(&config_path, "BERT config")?;
        check_config_json(&raw_config).map_err(|u| EmbedError::Config {
            path: config_path.clone(),
            key: u.key.into(),
            msg: u.msg,
        })?;
        let config: BertConfig = serde_json::from_value(raw_config).map_err(|source| EmbedError::Json {
            path: config_path.clone(),
            source,
        })?;

        let weights_path = tf_dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(EmbedError::Missing {
                path: weights_path,
                what: "BERT weights in safetensors format (pytorch_model.bin is not read)",
            });
        }
        let model = load_bert(&weights_path, &config, device)?;

        let st_path = dir.join("sentence_bert_config.json");
        let mut max_seq_length = if st_path.is_file() {
            let v: serde_json::Value = read_json(&st_path, "sentence-transformers config")?;
            match v.get("max_seq_length") {
                Some(serde_json::Value::Number(n)) => n.as_u64().filter(|&n| n > 0).ok_or_else(|| EmbedError::Config {
                    path: st_path.clone(),
                    key: "max_seq_length".into(),
                    msg: format!("expected a positive integer, got {n}"),
                })? as usize,
                Some(serde_json::Value::Null) | None => {
                    notes.push(format!("{}: no max_seq_length; using {DEFAULT_MAX_SEQ_LENGTH}", st_path.display()));
                    DEFAULT_MAX_SEQ_LENGTH
                }
                Some(other) => {
                    return Err(EmbedError::Config {
                        path: st_path.clone(),
                        key: "max_seq_length".into(),
                        msg: format!("expected an integer, got {other}"),
                    })
                }
            }
        } else {
            notes.push(format!(
                "{}: absent; max_seq_length defaults to {DEFAULT_MAX_SEQ_LENGTH}",
                st_path.display()
            ));
            DEFAULT_MAX_SEQ_LENGTH
        };
        if max_seq_length > config.max_position_embeddings {
            notes.push(format!(
                "max_seq_length {max_seq_length} capped to max_position_embeddings {}",
                config.max_position_embeddings
            ));
            max_seq_length = config.max_position_embeddings;
        }

        let pooling = read_pooling(&pool_dir.join("config.json"), &mut notes)?;

        let tok_path = tf_dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(EmbedError::Missing {
                path: tok_path,
                what: "tokenizer.json (fast tokenizer); vocab.txt alone is not read",
            });
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| EmbedError::Tokenizer {
            path: tok_path.clone(),
            msg: e.to_string(),
        })?;
        // Padding is done here, to the batch's longest; a baked-in fixed length would change nothing
        // numerically (masked) but wastes compute, so it is switched off.
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(config.pad_token_id as u32);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer {
                path: tok_path.clone(),
                msg: e.to_string(),
            })?;

        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            pooling,
            max_seq_length,
            hidden_size: config.hidden_size,
            pad_id,
            dir: dir.to_path_buf(),
            notes,
        })
    }

    /// Embeds `texts` in batches of `batch_size` (0 is treated as 1). Texts are grouped by token length
    /// so batches carry little padding; output order is input order. Each vector has unit L2 norm
    /// (a text whose pooled vector is zero stays zero, as with `F.normalize`).
    pub fn embed(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch_size = batch_size.max(1);
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Encode(e.to_string()))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size) {
            let encs: Vec<&tokenizers::Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let vecs = self.embed_encodings(&encs)?;
            for (&i, v) in chunk.iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_encodings(&self, encs: &[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let b = encs.len();
        let t = encs.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0u32; b * t];
        for (r, e) in encs.iter().enumerate() {
            for (c, ((&id, &ty), &m)) in e.get_ids().iter().zip(e.get_type_ids()).zip(e.get_attention_mask()).enumerate() {
                ids[r * t + c] = id;
                types[r * t + c] = ty;
                mask[r * t + c] = m;
            }
        }
        let ids = Tensor::from_vec(ids, (b, t), &self.device)?;
        let types = Tensor::from_vec(types, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let h = self.model.forward(&ids, &types, Some(&mask))?; // (b, t, hidden)
        let maskf = mask.to_dtype(h.dtype())?.unsqueeze(2)?; // (b, t, 1)
        let pooled = match self.pooling {
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let sum = h.broadcast_mul(&maskf)?.sum(1)?; // (b, hidden)
                let count = maskf.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (b, 1)
                let denom = if self.pooling == Pooling::Mean { count } else { count.sqrt()? };
                sum.broadcast_div(&denom)?
            }
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                // Masked positions get -1e9 (sentence-transformers uses -1e9 too), then max over tokens.
                let neg = ((maskf.ones_like()? - &maskf)? * -1e9f64)?;
                h.broadcast_add(&neg)?.max(1)?
            }
        };
        let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        let normed = pooled.broadcast_div(&norm)?.to_dtype(DType::F32)?;
        Ok(normed.to_vec2::<f32>()?)
    }

    /// Vector length (the BERT hidden size; pooling does not change it).
    pub fn dim(&self) -> usize {
        self.hidden_size
    }
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
    /// The resolved model directory (a hub-cache snapshot for hub ids).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Defaults taken because a file or key was absent (the caller decides whether to show them).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    /// Token ids after truncation, without padding -- what the model sees for `text`.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let e = self.tokenizer.encode(text, true).map_err(|e| EmbedError::Encode(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, EmbedError> {
    if !path.is_file() {
        return Err(EmbedError::Missing {
            path: path.to_path_buf(),
            what,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The transformer's folder and the pooling folder, from `modules.json` when present (older
/// sentence-transformers repos keep BERT in e.g. `0_BERT/`); otherwise `dir` and `dir/1_Pooling`.
fn module_dirs(dir: &Path) -> Result<(PathBuf, PathBuf), EmbedError> {
    let mut tf = dir.to_path_buf();
    let mut pool = dir.join("1_Pooling");
    let modules = dir.join("modules.json");
    if modules.is_file() {
        let v: Vec<serde_json::Value> = read_json(&modules, "modules.json")?;
        for m in &v {
            let ty = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let path = m.get("path").and_then(|p| p.as_str()).unwrap_or("");
            if ty.ends_with(".Transformer") {
                tf = dir.join(path);
            } else if ty.ends_with(".Pooling") {
                pool = dir.join(path);
            }
        }
    }
    Ok((tf, pool))
}

fn read_pooling(path: &Path, notes: &mut Vec<String>) -> Result<Pooling, EmbedError> {
    if !path.is_file() {
        notes.push(format!("{}: absent; using mean pooling", path.display()));
        return Ok(Pooling::Mean);
    }
    let v: serde_json::Value = read_json(path, "pooling config")?;
    let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
    let modes: Vec<(&str, Pooling)> = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_max_tokens", Pooling::Max),
        ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
    ]
    .into_iter()
    .filter(|(k, _)| flag(k))
    .collect();
    for k in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
        if flag(k) {
            return Err(EmbedError::Config {
                path: path.into(),
                key: k.into(),
                msg: "pooling mode not supported".into(),
            });
        }
    }
    match modes.as_slice() {
        [(_, p)] => Ok(*p),
        [] => {
            notes.push(format!("{}: no pooling mode set; using mean pooling", path.display()));
            Ok(Pooling::Mean)
        }
        many => Err(EmbedError::Config {
            path: path.into(),
            key: many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join("+"),
            msg: "several pooling modes (concatenated output) are not supported".into(),
        }),
    }
}

/// Reads the safetensors file, drops a `bert.` prefix if the names carry one (BertForX checkpoints),
/// and builds the `BertModel` in f32.
fn load_bert(path: &Path, config: &BertConfig, device: &Device) -> Result<BertModel, EmbedError> {
    let wrap = |source| EmbedError::Weights {
        path: path.to_path_buf(),
        source,
    };
    let raw = candle_core::safetensors::load(path, &Device::Cpu).map_err(wrap)?;
    let has_prefix = raw.keys().any(|k| k.starts_with("bert.embeddings."));
    let mut tensors = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        let name = if has_prefix {
            match name.strip_prefix("bert.") {
                Some(n) => n.to_string(),
                None => continue, // heads (cls.*, classifier.*) are not needed
            }
        } else {
            name
        };
        tensors.insert(name, t.to_dtype(DType::F32).and_then(|t| t.to_device(device)).map_err(wrap)?);
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    BertModel::load(vb, config).map_err(wrap)
}
