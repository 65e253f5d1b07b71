//! A minimal BERT encoder for inference (sentence embeddings): embeddings + LayerNorm, then
//! `num_hidden_layers` of masked self-attention, residual + LayerNorm, intermediate activation
//! (GELU with erf for `"gelu"`), output dense, residual + LayerNorm. Returns the last hidden state.
//!
//! Adapted from candle-transformers 0.11.1, `src/models/bert.rs` (<https://github.com/huggingface/candle>),
//! Copyright (c) the candle authors, licensed MIT OR Apache-2.0. Kept: the `Config` serde fields, the
//! weight names and the prefix fallbacks (`bert.`, `{model_type}.`), and the exact tensor ops and
//! their order, so outputs are bit-identical to `candle_transformers::models::bert::BertModel`.
//! Dropped: tracing spans, the identity `Dropout` layers, the MLM heads, and `BertModel::device`.
//! Added: [`check_config_json`], which rejects, naming the key, config values this encoder would
//! otherwise misread or silently compute differently from transformers.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, Module, VarBuilder};
use serde::Deserialize;

/// `hidden_act` values, spelled as candle-transformers accepts them (lowercase variant names):
/// `"gelu"` (erf GELU, as transformers' `"gelu"`), `"geluapproximate"` (tanh GELU) and `"relu"`.
/// transformers' `"gelu_new"` / `"gelu_pytorch_tanh"` are not accepted, as in candle-transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    Gelu,
    GeluApproximate,
    Relu,
}

impl HiddenAct {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            // https://github.com/huggingface/transformers/blob/cd4584e3c809bb9e1392ccd3fe38b40daba5519a/src/transformers/activations.py#L213
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluApproximate => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbeddingType {
    #[default]
    Absolute,
}

/// transformers' `BertConfig` (`config.json`); the same fields, required/optional as in
/// candle-transformers. Unknown keys are ignored (but see [`check_config_json`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    #[serde(default)]
    pub use_cache: bool,
    pub classifier_dropout: Option<f64>,
    pub model_type: Option<String>,
}

/// A `config.json` key whose value this encoder cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedKey {
    pub key: &'static str,
    pub msg: String,
}

/// Checks the raw `config.json` for values that would change the math and that this encoder does not
/// implement, so they fail naming the key instead of as an anonymous serde error (or, for
/// `is_decoder`, not at all): `hidden_act` other than gelu/geluapproximate/relu, `position_embedding_type`
/// other than `"absolute"` (relative_key / relative_key_query add learned distance terms), `is_decoder:
/// true` (causal attention mask), and `hidden_size` not divisible by `num_attention_heads`.
pub fn check_config_json(raw: &serde_json::Value) -> std::result::Result<(), UnsupportedKey> {
    let unsupported = |key: &'static str, msg: String| Err(UnsupportedKey { key, msg });
    match raw.get("hidden_act") {
        Some(serde_json::Value::String(s)) if matches!(s.as_str(), "gelu" | "geluapproximate" | "relu") => {}
        None => {} // serde reports the missing field
        Some(other) => {
            return unsupported(
                "hidden_act",
                format!("{other} not supported (expected \"gelu\" (erf), \"geluapproximate\" (tanh) or \"relu\")"),
            )
        }
    }
    match raw.get("position_embedding_type") {
        None => {}
        Some(serde_json::Value::String(s)) if s == "absolute" => {}
        Some(other) => {
            return unsupported(
                "position_embedding_type",
                format!("{other} not supported (only \"absolute\")"),
            )
        }
    }
    if raw.get("is_decoder").and_then(|v| v.as_bool()) == Some(true) {
        return unsupported(
            "is_decoder",
            "true (causal self-attention) not supported; only bidirectional encoders".into(),
        );
    }
    let hidden = raw.get("hidden_size").and_then(|v| v.as_u64());
    let heads = raw.get("num_attention_heads").and_then(|v| v.as_u64());
    if let (Some(h), Some(n)) = (hidden, heads) {
        if n == 0 || h % n != 0 {
            return unsupported(
                "num_attention_heads",
                format!("{n} does not divide hidden_size {h}"),
            );
        }
    }
    Ok(())
}

