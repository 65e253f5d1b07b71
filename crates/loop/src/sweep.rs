//! Sweeps: one TOML file that expands into many runs.
//!
//! ```toml
//! name = "tiny-sweep"              # the sweep directory: <runs_dir>/<name>/ (default: the file stem)
//! base = "../tiny.toml"            # the base config, relative to this file; or a table of
//!                                  # label = path (one architecture per label)
//! seeds = [0, 1]                   # every point once per seed (default: the base config's seed)
//! [set]                            # overrides applied to every point (dotted keys or sub-tables)
//! generations = 2
//! [grid]                           # the cartesian product of these values...
//! alpha = [0.0, 0.5, 1.0]
//! [[list]]                         # ...times each of these points (when both are given)
//! beta = 0.2
//! ```
//!
//! Each point is a full experiment config (the base, then `set`, then the point's overrides, then the
//! seed) checked like any config before anything runs, and its run directory is named from its
//! overrides: `<runs_dir>/<sweep>/<label>-<key><value>…-s<seed>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: Option<String>,
    base: BaseSpec,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    list: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BaseSpec {
    One(String),
    Labelled(BTreeMap<String, String>),
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// Run name and directory name.
    pub name: String,
    /// The base config's label (the architecture in the paper's table).
    pub model: String,
    /// What this point sets beyond the base and `set`, seed excluded (key, value as TOML).
    pub overrides: Vec<(String, String)>,
    pub seed: u64,
    /// The resolved config (base model path absolute).
    pub cfg: ExperimentConfig,
}

impl SweepPoint {
    /// The point's overrides other than `alpha` (what makes a row of the table besides alpha).
    pub fn setting(&self) -> String {
        let rest: Vec<String> = self.overrides.iter().filter(|(k, _)| k != "alpha").map(|(k, v)| format!("{k}={v}")).collect();
        rest.join(", ")
    }
}

/// An expanded, validated sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    pub path: PathBuf,
    pub points: Vec<SweepPoint>,
}

/// A file is a sweep when it has a top-level `base` key (an experiment config has `base_model`).
pub fn is_sweep_file(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
    let t: toml::Table = toml::from_str(&text).map_err(|e| LoopError::Parse { path: path.display().to_string(), message: e.to_string() })?;
    Ok(t.contains_key("base"))
}

