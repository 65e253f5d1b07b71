//! The vendored candle-core's pool change (`vendor/README.md`): with `CANDLE_NUM_THREADS=1`, as the
//! binary sets it, candle's large element-wise ops run on rayon's pool, and their results are the same
//! bits as element-by-element arithmetic for any rayon thread count. (Its own process: candle reads the
//! variable once.)

use candle_core::{Device, Tensor};

#[test]
fn large_element_wise_ops_on_rayons_pool_keep_their_bits_for_any_thread_count() {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    // Above candle's 64K-element threshold for its parallel element-wise path, and not a multiple of
    // its 16K chunk, at OPT's width.
    let n: usize = 300 * 768 + 5;
    let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
    let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 / 91.0 + 0.5).collect();
    let want_sum: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x + y).to_bits()).collect();
    let want_prod: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x * y).to_bits()).collect();
    let bits = |t: Tensor| t.to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (sum, prod) = pool.install(|| {
            let (ta, tb) = (Tensor::new(a.as_slice(), &Device::Cpu).unwrap(), Tensor::new(b.as_slice(), &Device::Cpu).unwrap());
            ((&ta + &tb).unwrap(), (&ta * &tb).unwrap())
        });
        assert!(bits(sum) == want_sum, "{threads} threads: a + b differs from element-wise addition");
        assert!(bits(prod) == want_prod, "{threads} threads: a * b differs from element-wise multiplication");
    }
}
