//! Closed-form dynamics of the recursive loop (see docs/theory.md for the derivation).
//!
//! Entity k at generation t solves the weighted normal equations
//! `A_{t,k} theta = w_priv b~_k + w_pub b* + (alpha/K) sum_j X_{t,j}^T y_{t,j} / m_j`
//! with `A_{t,k} = w_priv G~_k + w_pub G* + (alpha/K) sum_j S_{t,j} + ridge I`. Stacked over
//! entities this is `theta_t = P_t r + Q_t theta_{t-1} + N_t xi_t`. Because every entity reads
//! the *same* synthetic pool, `Q_t = N_t C_t` has rank ≤ d: all cross-entity coupling goes
//! through the d-dimensional "message" `m_t = C_t theta_{t-1} + xi_t`, so the moments are
//! propagated in d × d pieces (cheap for the 21 × 21 heatmaps) instead of Kd × Kd.

use nalgebra::{DMatrix, DVector};

use crate::problem::{spd_inverse, Problem, Setting};
use crate::TheoryError;

/// Spectral radii at or above `1 - DIVERGENCE_TOL` count as divergent: with the tiny ridge,
/// alpha = 1 gives rho = 1 - O(ridge) instead of exactly 1.
pub const DIVERGENCE_TOL: f64 = 1e-6;

/// Loss weights of the objective.
#[derive(Debug, Clone, Copy)]
pub struct Weights {
    /// Generation 0: beta and 1 - beta.
    pub gen0_private: f64,
    pub gen0_public: f64,
    /// Generation t ≥ 1: (1-alpha) beta, (1-alpha)(1-beta), alpha / K.
    pub private: f64,
    pub public: f64,
    pub synthetic: f64,
}

impl Weights {
    pub fn new(s: Setting, k: usize) -> Self {
        Weights {
            gen0_private: s.beta,
            gen0_public: 1.0 - s.beta,
            private: (1.0 - s.alpha) * s.beta,
            public: (1.0 - s.alpha) * (1.0 - s.beta),
            synthetic: s.alpha / k as f64,
        }
    }
}

/// First and second moments of the stacked estimator at one generation, in factored form:
/// `theta_k = mean_k + sum_b noise_map_k[b] u_b + gain_k z`, where `u_0` is the public
/// real-data noise `X*^T eps*/n*`, `u_{1+j}` entity j's private one (fixed across generations:
/// real data is reused) and `z ~ N(0, msg_cov)` the accumulated synthetic-label noise.
#[derive(Debug, Clone)]
pub struct Moments {
    pub generation: usize,
    pub mean: Vec<DVector<f64>>,
    pub noise_map: Vec<Vec<DMatrix<f64>>>,
    pub gain: Vec<DMatrix<f64>>,
    pub msg_cov: DMatrix<f64>,
}

/// Factors `F_b` of the real-data noise covariances, `F_b F_b^T = [sigma^2 G*/n*, sigma^2 G~_0/n~, ...]_b`.
pub fn real_noise_factor(p: &Problem) -> Vec<DMatrix<f64>> {
    std::iter::once(p.public.rhs_cov_factor(p.sigma)).chain(p.private.iter().map(|r| r.rhs_cov_factor(p.sigma))).collect()
}

impl Moments {
    /// `Cov(theta_k, theta_l)` (d × d); `fu` are the [`real_noise_factor`]s.
    pub fn cov(&self, fu: &[DMatrix<f64>], k: usize, l: usize) -> DMatrix<f64> {
        let mut c = &self.gain[k] * &self.msg_cov * self.gain[l].transpose();
        for (b, f) in fu.iter().enumerate() {
            c += (&self.noise_map[k][b] * f) * (&self.noise_map[l][b] * f).transpose();
        }
        c
    }

