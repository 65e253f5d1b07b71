//! One type for every supported architecture: load from a directory or hub id into trainable f32
//! `Var`s, run a padded batch, save a checkpoint that transformers loads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use crossfeed_fsio::{write_atomic, write_atomic_with};
use serde_json::Value;

use crate::cache::KvCache;
use crate::dropout::Dropout;
use crate::error::{ModelError, Result};
use crate::gemma2;
use crate::gemma3::{self, Gemma3, Gemma3Config};
use crate::gpt2::{self, Gpt2, Gpt2Config};
use crate::hub::{self, HubOptions};
use crate::llama::{self, Llama, LlamaConfig};
use crate::opt::{self, Opt, OptConfig};
use crate::ops;
use crate::qwen;

/// The `model_type`s crossfeed loads.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["opt", "llama", "qwen2", "qwen3", "gpt2", "gemma2", "gemma3_text"];

/// The architecture behind a [`CausalLm`].
#[derive(Debug, Clone)]
pub enum Arch {
    Opt(Box<Opt>),
    Llama(Box<Llama>),
    Gpt2(Box<Gpt2>),
    Gemma3(Box<Gemma3>),
}

/// A causal LM whose parameters are f32 `Var`s named exactly as in the checkpoint.
#[derive(Debug, Clone)]
pub struct CausalLm {
    pub arch: Arch,
    /// Trainable parameters, sorted by checkpoint name. Tied heads appear once (as the embedding).
    pub params: Vec<(String, Var)>,
    /// The checkpoint's `config.json`, kept verbatim for saving.
    pub config_json: Value,
    /// Directory the checkpoint was read from (tokenizer and generation config are copied from it).
    pub source_dir: PathBuf,
    /// Activation dtype; master weights stay f32.
    pub dtype: DType,
    /// Where bf16/f16 attention rounds: transformers' `sdpa` (default) or `eager`.
    pub attention: crate::ops::AttnImpl,
    pub device: Device,
}

/// A right- (or left-) padded batch of token ids with its 0/1 mask.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` u32.
    pub input_ids: Tensor,
    /// `[B, T]` u32, 1 on real tokens.
    pub attention_mask: Tensor,
    /// `[B, T]` u32, 1 on tokens whose prediction is trained (completion-only loss); None = all.
    pub label_mask: Option<Tensor>,
    /// What the host knew when it built the batch, so that positions and token counts need no device
    /// read (a host sync on a GPU); None for batches built from device tensors.
    pub host: Option<HostBatch>,
}

/// The host side of a [`Batch`] built by [`Batch::right_padded`].
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// The attention mask rows.
    pub mask: Vec<Vec<u32>>,
    /// Per row, the predicted tokens [`crate::loss::next_token_ce`] counts.
    pub tokens: Vec<usize>,
}

impl Batch {
    /// Right-pads `seqs` to the longest one (after truncation to `max_len`). `label_starts[i]` (if
    /// given) is the first position of row i whose token counts as a label.
    pub fn right_padded(seqs: &[Vec<u32>], pad_id: u32, max_len: usize, label_starts: Option<&[usize]>, dev: &Device) -> Result<Self> {
        let t = seqs.iter().map(|s| s.len().min(max_len)).max().unwrap_or(0).max(1);
        let b = seqs.len();
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0u32; b * t];
        let mut labels = vec![0u32; b * t];
        let mut tokens = vec![0usize; b];
        for (i, s) in seqs.iter().enumerate() {
            let start = label_starts.map_or(0, |l| l[i]);
            for (j, &tok) in s.iter().take(t).enumerate() {
                ids[i * t + j] = tok;
                mask[i * t + j] = 1;
                labels[i * t + j] = u32::from(j >= start);
                // A label at j ≥ 1 whose token is real and inside the label span (next_token_ce's rule).
                tokens[i] += usize::from(j >= 1 && j >= start);
            }
        }
        let host = HostBatch { mask: mask.chunks(t).map(<[u32]>::to_vec).collect(), tokens };
        Ok(Self {
            input_ids: crate::transfer::upload(ids, (b, t), dev)?,
            attention_mask: crate::transfer::upload(mask, (b, t), dev)?,
            label_mask: match label_starts {
                Some(_) => Some(crate::transfer::upload(labels, (b, t), dev)?),
                None => None,
            },
            host: Some(host),
        })
    }
}

