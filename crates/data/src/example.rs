//! The unit of text that reaches a model, and how its loss is masked.

use serde::{Deserialize, Serialize};

/// One rendered example. The training text is `prompt + completion` (no separator is inserted:
/// templates carry their own leading space or newline, as lm-evaluation-harness does with its
/// `target_delimiter = " "`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub completion: String,
}

impl Example {
    pub fn new(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Example {
            prompt: prompt.into(),
            completion: completion.into(),
        }
    }

    /// Text for training: `prompt + completion`.
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(self.prompt.len() + self.completion.len());
        s.push_str(&self.prompt);
        s.push_str(&self.completion);
        s
    }

    /// Length of the prompt in Unicode scalar values (chars) — the boundary for completion-only loss
    /// when the tokenizer reports char offsets.
    pub fn prompt_len_chars(&self) -> usize {
        self.prompt.chars().count()
    }

    /// Length of the prompt in UTF-8 bytes — the same boundary for byte offsets (Rust `tokenizers`
    /// `Encoding::get_offsets` reports byte offsets).
    pub fn prompt_len_bytes(&self) -> usize {
        self.prompt.len()
    }
}

/// Which tokens of a training text contribute to the loss. The data layer does not tokenize; it
/// reports the prompt/completion boundary (`prompt_len_chars` / `prompt_len_bytes`) and the caller
/// masks every token that ends at or before it when `CompletionOnly` is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossMask {
    /// Loss on every token of `prompt + completion` (default; what the paper's causal-LM fine-tuning does).
    #[default]
    Full,
    /// Loss only on completion tokens. Synthetic and public samples have an empty prompt (length 0),
    /// so they are trained on in full either way.
    CompletionOnly,
}

impl LossMask {
    /// First byte offset that carries loss for a text whose prompt is `prompt_len_bytes` long.
    pub fn loss_start_byte(self, prompt_len_bytes: usize) -> usize {
        match self {
            LossMask::Full => 0,
            LossMask::CompletionOnly => prompt_len_bytes,
        }
    }

    /// First char offset that carries loss for a text whose prompt is `prompt_len_chars` long.
    pub fn loss_start_char(self, prompt_len_chars: usize) -> usize {
        match self {
            LossMask::Full => 0,
            LossMask::CompletionOnly => prompt_len_chars,
        }
    }
}