    /// `tr Cov(theta_k, theta_l)` for all pairs, via elementwise products of the factored
    /// pieces (`tr(X Y^T) = sum(X ∘ Y)`), O(K^2 (K+1) d r) after O(K (K+1) d^2 r).
    pub fn cov_traces(&self, cu: &[DMatrix<f64>]) -> DMatrix<f64> {
        let k = self.mean.len();
        let left: Vec<Vec<DMatrix<f64>>> = (0..k).map(|a| cu.iter().enumerate().map(|(b, f)| &self.noise_map[a][b] * f).collect()).collect();
        let gz: Vec<DMatrix<f64>> = (0..k).map(|a| &self.gain[a] * &self.msg_cov).collect();
        DMatrix::from_fn(k, k, |a, l| {
            let mut t = gz[a].component_mul(&self.gain[l]).sum();
            for b in 0..cu.len() {
                t += left[a][b].component_mul(&left[l][b]).sum();
            }
            t
        })
    }
}

/// Explicit `P_t, Q_t, N_t` and `Cov(xi_t)` (used for reporting and to cross-check the
/// factored recursion; O((Kd)^2) memory).
#[derive(Debug, Clone)]
pub struct GenerationMatrices {
    /// Kd × (K+1)d: maps `r = (b*, b~_1..b~_K)` to theta_t.
    pub p: DMatrix<f64>,
    /// Kd × Kd: maps theta_{t-1} to theta_t.
    pub q: DMatrix<f64>,
    /// Kd × d: maps the shared synthetic-noise vector xi_t to theta_t.
    pub noise_gain: DMatrix<f64>,
    /// d × d: `Cov(xi_t)`.
    pub noise_cov: DMatrix<f64>,
}

fn grams(p: &Problem, s: Setting, t: usize) -> Vec<DMatrix<f64>> {
    (0..p.k).map(|j| p.synthetic_gram(s, t, j)).collect()
}

/// `B_{t,k} = A_{t,k}^{-1}`.
fn entity_inverses(p: &Problem, s: Setting, t: usize, sg: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let w = Weights::new(s, p.k);
    let ridge = DMatrix::<f64>::identity(p.d, p.d) * p.ridge;
    let (wq, wp) = if t == 0 { (w.gen0_private, w.gen0_public) } else { (w.private, w.public) };
    let mut shared = &p.public.gram * wp + ridge;
    if t > 0 && s.alpha > 0.0 {
        for g in sg {
            shared += g * w.synthetic;
        }
    }
    p.private.iter().map(|r| spd_inverse(&(&r.gram * wq + &shared))).collect()
}

/// `Cov(xi_t) = (alpha/K)^2 sigma^2 sum_j S_{t,j} / m_j`.
fn message_noise(p: &Problem, s: Setting, sg: &[DMatrix<f64>]) -> DMatrix<f64> {
    let m = p.synthetic_samples(s);
    let mut w = DMatrix::zeros(p.d, p.d);
    if m == 0 {
        return w;
    }
    let c = (s.alpha / p.k as f64).powi(2) * p.sigma * p.sigma / m as f64;
    for g in sg {
        w += g * c;
    }
    w
}

/// `P_t, Q_t, N_t, Cov(xi_t)` for t ≥ 1 (t = 0 has `Q_0 = 0`, `P_0` with gen-0 weights).
pub fn generation_matrices(p: &Problem, s: Setting, t: usize) -> GenerationMatrices {
    let (k, d) = (p.k, p.d);
    let w = Weights::new(s, k);
    let sg = grams(p, s, t);
    let b = entity_inverses(p, s, t, &sg);
    let (wq, wp) = if t == 0 { (w.gen0_private, w.gen0_public) } else { (w.private, w.public) };
    let mut pm = DMatrix::zeros(k * d, (k + 1) * d);
    let mut q = DMatrix::zeros(k * d, k * d);
    let mut n = DMatrix::zeros(k * d, d);
    for e in 0..k {
        pm.view_mut((e * d, 0), (d, d)).copy_from(&(&b[e] * wp));
        pm.view_mut((e * d, (e + 1) * d), (d, d)).copy_from(&(&b[e] * wq));
        if t > 0 {
            n.view_mut((e * d, 0), (d, d)).copy_from(&b[e]);
            for j in 0..k {
                q.view_mut((e * d, j * d), (d, d)).copy_from(&(&b[e] * &sg[j] * w.synthetic));
            }
        }
    }
    let noise_cov = if t > 0 { message_noise(p, s, &sg) } else { DMatrix::zeros(d, d) };
    GenerationMatrices { p: pm, q, noise_gain: n, noise_cov }
}

