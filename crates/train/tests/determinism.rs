//! Bit-reproducible training at a real width. The fixture models (hidden 32) fit every CPU kernel's
//! reduction in one chunk, so an order that depends on work stealing or the thread count never shows
//! there; at hidden 768 the norm weight/bias and linear bias gradients span many chunks. Two runs, and a
//! stop / save / reload / resume on 2 then 1 threads, must give byte-identical weights.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use crossfeed_model::{CausalLm, TextTokenizer};
use crossfeed_train::{tokenize, FineTune, LmExample, TrainConfig};
use serde_json::Value;

const STEPS: u64 = 3;
const MAX_LEN: usize = 96;

fn fixture(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(v)
}

/// The fixture model `v` widened to hidden 768: every tensor dimension found in `widen` is replaced,
/// weights drawn from a fixed xorshift stream (N(0, 0.02)-like), tokenizer files copied as they are.
fn widened(v: &str, widen: &[(usize, usize)], config: &[(&str, Value)], dir: &Path) {
    for f in std::fs::read_dir(fixture(v)).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("golden") && name != "model.safetensors" && name != "config.json" {
            std::fs::copy(&f, dir.join(&name)).unwrap();
        }
    }
    let mut cfg: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(fixture(v).join("config.json")).unwrap()).unwrap();
    for (k, val) in config {
        cfg.insert(k.to_string(), val.clone());
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let small = candle_core::safetensors::load(fixture(v).join("model.safetensors"), &Device::Cpu).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Sum of 4 uniforms: near-normal, sd ≈ 0.02.
        (0..4).map(|i| ((state.rotate_left(16 * i) >> 40) as f32 / (1u64 << 24) as f32) - 0.5).sum::<f32>() * 0.035
    };
    let mut names: Vec<&String> = small.keys().collect();
    names.sort();
    let big: std::collections::HashMap<String, Tensor> = names
        .into_iter()
        .map(|n| {
            let dims: Vec<usize> = small[n].dims().iter().map(|d| widen.iter().find(|(a, _)| a == d).map_or(*d, |(_, b)| *b)).collect();
            let len = dims.iter().product();
            let mut data: Vec<f32> = (0..len).map(|_| next()).collect();
            if n.ends_with("norm.weight") {
                data.iter_mut().for_each(|x| *x += 1.0);
            }
            (n.clone(), Tensor::from_vec(data, dims, &Device::Cpu).unwrap())
        })
        .collect();
    candle_core::safetensors::save(&big, dir.join("model.safetensors")).unwrap();
}

fn examples() -> Vec<LmExample> {
    let words = ["the", "model", "reads", "a", "long", "line", "of", "text", "and", "learns", "from", "it", "again"];
    (0..16)
        .map(|i| {
            let text: Vec<&str> = (0..140).map(|j| words[(i * 7 + j * j + j / 3) % words.len()]).collect();
            LmExample { prompt: String::new(), completion: text.join(" ") }
        })
        .collect()
}

fn weights(m: &CausalLm) -> Vec<Vec<u32>> {
    m.params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()).collect()
}

fn on_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f)
}

/// (grad norms, weights) of `STEPS` straight steps; then the same with a save after `stop` steps on 2
/// threads and the rest, reloaded, on 1 thread.
fn check(dir: &Path) {
    let tok = TextTokenizer::from_dir(dir).unwrap();
    let cfg = TrainConfig { lr: 1e-3, total_steps: STEPS, batch_size: 4, grad_accum: 1, warmup_ratio: 0.0, ..TrainConfig::default() };
    let data = || tokenize(&tok, &examples(), MAX_LEN, false).unwrap();
    let straight = |threads| {
        on_threads(threads, || {
            let m = CausalLm::load_dir(dir, &Device::Cpu, DType::F32).unwrap();
            let mut ft = FineTune::new(&m, data(), cfg.clone(), 1, MAX_LEN).unwrap();
            let norms: Vec<u64> = (0..STEPS).map(|_| ft.step().unwrap().grad_norm.to_bits()).collect();
            drop(ft);
            (norms, weights(&m))
        })
    };
    let (norms_a, w_a) = straight(2);
    let (norms_b, w_b) = straight(2);
    assert_eq!(norms_a, norms_b, "grad norms differ between two identical runs");
    assert!(w_a == w_b, "weights differ between two identical runs");

    let tmp = tempfile::tempdir().unwrap();
    let mut norms_c = on_threads(2, || {
        let m = CausalLm::load_dir(dir, &Device::Cpu, DType::F32).unwrap();
        let mut ft = FineTune::new(&m, data(), cfg.clone(), 1, MAX_LEN).unwrap();
        let n = ft.step().unwrap().grad_norm.to_bits();
        ft.save(tmp.path()).unwrap();
        vec![n]
    });
    let (rest, w_c) = on_threads(1, || {
        let m = CausalLm::load_dir(tmp.path(), &Device::Cpu, DType::F32).unwrap();
        let mut ft = FineTune::new(&m, data(), cfg.clone(), 1, MAX_LEN).unwrap();
        ft.resume(tmp.path()).unwrap();
        let n: Vec<u64> = (1..STEPS).map(|_| ft.step().unwrap().grad_norm.to_bits()).collect();
        drop(ft);
        (n, weights(&m))
    });
    norms_c.extend(rest);
    assert_eq!(norms_a, norms_c, "grad norms differ after a stop on 2 threads and a resume on 1");
    assert!(w_a == w_c, "weights differ after a stop on 2 threads and a resume on 1");
}

#[test]
fn opt_at_hidden_768_trains_bit_identically_across_runs_threads_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = [
        ("hidden_size", Value::from(768)),
        ("word_embed_proj_dim", Value::from(768)),
        ("ffn_dim", Value::from(3072)),
        ("num_attention_heads", Value::from(12)),
        ("num_hidden_layers", Value::from(2)),
        ("max_position_embeddings", Value::from(128)),
    ];
    widened("opt125", &[(32, 768), (64, 3072), (66, 130)], &config, dir.path());
    check(dir.path());
}

#[test]
fn llama_at_hidden_768_trains_bit_identically_across_runs_threads_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = [
        ("hidden_size", Value::from(768)),
        ("intermediate_size", Value::from(2048)),
        ("num_attention_heads", Value::from(12)),
        ("num_key_value_heads", Value::from(12)),
        ("num_hidden_layers", Value::from(2)),
    ];
    widened("llama", &[(32, 768), (48, 2048)], &config, dir.path());
    check(dir.path());
}