fn read_config(dir: &Path) -> Result<Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let json = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.clone(), source })?;
    gemma3::text_part(json, &path)
}

/// Reads the checkpoint in `dir` into f32 Vars on `device`, names normalised to the `transformers`
/// `*ForCausalLM` layout (OPT's bare `decoder.*` becomes `model.decoder.*`; a multimodal Gemma 3's
/// language model its `model.*`, its vision tower left unread).
///
/// A safetensors file is mapped, not read: an f32 or bf16 tensor goes from the mapped bytes straight
/// into the buffer its Var owns, one allocation per weight and no copy of the file on the heap. The
/// allocator keeps what the process frees (`keep_freed_memory` in the binary), so a transient copy
/// of the checkpoint stayed resident for the whole run: loading OPT-350M's 1.4 GB left 2.9 GB
/// resident before the first step (issue 36).
fn read_weights(dir: &Path, model_type: &str, device: &Device) -> Result<(HashMap<String, Var>, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let bin = dir.join("pytorch_model.bin");
    let model_name = |name: String| -> Option<String> {
        Some(if model_type == "opt" && name.starts_with("decoder.") {
            format!("model.{name}")
        } else if model_type == "gpt2" && !name.starts_with("transformer.") && !name.starts_with("lm_head.") {
            // The hub's gpt2 checkpoints name the base model's tensors without its prefix.
            format!("transformer.{name}")
        } else if model_type == "gemma3_text" {
            return gemma3::text_weight_name(&name);
        } else {
            name
        })
    };
    let mut out = HashMap::new();
    let mut load_st = |p: &Path| -> Result<()> {
        let invalid = |e: &dyn std::fmt::Display| ModelError::Invalid(format!("{}: {e}", p.display()));
        // SAFETY: the mapping lives only inside this call and every byte is copied out of it; the
        // checkpoint must not be rewritten meanwhile, the same condition transformers' loading has.
        let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(p) }.map_err(|e| invalid(&e))?;
        for (name, view) in file.tensors() {
            let Some(name) = model_name(name) else { continue };
            let bytes = view.data();
            let var = match view.dtype() {
                safetensors::Dtype::F32 => {
                    let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                    Var::from_vec(data, view.shape(), device)?
                }
                // bf16 is f32's upper half: widening is exact.
                safetensors::Dtype::BF16 => {
                    let data: Vec<f32> = bytes.chunks_exact(2).map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)).collect();
                    Var::from_vec(data, view.shape(), device)?
                }
                _ => {
                    use candle_core::safetensors::Load;
                    Var::from_tensor(&view.load(&Device::Cpu).map_err(|e| invalid(&e))?.to_dtype(DType::F32)?.to_device(device)?)?
                }
            };
            out.insert(name, var);
        }
        Ok(())
    };
    let source = if single.exists() {
        load_st(&single)?;
        single
    } else if index.exists() {
        for shard in hub::shard_files(&index)? {
            load_st(&dir.join(shard))?;
        }
        index
    } else if bin.exists() {
        let raw = candle_core::pickle::read_all(&bin).map_err(|e| ModelError::Invalid(format!("{}: {e}", bin.display())))?;
        for (name, t) in raw {
            if let Some(name) = model_name(name) {
                out.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?);
            }
        }
        bin
    } else {
        return Err(ModelError::NoWeights { path: dir.to_path_buf() });
    };
    Ok((out, source))
}

/// A var-builder backend over our Vars that records which names the model asked for, so that extra
/// tensors in a checkpoint are reported instead of silently ignored.
struct Tracking {
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<HashSet<String>>>,
    path: PathBuf,
}