/// The noise-free real-data vector `r̄ = (G* theta*_0, G~_1 theta*_1, ...)` stacked.
pub fn real_rhs_mean(p: &Problem) -> DVector<f64> {
    let mut r = DVector::zeros((p.k + 1) * p.d);
    r.rows_mut(0, p.d).copy_from(&p.public.rhs_mean());
    for (j, set) in p.private.iter().enumerate() {
        r.rows_mut((j + 1) * p.d, p.d).copy_from(&set.rhs_mean());
    }
    r
}

fn real_selector(w_pub: f64, w_priv: f64, k: usize, e: usize, d: usize) -> Vec<DMatrix<f64>> {
    (0..=k)
        .map(|b| {
            if b == 0 {
                DMatrix::identity(d, d) * w_pub
            } else if b == e + 1 {
                DMatrix::identity(d, d) * w_priv
            } else {
                DMatrix::zeros(d, d)
            }
        })
        .collect()
}

/// Moments of generation 0 (each entity fits its own real data only).
pub fn initial(p: &Problem, s: Setting) -> Moments {
    let w = Weights::new(s, p.k);
    let b = entity_inverses(p, s, 0, &[]);
    let pub_rhs = p.public.rhs_mean();
    let mean = (0..p.k).map(|e| &b[e] * (p.private[e].rhs_mean() * w.gen0_private + &pub_rhs * w.gen0_public)).collect();
    let noise_map = (0..p.k)
        .map(|e| real_selector(w.gen0_public, w.gen0_private, p.k, e, p.d).iter().map(|r| &b[e] * r).collect())
        .collect();
    Moments { generation: 0, mean, noise_map, gain: b, msg_cov: DMatrix::zeros(p.d, p.d) }
}

/// One generation of the mean/covariance recursion.
pub fn step(p: &Problem, s: Setting, prev: &Moments) -> Moments {
    let t = prev.generation + 1;
    let (k, d) = (p.k, p.d);
    let w = Weights::new(s, k);
    let sg = grams(p, s, t);
    let b = entity_inverses(p, s, t, &sg);
    let ws: Vec<DMatrix<f64>> = sg.iter().map(|g| g * w.synthetic).collect();
    // a_t = C_t mean_{t-1},  J_t[b] = C_t L_{t-1}[b],  M_t = C_t N_{t-1}
    let mut a = DVector::zeros(d);
    let mut j_map = vec![DMatrix::zeros(d, d); k + 1];
    let mut m = DMatrix::zeros(d, d);
    for j in 0..k {
        a += &ws[j] * &prev.mean[j];
        for (bb, jm) in j_map.iter_mut().enumerate() {
            *jm += &ws[j] * &prev.noise_map[j][bb];
        }
        m += &ws[j] * &prev.gain[j];
    }
    let msg_cov = &m * &prev.msg_cov * m.transpose() + message_noise(p, s, &sg);
    let pub_rhs = p.public.rhs_mean() * w.public;
    let mean = (0..k).map(|e| &b[e] * (p.private[e].rhs_mean() * w.private + &pub_rhs + &a)).collect();
    let noise_map = (0..k)
        .map(|e| {
            real_selector(w.public, w.private, k, e, d).iter().zip(&j_map).map(|(r, jm)| &b[e] * (r + jm)).collect()
        })
        .collect();
    Moments { generation: t, mean, noise_map, gain: b, msg_cov }
}

/// Moments for generations 0..=horizon.
pub fn transient(p: &Problem, s: Setting, horizon: usize) -> Vec<Moments> {
    let mut out = Vec::with_capacity(horizon + 1);
    out.push(initial(p, s));
    for _ in 0..horizon {
        let next = step(p, s, out.last().expect("non-empty"));
        out.push(next);
    }
    out
}

