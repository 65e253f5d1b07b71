//! The model crate against transformers (goldens from scripts/make_model_fixtures.py): tokenizer ids,
//! logits, CE, gradients, padding invariance, save/load round trip. f32 tolerance 1e-4.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use crossfeed_model::{Batch, CausalLm, TextTokenizer};

fn load(variant: &str) -> CausalLm {
    CausalLm::load_dir(&fixture(variant), &Device::Cpu, DType::F32).expect("load")
}

fn golden_batch(g: &Golden) -> Batch {
    let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
    Batch { input_ids: to_u32(&g.tensors["input_ids"]), attention_mask: to_u32(&g.tensors["attention_mask"]), label_mask: None, host: None }
}

#[test]
fn tokenizer_ids_match_transformers() {
    for v in VARIANTS {
        let g = golden(v);
        let tok = TextTokenizer::from_dir(&fixture(v)).expect("tokenizer");
        let texts: Vec<String> = g.json["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        let expected = ids(&g.json["token_ids"]);
        for (text, want) in texts.iter().zip(&expected) {
            assert_eq!(&tok.encode(text).unwrap(), want, "{v}: {text:?}");
        }
        assert_eq!(tok.len() as u64, g.json["tokenizer_size"].as_u64().unwrap(), "{v}: tokenizer size");
    }
}

#[test]
fn padded_logits_and_ce_match_transformers() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        let batch = golden_batch(&g);
        let logits = model.forward_batch(&batch).unwrap();
        let want = &g.tensors["logits"];
        // Compare real-token positions only: transformers' Llama gives pad rows other positions.
        let mask = batch.attention_mask.to_vec2::<u32>().unwrap();
        let mut worst = 0f32;
        for (b, row) in mask.iter().enumerate() {
            for (t, &m) in row.iter().enumerate() {
                if m == 1 {
                    let a = logits.get(b).unwrap().get(t).unwrap();
                    let e = want.get(b).unwrap().get(t).unwrap();
                    worst = worst.max(max_abs_diff(&a, &e));
                }
            }
        }
        eprintln!("{v}: max logits diff {worst:.2e}");
        assert!(worst < 1e-4, "{v}: logits differ by {worst}");

        let ce = model.ce(&batch).unwrap();
        let sums = ce.ce_sum.to_vec1::<f32>().unwrap();
        for (i, (s, w)) in sums.iter().zip(floats(&g.json["ce_sum"])).enumerate() {
            assert!((s - w).abs() < 1e-3 * w.abs().max(1.0), "{v} row {i}: ce {s} vs {w}");
        }
        let counts: Vec<usize> = floats(&g.json["ce_tokens"]).iter().map(|x| *x as usize).collect();
        assert_eq!(ce.tokens, counts, "{v}: token counts");

        // Completion-only: labels start LABEL_STARTS tokens into each row.
        let starts: Vec<usize> = g.json["label_starts"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let seqs = ids(&g.json["token_ids"]);
        let pad = g.json["pad_id"].as_u64().unwrap() as u32;
        let cb = Batch::right_padded(&seqs, pad, 512, Some(&starts), &Device::Cpu).unwrap();
        let cce = model.ce(&cb).unwrap();
        for (s, w) in cce.ce_sum.to_vec1::<f32>().unwrap().iter().zip(floats(&g.json["ce_completion_sum"])) {
            assert!((s - w).abs() < 1e-3 * w.abs().max(1.0), "{v}: completion ce {s} vs {w}");
        }
        let ccounts: Vec<usize> = floats(&g.json["ce_completion_tokens"]).iter().map(|x| *x as usize).collect();
        assert_eq!(cce.tokens, ccounts, "{v}: completion token counts");
    }
}

#[test]
fn padding_does_not_change_a_row() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        for (i, seq) in ids(&g.json["token_ids"]).iter().enumerate() {
            let b = Batch::right_padded(std::slice::from_ref(seq), 0, 512, None, &Device::Cpu).unwrap();
            let solo = model.forward_batch(&b).unwrap().get(0).unwrap();
            let d = max_abs_diff(&solo, &g.tensors[&format!("solo_logits.{i}")]);
            assert!(d < 1e-4, "{v} row {i}: unpadded logits differ by {d}");
        }
    }
}

