#![allow(clippy::needless_range_loop)]
//! Integration tests: known single-model results, closed form vs Monte Carlo, relative
//! efficiency calibration, symmetry, config errors and output files.

use crossfeed_theory::config::SyntheticDesign;
use crossfeed_theory::dynamics::{self, real_noise_factor, real_rhs_mean};
use crossfeed_theory::{montecarlo, run_cli, Problem, Setting, TheoryConfig};
use nalgebra::{DMatrix, DVector};

fn cfg(sets: &[&str]) -> TheoryConfig {
    let v: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    TheoryConfig::load(None, &v).expect("valid test config")
}

/// K = 1, full-rank data: alpha = 1 is pure self-consumption; each generation adds the
/// fresh-label noise sigma^2 tr(Sigma^{-1}) / m = sigma^2 d / m, so the error grows linearly.
#[test]
fn k1_alpha1_grows_linearly_alpha_below_one_bounded() {
    let c = cfg(&["entities=1", "dim=5", "data.public_rank=5", "data.private_rank=5", "synthetic.size=fixed", "synthetic.samples_per_entity=50", "noise_std=1.0"]);
    let p = Problem::from_config(&c).unwrap();
    let tr = dynamics::transient(&p, Setting { alpha: 1.0, beta: 0.5 }, 30);
    let mse: Vec<f64> = tr.iter().map(|m| dynamics::metrics(&p, m, 0.0).mse[0]).collect();
    let inc = 1.0 * 5.0 / 50.0;
    for t in 1..mse.len() {
        assert!(((mse[t] - mse[t - 1]) - inc).abs() < 1e-6, "t={t} increment {} vs {inc}", mse[t] - mse[t - 1]);
    }
    assert!(dynamics::fixed_point(&p, Setting { alpha: 1.0, beta: 0.5 }).unwrap().moments.is_none());
    for alpha in [0.1, 0.5, 0.9] {
        let s = Setting { alpha, beta: 0.5 };
        let fp = dynamics::fixed_point(&p, s).unwrap();
        assert!(fp.spectral_radius < 1.0, "alpha={alpha} rho={}", fp.spectral_radius);
        let limit = dynamics::metrics(&p, fp.moments.as_ref().unwrap(), fp.spectral_radius).mse[0];
        let tr = dynamics::transient(&p, s, 400);
        let m: Vec<f64> = tr.iter().map(|m| dynamics::metrics(&p, m, 0.0).mse[0]).collect();
        assert!(m.iter().all(|v| *v <= limit * 1.0001 + 1e-12 || *v <= m[0] * 1.0001), "alpha={alpha} unbounded");
        assert!((m[400] - limit).abs() < 1e-6 * limit.max(1.0), "alpha={alpha}: {} vs fixed point {limit}", m[400]);
    }
}

/// The factored d × d recursion equals the explicit stacked `theta_t = P_t r + Q_t theta_{t-1}
/// + N_t xi_t` recursion, and rho(Q) equals rho of the message map.
#[test]
fn factored_recursion_matches_explicit_pq() {
    let c = cfg(&["entities=3", "dim=5", "data.public_rank=2", "data.private_rank=1", "synthetic.design=conditional", "sweep.evaluate=horizon", "synthetic.budget=30"]);
    let p = Problem::from_config(&c).unwrap();
    let s = Setting { alpha: 0.6, beta: 0.3 };
    let (k, d) = (p.k, p.d);
    let cu_blocks = real_noise_factor(&p);
    let cols: usize = cu_blocks.iter().map(|f| f.ncols()).sum();
    let mut cu = DMatrix::zeros((k + 1) * d, cols);
    let mut off = 0;
    for (b, blk) in cu_blocks.iter().enumerate() {
        cu.view_mut((b * d, off), (d, blk.ncols())).copy_from(blk);
        off += blk.ncols();
    }
    let r = real_rhs_mean(&p);
    let g0 = dynamics::generation_matrices(&p, s, 0);
    let mut mean = &g0.p * &r;
    let mut f = g0.p.clone();
    let mut v = DMatrix::zeros(k * d, k * d);
    let tr = dynamics::transient(&p, s, 4);
    for t in 1..=4 {
        let g = dynamics::generation_matrices(&p, s, t);
        mean = &g.p * &r + &g.q * &mean;
        f = &g.p + &g.q * &f;
        v = &g.q * &v * g.q.transpose() + &g.noise_gain * &g.noise_cov * g.noise_gain.transpose();
        let fc = &f * &cu;
        let cov = &fc * fc.transpose() + &v;
        let mo = &tr[t];
        for e in 0..k {
            let err = (mean.rows(e * d, d) - &mo.mean[e]).amax();
            assert!(err < 1e-7, "t={t} mean error {err}");
            for l in 0..k {
                let blk = cov.view((e * d, l * d), (d, d)).clone_owned();
                let err = (blk - mo.cov(&cu_blocks, e, l)).amax();
                assert!(err < 1e-7, "t={t} block ({e},{l}) error {err}");
            }
        }
        let rho_q = dynamics::spectral_radius(&g.q);
        assert!((rho_q - dynamics::message_radius(&p, s, t)).abs() < 1e-8);
    }
}

