//! Monte Carlo simulation of the recursive loop, sample by sample: draw real labels, fit
//! generation 0, then repeatedly draw synthetic data from every entity's previous model and
//! refit all entities on the weighted mixture. It deliberately rebuilds the normal equations
//! from raw samples instead of reusing `dynamics`, so agreement is a real check.

use nalgebra::{DMatrix, DVector};

use crate::config::SyntheticDesign;
use crate::dynamics::Weights;
use crate::problem::{gauss_matrix, gauss_vector, spd_inverse, stream, Problem, RealSet, Setting};

/// Per-generation averages over replications, with standard errors of the mean.
#[derive(Debug, Clone)]
pub struct McResult {
    pub replications: usize,
    /// `mse[t][k]`: mean of `||theta_{t,k} - theta*_k||^2`.
    pub mse: Vec<Vec<f64>>,
    pub mse_se: Vec<Vec<f64>>,
    /// Mean over entities of the above, per generation (with its own standard error).
    pub mean_mse: Vec<f64>,
    pub mean_mse_se: Vec<f64>,
    /// `(1/K) sum_k ||theta_k - theta_bar||^2`.
    pub dispersion: Vec<f64>,
    pub dispersion_se: Vec<f64>,
    /// Mean estimate of each entity at the last generation.
    pub final_mean: Vec<DVector<f64>>,
    /// Its per-coordinate standard error.
    pub final_se: Vec<DVector<f64>>,
}

#[derive(Clone)]
struct Acc {
    n: f64,
    s: f64,
    s2: f64,
}

impl Acc {
    fn new() -> Self {
        Acc { n: 0.0, s: 0.0, s2: 0.0 }
    }
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        self.s += x;
        self.s2 += x * x;
    }
    fn mean(&self) -> f64 {
        self.s / self.n
    }
    fn se(&self) -> f64 {
        if self.n < 2.0 {
            return f64::NAN;
        }
        let m = self.mean();
        ((self.s2 / self.n - m * m).max(0.0) * self.n / (self.n - 1.0) / self.n).sqrt()
    }
}

fn real_rhs(set: &RealSet, sigma: f64, rng: &mut rand_chacha::ChaCha8Rng) -> DVector<f64> {
    match &set.x {
        Some(x) => {
            let y = x * &set.theta + gauss_vector(rng, set.n) * sigma;
            x.transpose() * y / set.n as f64
        }
        // Population design: X^T eps / n ~ N(0, sigma^2 U U^T / n), drawn directly.
        None => set.rhs_mean() + &set.basis * gauss_vector(rng, set.basis.ncols()) * (sigma / (set.n as f64).sqrt()),
    }
}

fn solve(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
    match a.clone().cholesky() {
        Some(ch) => ch.solve(b),
        None => spd_inverse(a) * b,
    }
}

/// Simulate `replications` independent runs of `horizon` generations.
pub fn simulate(p: &Problem, s: Setting, horizon: usize, replications: usize, seed: u64) -> McResult {
    let (k, d) = (p.k, p.d);
    let w = Weights::new(s, k);
    let m = p.synthetic_samples(s);
    let ridge = DMatrix::<f64>::identity(d, d) * p.ridge;
    let factors: Vec<DMatrix<f64>> = (0..k).map(|j| p.synthetic_factor(s, j)).collect();
    let cond: Option<Vec<Vec<DMatrix<f64>>>> = (p.synthetic_design == SyntheticDesign::Conditional && m > 0)
        .then(|| (1..=horizon).map(|t| (0..k).map(|j| p.conditional_inputs(s, t, j)).collect()).collect());
    let gen0: Vec<DMatrix<f64>> = p.private.iter().map(|r| &r.gram * w.gen0_private + &p.public.gram * w.gen0_public + &ridge).collect();
    let mut mse = vec![vec![Acc::new(); k]; horizon + 1];
    let mut mean_mse = vec![Acc::new(); horizon + 1];
    let mut disp = vec![Acc::new(); horizon + 1];
    let mut fin_s = vec![DVector::<f64>::zeros(d); k];
    let mut fin_s2 = vec![DVector::<f64>::zeros(d); k];
    for r in 0..replications {
        let mut rng = stream(seed, 3, r as u64, 0);
        let b_pub = real_rhs(&p.public, p.sigma, &mut rng);
        let b_priv: Vec<DVector<f64>> = p.private.iter().map(|set| real_rhs(set, p.sigma, &mut rng)).collect();
        let mut theta: Vec<DVector<f64>> =
            (0..k).map(|e| solve(&gen0[e], &(&b_priv[e] * w.gen0_private + &b_pub * w.gen0_public))).collect();
        let mut record = |t: usize, th: &[DVector<f64>]| {
            let mut tot = 0.0;
            for e in 0..k {
                let v = (&th[e] - &p.target[e]).norm_squared();
                mse[t][e].push(v);
                tot += v;
            }
            mean_mse[t].push(tot / k as f64);
            let bar: DVector<f64> = th.iter().fold(DVector::zeros(d), |a, x| a + x) / k as f64;
            disp[t].push(th.iter().map(|x| (x - &bar).norm_squared()).sum::<f64>() / k as f64);
        };
        record(0, &theta);
        for t in 1..=horizon {
            let mut s_sum = &p.public.gram * w.public + &ridge;
            let mut g = &b_pub * w.public;
            if m > 0 {
                for j in 0..k {
                    let x = match &cond {
                        Some(c) => c[t - 1][j].clone(),
                        None => gauss_matrix(&mut rng, m, factors[j].ncols()) * factors[j].transpose(),
                    };
                    let y = &x * &theta[j] + gauss_vector(&mut rng, m) * p.sigma;
                    s_sum += x.transpose() * &x * (w.synthetic / m as f64);
                    g += x.transpose() * y * (w.synthetic / m as f64);
                }
            }
            theta = (0..k)
                .map(|e| solve(&(&p.private[e].gram * w.private + &s_sum), &(&b_priv[e] * w.private + &g)))
                .collect();
            record(t, &theta);
        }
        for e in 0..k {
            fin_s[e] += &theta[e];
            fin_s2[e] += theta[e].component_mul(&theta[e]);
        }
    }
    let n = replications as f64;
    let final_mean: Vec<DVector<f64>> = fin_s.iter().map(|x| x / n).collect();
    let final_se = (0..k)
        .map(|e| {
            let mu = &final_mean[e];
            (&fin_s2[e] / n - mu.component_mul(mu)).map(|v| (v.max(0.0) / (n - 1.0).max(1.0)).sqrt())
        })
        .collect();
    McResult {
        replications,
        mse: mse.iter().map(|row| row.iter().map(Acc::mean).collect()).collect(),
        mse_se: mse.iter().map(|row| row.iter().map(Acc::se).collect()).collect(),
        mean_mse: mean_mse.iter().map(Acc::mean).collect(),
        mean_mse_se: mean_mse.iter().map(Acc::se).collect(),
        dispersion: disp.iter().map(Acc::mean).collect(),
        dispersion_se: disp.iter().map(Acc::se).collect(),
        final_mean,
        final_se,
    }
}