/// A left-padded batch (generation's layout: pad slots first, positions counted from the first real
/// token) gives each row the logits it gets alone: for Gemma's sliding window too, whose window here
/// (4) is shorter than the rows (prompts and their greedy continuations, 11-25 tokens).
#[test]
fn left_padding_does_not_change_a_row() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        let rows: Vec<Vec<u32>> = ids(&g.json["prompt_ids"]).into_iter().zip(ids(&g.json["greedy"])).map(|(p, c)| [p, c].concat()).collect();
        let t = rows.iter().map(Vec::len).max().unwrap();
        let pad = g.json["pad_id"].as_u64().unwrap() as u32;
        let (mut flat, mut mask) = (Vec::new(), Vec::new());
        for r in &rows {
            flat.extend(std::iter::repeat_n(pad, t - r.len()).chain(r.iter().copied()));
            mask.extend(std::iter::repeat_n(0u32, t - r.len()).chain(std::iter::repeat_n(1, r.len())));
        }
        let dev = Device::Cpu;
        let batch = Batch {
            input_ids: Tensor::from_vec(flat, (rows.len(), t), &dev).unwrap(),
            attention_mask: Tensor::from_vec(mask, (rows.len(), t), &dev).unwrap(),
            label_mask: None,
            host: None,
        };
        let logits = model.forward_batch(&batch).unwrap();
        for (i, r) in rows.iter().enumerate() {
            let solo = model.forward_batch(&Batch::right_padded(std::slice::from_ref(r), pad, 512, None, &dev).unwrap()).unwrap().get(0).unwrap();
            let padded = logits.get(i).unwrap().narrow(0, t - r.len(), r.len()).unwrap();
            let d = max_abs_diff(&padded, &solo);
            assert!(d < 1e-4, "{v} row {i}: left-padded logits differ by {d}");
        }
    }
}

#[test]
fn gradients_match_and_reach_every_parameter() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        let loss = model.ce(&golden_batch(&g)).unwrap().mean().unwrap();
        let want_loss = g.json["loss"].as_f64().unwrap() as f32;
        let got_loss = loss.to_scalar::<f32>().unwrap();
        assert!((got_loss - want_loss).abs() < 1e-4, "{v}: loss {got_loss} vs {want_loss}");
        let grads = loss.backward().unwrap();
        let norms = g.json["grad_norms"].as_object().unwrap();
        for (name, var) in &model.params {
            let gr = grads.get(var).unwrap_or_else(|| panic!("{v}: no gradient reaches {name}"));
            let n = gr.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
            assert!(n.is_finite() && n > 0.0, "{v}: gradient of {name} is {n}");
            let want = norms.get(name).and_then(|x| x.as_f64()).unwrap_or_else(|| panic!("{v}: {name} not in golden")) as f32;
            assert!((n - want).abs() <= 1e-3 * want.max(1e-3), "{v}: |grad {name}| {n} vs {want}");
        }
        for (key, want) in g.tensors.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let name = &key["grad.".len()..];
            let var = &model.params.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{v}: no param {name}")).1;
            let d = max_abs_diff(grads.get(var).unwrap(), want);
            assert!(d < 1e-4, "{v}: grad {name} differs by {d}");
        }
    }
}

#[test]
fn save_then_load_gives_same_logits() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        let tmp = tempfile::tempdir().unwrap();
        model.save(tmp.path()).unwrap();
        // For scripts/make_model_fixtures.py --check-saved: transformers loads what crossfeed saved.
        if let Some(dir) = std::env::var_os("CROSSFEED_KEEP_SAVED") {
            model.save(&std::path::Path::new(&dir).join(v)).unwrap();
        }
        let again = CausalLm::load_dir(tmp.path(), &Device::Cpu, DType::F32).unwrap();
        let batch = golden_batch(&g);
        let d = max_abs_diff(&model.forward_batch(&batch).unwrap(), &again.forward_batch(&batch).unwrap());
        assert_eq!(d, 0.0, "{v}: saved checkpoint gives other logits");
        let tok = TextTokenizer::from_dir(tmp.path()).unwrap();
        assert_eq!(tok.encode("Hello world").unwrap(), ids(&g.json["token_ids"])[0], "{v}: tokenizer not saved");
    }
}

#[test]
fn eos_ids_come_from_generation_config() {
    let m = load("llama32");
    assert_eq!(m.eos_token_ids(), vec![1]);
    let m = load("opt125");
    assert_eq!(m.eos_token_ids(), vec![2]);
}

#[test]
fn frozen_model_computes_the_same_logits_without_a_graph() {
    for v in VARIANTS {
        let g = golden(v);
        let model = load(v);
        let frozen = model.frozen().unwrap();
        let batch = golden_batch(&g);
        let trainable = model.forward_batch(&batch).unwrap();
        let inference = frozen.forward_batch(&batch).unwrap();
        assert!(trainable.track_op(), "{v}: the trainable model records its graph");
        assert!(!inference.track_op(), "{v}: the frozen model records nothing");
        assert_eq!(max_abs_diff(&trainable, &inference), 0.0, "{v}");
        // The frozen weights share the Vars' storage: an optimizer step shows through.
        let (_, var) = &model.params[0];
        var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        assert!(max_abs_diff(&frozen.forward_batch(&batch).unwrap(), &inference) > 0.0, "{v}");
    }
}

#[test]
fn frozen_bf16_model_casts_its_matrices_once_and_computes_the_same_bits() {
    for v in VARIANTS {
        let g = golden(v);
        let model = CausalLm::load_dir(&fixture(v), &Device::Cpu, DType::BF16).unwrap();
        let frozen = model.frozen().unwrap();
        let batch = golden_batch(&g);
        let per_step = model.forward_batch(&batch).unwrap();
        let once = frozen.forward_batch(&batch).unwrap();
        assert_eq!(max_abs_diff(&per_step, &once), 0.0, "{v}");
        assert!(model.params.iter().all(|(_, p)| p.dtype() == DType::F32), "{v}: master weights stay f32");
    }
}
