//! `TheoryConfig`: every knob of the linear recursive-training model, with the paper's
//! "K = 4 low-rank" setting as the default.
//!
//! Loading goes through a TOML *table* first (defaults ← file ← `--set key=value`), so that
//! unknown keys can be reported with their full dotted name and the list of allowed keys
//! before serde ever sees them; `#[serde(deny_unknown_fields)]` stays on as a second guard.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::TheoryError;

/// Where the true parameter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThetaMode {
    /// One `theta*` generates public and all private labels; every entity targets it.
    Shared,
    /// Public labels come from `theta*_0`; entity k's private labels (and its target) from
    /// `theta*_k = theta*_0 + heterogeneity * delta_k`.
    PerEntity,
}

/// How the real (public/private) designs are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RealDesign {
    /// Draw `n` Gaussian inputs in the set's subspace once (fixed design, seeded).
    Sampled,
    /// Use the population Gram matrix (`X^T X / n` = projector onto the subspace). Makes
    /// entities exactly symmetric; useful for clean theory plots and tests.
    Population,
}

/// How the orthonormal basis that the subspaces are cut from is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subspaces {
    /// A random rotation (QR of a Gaussian matrix).
    Random,
    /// Coordinate axes (identity basis).
    Coordinate,
}

/// How the synthetic Gram matrices `S_{t,j} = X_{t,j}^T X_{t,j} / m_j` enter the closed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticDesign {
    /// Replace `S_{t,j}` by its expectation `Sigma_j` (large-m approximation). The closed form
    /// then has constant `P, Q` and a fixed point; Monte Carlo draws genuinely fresh inputs
    /// each generation, so the two agree only up to O(d/m) (reported by `run_cli`).
    Expected,
    /// Fresh inputs per generation and source, drawn once from a seed and held fixed across
    /// Monte Carlo replications: the closed form is exact (conditional on the designs), but
    /// `P_t, Q_t` vary with t so "long run" means generation `generations`.
    Conditional,
}

/// Input distribution of the synthetic data `D_{t,j}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticInputs {
    /// `x ~ N(0, I_d)`.
    Isotropic,
    /// Entity j generates like its own training mix: `x ~ N(0, beta*Sigma~_j + (1-beta)*Sigma*)`.
    Entity,
}

/// Number of synthetic samples `m_j` each source contributes per generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticSize {
    /// `m_j = max(1, round(alpha * budget / K))` for alpha > 0: the synthetic share of a fixed
    /// per-generation training budget, as in the paper's accumulate-and-subsample experiments.
    Proportional,
    /// `m_j = samples_per_entity` regardless of alpha.
    Fixed,
}

/// What the heatmap reports for each (alpha, beta).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluate {
    /// The stationary (t → ∞) moments; requires `synthetic.design = "expected"`.
    FixedPoint,
    /// The moments at generation `generations`.
    Horizon,
}

/// True-parameter settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThetaConfig {
    /// `shared` (default) or `per_entity`.
    pub mode: ThetaMode,
    /// `||theta*_0||` (default 1.0).
    pub norm: f64,
    /// `||theta*_k - theta*_0|| / norm` in `per_entity` mode (default 0.5).
    pub heterogeneity: f64,
}

impl Default for ThetaConfig {
    fn default() -> Self {
        Self { mode: ThetaMode::Shared, norm: 1.0, heterogeneity: 0.5 }
    }
}

/// Real-data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `sampled` (default) or `population`.
    pub design: RealDesign,
    /// `random` (default) or `coordinate`.
    pub subspaces: Subspaces,
    /// n* (default 200).
    pub public_samples: usize,
    /// ñ per entity (default 100).
    pub private_samples: usize,
    /// Rank of the public design (default 8 of d = 20).
    pub public_rank: usize,
    /// Rank of each private design (default 3): with K = 4 the public block and the four
    /// private blocks tile R^20 exactly, so only pooling everything identifies theta*.
    pub private_rank: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            design: RealDesign::Sampled,
            subspaces: Subspaces::Random,
            public_samples: 200,
            private_samples: 100,
            public_rank: 8,
            private_rank: 3,
        }
    }
}