// https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py#L180
struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Option<Embedding>,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let word_embeddings = embedding(
            config.vocab_size,
            config.hidden_size,
            vb.pp("word_embeddings"),
        )?;
        let position_embeddings = embedding(
            config.max_position_embeddings,
            config.hidden_size,
            vb.pp("position_embeddings"),
        )?;
        let token_type_embeddings = embedding(
            config.type_vocab_size,
            config.hidden_size,
            vb.pp("token_type_embeddings"),
        )?;
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        Ok(Self {
            word_embeddings,
            position_embeddings: Some(position_embeddings),
            token_type_embeddings,
            layer_norm,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (_bsize, seq_len) = input_ids.dims2()?;
        let input_embeddings = self.word_embeddings.forward(input_ids)?;
        let token_type_embeddings = self.token_type_embeddings.forward(token_type_ids)?;
        let mut embeddings = (&input_embeddings + token_type_embeddings)?;
        if let Some(position_embeddings) = &self.position_embeddings {
            // Positions 0..seq_len (right padding, no past key values).
            let position_ids = (0..seq_len as u32).collect::<Vec<_>>();
            let position_ids = Tensor::new(&position_ids[..], input_ids.device())?;
            embeddings = embeddings.broadcast_add(&position_embeddings.forward(&position_ids)?)?
        }
        self.layer_norm.forward(&embeddings)
    }
}

struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl BertSelfAttention {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let attention_head_size = config.hidden_size / config.num_attention_heads;
        let all_head_size = config.num_attention_heads * attention_head_size;
        let hidden_size = config.hidden_size;
        let query = linear(hidden_size, all_head_size, vb.pp("query"))?;
        let value = linear(hidden_size, all_head_size, vb.pp("value"))?;
        let key = linear(hidden_size, all_head_size, vb.pp("key"))?;
        Ok(Self {
            query,
            key,
            value,
            num_attention_heads: config.num_attention_heads,
            attention_head_size,
        })
    }

    fn transpose_for_scores(&self, xs: &Tensor) -> Result<Tensor> {
        let mut new_x_shape = xs.dims().to_vec();
        new_x_shape.pop();
        new_x_shape.push(self.num_attention_heads);
        new_x_shape.push(self.attention_head_size);
        let xs = xs.reshape(new_x_shape.as_slice())?.transpose(1, 2)?;
        xs.contiguous()
    }

    fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let query_layer = self.query.forward(hidden_states)?;
        let key_layer = self.key.forward(hidden_states)?;
        let value_layer = self.value.forward(hidden_states)?;

        let query_layer = self.transpose_for_scores(&query_layer)?;
        let key_layer = self.transpose_for_scores(&key_layer)?;
        let value_layer = self.transpose_for_scores(&value_layer)?;

        let attention_scores = query_layer.matmul(&key_layer.t()?)?;
        let attention_scores = (attention_scores / (self.attention_head_size as f64).sqrt())?;
        let attention_scores = attention_scores.broadcast_add(attention_mask)?;
        let attention_probs = candle_nn::ops::softmax(&attention_scores, D::Minus1)?;

        let context_layer = attention_probs.matmul(&value_layer)?;
        let context_layer = context_layer.transpose(1, 2)?.contiguous()?;
        context_layer.flatten_from(D::Minus2)
    }
}

/// `dense -> + residual -> LayerNorm`; BertSelfOutput (in = hidden) and BertOutput (in = intermediate).
struct DenseResidualNorm {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl DenseResidualNorm {
    fn load(in_size: usize, vb: VarBuilder, config: &Config) -> Result<Self> {
        let dense = linear(in_size, config.hidden_size, vb.pp("dense"))?;
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        Ok(Self { dense, layer_norm })
    }

    fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> Result<Tensor> {
        let hidden_states = self.dense.forward(hidden_states)?;
        self.layer_norm.forward(&(hidden_states + input_tensor)?)
    }
}

// https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py#L470
struct BertLayer {
    self_attention: BertSelfAttention,
    self_output: DenseResidualNorm,
    intermediate: Linear,
    intermediate_act: HiddenAct,
    output: DenseResidualNorm,
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let attention = vb.pp("attention");
        Ok(Self {
            self_attention: BertSelfAttention::load(attention.pp("self"), config)?,
            self_output: DenseResidualNorm::load(
                config.hidden_size,
                attention.pp("output"),
                config,
            )?,
            intermediate: linear(
                config.hidden_size,
                config.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            intermediate_act: config.hidden_act,
            output: DenseResidualNorm::load(config.intermediate_size, vb.pp("output"), config)?,
        })
    }

    fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let self_outputs = self.self_attention.forward(hidden_states, attention_mask)?;
        let attention_output = self.self_output.forward(&self_outputs, hidden_states)?;
        let intermediate_output = self
            .intermediate_act
            .forward(&self.intermediate.forward(&attention_output)?)?;
        self.output.forward(&intermediate_output, &attention_output)
    }
}

// https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py#L556
struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let layers = (0..config.num_hidden_layers)
            .map(|index| BertLayer::load(vb.pp(format!("layer.{index}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let mut hidden_states = hidden_states.clone();
        for layer in self.layers.iter() {
            hidden_states = layer.forward(&hidden_states, attention_mask)?
        }
        Ok(hidden_states)
    }
}

/// BERT without pooler or heads: `forward` returns the last hidden state `(batch, seq, hidden)`.
// https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py#L874
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
}

impl BertModel {
    /// Weights `embeddings.*` and `encoder.layer.{i}.*`; like candle-transformers, under `bert.` when the
    /// builder has a tensor named `bert`, and otherwise falling back to `{model_type}.embeddings.*` /
    /// `{model_type}.encoder.*` when the unprefixed names fail (the first error is returned if both fail).
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("bert") {
            vb.pp("bert")
        } else {
            vb
        };
        let (embeddings, encoder) = match (
            BertEmbeddings::load(vb.pp("embeddings"), config),
            BertEncoder::load(vb.pp("encoder"), config),
        ) {
            (Ok(embeddings), Ok(encoder)) => (embeddings, encoder),
            (Err(err), _) | (_, Err(err)) => {
                if let Some(model_type) = &config.model_type {
                    if let (Ok(embeddings), Ok(encoder)) = (
                        BertEmbeddings::load(vb.pp(format!("{model_type}.embeddings")), config),
                        BertEncoder::load(vb.pp(format!("{model_type}.encoder")), config),
                    ) {
                        (embeddings, encoder)
                    } else {
                        return Err(err);
                    }
                } else {
                    return Err(err);
                }
            }
        };
        Ok(Self {
            embeddings,
            encoder,
        })
    }

    /// `input_ids`, `token_type_ids`: `(batch, seq)` u32; `attention_mask`: `(batch, seq)` (or
    /// `(batch, seq, seq)`) with 1 for tokens to attend to, all ones when `None`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let embedding_output = self.embeddings.forward(input_ids, token_type_ids)?;
        let attention_mask = match attention_mask {
            Some(attention_mask) => attention_mask.clone(),
            None => input_ids.ones_like()?,
        };
        let dtype = embedding_output.dtype();
        // https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py#L995
        let attention_mask = get_extended_attention_mask(&attention_mask, dtype)?;
        self.encoder.forward(&embedding_output, &attention_mask)
    }
}

/// `(1 - mask) * f32::MIN`, broadcastable to `(batch, heads, seq, seq)`.
fn get_extended_attention_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let attention_mask = match attention_mask.rank() {
        3 => attention_mask.unsqueeze(1)?,
        2 => attention_mask.unsqueeze(1)?.unsqueeze(1)?,
        _ => candle_core::bail!("Wrong shape for input_ids or attention_mask"),
    };
    let attention_mask = attention_mask.to_dtype(dtype)?;
    // torch.finfo(dtype).min
    (attention_mask.ones_like()? - &attention_mask)?.broadcast_mul(
        &Tensor::try_from(f32::MIN)?
            .to_device(attention_mask.device())?
            .to_dtype(dtype)?,
    )
}
