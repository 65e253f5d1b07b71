//! The alpha/beta mixture sampler — which real and synthetic samples an entity trains on in a
//! generation.
//!
//! Shares for entity `e` at generation `t` (K entities, `n` samples):
//! - `t = 0`: private real data `beta`, public real data `1 - beta`, no synthetic data.
//! - `t >= 1`: private `(1-alpha)·beta`, public `(1-alpha)·(1-beta)`, and `alpha/K` from each
//!   entity's synthetic set in the pool (pool policy [`PoolPolicy`] says which samples form a set;
//!   the sharing [`Topology`] can split `alpha` over the producers otherwise).
//!
//! Counts are exact by the largest-remainder method (default) or multinomial ([`Rounding`]).
//! Samples are drawn without replacement within a source; when a source is smaller than its count
//! the [`Replacement`] policy decides (fallback with a warning, or an error). Every drawn sample
//! carries its [`Origin`] for the run's manifest; the order of the returned samples is shuffled.
//! All randomness comes from the stream `(seed, "mixture", generation, entity)` (see [`crate::rng`]),
//! so the result depends only on the arguments, never on threads or call order.

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::rng::Stream;
use crate::topology::Topology;
use serde::{Deserialize, Serialize};

/// How real-valued quotas `n·w_i` become integer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Hamilton / largest remainder (default): every source gets `floor(n·w_i)`, the `n − Σ floor`
    /// leftover samples go one each to the largest fractional parts. Ties (fractional parts within
    /// 1e-9) go to the earlier source in the order private, public, synthetic entity 0, 1, …, K−1.
    /// Sources with weight 0 never receive a sample.
    #[default]
    LargestRemainder,
    /// Each of the `n` samples picks its source independently with probabilities `w_i`.
    Multinomial,
}

/// Which synthetic samples form entity `j`'s synthetic set at generation `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolPolicy {
    /// Default: only the outputs of generation `t−1` (the latest models); the share `alpha/K` goes
    /// to each of the K entities' latest sets.
    #[default]
    Latest,
    /// Everything entity `j` produced at generations `0..t` (accumulated web); still `alpha/K` per
    /// entity, uniform within the accumulated set.
    Accumulate,
    /// Classic single-model collapse: the whole synthetic share `alpha` comes from the entity's
    /// *own* outputs of generation `t−1`; other entities' outputs are ignored. With K = 1 this is the
    /// same as `Latest`. It is `Latest` with topology `self` as the default; an explicit
    /// `mixture.topology` overrides who is read (the sets stay the latest generation's).
    Replace,
}

/// What to do when a source has fewer items than the count allotted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replacement {
    /// Default: draw with replacement, as evenly as possible (every item `floor(c/m)` times, plus
    /// `c mod m` distinct items once more), and record a warning in [`Mixture::warnings`] and
    /// `with_replacement = true` in the source's [`Allocation`].
    #[default]
    Fallback,
    /// Fail with [`DataError::NotEnough`].
    Strict,
}

fn d_alpha() -> f64 {
    0.5
}
fn d_beta() -> f64 {
    0.5
}
fn d_n() -> usize {
    12_500
}
fn d_true() -> bool {
    true
}

/// Mixture parameters (embedded in the loop's TOML config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureConfig {
    /// Share of synthetic data in generations ≥ 1. Default 0.5.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Share of private data within the real data. Default 0.5.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// Training samples per entity per generation. Default 12,500 (the paper's n).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Default `largest_remainder`.
    #[serde(default)]
    pub rounding: Rounding,
    /// Default `latest`.
    #[serde(default)]
    pub pool_policy: PoolPolicy,
    /// Default `fallback`.
    #[serde(default)]
    pub replacement: Replacement,
    /// Shuffle the drawn samples (default true); false keeps them grouped by source.
    #[serde(default = "d_true")]
    pub shuffle: bool,
    /// Who reads whom; unset = `all` (`self` under `pool_policy = replace`). See [`Topology`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

impl Default for MixtureConfig {
    fn default() -> Self {
        MixtureConfig {
            alpha: d_alpha(),
            beta: d_beta(),
            n: d_n(),
            rounding: Rounding::default(),
            pool_policy: PoolPolicy::default(),
            replacement: Replacement::default(),
            shuffle: true,
            topology: None,
        }
    }
}

