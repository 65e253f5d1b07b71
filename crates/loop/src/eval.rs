//! Measurements with a model: token-level CE over an eval set, the shared homogenization prompts,
//! and the [`TextEmbedder`] seam for the embedding metrics (so this crate does not depend on an
//! embedding model; the CLI supplies one when `eval.embed_model` is set). The metrics themselves are
//! pure functions in [`crate::collapse`].

use crossfeed_data::{prefix_of, Example, PrefixLength};
use crossfeed_model::{Batch, CausalLm, TextTokenizer};
use crossfeed_train::{tokenize, LmExample};

use crate::error::Result;

/// Sentence embeddings for the cosine-similarity metric.
pub trait TextEmbedder {
    /// One vector per text, in order.
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String>;
}

/// An embedder that embeds each list of texts once and hands out the same vectors after, for a stage
/// whose metrics read the same texts' embeddings more than once.
pub struct MemoEmbedder<'a> {
    inner: &'a dyn TextEmbedder,
    seen: std::cell::RefCell<std::collections::HashMap<Vec<String>, Vec<Vec<f32>>>>,
}

impl<'a> MemoEmbedder<'a> {
    pub fn new(inner: &'a dyn TextEmbedder) -> Self {
        MemoEmbedder { inner, seen: Default::default() }
    }
}

impl TextEmbedder for MemoEmbedder<'_> {
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String> {
        if let Some(v) = self.seen.borrow().get(texts) {
            return Ok(v.clone());
        }
        let v = self.inner.embed(texts)?;
        self.seen.borrow_mut().insert(texts.to_vec(), v.clone());
        Ok(v)
    }
}

/// Token-mean CE of `model` on `examples` (loss on the completion only when `completion_only`):
/// returns (ce, predicted tokens). Sums are accumulated in f64 in a fixed batch order so the number
/// is reproducible.
pub fn token_ce(
    model: &CausalLm,
    tok: &TextTokenizer,
    pad_id: u32,
    examples: &[Example],
    max_len: usize,
    completion_only: bool,
    batch_size: usize,
) -> Result<(f64, u64)> {
    let lm: Vec<LmExample> = examples.iter().map(|e| LmExample { prompt: e.prompt.clone(), completion: e.completion.clone() }).collect();
    let data = tokenize(tok, &lm, max_len, completion_only)?;
    let model = &model.frozen()?;
    let (mut sum, mut tokens) = (0f64, 0u64);
    for start in (0..data.seqs.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(data.seqs.len());
        let seqs = &data.seqs[start..end];
        let starts = data.label_starts.as_ref().map(|s| &s[start..end]);
        let batch = Batch::right_padded(seqs, pad_id, max_len, starts, &model.device)?;
        let ce = model.ce(&batch)?;
        let per_row: Vec<f32> = ce.ce_sum.to_vec1()?;
        sum += per_row.iter().map(|&x| x as f64).sum::<f64>();
        tokens += ce.total_tokens() as u64;
    }
    Ok((if tokens == 0 { f64::NAN } else { sum / tokens as f64 }, tokens))
}

/// The homogenization prompts of one eval set: the task prompt of the first `count` eval examples
/// (for passages, which have no prompt, their first `prefix` words).
pub fn eval_prompts(examples: &[Example], count: usize, prefix: PrefixLength) -> Vec<String> {
    examples
        .iter()
        .take(count)
        .map(|e| if e.prompt.is_empty() { prefix_of(&e.completion, prefix) } else { e.prompt.clone() })
        .collect()
}