/// Largest eigenvalue modulus. Uses a Schur decomposition with an iteration cap (nalgebra's
/// `complex_eigenvalues` iterates without bound and can stall on near-identity matrices such
/// as alpha = 1); if that does not converge, falls back to Gelfand's formula
/// `rho = lim ||M^(2^j)||^(1/2^j)` evaluated by repeated (rescaled) squaring.
pub fn spectral_radius(m: &DMatrix<f64>) -> f64 {
    if m.nrows() == 0 {
        return 0.0;
    }
    if let Some(schur) = nalgebra::Schur::try_new(m.clone(), 1e-13, 200 * m.nrows()) {
        return schur.complex_eigenvalues().iter().map(|z| z.norm()).fold(0.0, f64::max);
    }
    let mut a = m.clone();
    let mut log_scale = 0.0f64; // log of the factor divided out so far, per power of M
    let mut power = 1.0f64;
    for _ in 0..30 {
        let n = a.norm();
        if n == 0.0 || !n.is_finite() {
            return if n == 0.0 { 0.0 } else { f64::INFINITY };
        }
        a /= n;
        log_scale += n.ln() / power;
        a = &a * &a;
        power *= 2.0;
    }
    (log_scale + a.norm().max(1e-300).ln() / power).exp()
}

/// `sum_{i≥0} M^i W (M^T)^i` by Smith's doubling; `None` if it does not settle.
pub fn lyapunov(m: &DMatrix<f64>, w: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    let mut v = w.clone();
    let mut a = m.clone();
    for _ in 0..80 {
        let av = &a * &v;
        v += &av * a.transpose();
        a = &a * &a;
        if !v.iter().all(|x| x.is_finite()) {
            return None;
        }
        if a.amax() < 1e-17 {
            return Some(v);
        }
    }
    None
}

/// `rho(Q_t)`, computed as the spectral radius of the d × d message map
/// `M_t = (alpha/K) sum_j S_{t,j} B_{t,j}` (same non-zero spectrum as `Q_t = N_t C_t`).
pub fn message_radius(p: &Problem, s: Setting, t: usize) -> f64 {
    if s.alpha <= 0.0 {
        return 0.0;
    }
    let t = t.max(1);
    let w = Weights::new(s, p.k);
    let sg = grams(p, s, t);
    let b = entity_inverses(p, s, t, &sg);
    let mut m = DMatrix::zeros(p.d, p.d);
    for j in 0..p.k {
        m += &sg[j] * &b[j] * w.synthetic;
    }
    spectral_radius(&m)
}

/// Stationary result: the moments (if `rho < 1 - DIVERGENCE_TOL`) and `rho = rho(Q)`.
#[derive(Debug, Clone)]
pub struct FixedPoint {
    pub spectral_radius: f64,
    pub moments: Option<Moments>,
}

/// The t → ∞ moments for the expected-design model (constant P, Q for t ≥ 1).
pub fn fixed_point(p: &Problem, s: Setting) -> Result<FixedPoint, TheoryError> {
    if p.synthetic_design != crate::config::SyntheticDesign::Expected {
        return Err(TheoryError::Model("fixed point requires synthetic.design = \"expected\"".into()));
    }
    let (k, d) = (p.k, p.d);
    let w = Weights::new(s, k);
    let sg = grams(p, s, 1);
    let b = entity_inverses(p, s, 1, &sg);
    let ws: Vec<DMatrix<f64>> = sg.iter().map(|g| g * w.synthetic).collect();
    let mut m = DMatrix::zeros(d, d);
    for j in 0..k {
        m += &ws[j] * &b[j];
    }
    let rho = spectral_radius(&m);
    if rho >= 1.0 - DIVERGENCE_TOL {
        return Ok(FixedPoint { spectral_radius: rho, moments: None });
    }
    let lu = (DMatrix::identity(d, d) - &m).lu();
    let pub_rhs = p.public.rhs_mean() * w.public;
    let c: Vec<DVector<f64>> = (0..k).map(|e| p.private[e].rhs_mean() * w.private + &pub_rhs).collect();
    let mut rhs = DVector::zeros(d);
    for j in 0..k {
        rhs += &ws[j] * (&b[j] * &c[j]);
    }
    let a = lu.solve(&rhs).ok_or_else(|| TheoryError::Model("I - M singular".into()))?;
    // J[pub] = (I-M)^{-1} M w_pub ; J[1+j] = (I-M)^{-1} (alpha/K) S_j B_j w_priv
    let mut j_map = Vec::with_capacity(k + 1);
    j_map.push(lu.solve(&(&m * w.public)).ok_or_else(|| TheoryError::Model("I - M singular".into()))?);
    for j in 0..k {
        j_map.push(lu.solve(&(&ws[j] * &b[j] * w.private)).ok_or_else(|| TheoryError::Model("I - M singular".into()))?);
    }
    let msg_cov = match lyapunov(&m, &message_noise(p, s, &sg)) {
        Some(v) => v,
        None => return Ok(FixedPoint { spectral_radius: rho, moments: None }),
    };
    let mean = (0..k).map(|e| &b[e] * (&c[e] + &a)).collect();
    let noise_map = (0..k)
        .map(|e| real_selector(w.public, w.private, k, e, d).iter().zip(&j_map).map(|(r, jm)| &b[e] * (r + jm)).collect())
        .collect();
    Ok(FixedPoint { spectral_radius: rho, moments: Some(Moments { generation: usize::MAX, mean, noise_map, gain: b, msg_cov }) })
}