/// Closed form (exact, conditional designs) vs Monte Carlo for several (alpha, beta, K):
/// every entity's MSE, the dispersion and the mean estimate lie within 4 standard errors.
#[test]
fn closed_form_matches_monte_carlo() {
    let cases = [(1usize, 0.5, 0.5), (2, 0.3, 0.7), (3, 0.7, 0.4), (3, 1.0, 0.5)];
    for (i, &(k, alpha, beta)) in cases.iter().enumerate() {
        let kk = format!("entities={k}");
        let c = cfg(&[&kk, "dim=4", "data.public_rank=2", "data.private_rank=1", "data.public_samples=12", "data.private_samples=8",
            "synthetic.design=conditional", "sweep.evaluate=horizon", "synthetic.budget=24", "noise_std=1.0"]);
        assert_eq!(c.synthetic.design, SyntheticDesign::Conditional);
        let p = Problem::from_config(&c).unwrap();
        let s = Setting { alpha, beta };
        let horizon = 3;
        let tr = dynamics::transient(&p, s, horizon);
        let sim = montecarlo::simulate(&p, s, horizon, 3000, 100 + i as u64);
        for t in [0, 1, horizon] {
            let m = dynamics::metrics(&p, &tr[t], 0.0);
            for e in 0..k {
                let z = (sim.mse[t][e] - m.mse[e]) / sim.mse_se[t][e];
                assert!(z.abs() < 4.0, "case {i} t={t} entity {e}: mc {} ± {} vs cf {}", sim.mse[t][e], sim.mse_se[t][e], m.mse[e]);
            }
            if k > 1 {
                let diff = sim.dispersion[t] - m.dispersion;
                assert!(diff.abs() < 4.0 * sim.dispersion_se[t] || diff.abs() < 1e-12, "case {i} t={t} dispersion: mc {} vs cf {}", sim.dispersion[t], m.dispersion);
            }
        }
        for e in 0..k {
            let z: DVector<f64> = (&sim.final_mean[e] - &tr[horizon].mean[e]).component_div(&sim.final_se[e]);
            assert!(z.amax() < 4.5, "case {i} entity {e} mean z {z}");
        }
    }
}

/// An entity that sees all real data (K = 1) and weights it like the pooled estimator
/// (beta = n~ / (n~ + n*)) at alpha = 0 *is* the ideal estimator: efficiency exactly 1.
/// Any other weighting is a worse linear unbiased estimator (Gauss–Markov): efficiency < 1.
#[test]
fn relative_efficiency_is_one_for_entity_with_all_real_data() {
    let c = cfg(&["entities=1", "dim=6", "data.public_rank=3", "data.private_rank=3", "data.public_samples=60", "data.private_samples=30"]);
    let p = Problem::from_config(&c).unwrap();
    let beta = 30.0 / 90.0;
    let m = dynamics::long_run(&p, Setting { alpha: 0.0, beta }, true, 10).unwrap();
    assert!((m.rel_eff[0] - 1.0).abs() < 1e-9, "rel eff {}", m.rel_eff[0]);
    let other = dynamics::long_run(&p, Setting { alpha: 0.0, beta: 0.8 }, true, 10).unwrap();
    assert!(other.rel_eff[0] < 1.0);
    let synth = dynamics::long_run(&p, Setting { alpha: 0.5, beta }, true, 10).unwrap();
    assert!(synth.rel_eff[0] < 1.0, "synthetic noise can only hurt when the entity already has everything");
}

/// Symmetric entities (population designs on coordinate blocks) get identical long-run
/// MSE, efficiency and cross-task errors; the pooled ideal is the same for all.
#[test]
fn symmetric_entities_give_symmetric_results() {
    let c = cfg(&["entities=4", "dim=12", "data.public_rank=4", "data.private_rank=2", "data.design=population", "data.subspaces=coordinate"]);
    let p = Problem::from_config(&c).unwrap();
    for (alpha, beta) in [(0.5, 0.5), (0.3, 0.8)] {
        let m = dynamics::long_run(&p, Setting { alpha, beta }, true, 10).unwrap();
        assert!(m.converged);
        for e in 1..4 {
            assert!((m.mse[e] - m.mse[0]).abs() < 1e-6 * m.mse[0], "{:?}", m.mse);
            assert!((m.rel_eff[e] - m.rel_eff[0]).abs() < 1e-6, "{:?}", m.rel_eff);
        }
    }
}

#[test]
fn unknown_key_error_names_key_and_lists_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = run_cli(None, &["sweep.stepss=3".to_string()], dir.path()).unwrap_err().to_string();
    assert!(e.contains("sweep.stepss") && e.contains("allowed keys") && e.contains("sweep.steps"), "{e}");
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "alpha = 0.5\n[synthetic]\nwhatever = 2\n").unwrap();
    let e = run_cli(Some(&f), &[], dir.path()).unwrap_err().to_string();
    assert!(e.contains("synthetic.whatever"), "{e}");
    let e = run_cli(None, &["alpha=2".to_string()], dir.path()).unwrap_err().to_string();
    assert!(e.contains("alpha") && e.contains("[0, 1]"), "{e}");
}

#[test]
fn run_cli_writes_csv_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let sets: Vec<String> = ["sweep.steps=5", "generations=6", "montecarlo.replications=20", "dim=8", "data.public_rank=4", "data.private_rank=1", "sweep.curve_alphas=[0, 0.5, 1]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = run_cli(None, &sets, &out).unwrap();
    assert!(text.contains("best (alpha, beta)") && text.contains("relative efficiency"), "{text}");
    for f in ["config.toml", "heatmap.csv", "curves.csv", "entities.csv", "montecarlo.csv", "heatmap.svg", "heatmap.png", "curves.svg", "curves.png", "summary.txt"] {
        let meta = std::fs::metadata(out.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        assert!(meta.len() > 0, "{f} empty");
    }
    let heat = std::fs::read_to_string(out.join("heatmap.csv")).unwrap();
    assert_eq!(heat.lines().count(), 1 + 25);
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(curves.lines().count(), 1 + 3 * 7);
    // The resolved config round-trips.
    let back = TheoryConfig::load(Some(&out.join("config.toml")), &[]).unwrap();
    assert_eq!(back.sweep.steps, 5);
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".tmp-")));
}
