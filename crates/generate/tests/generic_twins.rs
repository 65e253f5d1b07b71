//! The decode path a GPU runs (no skinny CPU matmul, KV-cache views copied before matmul), forced on CPU
//! with `fastpath::with_generic`, against the CPU fast path: same logits at every cached step, same
//! tokens greedy and sampled.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use crossfeed_generate::{GenerationConfig, Generator, SamplingParams};
use crossfeed_model::fastpath::with_generic;
use crossfeed_model::{CausalLm, TextTokenizer};
use serde_json::Value;

const VARIANTS: &[&str] = &["opt125", "opt350", "llama32", "llama", "qwen2", "qwen3", "gpt2", "gemma3", "gemma2"];

fn fixture(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(v)
}

fn prompts(v: &str) -> Vec<Vec<u32>> {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(fixture(v).join("golden.json")).unwrap()).unwrap();
    g["prompt_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

/// Logits of a 6-token prompt followed by 5 single-token cached decode steps (batch of 1: the skinny path).
fn cached_logits(m: &CausalLm, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = m.frozen().unwrap();
    let dev = Device::Cpu;
    let mut cache = m.new_cache();
    let mut out = Vec::new();
    let (head, tail) = ids.split_at(6);
    let x = Tensor::new(head, &dev).unwrap().unsqueeze(0).unwrap();
    let mask = Tensor::ones((1, 6), DType::U32, &dev).unwrap();
    let pos = vec![(0..6).collect::<Vec<i64>>()];
    let l = m.forward(&x, &mask, &pos, Some(&mut cache)).unwrap();
    out.push(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    for (k, &t) in tail.iter().enumerate() {
        let n = 7 + k;
        let x = Tensor::new(&[[t]], &dev).unwrap();
        let mask = Tensor::ones((1, n), DType::U32, &dev).unwrap();
        let l = m.forward(&x, &mask, &[vec![n as i64 - 1]], Some(&mut cache)).unwrap();
        out.push(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn cached_decode_logits_match_the_generic_path() {
    for v in VARIANTS {
        let m = CausalLm::load_dir(&fixture(v), &Device::Cpu, DType::F32).unwrap();
        let ids: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % 300).collect();
        let fast = cached_logits(&m, &ids);
        let generic = with_generic(|| cached_logits(&m, &ids));
        for (step, (a, b)) in fast.iter().zip(&generic).enumerate() {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{v} step {step}: fast vs generic logits differ by {worst}");
        }
    }
}

#[test]
fn generation_is_the_same_on_the_generic_path() {
    let sampled = SamplingParams { temperature: 0.9, top_k: 50, top_p: 0.95, repetition_penalty: 1.1, min_p: 0.02 };
    for v in VARIANTS {
        let m = CausalLm::load_dir(&fixture(v), &Device::Cpu, DType::F32).unwrap();
        let t = TextTokenizer::from_dir(&fixture(v)).unwrap();
        let p = prompts(v);
        for sampling in [SamplingParams::greedy(), sampled.clone()] {
            let cfg = GenerationConfig { sampling, max_new_tokens: 10, batch_size: 2, seed: 7, ..Default::default() };
            let fast = Generator::new(&m, &t, cfg.clone()).run(&p, |_, _| {}).unwrap();
            let generic = with_generic(|| Generator::new(&m, &t, cfg.clone()).run(&p, |_, _| {}).unwrap());
            for (i, (a, b)) in fast.iter().zip(&generic).enumerate() {
                assert_eq!(a.token_ids, b.token_ids, "{v} prompt {i} ({:?})", cfg.sampling);
            }
        }
    }
}

/// Host syncs and uploads of one decode step on the generic path, pinned (a steady step: every row
/// running, none admitted or retired). Syncs: the `[B]` next-token ids, nothing else. Uploads: input
/// ids, key mask, OPT's position ids or Llama's RoPE cos/sin, the causal mask, the flag of rows still
/// under min_new_tokens; sampling adds the uniforms (the repetition penalty's seen tokens stay on the
/// device, marked from the input ids; greedy's tie-safe argmax reuses a cached index vector).
#[test]
fn host_syncs_and_uploads_per_decode_step_are_pinned() {
    let sampled = SamplingParams { temperature: 0.9, top_k: 50, top_p: 0.95, repetition_penalty: 1.1, min_p: 0.02 };
    for (v, greedy_uploads) in [("opt125", 5u64), ("llama32", 6)] {
        let m = CausalLm::load_dir(&fixture(v), &Device::Cpu, DType::F32).unwrap();
        let t = TextTokenizer::from_dir(&fixture(v)).unwrap();
        let p = prompts(v);
        for (sampling, uploads) in [(SamplingParams::greedy(), greedy_uploads), (sampled.clone(), greedy_uploads + 1)] {
            let cfg = GenerationConfig { sampling, max_new_tokens: 8, min_new_tokens: 8, batch_size: p.len(), seed: 7, ..Default::default() };
            let mut at_step = Vec::new();
            with_generic(|| Generator::new(&m, &t, cfg.clone()).run(&p, |_, _| at_step.push(crossfeed_model::transfer::counts())).unwrap());
            // Step 0 is the prefill; steps 1.. are decode steps of the whole batch.
            for w in at_step[1..at_step.len() - 1].windows(2) {
                let step = (w[1].0 - w[0].0, w[1].1 - w[0].1);
                assert_eq!(step, (1, uploads), "{v} {:?}: (syncs, uploads) per decode step", cfg.sampling);
            }
        }
    }
}

/// A frozen bf16 model casts no weight in a decode step on the generic path: the linears and the tied
/// head (OPT's, Llama 3.2's, Qwen2's and Gemma 2's and 3's `embed_tokens`, GPT-2's `wte`) were cast once by
/// `frozen()`. Its logits are the bits of
/// the trainable model, which casts every weight at every forward.
#[test]
fn a_frozen_low_precision_model_casts_no_weight_per_decode_step() {
    let dev = Device::Cpu;
    for v in ["opt125", "llama32", "llama", "qwen2", "qwen3", "gpt2", "gemma3", "gemma2"] {
        let m = CausalLm::load_dir(&fixture(v), &dev, DType::BF16).unwrap();
        with_generic(|| {
            let f = m.frozen().unwrap();
            let ids: Vec<u32> = (0..7).map(|i| (i * 37 + 5) % 300).collect();
            let mut cache = f.new_cache();
            let x = Tensor::new(&ids[..6], &dev).unwrap().unsqueeze(0).unwrap();
            f.forward(&x, &Tensor::ones((1, 6), DType::U32, &dev).unwrap(), &[(0..6).collect()], Some(&mut cache)).unwrap();
            let before = crossfeed_model::ops::weight_casts();
            let step = f.forward(&Tensor::new(&[[ids[6]]], &dev).unwrap(), &Tensor::ones((1, 7), DType::U32, &dev).unwrap(), &[vec![6]], Some(&mut cache)).unwrap();
            assert_eq!(crossfeed_model::ops::weight_casts() - before, 0, "{v}: weight casts in a decode step");
            let x = Tensor::new(&ids[..], &dev).unwrap().unsqueeze(0).unwrap();
            let mask = Tensor::ones((1, 7), DType::U32, &dev).unwrap();
            let pos = [(0..7).collect::<Vec<i64>>()];
            let frozen: Vec<f32> = f.forward(&x, &mask, &pos, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let trainable: Vec<f32> = m.forward(&x, &mask, &pos, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert!(frozen == trainable, "{v}: frozen logits differ from the trainable model's");
            let last: Vec<f32> = step.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(last.len(), frozen.len() / 7);
        });
    }
}