/// The oracle that pools every real sample (public and all private) with equal per-sample
/// weight and fits one ridge-regularised least-squares model.
#[derive(Debug, Clone)]
pub struct Ideal {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
}

pub fn ideal(p: &Problem) -> Ideal {
    let total = (p.public.n + p.private.iter().map(|r| r.n).sum::<usize>()) as f64;
    let mut g = &p.public.gram * p.public.n as f64;
    let mut rhs = p.public.rhs_mean() * p.public.n as f64;
    for r in &p.private {
        g += &r.gram * r.n as f64;
        rhs += r.rhs_mean() * r.n as f64;
    }
    g /= total;
    rhs /= total;
    let h = spd_inverse(&(&g + DMatrix::identity(p.d, p.d) * p.ridge));
    let mean = &h * rhs;
    let cov = &h * &g * &h * (p.sigma * p.sigma / total);
    Ideal { mean, cov }
}

/// Everything the sweeps and plots report for one generation (or the fixed point).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub converged: bool,
    pub spectral_radius: f64,
    /// `E||theta_k - theta*_k||^2`.
    pub mse: Vec<f64>,
    /// The pooled oracle's `E||theta_ideal - theta*_k||^2`.
    pub ideal_mse: Vec<f64>,
    /// `ideal_mse_k / mse_k` (1 = as good as pooling all real data; 0 = divergent).
    pub rel_eff: Vec<f64>,
    /// `task_error[k][j]`: excess risk of entity k on task j's input distribution
    /// `E[(theta_k - theta*_j)^T Sigma~_j (theta_k - theta*_j)]`; j = K is the public task.
    pub task_error: Vec<Vec<f64>>,
    /// `(1/K) sum_k E||theta_k - theta_bar||^2` (homogenisation: → 0 as entities merge).
    pub dispersion: f64,
    /// Mean over pairs k < l of `E||theta_k - theta_l||^2` (NaN for K = 1).
    pub pairwise_distance: f64,
}

impl Metrics {
    pub fn mean_rel_eff(&self) -> f64 {
        self.rel_eff.iter().sum::<f64>() / self.rel_eff.len() as f64
    }
    pub fn mean_mse(&self) -> f64 {
        self.mse.iter().sum::<f64>() / self.mse.len() as f64
    }
    /// Mean of `task_error[k][k]`.
    pub fn own_task_error(&self) -> f64 {
        let k = self.task_error.len();
        (0..k).map(|e| self.task_error[e][e]).sum::<f64>() / k as f64
    }
    /// Mean of `task_error[k][j]`, j ≠ k private tasks (NaN for K = 1).
    pub fn cross_task_error(&self) -> f64 {
        let k = self.task_error.len();
        if k < 2 {
            return f64::NAN;
        }
        let mut s = 0.0;
        for e in 0..k {
            for j in 0..k {
                if j != e {
                    s += self.task_error[e][j];
                }
            }
        }
        s / (k * (k - 1)) as f64
    }

