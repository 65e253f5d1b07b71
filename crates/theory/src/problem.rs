//! A concrete problem instance: true parameters, real designs (Gram matrices), and the
//! synthetic input distributions, all drawn deterministically from the config seed.
//!
//! Both the closed form (`dynamics`) and the simulator (`montecarlo`) read the *same*
//! instance, so their only difference is closed-form algebra versus sampling.

use nalgebra::{DMatrix, DVector};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{RealDesign, Subspaces, SyntheticDesign, SyntheticInputs, SyntheticSize, ThetaMode, TheoryConfig};
use crate::TheoryError;

/// One (alpha, beta) point of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub alpha: f64,
    pub beta: f64,
}

/// A real data set (public or one entity's private set).
#[derive(Debug, Clone)]
pub struct RealSet {
    /// Sample size n.
    pub n: usize,
    /// `G = X^T X / n` (population: projector onto the subspace).
    pub gram: DMatrix<f64>,
    /// The design `X` (n × d) when sampled; `None` for population designs.
    pub x: Option<DMatrix<f64>>,
    /// Orthonormal basis `U` (d × r) of the subspace the inputs live in.
    pub basis: DMatrix<f64>,
    /// Thin factor `F` (d × r) with `gram = F F^T`, built from `U` so it has *no* numerical
    /// leakage outside the subspace. Covariances are propagated through this factor: with a
    /// tiny ridge the inverse normal matrix is ~1/ridge on directions no data covers, and
    /// `B (F F^T) B` would square that amplification of rounding noise while `(B F)(B F)^T`
    /// only applies it once.
    pub factor: DMatrix<f64>,
    /// The parameter that generates this set's labels.
    pub theta: DVector<f64>,
}

impl RealSet {
    /// Noise-free part of the normal-equation right-hand side, `G theta`.
    pub fn rhs_mean(&self) -> DVector<f64> {
        &self.gram * &self.theta
    }
    /// Covariance of the noise part `X^T eps / n`: `sigma^2 G / n`.
    pub fn rhs_cov(&self, sigma: f64) -> DMatrix<f64> {
        &self.gram * (sigma * sigma / self.n as f64)
    }
    /// Factor of [`RealSet::rhs_cov`]: `sigma F / sqrt(n)`.
    pub fn rhs_cov_factor(&self, sigma: f64) -> DMatrix<f64> {
        &self.factor * (sigma / (self.n as f64).sqrt())
    }
}

/// The full instance.
#[derive(Debug, Clone)]
pub struct Problem {
    pub k: usize,
    pub d: usize,
    pub sigma: f64,
    pub ridge: f64,
    pub public: RealSet,
    pub private: Vec<RealSet>,
    /// Entity k's target `theta*_k` (equal to the shared theta* in `shared` mode).
    pub target: Vec<DVector<f64>>,
    pub synthetic_design: SyntheticDesign,
    pub synthetic_inputs: SyntheticInputs,
    pub synthetic_size: SyntheticSize,
    pub budget: usize,
    pub samples_per_entity: usize,
    /// Seed of the conditional synthetic designs (fresh per generation and source).
    pub design_seed: u64,
}

/// SplitMix64 finaliser: decorrelates (seed, tag, t, j) into independent stream seeds.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A seeded stream for a (seed, tag, a, b) tuple.
pub fn stream(seed: u64, tag: u64, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed ^ mix(tag)) ^ a) ^ b.wrapping_mul(0x100_0000_01B3)))
}

/// Standard normal via Box–Muller (rand_distr targets an older rand, so we keep it local).
pub fn gauss<R: rand::Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An `r × c` matrix of i.i.d. standard normals.
pub fn gauss_matrix<R: rand::Rng>(rng: &mut R, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| gauss(rng))
}

/// A vector of i.i.d. standard normals.
pub fn gauss_vector<R: rand::Rng>(rng: &mut R, n: usize) -> DVector<f64> {
    DVector::from_fn(n, |_, _| gauss(rng))
}

fn orthonormal_basis(d: usize, kind: Subspaces, rng: &mut ChaCha8Rng) -> DMatrix<f64> {
    match kind {
        Subspaces::Coordinate => DMatrix::identity(d, d),
        Subspaces::Random => gauss_matrix(rng, d, d).qr().q(),
    }
}

fn columns(u: &DMatrix<f64>, idx: &[usize]) -> DMatrix<f64> {
    DMatrix::from_fn(u.nrows(), idx.len(), |r, c| u[(r, idx[c])])
}

fn random_direction(rng: &mut ChaCha8Rng, d: usize, norm: f64) -> DVector<f64> {
    let v = gauss_vector(rng, d);
    let n = v.norm();
    if n > 0.0 { v * (norm / n) } else { v }
}

fn real_set(basis: DMatrix<f64>, n: usize, design: RealDesign, theta: DVector<f64>, rng: &mut ChaCha8Rng) -> RealSet {
    match design {
        RealDesign::Population => RealSet { n, gram: &basis * basis.transpose(), x: None, factor: basis.clone(), basis, theta },
        RealDesign::Sampled => {
            // x = U z, z ~ N(0, I_r): inputs confined to the subspace, unit variance along it.
            let z = gauss_matrix(rng, n, basis.ncols());
            let x = &z * basis.transpose();
            // Z^T Z = R^T R  =>  X^T X / n = (U R^T / sqrt n)(U R^T / sqrt n)^T.
            let factor = match (z.transpose() * &z).cholesky() {
                Some(ch) => &basis * ch.l() / (n as f64).sqrt(),
                None => x.transpose() / (n as f64).sqrt(),
            };
            let gram = &factor * factor.transpose();
            RealSet { n, gram, x: Some(x), factor, basis, theta }
        }
    }
}

