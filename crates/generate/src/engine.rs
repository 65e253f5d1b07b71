//! The generation loop: a queue of prompts, up to `batch_size` running sequences sharing one KV cache,
//! finished sequences leaving the batch at once and new ones joining from the queue (continuous
//! batching). Sequences of different lengths share the cache left-aligned to its end: each row's
//! unused leading columns are masked out, and each row keeps its own position counter, so a row's
//! numbers are those of a batch of one up to float rounding.

use candle_core::{Device, Tensor};
use crossfeed_model::{transfer, CausalLm, KvCache, TextTokenizer};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::sampling::{self, SamplingParams};
use crate::GenerateError;

/// Everything that decides what gets generated (besides the model and the prompts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    #[serde(flatten)]
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// EOS is not allowed before this many new tokens.
    pub min_new_tokens: usize,
    /// Generation stops when the completion text contains one of these; the completion is cut before it.
    pub stop: Vec<String>,
    pub seed: u64,
    /// Sequences decoded together.
    pub batch_size: usize,
    /// Prompts longer than this keep their last `max_prompt_len` tokens.
    pub max_prompt_len: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_new_tokens: 64,
            min_new_tokens: 0,
            stop: Vec::new(),
            seed: 0,
            batch_size: 16,
            max_prompt_len: 448,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Length,
    Stop,
}

#[derive(Debug, Clone)]
pub struct Completion {
    /// Generated ids, the EOS that ended the sequence included.
    pub token_ids: Vec<u32>,
    /// Decoded text without special tokens, cut before a stop string.
    pub text: String,
    pub finish_reason: FinishReason,
}

/// One running sequence.
struct Slot {
    index: usize,
    generated: Vec<u32>,
    /// The generated text so far, decoded a few tokens at a time (stop strings).
    text: StopScan,
    /// Real tokens so far = position of the next token.
    len: usize,
    rng: ChaCha8Rng,
    /// The token sampled last, to be fed at the next step.
    pending: u32,
}

/// The RNG stream of prompt `index`: independent of batch size and order.
pub fn sequence_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    // (0, 1]: a zero would select a token of probability zero.
    1.0 - rng.random::<f32>()
}

pub struct Generator<'a> {
    model: &'a CausalLm,
    tok: &'a TextTokenizer,
    cfg: GenerationConfig,
    eos: Vec<u32>,
    pad: u32,
}

impl<'a> Generator<'a> {
    pub fn new(model: &'a CausalLm, tok: &'a TextTokenizer, cfg: GenerationConfig) -> Self {
        let eos = model.eos_token_ids();
        let pad = tok.pad_id.or(eos.first().copied()).unwrap_or(0);
        Self { model, tok, cfg, eos, pad }
    }

    pub fn with_eos(mut self, eos: Vec<u32>) -> Self {
        self.eos = eos;
        self
    }

    /// Completions of `prompts` (token ids) in input order; prompt `i` samples from RNG stream `i`.
    /// `on_step(running, finished)` reports progress.
    pub fn run(&self, prompts: &[Vec<u32>], on_step: impl FnMut(usize, usize)) -> Result<Vec<Completion>, GenerateError> {
        let streams: Vec<u64> = (0..prompts.len() as u64).collect();
        self.run_indexed(prompts, &streams, on_step)
    }