impl SimpleBackend for Tracking {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "{}: weight {name:?} has shape {:?}, the config implies {:?}",
                self.path.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| candle_core::Error::Msg(format!("{}: missing weight {name:?}", self.path.display())))?;
        if let Ok(mut u) = self.used.lock() {
            u.insert(name.to_string());
        }
        Ok(t.clone())
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Tensors a checkpoint may carry that the computation legitimately ignores.
fn ignorable(name: &str) -> bool {
    // GPT-2's `attn.bias` / `attn.masked_bias` are causal-mask buffers older transformers saved.
    name == "lm_head.weight" || name.ends_with("rotary_emb.inv_freq") || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Builds the architecture of `config_json` over `tensors` (named as in the checkpoint); returns it
/// with the names it used.
fn build_arch(config_json: &Value, model_type: &str, tensors: HashMap<String, Tensor>, path: &Path) -> Result<(Arch, HashSet<String>)> {
    let config_path = path.with_file_name("config.json");
    let used = Arc::new(Mutex::new(HashSet::new()));
    let device = tensors.values().next().map_or(Device::Cpu, |t| t.device().clone());
    let backend = Tracking { tensors, used: used.clone(), path: path.to_path_buf() };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device);
    let arch = match model_type {
        "opt" => Arch::Opt(Box::new(Opt::new(&OptConfig::from_json(config_json, &config_path)?, vb)?)),
        "qwen2" | "qwen3" => Arch::Llama(Box::new(Llama::new(&qwen::config_from_json(config_json, &config_path)?, vb)?)),
        "gpt2" => Arch::Gpt2(Box::new(Gpt2::new(&Gpt2Config::from_json(config_json, &config_path)?, vb)?)),
        "gemma2" => Arch::Gemma3(Box::new(Gemma3::new(&gemma2::config_from_json(config_json, &config_path)?, vb)?)),
        "gemma3_text" => Arch::Gemma3(Box::new(Gemma3::new(&Gemma3Config::from_json(config_json, &config_path)?, vb)?)),
        _ => Arch::Llama(Box::new(Llama::new(&LlamaConfig::from_json(config_json, &config_path)?, vb)?)),
    };
    let used = used.lock().map(|u| u.clone()).unwrap_or_default();
    Ok((arch, used))
}

/// A tied checkpoint may still carry `lm_head.weight` (old OPT `.bin` files do). Equal to the
/// embedding it changes nothing. Different, the eras disagree (transformers 4.57 ties and drops it,
/// 5.24 keeps it as an untied head), so any choice would match one and not the other: refused.
fn check_tied_head(arch: &Arch, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let embed = match arch {
        Arch::Opt(_) => "model.decoder.embed_tokens.weight",
        Arch::Llama(m) if m.config.tie_word_embeddings => "model.embed_tokens.weight",
        Arch::Llama(_) => return Ok(()),
        Arch::Gpt2(m) if m.config.tie_word_embeddings => "transformer.wte.weight",
        Arch::Gpt2(_) => return Ok(()),
        Arch::Gemma3(m) if m.config.tie_word_embeddings => "model.embed_tokens.weight",
        Arch::Gemma3(_) => return Ok(()),
    };
    if let (Some(head), Some(emb)) = (tensors.get("lm_head.weight"), tensors.get(embed)) {
        let same = head.dims() == emb.dims() && (head - emb)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0;
        if !same {
            return Err(ModelError::Invalid(format!(
                "{}: \"lm_head.weight\" differs from {embed:?} but config.json ties them (tie_word_embeddings); transformers 4.x would use the embedding and 5.x this head",
                path.display()
            )));
        }
    }
    Ok(())
}

impl CausalLm {
    /// The same model over detached weights (shared storage, so later optimizer steps show through)
    /// for inference: its forward records no autograd graph. With trainable weights every activation
    /// of a decode step would keep its inputs alive, the KV cache of each step the previous one's, so
    /// generation memory would grow with the square of the length.
    ///
    /// In bf16/f16 the linear weights are cast to the activation dtype here, once, instead of at every
    /// forward (every decode step): every use casts them to that dtype first, so the logits are the same
    /// bits. Embedding tables stay f32 (autocast gathers f32 embeddings); a tied head gets its own cast
    /// copy of the table, so no decode step casts it. The cast copies no longer follow later optimizer
    /// steps.
    pub fn frozen(&self) -> Result<Self> {
        let detach = |name: &str, t: &Tensor| -> Result<Tensor> {
            let t = t.detach();
            let matrix = t.rank() == 2 && !name.contains("embed_") && !gpt2::is_embedding_table(name);
            Ok(if self.dtype != DType::F32 && matrix { t.to_dtype(self.dtype)? } else { t })
        };
        let tensors: HashMap<String, Tensor> = self.params.iter().map(|(n, v)| Ok((n.clone(), detach(n, v.as_tensor())?))).collect::<Result<_>>()?;
        let model_type = self.config_json.get("model_type").and_then(Value::as_str).unwrap_or_default();
        let (mut arch, _) = build_arch(&self.config_json, model_type, tensors, &self.source_dir.join("model.safetensors"))?;
        if self.dtype != DType::F32 {
            match &mut arch {
                Arch::Opt(m) => m.cast_tied_head(self.dtype)?,
                Arch::Llama(m) => m.cast_tied_head(self.dtype)?,
                Arch::Gpt2(m) => m.cast_tied_head(self.dtype)?,
                Arch::Gemma3(m) => m.cast_tied_head(self.dtype)?,
            }
        }
        Ok(Self { arch, ..self.clone() })
    }

