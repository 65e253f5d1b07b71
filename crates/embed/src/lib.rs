//! Sentence embeddings and diversity metrics for measuring homogenization: when generative models
//! train on each other's outputs, do their generations for the same prompts grow alike?
//!
//! - [`embedder`]: a sentence-transformers BERT (e.g. all-MiniLM-L6-v2) on candle -- mean pooling over
//!   the attention mask, L2 normalisation, truncation to `max_seq_length`; parity with
//!   transformers/sentence-transformers is tested on a tiny fixture model.
//! - [`bert`]: the BERT encoder (inference only), adapted from candle-transformers' `models::bert`.
//! - [`resolve`]: a model directory or hub id -> local directory, fetching the sentence-transformers
//!   extras (`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json`); honours `HF_HUB_OFFLINE`.
//! - [`similarity`]: cosine and the mean pairwise cosine across K entities (the homogenization metric).
//! - [`diversity`]: distinct-n and Self-BLEU (lexical diversity within one entity's outputs).
//! - [`error`]: [`EmbedError`], naming the file or key at fault.

pub mod bert;
pub mod diversity;
pub mod embedder;
pub mod error;
pub mod resolve;
pub mod similarity;

pub use diversity::{distinct_n, self_bleu};
pub use embedder::{Embedder, Pooling, DEFAULT_MAX_SEQ_LENGTH};
pub use error::EmbedError;
pub use resolve::{resolve_model_dir, ResolveOptions};
pub use similarity::{cosine, mean_pairwise_cosine};