/// Dotted keys → values, descending into tables (arrays are values: they replace the base's).
fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(sub) => flatten(&key, sub, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// A value as the right-hand side of a `key=value` override (inline TOML).
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        toml::Value::Table(t) => {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{} = {}", toml::Value::String(k.clone()), inline(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        toml::Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// A value as part of a directory name: `0.5`, `1e-4`, `cosine`; never a path separator.
fn tag(v: &toml::Value) -> String {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    };
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+') || c == '-' { c } else { '_' }).collect()
}

impl Sweep {
    /// Reads and expands `path`; every point's config is built and validated, so a bad key or value
    /// in any point fails here, before a directory is made or a job submitted. `extra` overrides
    /// (`--set`) apply to every point after the sweep's own `set`.
    pub fn load(path: &Path, extra: &[String]) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
        let file: SweepFile = toml::from_str(&text).map_err(|e| LoopError::Parse { path: origin.clone(), message: e.to_string() })?;
        let name = match &file.name {
            Some(n) => n.clone(),
            None => path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
        };
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(LoopError::Config(format!("{origin}: name = {name:?} must be a non-empty file name")));
        }
        let here = path.parent().unwrap_or(Path::new("."));
        let bases: Vec<(Option<String>, PathBuf)> = match &file.base {
            BaseSpec::One(p) => vec![(None, here.join(p))],
            BaseSpec::Labelled(m) if m.is_empty() => return Err(LoopError::Config(format!("{origin}: base = {{}} names no config"))),
            BaseSpec::Labelled(m) => m.iter().map(|(l, p)| (Some(l.clone()), here.join(p))).collect(),
        };
        let mut common = Vec::new();
        flatten("", &file.set, &mut common);
        let mut common: Vec<String> = common.iter().map(|(k, v)| format!("{k}={}", inline(v))).collect();
        common.extend(extra.iter().cloned());

        // Grid: every key's values, cartesian product in key order; list entries times the grid.
        let mut grid = Vec::new();
        flatten("", &file.grid, &mut grid);
        let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (k, v) in &grid {
            let toml::Value::Array(values) = v else {
                return Err(LoopError::Config(format!("{origin}: grid.{k} must be a list of values, e.g. {k} = [{}]", inline(v))));
            };
            if values.is_empty() {
                return Err(LoopError::Config(format!("{origin}: grid.{k} is empty")));
            }
            combos = combos.into_iter().flat_map(|c| values.iter().map(move |x| [c.clone(), vec![(k.clone(), x.clone())]].concat())).collect();
        }
        if !file.list.is_empty() {
            let mut with_list = Vec::new();
            for entry in &file.list {
                let mut e = Vec::new();
                flatten("", entry, &mut e);
                with_list.extend(combos.iter().map(|c| [e.clone(), c.clone()].concat()));
            }
            combos = with_list;
        }

        let mut points = Vec::new();
        for (label, base_path) in &bases {
            let base_text = std::fs::read_to_string(base_path).map_err(|e| LoopError::io(base_path, e))?;
            let base_origin = base_path.display().to_string();
            let base_cfg = ExperimentConfig::from_toml_str(&base_text, &base_origin, &common).map_err(|e| in_sweep(&origin, "the base config with `set`", e))?;
            let model = label.clone().unwrap_or_else(|| Path::new(&base_cfg.base_model).file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default());
            let seeds = if file.seeds.is_empty() { vec![base_cfg.seed] } else { file.seeds.clone() };
            for combo in &combos {
                for &seed in &seeds {
                    let mut parts: Vec<String> = label.iter().cloned().collect();
                    parts.extend(combo.iter().map(|(k, v)| format!("{k}{}", tag(v))));
                    parts.push(format!("s{seed}"));
                    let pname = parts.join("-");
                    let mut sets = common.clone();
                    sets.extend(combo.iter().map(|(k, v)| format!("{k}={}", inline(v))));
                    sets.push(format!("seed={seed}"));
                    sets.push(format!("name={}", toml::Value::String(pname.clone())));
                    let mut cfg = ExperimentConfig::from_toml_str(&base_text, &base_origin, &sets).map_err(|e| in_sweep(&origin, &format!("point {pname}"), e))?;
                    cfg.resolve_base_model().map_err(|e| in_sweep(&origin, &format!("point {pname}"), e))?;
                    let overrides = combo.iter().map(|(k, v)| (k.clone(), tag(v))).collect();
                    points.push(SweepPoint { name: pname, model: model.clone(), overrides, seed, cfg });
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(p) = points.iter().find(|p| !seen.insert(p.name.clone())) {
            return Err(LoopError::Config(format!("{origin}: two points are both named {} (repeated values?)", p.name)));
        }
        Ok(Sweep { name, path: path.to_path_buf(), points })
    }

    /// `<runs_dir>/<name>`: the sweep's run directories, report and Slurm scripts live here.
    pub fn dir(&self, runs_dir: &Path) -> PathBuf {
        runs_dir.join(&self.name)
    }
}

/// Prefixes a config error with the sweep and point it came from, keeping its kind.
fn in_sweep(origin: &str, what: &str, e: LoopError) -> LoopError {
    let path = format!("{origin}, {what}");
    match e {
        LoopError::UnknownKey { key, valid } => LoopError::Parse { path, message: format!("`{key}` is not a config key (valid keys here: {})", valid.join(", ")) },
        other => LoopError::Parse { path, message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
    }

    /// The fixture model by absolute path (tests run in the crate directory).
    fn base_model() -> Vec<String> {
        vec![format!("base_model={:?}", repo().join("tests/fixtures/models/llama32").display().to_string())]
    }

    #[test]
    fn grid_list_and_seeds_expand_into_named_points() {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = repo().join("configs/tiny.toml");
        let text = format!(
            "name = \"s\"\nbase = {:?}\nseeds = [0, 1]\n[set]\ngenerations = 2\n[grid]\nalpha = [0.0, 1.0]\n[[list]]\nbeta = 0.25\n[[list]]\n\"train.lr\" = 1e-4\n",
            tiny.display().to_string()
        );
        let s = Sweep::load(&write(tmp.path(), "s.toml", &text), &base_model()).unwrap();
        let names: Vec<&str> = s.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        assert!(names.contains(&"beta0.25-alpha0-s1") && names.contains(&"train.lr0.0001-alpha1-s0"), "{names:?}");
        let p = s.points.iter().find(|p| p.name == "beta0.25-alpha1-s1").unwrap();
        assert_eq!((p.cfg.alpha, p.cfg.beta, p.cfg.seed, p.cfg.generations), (1.0, 0.25, 1, 2));
        assert_eq!(p.setting(), "beta=0.25");
        assert_eq!(p.cfg.name, p.name);
    }

    #[test]
    fn bad_keys_and_values_name_the_point() {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = repo().join("configs/tiny.toml").display().to_string();
        let p = write(tmp.path(), "a.toml", &format!("base = {tiny:?}\n[grid]\nalph = [0.5]\n"));
        let e = Sweep::load(&p, &base_model()).unwrap_err().to_string();
        assert!(e.contains("`alph` is not a config key") && e.contains("alpha"), "{e}");
        let p = write(tmp.path(), "b.toml", &format!("base = {tiny:?}\n[grid]\nalpha = [0.5, 1.5]\n"));
        let e = Sweep::load(&p, &base_model()).unwrap_err().to_string();
        assert!(e.contains("point alpha1.5-s0") && e.contains("alpha = 1.5"), "{e}");
        let p = write(tmp.path(), "c.toml", &format!("base = {tiny:?}\nbogus = 1\n"));
        let e = Sweep::load(&p, &base_model()).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