    /// Loads `spec` (directory or hub id). Weights become f32 Vars on `device`; `dtype` is the
    /// activation dtype used in `forward`.
    pub fn load(spec: &str, device: &Device, dtype: DType, hub_opts: &HubOptions) -> Result<Self> {
        let dir = hub::resolve(spec, hub_opts)?;
        Self::load_dir(&dir, device, dtype)
    }

    pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config_json = read_config(dir)?;
        let config_path = dir.join("config.json");
        let model_type = config_json.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(ModelError::UnsupportedModelType { path: config_path, found: model_type });
        }
        // The config is judged before any weight is read: a refused key costs no gigabytes.
        match model_type.as_str() {
            "opt" => drop(OptConfig::from_json(&config_json, &config_path)?),
            "qwen2" | "qwen3" => drop(qwen::config_from_json(&config_json, &config_path)?),
            "gpt2" => drop(Gpt2Config::from_json(&config_json, &config_path)?),
            "gemma2" => drop(gemma2::config_from_json(&config_json, &config_path)?),
            "gemma3_text" => drop(Gemma3Config::from_json(&config_json, &config_path)?),
            _ => drop(LlamaConfig::from_json(&config_json, &config_path)?),
        }
        let (vars, weights_path) = read_weights(dir, &model_type, device)?;
        let tensors: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let (arch, used) = build_arch(&config_json, &model_type, tensors.clone(), &weights_path)?;
        check_tied_head(&arch, &tensors, &weights_path)?;
        drop(tensors);
        let mut extra: Vec<&String> = vars.keys().filter(|n| !used.contains(*n) && !ignorable(n)).collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(ModelError::Invalid(format!(
                "{}: unexpected weight {name:?} ({} tensor(s) not used by the {model_type} config)",
                weights_path.display(),
                extra.len()
            )));
        }
        let mut params: Vec<(String, Var)> = vars.into_iter().filter(|(n, _)| used.contains(n)).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { arch, params, config_json, source_dir: dir.to_path_buf(), dtype, attention: Default::default(), device: device.clone() })
    }

    /// Training-only settings of `config.json` that crossfeed does not apply (OPT's layer drop), as
    /// `key = value`; empty when they are all 0. Inference is unaffected:
    /// transformers disables them in `eval()` too.
    pub fn unapplied_training_settings(&self) -> Vec<String> {
        match &self.arch {
            Arch::Opt(m) => crate::config_keys::nonzero(&m.config.other, opt::OPT_TRAINING_ONLY),
            Arch::Llama(m) => crate::config_keys::nonzero(&m.config.other, llama::LLAMA_TRAINING_ONLY),
            Arch::Gpt2(_) | Arch::Gemma3(_) => Vec::new(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.arch {
            Arch::Opt(m) => m.config.vocab_size,
            Arch::Llama(m) => m.config.vocab_size,
            Arch::Gpt2(m) => m.config.vocab_size,
            Arch::Gemma3(m) => m.config.vocab_size,
        }
    }

    pub fn num_layers(&self) -> usize {
        match &self.arch {
            Arch::Opt(m) => m.num_layers(),
            Arch::Llama(m) => m.num_layers(),
            Arch::Gpt2(m) => m.num_layers(),
            Arch::Gemma3(m) => m.num_layers(),
        }
    }

    /// The positions the model has embeddings for: OPT's learned table has `max_position_embeddings`
    /// rows (past its pad offset); Llama's RoPE is computed for any position, as in transformers.
    pub fn max_positions(&self) -> Option<usize> {
        match &self.arch {
            Arch::Opt(m) => Some(m.config.max_position_embeddings),
            Arch::Llama(_) => None,
            Arch::Gpt2(m) => Some(m.config.n_positions),
            Arch::Gemma3(_) => None,
        }
    }

    /// The config's `max_position_embeddings` (the context length lm-evaluation-harness's HF backend
    /// reads as `max_length`; for Llama a trained length, not an embedding limit).
    pub fn max_position_embeddings(&self) -> usize {
        match &self.arch {
            Arch::Opt(m) => m.config.max_position_embeddings,
            Arch::Llama(m) => m.config.max_position_embeddings,
            Arch::Gpt2(m) => m.config.n_positions,
            Arch::Gemma3(m) => m.config.max_position_embeddings,
        }
    }

    /// [`CausalLm::max_positions`] of the checkpoint in `dir`, from its `config.json` alone (no weights
    /// read): lets a run refuse a `max_len` the model cannot hold before any stage runs.
    pub fn max_positions_of_dir(dir: &Path) -> Result<Option<usize>> {
        let config_json = read_config(dir)?;
        let config_path = dir.join("config.json");
        Ok(match config_json.get("model_type").and_then(Value::as_str) {
            Some("opt") => Some(OptConfig::from_json(&config_json, &config_path)?.max_position_embeddings),
            Some("gpt2") => Some(Gpt2Config::from_json(&config_json, &config_path)?.n_positions),
            _ => None,
        })
    }

    /// The position transformers gives a pad token in a padded batch.
    pub fn pad_position(&self) -> i64 {
        match &self.arch {
            Arch::Opt(_) => opt::PAD_POSITION,
            Arch::Llama(_) => llama::PAD_POSITION,
            Arch::Gpt2(_) => gpt2::PAD_POSITION,
            Arch::Gemma3(_) => gemma3::PAD_POSITION,
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.num_layers())
    }

    /// Logits `[B, T, V]` (f32) for `input_ids: [B, T]`. `key_mask: [B, past + T]` covers the cached
    /// positions too; `positions: B × T` position ids of the new tokens.
    pub fn forward(&self, input_ids: &Tensor, key_mask: &Tensor, positions: &[Vec<i64>], cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.forward_dropout(input_ids, key_mask, positions, cache, None)
    }

    /// [`CausalLm::forward`] in training mode when `drop` is given (dropout as transformers applies it).
    fn forward_dropout(&self, input_ids: &Tensor, key_mask: &Tensor, positions: &[Vec<i64>], cache: Option<&mut KvCache>, drop: Option<&Dropout>) -> Result<Tensor> {
        // Past the table an embedding lookup fails deep in candle with a bare index; say which limit.
        if let (Some(limit), Some(&last)) = (self.max_positions(), positions.iter().flatten().max()) {
            if last >= limit as i64 {
                return Err(ModelError::Invalid(format!(
                    "position {last} is past the model's max_position_embeddings = {limit} ({}): a sequence \
                     (prompt plus generated tokens, or max_len in training) must be at most {limit} tokens",
                    self.source_dir.join("config.json").display()
                )));
            }
        }
        let (b, t) = input_ids.dims2()?;
        crate::cuda_rules::element_count("logits [batch, tokens, vocabulary]", &[b, t, self.vocab_size()], input_ids.device())?;
        Ok(match &self.arch {
            Arch::Opt(m) => m.forward(input_ids, key_mask, positions, self.dtype, self.attention, cache, drop)?,
            Arch::Llama(m) => m.forward(input_ids, key_mask, positions, self.dtype, self.attention, cache, drop)?,
            Arch::Gpt2(m) => m.forward(input_ids, key_mask, positions, self.dtype, self.attention, cache, drop)?,
            Arch::Gemma3(m) => m.forward(input_ids, key_mask, positions, self.dtype, self.attention, cache, drop)?,
        })
    }

    /// Logits for a padded batch with no cache (training and scoring).
    pub fn forward_batch(&self, batch: &Batch) -> Result<Tensor> {
        self.forward_batch_dropout(batch, None)
    }

    fn forward_batch_dropout(&self, batch: &Batch, drop: Option<&Dropout>) -> Result<Tensor> {
        let positions = match &batch.host {
            Some(h) => ops::positions_from_rows(&h.mask, self.pad_position()),
            None => ops::positions_from_mask(&batch.attention_mask, self.pad_position())?,
        };
        self.forward_dropout(&batch.input_ids, &batch.attention_mask, &positions, None, drop)
    }

    /// Per-sequence next-token CE of a batch.
    pub fn ce(&self, batch: &Batch) -> Result<crate::loss::CeSums> {
        self.ce_dropout(batch, None)
    }

    /// [`CausalLm::ce`] in training mode: dropout from `drop` wherever the config's rates are nonzero.
    pub fn ce_train(&self, batch: &Batch, drop: &Dropout) -> Result<crate::loss::CeSums> {
        self.ce_dropout(batch, Some(drop))
    }

    /// Whether training applies any dropout (a nonzero `dropout` / `attention_dropout` in config.json).
    pub fn has_dropout(&self) -> bool {
        match &self.arch {
            Arch::Opt(m) => {
                let (h, a) = m.config.dropout_rates();
                h > 0.0 || a > 0.0
            }
            Arch::Llama(m) => m.config.other.get("attention_dropout").and_then(Value::as_f64).unwrap_or(0.0) > 0.0,
            Arch::Gpt2(m) => m.has_dropout(),
            Arch::Gemma3(m) => m.config.attention_dropout > 0.0,
        }
    }

    fn ce_dropout(&self, batch: &Batch, drop: Option<&Dropout>) -> Result<crate::loss::CeSums> {
        let logits = self.forward_batch_dropout(batch, drop)?;
        let tokens = batch.host.as_ref().map(|h| h.tokens.clone());
        Ok(crate::loss::next_token_ce_counted(&logits, &batch.input_ids, &batch.attention_mask, batch.label_mask.as_ref(), tokens, self.dtype)?)
    }

    /// The id that fills padded positions of a batch: the tokenizer's pad token, else its EOS, else the
    /// model's first EOS. Its value never reaches a loss or a logit that is read (the mask hides it).
    pub fn pad_id(&self, tok: &crate::TextTokenizer) -> u32 {
        tok.pad_id.or(tok.eos_id).or(self.eos_token_ids().first().copied()).unwrap_or(0)
    }

    /// EOS ids as transformers' generate uses them: generation_config.json's `eos_token_id` (int or
    /// list), else config.json's.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let from = |v: &Value| -> Option<Vec<u32>> {
            match v.get("eos_token_id")? {
                Value::Number(n) => n.as_u64().map(|x| vec![x as u32]),
                Value::Array(a) => Some(a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect()),
                _ => None,
            }
        };
        let gen = std::fs::read_to_string(self.source_dir.join("generation_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok());
        gen.as_ref().and_then(from).or_else(|| from(&self.config_json)).unwrap_or_default()
    }

    /// Writes a checkpoint directory that `AutoModelForCausalLM.from_pretrained` loads: config.json,
    /// model.safetensors (f32, checkpoint names, tied head omitted), and the tokenizer and generation
    /// files of the source directory. Every file is written durably (`crossfeed-fsio`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, var) in &self.params {
            tensors.push((name.clone(), var.as_tensor().to_device(&Device::Cpu)?.contiguous()?));
        }
        let views: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let st_path = dir.join("model.safetensors");
        write_atomic_with(&st_path, |tmp| {
            safetensors::serialize_to_file(views.iter().map(|(n, t)| (*n, *t)), Some(meta), tmp).map_err(|e| ModelError::Invalid(format!("{}: {e}", tmp.display())))
        })?;

        let mut cfg = self.config_json.clone();
        if let Value::Object(o) = &mut cfg {
            // The weights are written in f32: say so under both eras' names (5.x prefers `dtype`
            // when both are present, so a stale one would make `dtype="auto"` load them narrowed).
            o.insert("torch_dtype".into(), Value::String("float32".into()));
            if o.contains_key("dtype") {
                o.insert("dtype".into(), Value::String("float32".into()));
            }
        }
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Invalid(e.to_string()))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        for f in ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"] {
            let src = self.source_dir.join(f);
            if src.exists() && self.source_dir != dir {
                let bytes = std::fs::read(&src).map_err(|e| ModelError::io(&src, e))?;
                write_atomic(&dir.join(f), &bytes)?;
            }
        }
        Ok(())
    }
}