impl MixtureConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(DataError::Config(format!("mixture.{name} = {v} is outside [0, 1]")));
            }
        }
        Ok(())
    }

    /// The topology in force: the configured one, else `self` under `replace` and `all` otherwise.
    pub fn effective_topology(&self) -> Topology {
        match (&self.topology, self.pool_policy) {
            (Some(t), _) => t.clone(),
            (None, PoolPolicy::Replace) => Topology::SelfOnly,
            (None, _) => Topology::All,
        }
    }

    /// [`MixtureConfig::validate`] plus the topology's check against `k` entities.
    pub fn validate_for(&self, k: usize) -> Result<()> {
        self.validate()?;
        match &self.topology {
            Some(t) => t.validate(k),
            None => Ok(()),
        }
    }
}

/// An output of some entity's model, as it sits in the public pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticSample {
    /// Entity whose model produced it.
    pub entity: usize,
    /// Generation of the model that produced it.
    pub generation: u64,
    /// Index within that (entity, generation) set, e.g. the index of its generation prompt.
    pub index: u64,
    pub text: String,
}

/// Kind of data a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Private,
    Public,
    Synthetic,
}

/// A source slot of the mixture: private, public, or one entity's synthetic set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceSlot {
    pub kind: SourceKind,
    /// The producing entity for synthetic slots, `None` otherwise.
    pub entity: Option<usize>,
}

impl SourceSlot {
    pub fn name(&self) -> String {
        match (self.kind, self.entity) {
            (SourceKind::Private, _) => "private".into(),
            (SourceKind::Public, _) => "public".into(),
            (SourceKind::Synthetic, Some(e)) => format!("synthetic[entity {e}]"),
            (SourceKind::Synthetic, None) => "synthetic".into(),
        }
    }
}

/// Where one drawn sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub source: SourceKind,
    /// Private: the training entity (whose private data it is). Synthetic: the producing entity.
    /// Public: `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entity: Option<usize>,
    /// Synthetic: the producing model's generation. Real data: `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generation: Option<u64>,
    /// Private/public: index into the slice passed to the sampler (the task's fixed train split).
    /// Synthetic: [`SyntheticSample::index`].
    pub row: u64,
}

/// One training sample handed to the trainer (which uses `text` only; `origin` is for the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawn {
    pub text: String,
    /// Prompt/completion boundary in chars (0 for public and synthetic samples).
    pub prompt_len_chars: usize,
    /// Same boundary in UTF-8 bytes.
    pub prompt_len_bytes: usize,
    pub origin: Origin,
}

/// The count given to one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub slot: SourceSlot,
    /// Normalised share.
    pub weight: f64,
    pub count: usize,
    /// Items the source holds.
    pub available: usize,
    /// True when `count > available` and the fallback drew with replacement.
    pub with_replacement: bool,
}

/// The result of [`sample_mixture`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    pub generation: u64,
    pub entity: usize,
    pub samples: Vec<Drawn>,
    pub allocation: Vec<Allocation>,
    /// Human-readable warnings (replacement fallbacks).
    pub warnings: Vec<String>,
}

impl Mixture {
    /// Texts only, in training order.
    pub fn texts(&self) -> Vec<&str> {
        self.samples.iter().map(|d| d.text.as_str()).collect()
    }

    /// Number of samples whose origin is `kind` (and, if given, `entity`).
    pub fn count(&self, kind: SourceKind, entity: Option<usize>) -> usize {
        self.samples
            .iter()
            .filter(|d| d.origin.source == kind && (entity.is_none() || d.origin.entity == entity))
            .count()
    }
}

