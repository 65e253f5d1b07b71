//! Sharing topology: whose synthetic outputs each entity trains on.
//!
//! The paper's pool is one topology (every entity reads every entity). The single-model collapse
//! literature is another (each entity reads only itself), and structured ecosystems sit between.
//! A topology is a K×K matrix of non-negative weights: row `k` says how trainee `k`'s synthetic
//! budget `alpha·n` splits over the producers (rows are normalised, so only ratios matter).
//! The pool policy decides *which* of a producer's outputs form its set (latest, accumulated);
//! the topology decides *how much* of each producer a trainee reads.

use crate::error::{DataError, Result};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// `mixture.topology`: `"all"`, `"self"`, `"ring"` or an explicit K×K weight matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Topology {
    /// Every entity reads every entity's set, `alpha/K` each (the paper's shared pool).
    All,
    /// Each entity reads only its own outputs: K independent self-consuming loops in one run.
    SelfOnly,
    /// Entity k reads only entity k−1's outputs (entity 0 reads entity K−1's).
    Ring,
    /// Row k: the weights of producers 0..K in trainee k's synthetic share.
    Matrix(Vec<Vec<f64>>),
}

impl Topology {
    /// The name used in configs and messages.
    pub fn describe(&self) -> String {
        match self {
            Topology::All => "\"all\"".into(),
            Topology::SelfOnly => "\"self\"".into(),
            Topology::Ring => "\"ring\"".into(),
            Topology::Matrix(m) => format!("a {}×{} matrix", m.len(), m.first().map_or(0, Vec::len)),
        }
    }

    /// Checks the topology against K; errors name `mixture.topology`.
    pub fn validate(&self, k: usize) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(format!("mixture.topology: {m}")));
        if k == 1 && *self != Topology::SelfOnly {
            return bad(format!(
                "{} with k = 1: a single entity can only read itself; use topology = \"self\" (or leave it unset)",
                self.describe()
            ));
        }
        if let Topology::Matrix(m) = self {
            if m.len() != k || m.iter().any(|r| r.len() != k) {
                let shape: Vec<String> = m.iter().map(|r| r.len().to_string()).collect();
                return bad(format!(
                    "the matrix must be {k}×{k} (k = {k}: one row per trainee, one column per producer), got {} row(s) of length [{}]",
                    m.len(),
                    shape.join(", ")
                ));
            }
            for (i, row) in m.iter().enumerate() {
                if let Some((j, w)) = row.iter().enumerate().find(|(_, w)| !w.is_finite() || **w < 0.0) {
                    return bad(format!("weight [{i}][{j}] = {w}: weights must be finite and non-negative"));
                }
                if row.iter().sum::<f64>() <= 0.0 {
                    return bad(format!("row {i} sums to 0: trainee {i}'s synthetic share alpha·n has no source to come from"));
                }
            }
        }
        Ok(())
    }

    /// Producers trainee `k` reads and their weights (un-normalised, zero weights left out), in
    /// producer order. Assumes [`Topology::validate`] passed for `k_total`.
    pub fn row(&self, trainee: usize, k_total: usize) -> Vec<(usize, f64)> {
        match self {
            Topology::All => (0..k_total).map(|j| (j, 1.0)).collect(),
            Topology::SelfOnly => vec![(trainee, 1.0)],
            Topology::Ring => vec![((trainee + k_total - 1) % k_total, 1.0)],
            Topology::Matrix(m) => m
                .get(trainee)
                .map(|r| r.iter().copied().enumerate().filter(|(_, w)| *w > 0.0).collect())
                .unwrap_or_default(),
        }
    }

    /// The K×K matrix of normalised shares (rows sum to 1): what `--dry-run` prints.
    pub fn shares(&self, k: usize) -> Vec<Vec<f64>> {
        (0..k)
            .map(|i| {
                let row = self.row(i, k);
                let sum: f64 = row.iter().map(|r| r.1).sum();
                let mut out = vec![0.0; k];
                for (j, w) in row {
                    out[j] = w / sum;
                }
                out
            })
            .collect()
    }
}

impl Serialize for Topology {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Topology::All => s.serialize_str("all"),
            Topology::SelfOnly => s.serialize_str("self"),
            Topology::Ring => s.serialize_str("ring"),
            Topology::Matrix(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Topology {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Topology;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all\", \"self\", \"ring\" or a K×K matrix of non-negative weights ([[1, 0], [0, 1]])")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Topology, E> {
                match v {
                    "all" => Ok(Topology::All),
                    "self" => Ok(Topology::SelfOnly),
                    "ring" => Ok(Topology::Ring),
                    other => Err(E::custom(format!(
                        "mixture.topology = {other:?} (allowed: \"all\", \"self\", \"ring\", or a K×K matrix of non-negative weights)"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Topology, A::Error> {
                let mut rows = Vec::new();
                while let Some(r) = seq.next_element::<Vec<f64>>()? {
                    rows.push(r);
                }
                Ok(Topology::Matrix(rows))
            }
        }
        d.deserialize_any(V)
    }
}
