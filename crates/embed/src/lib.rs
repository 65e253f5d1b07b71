//! Sentence embeddings for measuring homogenization: when generative models train on each other's
//! outputs, do their generations for the same prompts grow alike? The metrics over these embeddings
//! (cosine, Vendi) live with the others in `crossfeed_loop::collapse`.
//!
//! - [`embedder`]: a sentence-transformers BERT (e.g. all-MiniLM-L6-v2) on candle -- mean pooling over
//!   the attention mask, L2 normalisation, truncation to `max_seq_length`; parity with
//!   transformers/sentence-transformers is tested on a tiny fixture model.
//! - [`bert`]: the BERT encoder (inference only), adapted from candle-transformers' `models::bert`.
//! - [`resolve`]: a model directory or hub id -> local directory, fetching the sentence-transformers
//!   extras (`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json`); honours `HF_HUB_OFFLINE`.
//! - [`error`]: [`EmbedError`], naming the file or key at fault.

pub mod bert;
pub mod embedder;
pub mod error;
pub mod resolve;

pub use embedder::{Embedder, Pooling, DEFAULT_MAX_SEQ_LENGTH};
pub use error::EmbedError;
pub use resolve::{resolve_model_dir, ResolveOptions};
