//! Generation against transformers' greedy `generate` on the tiny fixtures, the KV cache against full
//! re-forwards, seeded sampling against batch size, and the sampler's distribution against the exact one.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use crossfeed_generate::{sampling, FinishReason, GenerationConfig, Generator, SamplingParams};
use crossfeed_model::{CausalLm, TextTokenizer};
use serde_json::Value;

const VARIANTS: &[&str] = &["opt125", "opt350", "llama32", "llama", "qwen2", "qwen3", "gpt2", "gemma3", "gemma2"];

fn fixture(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(v)
}

fn load(v: &str) -> (CausalLm, TextTokenizer, Value) {
    let m = CausalLm::load_dir(&fixture(v), &Device::Cpu, DType::F32).unwrap();
    let t = TextTokenizer::from_dir(&fixture(v)).unwrap();
    let g = serde_json::from_str(&std::fs::read_to_string(fixture(v).join("golden.json")).unwrap()).unwrap();
    (m, t, g)
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

fn greedy_cfg(batch_size: usize) -> GenerationConfig {
    GenerationConfig { sampling: SamplingParams::greedy(), max_new_tokens: 8, batch_size, ..Default::default() }
}

#[test]
fn greedy_matches_transformers_on_a_left_padded_batch() {
    for v in VARIANTS {
        let (m, t, g) = load(v);
        let prompts = ids(&g["prompt_ids"]);
        let want = ids(&g["greedy"]);
        // Sliding-window fixtures also carry each prompt generated alone: transformers' left-padded batch
        // equals it (its window counts cache slots, which left padding shifts as it shifts positions).
        if let Some(solo) = g.get("greedy_solo") {
            assert_eq!(ids(solo), want, "{v}: transformers' left-padded batch against each prompt alone");
        }
        let cfg = GenerationConfig { min_new_tokens: 8, ..greedy_cfg(3) };
        for bs in [3, 2, 1] {
            let out = Generator::new(&m, &t, GenerationConfig { batch_size: bs, ..cfg.clone() }).run(&prompts, |_, _| {}).unwrap();
            for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                assert_eq!(&o.token_ids, w, "{v} batch {bs} prompt {i}");
                assert_eq!(o.finish_reason, FinishReason::Length);
            }
        }
    }
}

#[test]
fn greedy_stops_at_eos_like_transformers() {
    for v in VARIANTS {
        let (m, t, g) = load(v);
        let prompts = ids(&g["prompt_ids"]);
        let eos = g["greedy_eos_id"].as_u64().unwrap() as u32;
        let out = Generator::new(&m, &t, greedy_cfg(2)).with_eos(vec![eos]).run(&prompts, |_, _| {}).unwrap();
        for (i, (o, w)) in out.iter().zip(ids(&g["greedy_eos"])).enumerate() {
            let cut = w.iter().position(|&x| x == eos).map_or(w.len(), |p| p + 1);
            assert_eq!(o.token_ids, w[..cut].to_vec(), "{v} prompt {i}");
            let want_reason = if o.token_ids.last() == Some(&eos) { FinishReason::Eos } else { FinishReason::Length };
            assert_eq!(o.finish_reason, want_reason, "{v} prompt {i}");
        }
    }
}