    fn divergent(p: &Problem, rho: f64, ideal_mse: Vec<f64>) -> Self {
        Metrics {
            converged: false,
            spectral_radius: rho,
            mse: vec![f64::INFINITY; p.k],
            ideal_mse,
            rel_eff: vec![0.0; p.k],
            task_error: vec![vec![f64::INFINITY; p.k + 1]; p.k],
            dispersion: f64::NAN,
            pairwise_distance: f64::NAN,
        }
    }
}

fn ideal_mse(p: &Problem) -> Vec<f64> {
    let id = ideal(p);
    let tr = id.cov.trace();
    p.target.iter().map(|t| (&id.mean - t).norm_squared() + tr).collect()
}

/// Metrics of a set of moments.
pub fn metrics(p: &Problem, mo: &Moments, rho: f64) -> Metrics {
    let k = p.k;
    let cu = real_noise_factor(p);
    let traces = mo.cov_traces(&cu);
    let ideal_mse = ideal_mse(p);
    let mse: Vec<f64> = (0..k).map(|e| (&mo.mean[e] - &p.target[e]).norm_squared() + traces[(e, e)]).collect();
    if !mse.iter().all(|x| x.is_finite()) {
        return Metrics::divergent(p, rho, ideal_mse);
    }
    let rel_eff = mse.iter().zip(&ideal_mse).map(|(m, i)| if *m > 0.0 { i / m } else { 1.0 }).collect();
    // Task test covariances: the population covariance of each private set and the public set.
    let test_cov: Vec<(DMatrix<f64>, &DVector<f64>)> = p
        .private
        .iter()
        .map(|r| (&r.basis * r.basis.transpose(), &r.theta))
        .chain(std::iter::once((&p.public.basis * p.public.basis.transpose(), &p.public.theta)))
        .collect();
    let task_error = (0..k)
        .map(|e| {
            let c = mo.cov(&cu, e, e);
            test_cov
                .iter()
                .map(|(sig, th)| {
                    let diff = &mo.mean[e] - *th;
                    (diff.transpose() * sig * &diff)[(0, 0)] + sig.component_mul(&c).sum()
                })
                .collect()
        })
        .collect();
    let kf = k as f64;
    let mbar: DVector<f64> = mo.mean.iter().fold(DVector::zeros(p.d), |acc, m| acc + m) / kf;
    let total_tr: f64 = traces.sum();
    let mut dispersion = 0.0;
    for e in 0..k {
        let row: f64 = traces.row(e).sum();
        dispersion += (&mo.mean[e] - &mbar).norm_squared() + traces[(e, e)] - 2.0 * row / kf + total_tr / (kf * kf);
    }
    dispersion /= kf;
    let mut pair = 0.0;
    let mut npair = 0usize;
    for e in 0..k {
        for l in (e + 1)..k {
            pair += (&mo.mean[e] - &mo.mean[l]).norm_squared() + traces[(e, e)] + traces[(l, l)] - traces[(e, l)] - traces[(l, e)];
            npair += 1;
        }
    }
    let pairwise_distance = if npair > 0 { pair / npair as f64 } else { f64::NAN };
    Metrics { converged: true, spectral_radius: rho, mse, ideal_mse, rel_eff, task_error, dispersion, pairwise_distance }
}

/// Long-run metrics: fixed point (expected design) or generation `horizon`.
pub fn long_run(p: &Problem, s: Setting, use_fixed_point: bool, horizon: usize) -> Result<Metrics, TheoryError> {
    if use_fixed_point {
        let fp = fixed_point(p, s)?;
        return Ok(match fp.moments {
            Some(mo) => metrics(p, &mo, fp.spectral_radius),
            None => Metrics::divergent(p, fp.spectral_radius, ideal_mse(p)),
        });
    }
    let mut mo = initial(p, s);
    for _ in 0..horizon {
        mo = step(p, s, &mo);
    }
    let rho = message_radius(p, s, horizon);
    Ok(metrics(p, &mo, rho))
}