/// The source slots and their normalised weights for (generation, entity), in tie-break order.
pub fn mixture_weights(cfg: &MixtureConfig, generation: u64, entity: usize, k: usize) -> Vec<(SourceSlot, f64)> {
    let private = SourceSlot {
        kind: SourceKind::Private,
        entity: None,
    };
    let public = SourceSlot {
        kind: SourceKind::Public,
        entity: None,
    };
    let synth = |e| SourceSlot {
        kind: SourceKind::Synthetic,
        entity: Some(e),
    };
    let (a, b) = (cfg.alpha, cfg.beta);
    if generation == 0 {
        return vec![(private, b), (public, 1.0 - b)];
    }
    let mut w = vec![(private, (1.0 - a) * b), (public, (1.0 - a) * (1.0 - b))];
    match cfg.effective_topology() {
        // Spelled as before topologies existed, so the default's weights are bit-identical.
        Topology::All => {
            for j in 0..k {
                w.push((synth(j), a / k as f64));
            }
        }
        t => {
            let row = t.row(entity, k);
            let sum: f64 = row.iter().map(|r| r.1).sum();
            for (j, wj) in row {
                w.push((synth(j), a * wj / sum));
            }
        }
    }
    w
}

/// Integer counts summing to `n` for `weights` (normalised internally).
pub fn allocate(weights: &[f64], n: usize, rounding: Rounding, rng: &mut Stream) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    if weights.is_empty() || total <= 0.0 {
        return vec![0; weights.len()];
    }
    let w: Vec<f64> = weights.iter().map(|x| x / total).collect();
    match rounding {
        Rounding::LargestRemainder => {
            const EPS: f64 = 1e-9;
            let mut counts = Vec::with_capacity(w.len());
            let mut fracs = Vec::with_capacity(w.len());
            for (i, wi) in w.iter().enumerate() {
                let q = wi * n as f64;
                let fl = (q + EPS).floor();
                counts.push(fl as usize);
                fracs.push((i, if *wi > 0.0 { (q - fl).max(0.0) } else { -1.0 }));
            }
            let assigned: usize = counts.iter().sum();
            let mut rest = n.saturating_sub(assigned);
            // Largest fraction first; ties (within EPS) to the lower index. Stable sort on index order.
            fracs.sort_by(|x, y| {
                if (x.1 - y.1).abs() <= EPS {
                    x.0.cmp(&y.0)
                } else {
                    y.1.partial_cmp(&x.1).unwrap()
                }
            });
            for (i, f) in fracs {
                if rest == 0 || f < 0.0 {
                    break;
                }
                counts[i] += 1;
                rest -= 1;
            }
            counts
        }
        Rounding::Multinomial => {
            let mut counts = vec![0usize; w.len()];
            let last = w.iter().rposition(|x| *x > 0.0).unwrap();
            for _ in 0..n {
                let u = rng.unit();
                let mut acc = 0.0;
                let mut pick = last;
                for (i, wi) in w.iter().enumerate() {
                    acc += wi;
                    if u < acc && *wi > 0.0 {
                        pick = i;
                        break;
                    }
                }
                counts[pick] += 1;
            }
            counts
        }
    }
}

/// Indices of `count` draws from a source of `m` items (see [`Replacement`]).
pub(crate) fn draw_indices(
    rng: &mut Stream,
    m: usize,
    count: usize,
    replacement: Replacement,
    name: &str,
) -> Result<(Vec<u64>, bool)> {
    if count == 0 {
        return Ok((Vec::new(), false));
    }
    if m == 0 {
        return Err(DataError::EmptySource {
            source_name: name.to_string(),
            requested: count,
        });
    }
    if count <= m {
        return Ok((rng.sample_indices(m as u64, count), false));
    }
    if replacement == Replacement::Strict {
        return Err(DataError::NotEnough {
            source_name: name.to_string(),
            requested: count,
            available: m,
        });
    }
    let mut idx = Vec::with_capacity(count);
    for _ in 0..count / m {
        idx.extend(0..m as u64);
    }
    idx.extend(rng.sample_indices(m as u64, count % m));
    Ok((idx, true))
}

/// The pool indices forming `producer`'s synthetic set for a trainee at `generation`.
/// A pool of text-free stand-ins: `count` samples `(entity, generation, 0..count)` per set, in the
/// order given. [`sample_mixture`] reads only set sizes and origins, so over this pool it returns the
/// same draw and order as over the generated pool (texts empty): lazy generation uses it to learn
/// which samples training will read before any of them exists.
pub fn placeholder_pool(sets: &[(usize, u64, usize)]) -> Vec<SyntheticSample> {
    sets.iter()
        .flat_map(|&(entity, generation, count)| {
            (0..count as u64).map(move |index| SyntheticSample { entity, generation, index, text: String::new() })
        })
        .collect()
}