#[test]
fn kv_cache_steps_equal_full_reforward() {
    for v in VARIANTS {
        let (m, _, g) = load(v);
        let prompt = ids(&g["prompt_ids"])[2].clone();
        let mut cache = m.new_cache();
        let mut seq = prompt.clone();
        let dev = Device::Cpu;
        let full = |s: &[u32]| {
            let ids = Tensor::new(s, &dev).unwrap().unsqueeze(0).unwrap();
            let mask = ids.ones_like().unwrap();
            let pos = vec![(0..s.len() as i64).collect::<Vec<_>>()];
            m.forward(&ids, &mask, &pos, None).unwrap().get(0).unwrap().get(s.len() - 1).unwrap()
        };
        let ids0 = Tensor::new(prompt.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
        let pos0 = vec![(0..prompt.len() as i64).collect::<Vec<_>>()];
        let mut logits = m.forward(&ids0, &ids0.ones_like().unwrap(), &pos0, Some(&mut cache)).unwrap().get(0).unwrap().get(prompt.len() - 1).unwrap();
        for step in 0..6 {
            let want = full(&seq);
            let d = (&logits - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "{v} step {step}: cached logits differ by {d}");
            let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            seq.push(next);
            let ids = Tensor::new(&[next], &dev).unwrap().unsqueeze(0).unwrap();
            let mask = Tensor::ones((1, seq.len()), DType::U32, &dev).unwrap();
            logits = m.forward(&ids, &mask, &[vec![seq.len() as i64 - 1]], Some(&mut cache)).unwrap().get(0).unwrap().get(0).unwrap();
        }
    }
}

#[test]
fn seeded_sampling_does_not_depend_on_batch_size_or_run() {
    let (m, t, g) = load("llama32");
    let mut prompts = ids(&g["prompt_ids"]);
    prompts.extend(ids(&g["token_ids"]));
    let cfg = GenerationConfig {
        sampling: SamplingParams { temperature: 0.9, top_k: 50, top_p: 0.9, repetition_penalty: 1.1, min_p: 0.0 },
        max_new_tokens: 10,
        seed: 7,
        ..Default::default()
    };
    let run = |bs: usize| -> Vec<Vec<u32>> {
        Generator::new(&m, &t, GenerationConfig { batch_size: bs, ..cfg.clone() }).run(&prompts, |_, _| {}).unwrap().into_iter().map(|c| c.token_ids).collect()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same batch: same tokens");
    assert_eq!(a, run(3), "batch size 3 differs");
    assert_eq!(a, run(1), "batch size 1 differs");
    let other = Generator::new(&m, &t, GenerationConfig { seed: 8, ..cfg.clone() }).run(&prompts, |_, _| {}).unwrap();
    assert_ne!(a, other.into_iter().map(|c| c.token_ids).collect::<Vec<_>>(), "another seed gives other tokens");
}

#[test]
fn a_subset_run_with_its_list_positions_as_streams_gets_the_whole_lists_completions() {
    // Lazy generation (crossfeed-loop) runs only the prompts training reads, each with its position in
    // the full prompt list as its RNG stream; every completion must be the one the full run gives it.
    let (m, t, g) = load("opt125");
    let mut prompts = ids(&g["prompt_ids"]);
    prompts.extend(ids(&g["token_ids"]));
    let cfg = GenerationConfig {
        sampling: SamplingParams { temperature: 1.0, top_k: 50, top_p: 1.0, repetition_penalty: 1.0, min_p: 0.0 },
        max_new_tokens: 12,
        seed: 3,
        batch_size: 4,
        ..Default::default()
    };
    let gen = Generator::new(&m, &t, cfg);
    let full: Vec<Vec<u32>> = gen.run(&prompts, |_, _| {}).unwrap().into_iter().map(|c| c.token_ids).collect();
    let keep: Vec<usize> = (0..prompts.len()).filter(|i| i % 3 != 1).collect();
    let subset: Vec<Vec<u32>> = keep.iter().map(|&i| prompts[i].clone()).collect();
    let streams: Vec<u64> = keep.iter().map(|&i| i as u64).collect();
    let lazy = gen.run_indexed(&subset, &streams, |_, _| {}).unwrap();
    for (c, &i) in lazy.iter().zip(&keep) {
        assert_eq!(c.token_ids, full[i], "prompt {i}");
    }
    assert!(gen.run_indexed(&subset, &streams[1..], |_, _| {}).is_err(), "one stream per prompt");
}

#[test]
fn stop_strings_cut_the_completion() {
    let (m, t, g) = load("opt125");
    let prompts = ids(&g["prompt_ids"]);
    let plain = Generator::new(&m, &t, greedy_cfg(3)).run(&prompts, |_, _| {}).unwrap();
    let text = plain[0].text.clone();
    let stop: String = text.chars().skip(2).take(2).collect();
    assert!(!stop.is_empty());
    let cfg = GenerationConfig { stop: vec![stop.clone()], ..greedy_cfg(3) };
    let out = Generator::new(&m, &t, cfg).run(&prompts, |_, _| {}).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
    assert!(!out[0].text.contains(&stop) && text.starts_with(&out[0].text), "{:?} vs {:?}", out[0].text, text);
}

/// The exact distribution after temperature and top-p, computed on the host in f64.
fn exact(logits: &[f64], temp: f64, top_p: f64) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| ((l - m) / temp).exp()).collect();
    let z: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / z).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut cum = 0.0;
    let mut keep = vec![true; p.len()];
    for (rank, &i) in order.iter().enumerate() {
        cum += p[i];
        if cum <= 1.0 - top_p && rank + 1 < p.len() {
            keep[i] = false;
        }
    }
    let kz: f64 = p.iter().zip(&keep).filter(|(_, &k)| k).map(|(x, _)| x).sum();
    p.iter().zip(&keep).map(|(x, &k)| if k { x / kz } else { 0.0 }).collect()
}

