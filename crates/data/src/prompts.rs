//! Prompts an entity's model is given to produce its synthetic samples for the public pool.

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::mixture::{allocate, draw_indices, mixture_weights, MixtureConfig, Origin, Rounding, SourceKind};
use crate::rng::Stream;
use serde::{Deserialize, Serialize};

/// What the prompts are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// Default: prefixes of the entity's own real training samples (`prompt + completion`), drawn
    /// `beta` from its private split and `1 − beta` from the public pool (largest remainder, private
    /// first on ties).
    #[default]
    OwnTraining,
    /// The whole task prompt (question, choices, ending in `Answer:`) of private examples; the
    /// prefix length is not applied.
    TaskQuestions,
    /// Prefixes of public passages only.
    PublicPassages,
    /// Empty prompts: the model generates from BOS.
    Empty,
}

/// How much of a sample's text forms the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixLength {
    /// The first `n` chars.
    Chars(usize),
    /// The first `n` whitespace-separated words (original spacing kept, trailing space dropped).
    Words(usize),
    /// The example's prompt part (for passages with an empty prompt: the first 32 words).
    Prompt,
}

impl Default for PrefixLength {
    fn default() -> Self {
        PrefixLength::Words(32)
    }
}

/// Prompt settings (embedded in the loop's TOML config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Default `own_training`.
    #[serde(default)]
    pub source: PromptSource,
    /// Default `{ words = 32 }`.
    #[serde(default)]
    pub prefix: PrefixLength,
    /// Prompts per entity per generation. Default (`None`): exactly the number the sampler will
    /// draw from this entity's synthetic set at the next generation ([`synthetic_count`]).
    #[serde(default)]
    pub count: Option<usize>,
}

/// One generation prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationPrompt {
    /// The producing entity.
    pub entity: usize,
    /// The producing model's generation.
    pub generation: u64,
    /// Position in this entity's prompt list; use it as [`crate::SyntheticSample::index`].
    pub index: u64,
    pub prompt: String,
    /// The real sample the prompt was cut from (`None` for empty prompts).
    pub origin: Option<Origin>,
}

/// How many samples the trainees at generation `generation + 1` draw from `producer`'s synthetic
/// set, at most over the trainees (under the default topology `all` every trainee draws the same):
/// exact under largest remainder; under multinomial the largest expectation `alpha·n·share`, rounded
/// up (`ceil(alpha·n/K)` under `all`, `ceil(alpha·n)` under `self`).
pub fn synthetic_count(cfg: &MixtureConfig, generation: u64, producer: usize, k: usize) -> usize {
    let next = generation + 1;
    let is_producer = |s: &(crate::mixture::SourceSlot, f64)| s.0.kind == SourceKind::Synthetic && s.0.entity == Some(producer);
    (0..k)
        .map(|trainee| {
            let slots = mixture_weights(cfg, next, trainee, k);
            match cfg.rounding {
                Rounding::LargestRemainder => {
                    let w: Vec<f64> = slots.iter().map(|s| s.1).collect();
                    let mut dummy = Stream::new(0, "unused", 0, 0);
                    let counts = allocate(&w, cfg.n, Rounding::LargestRemainder, &mut dummy);
                    slots.iter().zip(counts).find(|(s, _)| is_producer(s)).map(|(_, c)| c).unwrap_or(0)
                }
                Rounding::Multinomial => {
                    let share = slots.iter().find(|s| is_producer(s)).map_or(0.0, |s| s.1);
                    (share * cfg.n as f64 - 1e-9).ceil().max(0.0) as usize
                }
            }
        })
        .max()
        .unwrap_or(0)
}

/// How many prompts (= samples of its synthetic set) `entity`'s generation-`generation` model
/// completes: `prompts.count` when set, else [`synthetic_count`]. From the config alone, so a trainee
/// knows the size of every set before any of it is generated.
pub fn prompt_count(cfg: &PromptConfig, mix: &MixtureConfig, generation: u64, entity: usize, k: usize) -> usize {
    cfg.count.unwrap_or_else(|| synthetic_count(mix, generation, entity, k))
}

