//! crossfeed's own dropout masks: keep rate, inverted scale, independence across sites and seeds,
//! the same bytes on every call.

use candle_core::{DType, Device, Tensor};
use crossfeed_model::dropout::{derive_seed, seeded_mask, Dropout, MaskRequest};

fn mask(seed: u64, site: usize, n: usize, p: f64) -> Vec<f32> {
    seeded_mask(seed, MaskRequest { site, dims: &[n], p }, &Device::Cpu).unwrap().to_vec1().unwrap()
}

#[test]
fn keep_rate_matches_one_minus_p() {
    let n = 1_000_000;
    for p in [0.1, 0.5, 0.9] {
        let kept = mask(7, 0, n, p).iter().filter(|&&k| k == 1.0).count() as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((kept - (1.0 - p)).abs() < 5.0 * sd, "p = {p}: kept {kept}");
    }
}

#[test]
fn kept_values_are_scaled_by_the_f32_inverse_as_torch_does() {
    let req = |_: MaskRequest| Tensor::new(&[1f32, 0., 1., 1.], &Device::Cpu);
    let d = Dropout::new(&req);
    let x = Tensor::new(&[2f32, 3., -1., 0.5], &Device::Cpu).unwrap();
    let y: Vec<f32> = d.apply(&x, 0.1).unwrap().to_vec1().unwrap();
    let s = 1.0f32 / 0.9f32;
    assert_eq!(y, vec![2.0 * s, 0.0, -s, 0.5 * s]);
    // p = 0 draws nothing and returns the input, as torch does.
    assert_eq!(d.apply(&x, 0.0).unwrap().to_vec1::<f32>().unwrap(), x.to_vec1::<f32>().unwrap());
    assert_eq!(d.sites(), 1);
    assert_eq!(d.apply(&x.to_dtype(DType::BF16).unwrap(), 0.1).unwrap().dtype(), DType::BF16);
}

#[test]
fn masks_are_independent_across_sites_steps_and_seeds_and_reproducible() {
    let n = 200_000;
    let p = 0.5;
    let a = mask(derive_seed(1, 0, 0), 0, n, p);
    assert_eq!(a, mask(derive_seed(1, 0, 0), 0, n, p), "same seed and site: same mask");
    for (what, b) in [
        ("next site", mask(derive_seed(1, 0, 0), 1, n, p)),
        ("next micro-batch", mask(derive_seed(1, 0, 1), 0, n, p)),
        ("next step", mask(derive_seed(1, 1, 0), 0, n, p)),
        ("another seed", mask(derive_seed(2, 0, 0), 0, n, p)),
    ] {
        // Both kept: (1-p)² of the positions for independent masks.
        let both = a.iter().zip(&b).filter(|(x, y)| **x == 1.0 && **y == 1.0).count() as f64 / n as f64;
        assert!((both - 0.25).abs() < 0.005, "{what}: both kept {both}");
    }
}

/// The device-generic mask (what a GPU computes, with candle's integer ops) has the CPU hash's bits,
/// so CPU and GPU runs draw the same masks and resumes stay exact; and it uploads nothing per mask.
#[test]
fn the_device_mask_has_the_cpu_bits_and_uploads_nothing() {
    use crossfeed_model::fastpath::with_generic;
    for (n, p) in [(5, 0.5), (65_536, 0.1), (65_537, 0.9), (200_003, 0.3)] {
        let seed = derive_seed(3, 1, 2);
        let cpu = mask(seed, 4, n, p);
        let dims = [n];
        let generic: Vec<f32> = with_generic(|| {
            seeded_mask(seed, MaskRequest { site: 4, dims: &dims, p }, &Device::Cpu).unwrap().to_vec1().unwrap()
        });
        assert!(cpu == generic, "n = {n}, p = {p}: generic mask differs from the CPU hash");
    }
    let dims = [3, 70_000];
    let before = crossfeed_model::transfer::counts();
    let m = with_generic(|| seeded_mask(9, MaskRequest { site: 0, dims: &dims, p: 0.1 }, &Device::Cpu).unwrap());
    assert_eq!(m.dims(), &dims);
    assert_eq!(crossfeed_model::transfer::counts().1 - before.1, 0, "uploads for a mask on the generic path");
}

/// Neighbouring elements (1 and 2¹⁶ apart: the hash's two halves) are kept independently.
#[test]
fn neighbouring_elements_are_independent() {
    let n = 1 << 20;
    let a = mask(derive_seed(5, 0, 0), 0, n, 0.5);
    for d in [1, 2, 255, 65_536, 65_537] {
        let both = a.iter().zip(&a[d..]).filter(|(x, y)| **x == 1.0 && **y == 1.0).count() as f64 / (n - d) as f64;
        // 5 standard deviations of the proportion (0.25 · 0.75 / n).
        assert!((both - 0.25).abs() < 5.0 * (0.25f64 * 0.75 / n as f64).sqrt(), "{d} apart: both kept {both}");
    }
}