#[test]
fn sampled_distribution_matches_the_exact_one() {
    // 300 distinct logits so the blocked CDF spans two blocks (ties at the top-p threshold are all
    // kept by our sampler, while transformers keeps whichever its sort puts last).
    let v = 300;
    let logits: Vec<f64> = (0..v).map(|i| (i as f64 * 1.7).sin() * 2.0 + i as f64 * 1e-3).collect();
    for (temp, top_p) in [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8)] {
        let want = exact(&logits, temp, top_p);
        let n_rows = 64usize;
        let rounds = 400usize;
        let row: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
        let batch = Tensor::from_vec(row.repeat(n_rows), (n_rows, v), &Device::Cpu).unwrap();
        let p = SamplingParams { temperature: temp, top_p, ..Default::default() };
        let probs = sampling::warp(&batch, &p).unwrap();
        let mut counts = vec![0usize; v];
        let mut rng = crossfeed_generate::sequence_rng(11, 0);
        for _ in 0..rounds {
            use rand::RngExt;
            let u: Vec<f32> = (0..n_rows).map(|_| 1.0 - rng.random::<f32>()).collect();
            for t in sampling::draw(&probs, &u).unwrap() {
                counts[t as usize] += 1;
            }
        }
        let n = (n_rows * rounds) as f64;
        // Chi-square over cells with expected count >= 5, the rest pooled; dropped tokens never drawn.
        let (mut chi, mut df, mut pooled_e, mut pooled_o) = (0.0, 0usize, 0.0, 0.0);
        for (i, &w) in want.iter().enumerate() {
            if w == 0.0 {
                assert_eq!(counts[i], 0, "temp {temp} top_p {top_p}: token {i} has p=0 but was drawn");
                continue;
            }
            let e = w * n;
            if e >= 5.0 {
                chi += (counts[i] as f64 - e).powi(2) / e;
                df += 1;
            } else {
                pooled_e += e;
                pooled_o += counts[i] as f64;
            }
        }
        if pooled_e > 0.0 {
            chi += (pooled_o - pooled_e).powi(2) / pooled_e;
            df += 1;
        }
        let df = (df - 1) as f64;
        // Wilson–Hilferty 99.9% quantile of chi-square(df).
        let z = 3.09;
        let crit = df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3);
        assert!(chi < crit, "temp {temp} top_p {top_p}: chi2 {chi:.1} >= {crit:.1} (df {df})");
    }
}

/// top_k = 1 and a tiny top_p keep only the argmax, so sampling with them is greedy: token for token
/// transformers' greedy continuation on every fixture model (ties in a fixture's argmax would make
/// top_k = 1 keep several; the goldens have none).
#[test]
fn top_k_1_and_a_tiny_top_p_generate_greedy_tokens() {
    for v in VARIANTS {
        let (m, t, g) = load(v);
        let prompts = ids(&g["prompt_ids"]);
        let want = ids(&g["greedy"]);
        for sampling in [SamplingParams { top_k: 1, ..SamplingParams::default() }, SamplingParams { top_p: 1e-6, ..SamplingParams::default() }] {
            let cfg = GenerationConfig { sampling: sampling.clone(), min_new_tokens: 8, seed: 3, ..greedy_cfg(2) };
            let out = Generator::new(&m, &t, cfg).run(&prompts, |_, _| {}).unwrap();
            for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                assert_eq!(&o.token_ids, w, "{v} {sampling:?} prompt {i}");
            }
        }
    }
}

/// `[generation]` takes min_p through the flattened sampling parameters, and an unknown key is still
/// refused (serde's `flatten` would otherwise swallow it).
#[test]
fn generation_config_takes_min_p_and_refuses_unknown_keys() {
    let cfg: GenerationConfig = serde_json::from_str(r#"{"min_p": 0.1, "top_k": 50}"#).unwrap();
    assert_eq!((cfg.sampling.min_p, cfg.sampling.top_k), (0.1, 50));
    let err = serde_json::from_str::<GenerationConfig>(r#"{"min_p": 0.1, "mn_p": 0.2}"#).unwrap_err();
    assert!(err.to_string().contains("mn_p"), "{err}");
}