/// Synthetic-data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// `expected` (default) or `conditional`.
    pub design: SyntheticDesign,
    /// `isotropic` (default) or `entity`.
    pub inputs: SyntheticInputs,
    /// `proportional` (default) or `fixed`.
    pub size: SyntheticSize,
    /// Per-generation training budget n for `proportional` (default 400).
    pub budget: usize,
    /// m_j for `fixed` (default 100).
    pub samples_per_entity: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            design: SyntheticDesign::Expected,
            inputs: SyntheticInputs::Isotropic,
            size: SyntheticSize::Proportional,
            budget: 400,
            samples_per_entity: 100,
        }
    }
}

/// Sweep settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// Grid points per axis over [0, 1] (default 21).
    pub steps: usize,
    /// `fixed_point` (default) or `horizon`.
    pub evaluate: Evaluate,
    /// Alphas drawn as curves against generation (at the config's beta).
    pub curve_alphas: Vec<f64>,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self { steps: 21, evaluate: Evaluate::FixedPoint, curve_alphas: vec![0.0, 0.1, 0.25, 0.5, 0.75, 1.0] }
    }
}

/// Monte Carlo settings (the validation run at the config's alpha, beta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonteCarloConfig {
    /// Replications (default 200; 0 disables the validation in `run_cli`).
    pub replications: usize,
}

impl Default for MonteCarloConfig {
    fn default() -> Self {
        Self { replications: 200 }
    }
}

/// The whole model. Defaults are the paper's "K = 4 low-rank" setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TheoryConfig {
    /// K, number of entities (default 4).
    pub entities: usize,
    /// d, parameter dimension (default 20).
    pub dim: usize,
    /// alpha, synthetic share of each update, in [0, 1] (default 0.5).
    pub alpha: f64,
    /// beta, private share of the real data, in [0, 1] (default 0.5).
    pub beta: f64,
    /// sigma, label noise standard deviation (default 0.5). Note: for alpha > 0 the long-run
    /// relative efficiency does not depend on sigma or the norm of theta* (the fixed point is
    /// unbiased and every variance term scales with sigma^2); only the alpha = 0 bias does.
    pub noise_std: f64,
    /// T, generations for curves / horizon / Monte Carlo (default 40).
    pub generations: usize,
    /// lambda, ridge added to every normal matrix so rank-deficient real data (alpha = 0,
    /// low-rank designs) still has a unique (≈ minimum-norm) solution (default 1e-8).
    pub ridge: f64,
    /// Seed for designs, theta* and Monte Carlo (default 7).
    pub seed: u64,
    pub theta: ThetaConfig,
    pub data: DataConfig,
    pub synthetic: SyntheticConfig,
    pub sweep: SweepConfig,
    pub montecarlo: MonteCarloConfig,
}

impl Default for TheoryConfig {
    fn default() -> Self {
        Self {
            entities: 4,
            dim: 20,
            alpha: 0.5,
            beta: 0.5,
            noise_std: 0.5,
            generations: 40,
            ridge: 1e-8,
            seed: 7,
            theta: ThetaConfig::default(),
            data: DataConfig::default(),
            synthetic: SyntheticConfig::default(),
            sweep: SweepConfig::default(),
            montecarlo: MonteCarloConfig::default(),
        }
    }
}

fn default_table() -> toml::Table {
    match toml::Value::try_from(TheoryConfig::default()) {
        Ok(toml::Value::Table(t)) => t,
        // The default struct always serialises to a table; an empty table would only make
        // every key "unknown", which the tests would catch immediately.
        _ => toml::Table::new(),
    }
}

fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => leaf_keys(t, &name, out),
            _ => out.push(name),
        }
    }
}

impl TheoryConfig {
    /// All dotted keys a file or `--set` may name, sorted.
    pub fn allowed_keys() -> Vec<String> {
        let mut keys = Vec::new();
        leaf_keys(&default_table(), "", &mut keys);
        keys.sort();
        keys
    }

    /// Defaults ← optional TOML file ← `key=value` overrides, then range validation.
    pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Self, TheoryError> {
        let mut table = default_table();
        if let Some(p) = path {
            let text = std::fs::read_to_string(p)
                .map_err(|e| TheoryError::Io { path: p.to_path_buf(), source: e })?;
            let file: toml::Table = toml::from_str(&text)
                .map_err(|e| TheoryError::Config(format!("{}: {e}", p.display())))?;
            merge(&mut table, file, "")?;
        }
        for s in sets {
            apply_set(&mut table, s)?;
        }
        let text = toml::to_string(&table).map_err(|e| TheoryError::Config(e.to_string()))?;
        let cfg: TheoryConfig = toml::from_str(&text).map_err(|e| TheoryError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a TOML string (no file) with the same checks as [`TheoryConfig::load`].
    pub fn from_toml_str(text: &str) -> Result<Self, TheoryError> {
        let mut table = default_table();
        let file: toml::Table = toml::from_str(text).map_err(|e| TheoryError::Config(e.to_string()))?;
        merge(&mut table, file, "")?;
        let text = toml::to_string(&table).map_err(|e| TheoryError::Config(e.to_string()))?;
        let cfg: TheoryConfig = toml::from_str(&text).map_err(|e| TheoryError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML (written to `config.toml` by `run_cli`).
    pub fn to_toml(&self) -> Result<String, TheoryError> {
        toml::to_string(self).map_err(|e| TheoryError::Config(e.to_string()))
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), TheoryError> {
        let unit = |key: &str, v: f64| -> Result<(), TheoryError> {
            if !(0.0..=1.0).contains(&v) {
                return Err(TheoryError::OutOfRange { key: key.into(), value: v.to_string(), expected: "a number in [0, 1]".into() });
            }
            Ok(())
        };
        let pos = |key: &str, v: usize, min: usize| -> Result<(), TheoryError> {
            if v < min {
                return Err(TheoryError::OutOfRange { key: key.into(), value: v.to_string(), expected: format!("an integer >= {min}") });
            }
            Ok(())
        };
        let nonneg = |key: &str, v: f64| -> Result<(), TheoryError> {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TheoryError::OutOfRange { key: key.into(), value: v.to_string(), expected: "a finite number >= 0".into() });
            }
            Ok(())
        };
        unit("alpha", self.alpha)?;
        unit("beta", self.beta)?;
        for a in &self.sweep.curve_alphas {
            unit("sweep.curve_alphas", *a)?;
        }
        pos("entities", self.entities, 1)?;
        pos("dim", self.dim, 1)?;
        pos("generations", self.generations, 1)?;
        pos("sweep.steps", self.sweep.steps, 2)?;
        pos("data.public_samples", self.data.public_samples, 1)?;
        pos("data.private_samples", self.data.private_samples, 1)?;
        pos("data.public_rank", self.data.public_rank, 1)?;
        pos("data.private_rank", self.data.private_rank, 1)?;
        pos("synthetic.budget", self.synthetic.budget, 1)?;
        pos("synthetic.samples_per_entity", self.synthetic.samples_per_entity, 1)?;
        if self.data.public_rank > self.dim {
            return Err(TheoryError::OutOfRange { key: "data.public_rank".into(), value: self.data.public_rank.to_string(), expected: format!("<= dim ({})", self.dim) });
        }
        if self.data.private_rank > self.dim {
            return Err(TheoryError::OutOfRange { key: "data.private_rank".into(), value: self.data.private_rank.to_string(), expected: format!("<= dim ({})", self.dim) });
        }
        nonneg("noise_std", self.noise_std)?;
        nonneg("ridge", self.ridge)?;
        nonneg("theta.norm", self.theta.norm)?;
        nonneg("theta.heterogeneity", self.theta.heterogeneity)?;
        if self.sweep.evaluate == Evaluate::FixedPoint && self.synthetic.design == SyntheticDesign::Conditional {
            return Err(TheoryError::OutOfRange {
                key: "sweep.evaluate".into(),
                value: "fixed_point".into(),
                expected: "\"horizon\" when synthetic.design = \"conditional\" (time-varying Q_t has no fixed point)".into(),
            });
        }
        Ok(())
    }
}

fn unknown(key: String) -> TheoryError {
    TheoryError::UnknownKey { key, allowed: TheoryConfig::allowed_keys().join(", ") }
}

/// Overlay `src` onto `dst`, refusing keys that `dst` (the defaults) does not have.
fn merge(dst: &mut toml::Table, src: toml::Table, prefix: &str) -> Result<(), TheoryError> {
    for (k, v) in src {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match dst.get_mut(&k) {
            None => return Err(unknown(name)),
            Some(toml::Value::Table(d)) => match v {
                toml::Value::Table(s) => merge(d, s, &name)?,
                other => return Err(TheoryError::Config(format!("`{name}` must be a table, got {other}"))),
            },
            Some(slot) => {
                if let toml::Value::Table(_) = v {
                    return Err(unknown(format!("{name}.*")));
                }
                *slot = v;
            }
        }
    }
    Ok(())
}

/// Apply one `a.b.c=value` override. The value is parsed as a TOML value (`0.5`, `21`,
/// `[0, 0.5]`, `"shared"`); anything that does not parse is taken as a bare string, so
/// `theta.mode=per_entity` works without quotes.
fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), TheoryError> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| TheoryError::Config(format!("override `{set}` is not of the form key=value")))?;
    let key = key.trim();
    let raw = raw.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match cur.get_mut(*p) {
            None => return Err(unknown(key.to_string())),
            Some(toml::Value::Table(t)) => {
                if last {
                    return Err(unknown(key.to_string()));
                }
                cur = t;
            }
            Some(slot) => {
                if !last {
                    return Err(unknown(key.to_string()));
                }
                *slot = value;
                return Ok(());
            }
        }
    }
    Err(unknown(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_roundtrip() {
        let c = TheoryConfig::default();
        c.validate().unwrap();
        let back = TheoryConfig::from_toml_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn overrides_apply() {
        let c = TheoryConfig::load(None, &["alpha=0.25".into(), "sweep.steps=5".into(), "theta.mode=per_entity".into(), "alpha=1".into()]).unwrap();
        assert_eq!(c.alpha, 1.0);
        assert_eq!(c.sweep.steps, 5);
        assert_eq!(c.theta.mode, ThetaMode::PerEntity);
    }

    #[test]
    fn unknown_key_is_named_with_allowed_list() {
        let e = TheoryConfig::load(None, &["sweep.stepz=3".into()]).unwrap_err().to_string();
        assert!(e.contains("sweep.stepz"), "{e}");
        assert!(e.contains("sweep.steps") && e.contains("alpha"), "{e}");
        let e = TheoryConfig::from_toml_str("[data]\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("data.bogus") && e.contains("data.public_rank"), "{e}");
    }

    #[test]
    fn out_of_range_is_clear() {
        let e = TheoryConfig::load(None, &["alpha=1.5".into()]).unwrap_err().to_string();
        assert!(e.contains("alpha") && e.contains("[0, 1]"), "{e}");
        assert!(TheoryConfig::load(None, &["beta=-0.1".into()]).is_err());
        assert!(TheoryConfig::load(None, &["alpha".into()]).is_err());
        assert!(TheoryConfig::load(None, &["entities=abc".into()]).is_err());
    }
}