    /// Completions of `prompts` where prompt `i` samples from RNG stream `streams[i]`: a subset of a
    /// prompt list, run with the list positions as streams, gets the completions the whole list
    /// would (lazy generation runs only the prompts training will read).
    pub fn run_indexed(&self, prompts: &[Vec<u32>], streams: &[u64], mut on_step: impl FnMut(usize, usize)) -> Result<Vec<Completion>, GenerateError> {
        if streams.len() != prompts.len() {
            return Err(GenerateError::Streams { prompts: prompts.len(), streams: streams.len() });
        }
        let model = self.model.frozen()?;
        let dev = model.device.clone();
        let mut results: Vec<Option<Completion>> = vec![None; prompts.len()];
        let mut queue = (0..prompts.len()).rev().collect::<Vec<_>>();
        let mut slots: Vec<Slot> = Vec::new();
        let mut cache = model.new_cache();
        let mut mask: Vec<Vec<u32>> = Vec::new();
        // The repetition penalty's seen tokens, `[B, V]` on the device: uploaded per admitted batch,
        // each step's tokens marked on the device, rows dropped with the cache's.
        let mut seen: Option<Tensor> = None;
        let bs = self.cfg.batch_size.max(1);
        while !queue.is_empty() || !slots.is_empty() {
            // Refill from the queue.
            let mut admitted = Vec::new();
            while slots.len() + admitted.len() < bs {
                match queue.pop() {
                    Some(i) => admitted.push(i),
                    None => break,
                }
            }
            if !admitted.is_empty() {
                let (new_slots, new_cache, new_mask, logits) = self.prefill(&model, prompts, streams, &admitted, &dev)?;
                let new_seen = match self.penalised() {
                    true => {
                        let rows: Vec<&[u32]> = admitted.iter().map(|&i| &prompts[i][prompts[i].len().saturating_sub(self.cfg.max_prompt_len)..]).collect();
                        Some(sampling::seen_mask(&rows, logits.dim(1)?, &dev)?)
                    }
                    false => None,
                };
                merge(&mut cache, &mut mask, new_cache, new_mask)?;
                slots.extend(new_slots);
                let first = slots.len() - admitted.len();
                self.sample_into(&mut slots[first..], &logits, new_seen.as_ref())?;
                seen = match (seen, new_seen) {
                    (Some(old), Some(new)) => Some(Tensor::cat(&[&old, &new], 0)?),
                    (old, new) => old.or(new),
                };
            } else {
                // One decode step for every running row.
                let b = slots.len();
                let input = transfer::upload(slots.iter().map(|s| s.pending).collect::<Vec<_>>(), (b, 1), &dev)?;
                for row in mask.iter_mut() {
                    row.push(1);
                }
                let t = mask[0].len();
                let key_mask = transfer::upload(mask.concat(), (b, t), &dev)?;
                let positions: Vec<Vec<i64>> = slots.iter().map(|s| vec![s.len as i64]).collect();
                for s in slots.iter_mut() {
                    s.len += 1;
                }
                let logits = model.forward(&input, &key_mask, &positions, Some(&mut cache))?;
                let logits = logits.squeeze(1)?;
                // The tokens fed this step were sampled last step: marked from the uploaded input.
                seen = seen.map(|s| sampling::mark_seen(&s, &input)).transpose()?;
                self.sample_into(&mut slots, &logits, seen.as_ref())?;
            }
            on_step(slots.len(), results.iter().filter(|r| r.is_some()).count());
            // Retire finished rows.
            let mut keep = Vec::new();
            let mut kept_slots = Vec::new();
            for (row, mut slot) in slots.drain(..).enumerate() {
                match self.finished(&mut slot)? {
                    Some(done) => results[slot.index] = Some(done),
                    None => {
                        keep.push(row as u32);
                        kept_slots.push(slot);
                    }
                }
            }
            if keep.len() < mask.len() {
                if keep.is_empty() {
                    cache = model.new_cache();
                    mask.clear();
                    seen = None;
                } else {
                    let rows = transfer::upload(keep.clone(), keep.len(), &dev)?;
                    cache.select_rows(&rows)?;
                    seen = seen.map(|s| crossfeed_model::cuda_rules::index_select(&s, &rows, 0)).transpose()?;
                    mask = keep.iter().map(|&r| mask[r as usize].clone()).collect();
                    trim(&mut cache, &mut mask)?;
                }
            }
            slots = kept_slots;
        }
        results.into_iter().enumerate().map(|(i, r)| r.ok_or(GenerateError::Lost(i))).collect()
    }