impl Problem {
    /// Build the instance of a config. Public set spans basis columns `0..r*`; entity k's
    /// private set spans columns `r* + k r~ .. r* + (k+1) r~` (mod d, so they wrap around and
    /// overlap when `r* + K r~ > d`).
    pub fn from_config(cfg: &TheoryConfig) -> Result<Self, TheoryError> {
        cfg.validate()?;
        let (k, d) = (cfg.entities, cfg.dim);
        let mut rng = stream(cfg.seed, 1, 0, 0);
        let u = orthonormal_basis(d, cfg.data.subspaces, &mut rng);
        let theta0 = random_direction(&mut rng, d, cfg.theta.norm);
        let target: Vec<DVector<f64>> = (0..k)
            .map(|_| match cfg.theta.mode {
                ThetaMode::Shared => theta0.clone(),
                ThetaMode::PerEntity => &theta0 + random_direction(&mut rng, d, cfg.theta.norm * cfg.theta.heterogeneity),
            })
            .collect();
        let rp = cfg.data.public_rank;
        let rq = cfg.data.private_rank;
        let pub_idx: Vec<usize> = (0..rp).collect();
        let public = real_set(columns(&u, &pub_idx), cfg.data.public_samples, cfg.data.design, theta0.clone(), &mut rng);
        let private = (0..k)
            .map(|e| {
                let idx: Vec<usize> = (0..rq).map(|i| (rp + e * rq + i) % d).collect();
                real_set(columns(&u, &idx), cfg.data.private_samples, cfg.data.design, target[e].clone(), &mut rng)
            })
            .collect();
        Ok(Problem {
            k,
            d,
            sigma: cfg.noise_std,
            ridge: cfg.ridge,
            public,
            private,
            target,
            synthetic_design: cfg.synthetic.design,
            synthetic_inputs: cfg.synthetic.inputs,
            synthetic_size: cfg.synthetic.size,
            budget: cfg.synthetic.budget,
            samples_per_entity: cfg.synthetic.samples_per_entity,
            design_seed: mix(cfg.seed ^ 0x5EED),
        })
    }

    /// m_j, the synthetic sample count per source at this alpha (0 when alpha = 0).
    pub fn synthetic_samples(&self, s: Setting) -> usize {
        if s.alpha <= 0.0 {
            return 0;
        }
        match self.synthetic_size {
            SyntheticSize::Fixed => self.samples_per_entity,
            SyntheticSize::Proportional => ((s.alpha * self.budget as f64 / self.k as f64).round() as usize).max(1),
        }
    }

    /// Factor `F_j` with synthetic inputs `x = F_j z`, `z ~ N(0, I)`; covariance `F_j F_j^T`.
    pub fn synthetic_factor(&self, s: Setting, j: usize) -> DMatrix<f64> {
        match self.synthetic_inputs {
            SyntheticInputs::Isotropic => DMatrix::identity(self.d, self.d),
            SyntheticInputs::Entity => {
                let a = &self.private[j].basis * s.beta.sqrt();
                let b = &self.public.basis * (1.0 - s.beta).sqrt();
                let mut f = DMatrix::zeros(self.d, a.ncols() + b.ncols());
                f.columns_mut(0, a.ncols()).copy_from(&a);
                f.columns_mut(a.ncols(), b.ncols()).copy_from(&b);
                f
            }
        }
    }

    /// `Sigma_j = E[x x^T]` of source j's synthetic inputs.
    pub fn synthetic_cov(&self, s: Setting, j: usize) -> DMatrix<f64> {
        let f = self.synthetic_factor(s, j);
        &f * f.transpose()
    }

    /// The conditional-mode design `X_{t,j}` (m_j × d): fresh per generation and source, but
    /// a deterministic function of (seed, t, j) so closed form and Monte Carlo share it.
    pub fn conditional_inputs(&self, s: Setting, t: usize, j: usize) -> DMatrix<f64> {
        let m = self.synthetic_samples(s);
        let f = self.synthetic_factor(s, j);
        let mut rng = stream(self.design_seed, 2, t as u64, j as u64);
        gauss_matrix(&mut rng, m, f.ncols()) * f.transpose()
    }

    /// `S_{t,j}` as the closed form uses it: the expectation `Sigma_j` (expected mode) or the
    /// realised `X^T X / m` of the fixed conditional design.
    pub fn synthetic_gram(&self, s: Setting, t: usize, j: usize) -> DMatrix<f64> {
        match self.synthetic_design {
            SyntheticDesign::Expected => self.synthetic_cov(s, j),
            SyntheticDesign::Conditional => {
                let x = self.conditional_inputs(s, t, j);
                let m = x.nrows().max(1) as f64;
                x.transpose() * &x / m
            }
        }
    }
}

/// Inverse of a symmetric positive (semi)definite matrix: Cholesky, falling back to the
/// SVD pseudo-inverse when the ridge is 0 and the matrix is singular.
pub fn spd_inverse(a: &DMatrix<f64>) -> DMatrix<f64> {
    if let Some(ch) = a.clone().cholesky() {
        return ch.inverse();
    }
    let scale = a.amax().max(1e-300);
    a.clone()
        .pseudo_inverse(1e-12 * scale)
        .unwrap_or_else(|_| DMatrix::zeros(a.nrows(), a.ncols()))
}
