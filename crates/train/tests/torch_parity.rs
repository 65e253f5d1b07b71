//! Parity with torch.optim.AdamW + transformers schedules (fixtures from
//! scripts/make_train_fixtures.py): per-step loss, grad norm, lr and final weights.

mod common;

use candle_core::Tensor;
use common::{load_fixture, Mlp, NAMES};
use crossfeed_train::{hf_decay, warmup_steps, Schedule, TrainConfig, Trainer};

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn schedule_from(name: &str) -> Schedule {
    serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap()
}

#[test]
fn trainer_matches_torch_adamw_on_all_cases() {
    let (t, j) = load_fixture();
    let x = &t["x"];
    let y = &t["y"];
    let mut report = Vec::new();
    for (case, c) in j["cases"].as_object().unwrap() {
        let steps = c["steps"].as_u64().unwrap();
        let cfg = TrainConfig {
            lr: c["lr"].as_f64().unwrap(),
            weight_decay: c["weight_decay"].as_f64().unwrap(),
            schedule: schedule_from(c["schedule"].as_str().unwrap()),
            warmup_steps: Some(c["warmup_steps"].as_u64().unwrap()),
            max_grad_norm: c["max_grad_norm"].as_f64().unwrap(),
            total_steps: steps,
            grad_accum: 1,
            batch_size: 8,
            ..TrainConfig::default()
        };
        let mlp = Mlp::from_tensors(&t, "init.");
        // Decay groups must agree with what HF chose for this model.
        let hf_decayed: Vec<&str> = c["decay_params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for (n, v) in &mlp.params {
            assert_eq!(
                hf_decay(n, v),
                hf_decayed.contains(&n.as_str()),
                "decay group of {n}"
            );
        }
        let mut tr = Trainer::new(mlp.params.clone(), cfg).unwrap();
        let want_loss = t[&format!("{case}.loss")].to_vec1::<f64>().unwrap();
        let want_norm = t[&format!("{case}.grad_norm")].to_vec1::<f64>().unwrap();
        let want_lr = t[&format!("{case}.lr")].to_vec1::<f64>().unwrap();
        let (mut max_loss, mut max_norm) = (0f64, 0f64);
        for k in 0..steps as usize {
            let s = tr.step(&[()], |_| mlp.ce_sum(x, y)).unwrap();
            assert_eq!(s.step, k as u64 + 1);
            assert!(
                (s.lr - want_lr[k]).abs() <= 1e-15 * want_lr[k].abs(),
                "{case} step {k}: lr {} vs {}",
                s.lr,
                want_lr[k]
            );
            max_loss = max_loss.max(rel_err(s.loss, want_loss[k]));
            max_norm = max_norm.max(rel_err(s.grad_norm, want_norm[k]));
            if case == "clip" {
                assert!(s.clipped, "clip case must clip at step {k}");
            }
        }
        let mut max_w = 0f64;
        for n in NAMES {
            let got: Vec<f32> = mlp.get(n).flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = t[&format!("{case}.final.{n}")]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let init: Vec<f32> = t[&format!("init.{n}")]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for ((g, w), i0) in got.iter().zip(&want).zip(&init) {
                assert!(w != i0, "{case}: {n} did not move in torch");
                max_w = max_w.max(((g - w).abs() / w.abs().max(1e-3)) as f64);
            }
        }
        report.push(format!("{case}: loss rel {max_loss:.2e}, grad_norm rel {max_norm:.2e}, weights rel {max_w:.2e}"));
        assert!(max_loss <= 1e-5, "{case}: loss rel err {max_loss}");
        assert!(max_norm <= 1e-5, "{case}: grad norm rel err {max_norm}");
        assert!(max_w <= 1e-5, "{case}: weight rel err {max_w}");
    }
    println!("{}", report.join("\n"));
}

#[test]
fn schedules_match_transformers() {
    let (_, j) = load_fixture();
    let mut n = 0;
    for s in j["schedules"].as_array().unwrap() {
        let sched = schedule_from(s["schedule"].as_str().unwrap());
        let (w, total) = (s["warmup"].as_u64().unwrap(), s["total"].as_u64().unwrap());
        for (k, v) in s["values"].as_array().unwrap().iter().enumerate() {
            let want = v.as_f64().unwrap();
            let got = sched.lambda(k as u64, w, total);
            assert!(
                (got - want).abs() <= 1e-15,
                "{sched:?} warmup {w} total {total} step {k}: {got} vs {want}"
            );
            n += 1;
        }
    }
    assert!(n > 100);
    for c in j["warmup_ratio"].as_array().unwrap() {
        let got = warmup_steps(
            None,
            c["ratio"].as_f64().unwrap(),
            c["total"].as_u64().unwrap(),
        )
        .unwrap();
        assert_eq!(got, c["warmup"].as_u64().unwrap(), "{c}");
    }
}

#[test]
fn hf_decay_rule_matches_transformers_on_opt_and_llama_names() {
    let (_, j) = load_fixture();
    let dummy = candle_core::Var::from_tensor(
        &Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    )
    .unwrap();
    for e in j["decay_names"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert_eq!(
            hf_decay(name, &dummy),
            e["decay"].as_bool().unwrap(),
            "{name}"
        );
    }
}