/// Cut a prefix of `text`.
pub fn prefix_of(text: &str, prefix: PrefixLength) -> String {
    match prefix {
        PrefixLength::Chars(n) => text.chars().take(n).collect(),
        PrefixLength::Words(_) | PrefixLength::Prompt => {
            let n = if let PrefixLength::Words(n) = prefix { n } else { 32 };
            if n == 0 {
                return String::new();
            }
            let mut words = 0;
            let mut in_word = false;
            for (i, c) in text.char_indices() {
                if c.is_whitespace() {
                    if in_word {
                        words += 1;
                        in_word = false;
                        if words == n {
                            return text[..i].to_string();
                        }
                    }
                } else {
                    in_word = true;
                }
            }
            text.to_string()
        }
    }
}

fn prompt_text(ex: &Example, prefix: PrefixLength) -> String {
    match prefix {
        PrefixLength::Prompt if !ex.prompt.is_empty() => ex.prompt.clone(),
        _ => prefix_of(&ex.text(), prefix),
    }
}

/// The prompts `entity`'s generation-`generation` model completes to produce its synthetic set.
/// Deterministic in `(seed, generation, entity)` (stream `"prompts"`).
#[allow(clippy::too_many_arguments)]
pub fn generation_prompts(
    cfg: &PromptConfig,
    mix: &MixtureConfig,
    seed: u64,
    generation: u64,
    entity: usize,
    k: usize,
    private: &[Example],
    public: &[Example],
) -> Result<Vec<GenerationPrompt>> {
    mix.validate()?;
    if k == 0 || entity >= k {
        return Err(DataError::Config(format!("entity {entity} out of range for K = {k}")));
    }
    let count = prompt_count(cfg, mix, generation, entity, k);
    let mut rng = Stream::new(seed, "prompts", generation, entity as u64);
    let mut out: Vec<(String, Option<Origin>)> = Vec::with_capacity(count);
    let take = |rng: &mut Stream, src: &[Example], kind: SourceKind, c: usize, whole_prompt: bool, out: &mut Vec<(String, Option<Origin>)>| -> Result<()> {
        let (idx, _) = draw_indices(rng, src.len(), c, mix.replacement, if kind == SourceKind::Private { "private (prompts)" } else { "public (prompts)" })?;
        for i in idx {
            let ex = &src[i as usize];
            let p = if whole_prompt { ex.prompt.clone() } else { prompt_text(ex, cfg.prefix) };
            let origin = Origin {
                source: kind,
                entity: (kind == SourceKind::Private).then_some(entity),
                generation: None,
                row: i,
            };
            out.push((p, Some(origin)));
        }
        Ok(())
    };
    match cfg.source {
        PromptSource::OwnTraining => {
            let counts = allocate(&[mix.beta, 1.0 - mix.beta], count, Rounding::LargestRemainder, &mut rng);
            take(&mut rng, private, SourceKind::Private, counts[0], false, &mut out)?;
            take(&mut rng, public, SourceKind::Public, counts[1], false, &mut out)?;
            rng.shuffle(&mut out);
        }
        PromptSource::TaskQuestions => take(&mut rng, private, SourceKind::Private, count, true, &mut out)?,
        PromptSource::PublicPassages => take(&mut rng, public, SourceKind::Public, count, false, &mut out)?,
        PromptSource::Empty => out.extend((0..count).map(|_| (String::new(), None))),
    }
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, (prompt, origin))| GenerationPrompt {
            entity,
            generation,
            index: i as u64,
            prompt,
            origin,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of("one  two three", PrefixLength::Words(2)), "one  two");
        assert_eq!(prefix_of("one two", PrefixLength::Words(5)), "one two");
        assert_eq!(prefix_of("héllo", PrefixLength::Chars(2)), "hé");
        assert_eq!(prefix_of(" a b", PrefixLength::Words(1)), " a");
    }
}
