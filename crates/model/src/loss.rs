//! Next-token cross entropy over a padded batch.

use candle_core::{DType, Result, Tensor, D};

/// Per-sequence cross-entropy sums and predicted-token counts.
#[derive(Debug, Clone)]
pub struct CeSums {
    /// `[B]` f32: sum over the predicted tokens of each row (differentiable).
    pub ce_sum: Tensor,
    /// Predicted tokens per row (positions 1.. whose mask — and label mask — is 1).
    pub tokens: Vec<usize>,
}

impl CeSums {
    pub fn total_tokens(&self) -> usize {
        self.tokens.iter().sum()
    }

    /// Mean CE over all predicted tokens of the batch (the training loss).
    pub fn mean(&self) -> Result<Tensor> {
        self.ce_sum.sum_all()? / self.total_tokens().max(1) as f64
    }
}

/// Cross entropy of `logits: [B, T, V]` predicting `input_ids[:, 1:]`. A position counts when both
/// it and its label are real tokens (`attention_mask`) and `label_mask` (if given: 1 on the tokens whose
/// prediction is trained, e.g. completion-only) is 1 at the label position.
pub fn next_token_ce(
    logits: &Tensor,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    label_mask: Option<&Tensor>,
) -> Result<CeSums> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        let dev = logits.device();
        return Ok(CeSums { ce_sum: Tensor::zeros(b, DType::F32, dev)?, tokens: vec![0; b] });
    }
    let logits = logits.narrow(1, 0, t - 1)?.to_dtype(DType::F32)?;
    let labels = input_ids.narrow(1, 1, t - 1)?.contiguous()?;
    let mut weight = attention_mask.narrow(1, 1, t - 1)?.to_dtype(DType::F32)?;
    if let Some(lm) = label_mask {
        weight = (weight * lm.narrow(1, 1, t - 1)?.to_dtype(DType::F32)?)?;
    }
    let logp = log_softmax_last(&logits.reshape(((b * (t - 1)), v))?)?;
    let picked = logp.gather(&labels.reshape((b * (t - 1), 1))?, 1)?.reshape((b, t - 1))?;
    let ce_sum = (picked.neg()? * &weight)?.sum(1)?;
    let tokens = weight.sum(1)?.to_vec1::<f32>()?.into_iter().map(|x| x.round() as usize).collect();
    Ok(CeSums { ce_sum, tokens })
}

/// `log_softmax` from primitive differentiable ops.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