    /// Runs the admitted prompts as one left-padded batch; returns their slots, cache, mask rows and
    /// last-position logits `[n, V]`.
    #[allow(clippy::type_complexity)]
    fn prefill(&self, model: &CausalLm, prompts: &[Vec<u32>], streams: &[u64], admitted: &[usize], dev: &Device) -> Result<(Vec<Slot>, KvCache, Vec<Vec<u32>>, Tensor), GenerateError> {
        let rows: Vec<&[u32]> = admitted
            .iter()
            .map(|&i| {
                let p = &prompts[i];
                &p[p.len().saturating_sub(self.cfg.max_prompt_len)..]
            })
            .collect();
        if let Some(pos) = rows.iter().position(|r| r.is_empty()) {
            return Err(GenerateError::EmptyPrompt(admitted[pos]));
        }
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let n = rows.len();
        let mut ids = vec![self.pad; n * t];
        let mut mask = vec![vec![0u32; t]; n];
        for (i, r) in rows.iter().enumerate() {
            let off = t - r.len();
            ids[i * t + off..(i + 1) * t].copy_from_slice(r);
            mask[i][off..].fill(1);
        }
        let ids = transfer::upload(ids, (n, t), dev)?;
        let key_mask = transfer::upload(mask.concat(), (n, t), dev)?;
        // From the host copy of the mask: reading `key_mask` back would be a device sync.
        let positions = crossfeed_model::ops::positions_from_rows(&mask, model.pad_position());
        let mut cache = model.new_cache();
        let logits = model.forward(&ids, &key_mask, &positions, Some(&mut cache))?;
        let last = logits.narrow(1, t - 1, 1)?.squeeze(1)?;
        let slots = admitted
            .iter()
            .zip(&rows)
            .map(|(&index, r)| Slot {
                index,
                generated: Vec::new(),
                text: StopScan::default(),
                len: r.len(),
                rng: sequence_rng(self.cfg.seed, streams[index]),
                pending: 0,
            })
            .collect();
        Ok((slots, cache, mask, last))
    }

    fn penalised(&self) -> bool {
        self.cfg.sampling.repetition_penalty != 1.0
    }

    /// Samples each row's next token; `seen` is the rows' repetition-penalty mask (when penalised).
    fn sample_into(&self, slots: &mut [Slot], logits: &candle_core::Tensor, seen: Option<&Tensor>) -> Result<(), GenerateError> {
        let p = &self.cfg.sampling;
        let mut logits = logits.clone();
        if let Some(seen) = seen.filter(|_| self.penalised()) {
            logits = sampling::apply_repetition_penalty(&logits, seen, p.repetition_penalty)?;
        }
        let young: Vec<bool> = slots.iter().map(|s| s.generated.len() < self.cfg.min_new_tokens).collect();
        logits = sampling::forbid(&logits, &young, &self.eos)?;
        // Every row draws its uniform even when greedy, so streams stay aligned whatever the params.
        let u: Vec<f32> = slots.iter_mut().map(|s| uniform(&mut s.rng)).collect();
        let next = sampling::next_tokens(&logits, p, &u)?;
        for (s, t) in slots.iter_mut().zip(next) {
            s.generated.push(t);
            s.pending = t;
        }
        Ok(())
    }

    fn finished(&self, s: &mut Slot) -> Result<Option<Completion>, GenerateError> {
        let last = *s.generated.last().unwrap_or(&u32::MAX);
        let reason = if self.eos.contains(&last) {
            Some(FinishReason::Eos)
        } else if s.generated.len() >= self.cfg.max_new_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let text_of = |ids: &[u32]| self.tok.decode(ids, true).map_err(GenerateError::from);
        // A stop string is looked for in the new tokens' text (a step decodes a few tokens, not the
        // whole completion); the cut is then found in the whole text, as before.
        let stop_seen = !self.cfg.stop.is_empty() && s.text.advance(&s.generated, &self.cfg.stop, text_of)?;
        if !stop_seen && reason.is_none() {
            return Ok(None);
        }
        let text = text_of(&s.generated)?;
        if let Some(cut) = self.cfg.stop.iter().filter_map(|st| text.find(st.as_str())).min() {
            return Ok(Some(Completion { token_ids: s.generated.clone(), text: text[..cut].to_string(), finish_reason: FinishReason::Stop }));
        }
        Ok(reason.map(|r| Completion { token_ids: s.generated.clone(), text, finish_reason: r }))
    }
}

/// The text of a sequence's generated tokens, decoded incrementally: each step decodes the new tokens
/// with a few settled ones before them (byte-level and SentencePiece decoders join tokens depending on
/// their neighbours) and keeps only the text past theirs; a token that ends inside a UTF-8 character
/// waits for the next. Only the tail where a new stop string can end is searched.
#[derive(Debug, Default)]
struct StopScan {
    text: String,
    /// Tokens whose text is in `text`.
    read: usize,
}

