//! A byte-level BPE tokenizer fitted on the toy world's text, laid out like Llama 3's: special tokens
//! `<|begin_of_text|>` (id 0, bos) and `<|end_of_text|>` (id 1, eos), a post-processor that prepends
//! bos, and the `tokenizer_config.json` / `special_tokens_map.json` transformers reads.

use std::collections::HashSet;
use std::path::Path;

use serde_json::json;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{PretrainError, Result};
use crate::write_json_atomic;

/// Beginning-of-text token (id 0), prepended to every encoded text.
pub const BOS: &str = "<|begin_of_text|>";
/// End-of-text token (id 1): ends pretraining passages and generations.
pub const EOS: &str = "<|end_of_text|>";
pub const BOS_ID: u32 = 0;
pub const EOS_ID: u32 = 1;

/// Fits the tokenizer on `texts` (target `vocab_size` tokens, specials and the 256 byte symbols
/// included) and writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`
/// into `dir` (`model_max_length` is the model's context length). Returns the tokenizer's size (added tokens included).
pub fn fit_tokenizer(texts: &[String], vocab_size: usize, model_max_length: usize, dir: &Path) -> Result<usize> {
    let path = dir.join("tokenizer.json");
    let err = |m: String| PretrainError::Tokenizer { path: path.clone(), message: m };
    if vocab_size < 258 {
        return Err(PretrainError::Config(format!("vocab_size must be >= 258 (2 specials + 256 bytes), got {vocab_size}")));
    }
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let specials = vec![AddedToken::from(BOS, true), AddedToken::from(EOS, true)];
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(alphabet)
        .build()
        .into();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tok.train(&mut trainer, texts.iter()).map_err(|e| err(e.to_string()))?;
    tok.add_special_tokens(specials.clone()).map_err(|e| err(e.to_string()))?;
    for (s, want) in [(BOS, BOS_ID), (EOS, EOS_ID)] {
        if tok.token_to_id(s) != Some(want) {
            return Err(err(format!("special token {s} got id {:?}, expected {want}", tok.token_to_id(s))));
        }
    }
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS}:0 $A:0"))
        .and_then(|b| b.try_pair(format!("{BOS}:0 $A:0 {BOS}:1 $B:1")))
        .map_err(|e| err(e.to_string()))?
        .special_tokens(vec![(BOS, BOS_ID)])
        .build()
        .map_err(|e| err(e.to_string()))?;
    tok.with_post_processor(Some(post));

    let text = tok.to_string(true).map_err(|e| err(e.to_string()))?;
    crossfeed_fsio::write_atomic(&path, text.as_bytes())?;
    let added = |content: &str| json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true});
    write_json_atomic(
        &dir.join("tokenizer_config.json"),
        &json!({
            "added_tokens_decoder": {BOS_ID.to_string(): added(BOS), EOS_ID.to_string(): added(EOS)},
            "bos_token": BOS,
            "eos_token": EOS,
            "clean_up_tokenization_spaces": true,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": model_max_length,
            "tokenizer_class": "PreTrainedTokenizerFast"
        }),
    )?;
    write_json_atomic(&dir.join("special_tokens_map.json"), &json!({"bos_token": BOS, "eos_token": EOS}))?;
    Ok(tok.get_vocab_size(true))
}