fn synthetic_set(policy: PoolPolicy, pool: &[SyntheticSample], generation: u64, producer: usize) -> Vec<usize> {
    pool.iter()
        .enumerate()
        .filter(|(_, s)| {
            s.entity == producer
                && match policy {
                    PoolPolicy::Latest | PoolPolicy::Replace => s.generation + 1 == generation,
                    PoolPolicy::Accumulate => s.generation < generation,
                }
        })
        .map(|(i, _)| i)
        .collect()
}

/// Draw entity `entity`'s training set for `generation` (see the module docs).
///
/// `private` is the entity's private train split, `public` the public train pool, `pool` every
/// synthetic sample available (all entities, any generations; the pool policy selects). `k` is the
/// number of entities.
#[allow(clippy::too_many_arguments)]
pub fn sample_mixture(
    cfg: &MixtureConfig,
    seed: u64,
    generation: u64,
    entity: usize,
    k: usize,
    private: &[Example],
    public: &[Example],
    pool: &[SyntheticSample],
) -> Result<Mixture> {
    if k == 0 || entity >= k {
        return Err(DataError::Config(format!("entity {entity} out of range for K = {k}")));
    }
    cfg.validate_for(k)?;
    let mut rng = Stream::new(seed, "mixture", generation, entity as u64);
    let slots = mixture_weights(cfg, generation, entity, k);
    let weights: Vec<f64> = slots.iter().map(|s| s.1).collect();
    let counts = allocate(&weights, cfg.n, cfg.rounding, &mut rng);

    let mut samples = Vec::with_capacity(cfg.n);
    let mut allocation = Vec::with_capacity(slots.len());
    let mut warnings = Vec::new();
    for ((slot, weight), count) in slots.into_iter().zip(counts) {
        let name = slot.name();
        let (available, with_replacement) = match slot.kind {
            SourceKind::Private | SourceKind::Public => {
                let (src, kind) = if slot.kind == SourceKind::Private {
                    (private, SourceKind::Private)
                } else {
                    (public, SourceKind::Public)
                };
                let (idx, rep) = draw_indices(&mut rng, src.len(), count, cfg.replacement, &name)?;
                for i in idx {
                    let ex = &src[i as usize];
                    samples.push(Drawn {
                        text: ex.text(),
                        prompt_len_chars: ex.prompt_len_chars(),
                        prompt_len_bytes: ex.prompt_len_bytes(),
                        origin: Origin {
                            source: kind,
                            entity: (kind == SourceKind::Private).then_some(entity),
                            generation: None,
                            row: i,
                        },
                    });
                }
                (src.len(), rep)
            }
            SourceKind::Synthetic => {
                let producer = slot.entity.expect("synthetic slots name their entity");
                let set = synthetic_set(cfg.pool_policy, pool, generation, producer);
                let (idx, rep) = draw_indices(&mut rng, set.len(), count, cfg.replacement, &name)?;
                for i in idx {
                    let s = &pool[set[i as usize]];
                    samples.push(Drawn {
                        text: s.text.clone(),
                        prompt_len_chars: 0,
                        prompt_len_bytes: 0,
                        origin: Origin {
                            source: SourceKind::Synthetic,
                            entity: Some(s.entity),
                            generation: Some(s.generation),
                            row: s.index,
                        },
                    });
                }
                (set.len(), rep)
            }
        };
        if with_replacement {
            warnings.push(format!(
                "generation {generation}, entity {entity}: source {name} has {available} items but {count} were allotted; drew with replacement"
            ));
        }
        allocation.push(Allocation {
            slot,
            weight,
            count,
            available,
            with_replacement,
        });
    }
    if cfg.shuffle {
        rng.shuffle(&mut samples);
    }
    Ok(Mixture {
        generation,
        entity,
        samples,
        allocation,
        warnings,
    })
}