/// Settled tokens decoded again in front of the new ones.
const CONTEXT_TOKENS: usize = 5;

impl StopScan {
    /// Decodes the tokens of `ids` past `read`; true when a stop string now ends in the new text.
    fn advance(&mut self, ids: &[u32], stop: &[String], mut decode: impl FnMut(&[u32]) -> Result<String, GenerateError>) -> Result<bool, GenerateError> {
        let from = self.read.saturating_sub(CONTEXT_TOKENS);
        let before = decode(&ids[from..self.read])?;
        let now = decode(&ids[from..])?;
        let Some(new) = now.strip_prefix(before.as_str()) else {
            // A decoder that rewrites its context: take the whole text once.
            self.text = decode(ids)?;
            self.read = ids.len();
            return Ok(stop.iter().any(|s| self.text.contains(s.as_str())));
        };
        if new.ends_with('\u{FFFD}') {
            return Ok(false);
        }
        let longest = stop.iter().map(String::len).max().unwrap_or(0);
        let mut start = self.text.len().saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        self.text.push_str(new);
        self.read = ids.len();
        let tail = &self.text[start..];
        Ok(stop.iter().any(|s| tail.contains(s.as_str())))
    }
}

/// Appends `new` rows to the running cache, left-padding whichever is shorter with masked zeros.
/// `ops::positions_from_mask` on the host rows: `cumsum(mask) - 1` on real tokens, `pad` elsewhere.
fn merge(cache: &mut KvCache, mask: &mut Vec<Vec<u32>>, new: KvCache, new_mask: Vec<Vec<u32>>) -> Result<(), GenerateError> {
    if mask.is_empty() {
        *cache = new;
        *mask = new_mask;
        return Ok(());
    }
    let (t_old, t_new) = (mask[0].len(), new_mask[0].len());
    let t = t_old.max(t_new);
    cache.extend_rows(&new)?;
    for row in mask.iter_mut() {
        row.splice(0..0, std::iter::repeat_n(0, t - t_old));
    }
    for mut row in new_mask {
        row.splice(0..0, std::iter::repeat_n(0, t - t_new));
        mask.push(row);
    }
    Ok(())
}

/// Drops leading cache columns that every remaining row masks out.
fn trim(cache: &mut KvCache, mask: &mut [Vec<u32>]) -> Result<(), GenerateError> {
    let dead = mask.iter().map(|r| r.iter().take_while(|&&m| m == 0).count()).min().unwrap_or(0);
    if dead == 0 {
        return Ok(());
    }
    cache.trim_front(dead)?;
    for row in mask.iter_mut() {
        row.drain(..dead);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{GenerateError, StopScan, CONTEXT_TOKENS};

    /// Byte tokens decoded as UTF-8 (a character split over tokens decodes to U+FFFD until complete).
    fn run(bytes: &[u8], stop: &[&str]) -> (Option<usize>, usize) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let ids: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
        let mut scan = StopScan::default();
        let mut widest = 0;
        for n in 1..=ids.len() {
            let decode = |ids: &[u32]| -> Result<String, GenerateError> {
                widest = widest.max(ids.len());
                Ok(String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into_owned())
            };
            if scan.advance(&ids[..n], &stop, decode).unwrap() {
                return (Some(n), widest);
            }
        }
        (None, widest)
    }

    #[test]
    fn stop_strings_are_found_in_the_new_text_with_bounded_decoding() {
        let long = "x".repeat(200) + "the end. STOP here";
        let (at, widest) = run(long.as_bytes(), &["STOP", "never"]);
        assert_eq!(at, Some(long.find("STOP").unwrap() + 4), "found when its last token arrives");
        assert!(widest <= CONTEXT_TOKENS + 1, "a step decoded {widest} tokens");
        // A stop string ending in a character split across tokens is found once the character is whole.
        let text = "caf\u{e9}!";
        assert_eq!(run(text.as_bytes(), &["\u{e9}!"]).0, Some(text.len()));
        assert_eq!(run(text.as_bytes(), &["\u{e9}"]).0, Some(text.len() - 1));
        assert_eq!(run(b"abcabc", &["cab", "zz"]).0, Some(5));
        assert_eq!(run(b"abcabc", &["zz"]).0, None);
    }
}
