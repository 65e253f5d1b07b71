//! Accumulation equivalence, exact resume, error reporting, config parsing, data order.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{load_fixture, Mlp};
use crossfeed_train::{
    clip_grad_norm, epoch_order, grad_norm, AdamW, AdamWConfig, DataCursor, TrainConfig,
    TrainError, Trainer,
};

fn cfg(grad_accum: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-2,
        warmup_steps: Some(2),
        total_steps: 10,
        grad_accum,
        batch_size,
        weight_decay: 0.05,
        max_grad_norm: 0.5,
        ..TrainConfig::default()
    }
}

fn rows(x: &Tensor, idx: &[usize]) -> Tensor {
    let idx = Tensor::from_vec(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        idx.len(),
        &Device::Cpu,
    )
    .unwrap();
    x.index_select(&idx, 0).unwrap()
}

fn max_rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let mut m = 0f64;
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            m = m.max(((p - q).abs() / q.abs().max(1e-3)) as f64);
        }
    }
    m
}

/// Runs `steps` steps where each step's micro-batches are the given row splits of x.
fn run_split(splits: &[&[usize]], steps: usize) -> (Vec<Vec<f32>>, Vec<f64>) {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let mut tr = Trainer::new(mlp.params.clone(), cfg(splits.len(), 2)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let s = tr
            .step(splits, |idx| {
                mlp.ce_sum(&rows(&t["x"], idx), &rows(&t["y"], idx))
            })
            .unwrap();
        losses.push(s.loss);
    }
    (mlp.values(), losses)
}

#[test]
fn accumulation_equals_one_big_batch_token_weighted() {
    let (w1, l1) = run_split(&[&[0, 1, 2, 3]], 4);
    let (w2, l2) = run_split(&[&[0, 1], &[2, 3]], 4);
    // Unequal micro-batches: the step loss is the token mean, not the mean of micro-batch means.
    let (w3, l3) = run_split(&[&[0, 1, 2], &[3]], 4);
    for (a, b) in [(&w1, &w2), (&w1, &w3)] {
        let r = max_rel(a, b);
        println!("accum weights max rel diff {r:.2e}");
        assert!(r <= 1e-5, "weights differ by {r}");
    }
    for ((a, b), c) in l1.iter().zip(&l2).zip(&l3) {
        assert!(
            (a - b).abs() <= 1e-6 * a.abs() && (a - c).abs() <= 1e-6 * a.abs(),
            "{a} {b} {c}"
        );
    }
}

#[test]
fn resume_is_bit_identical() {
    let (t, _) = load_fixture();
    let x = &t["x"];
    let y = &t["y"];
    let run = |tr: &mut Trainer, mlp: &Mlp, steps: usize| -> Vec<String> {
        (0..steps)
            .map(|_| {
                let mb = tr.next_micro_batches().unwrap();
                let s = tr
                    .step(&mb, |idx| mlp.ce_sum(&rows(x, idx), &rows(y, idx)))
                    .unwrap();
                format!("{s:?} {mb:?}")
            })
            .collect()
    };
    // Straight 10 steps.
    let a = Mlp::from_tensors(&t, "init.");
    let mut ta = Trainer::new(a.params.clone(), cfg(2, 2)).unwrap();
    ta.set_dataset_len(7); // odd size: epochs wrap mid-step
    let straight = run(&mut ta, &a, 10);

    // 5 steps, checkpoint, fresh trainer on fresh vars with the saved weights, 5 more.
    let b = Mlp::from_tensors(&t, "init.");
    let mut tb = Trainer::new(b.params.clone(), cfg(2, 2)).unwrap();
    tb.set_dataset_len(7);
    let mut resumed = run(&mut tb, &b, 5);
    let dir = tempfile::tempdir().unwrap();
    tb.save_state(dir.path()).unwrap();
    assert!(dir.path().join("optimizer.safetensors").exists());
    assert!(dir.path().join("trainer_state.json").exists());
    drop(tb);
    let c = Mlp::clone_values(&b);
    let mut tc = Trainer::new(c.params.clone(), cfg(2, 2)).unwrap();
    tc.set_dataset_len(7);
    tc.load_state(dir.path()).unwrap();
    assert_eq!(tc.step_count(), 5);
    resumed.extend(run(&mut tc, &c, 5));

    assert_eq!(straight, resumed, "step stats / data order differ");
    let (va, vc) = (a.values(), c.values());
    for (p, q) in va.iter().zip(&vc) {
        let pb: Vec<u32> = p.iter().map(|f| f.to_bits()).collect();
        let qb: Vec<u32> = q.iter().map(|f| f.to_bits()).collect();
        assert_eq!(pb, qb, "weights not bit-identical after resume");
    }
}

#[test]
fn nan_loss_names_step_and_micro_batch_and_leaves_weights() {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let mut tr = Trainer::new(mlp.params.clone(), cfg(2, 2)).unwrap();
    let mbs: [&[usize]; 2] = [&[0, 1], &[2, 3]];
    let f = |poison: bool| {
        let mlp = &mlp;
        let t = &t;
        move |idx: &&[usize]| -> candle_core::Result<(Tensor, usize)> {
            let (l, n) = mlp.ce_sum(&rows(&t["x"], idx), &rows(&t["y"], idx))?;
            if poison && idx[0] == 2 {
                Ok(((l * f64::NAN)?, n))
            } else {
                Ok((l, n))
            }
        }
    };
    tr.step(&mbs, f(false)).unwrap();
    tr.step(&mbs, f(false)).unwrap();
    let before = mlp.values();
    let err = tr.step(&mbs, f(true)).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFiniteLoss {
                step: 3,
                micro_batch: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("optimizer step 3, micro-batch 1"),
        "{err}"
    );
    assert_eq!(before, mlp.values(), "weights changed by failed step");
    assert_eq!(tr.step_count(), 2);
    // The trainer is still usable afterwards.
    assert_eq!(tr.step(&mbs, f(false)).unwrap().step, 3);
}

#[test]
fn nan_gradient_names_step_micro_batch_and_param() {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let mut tr = Trainer::new(mlp.params.clone(), cfg(2, 2)).unwrap();
    let mbs: [&[usize]; 2] = [&[0, 1], &[2, 3]];
    let err = tr
        .step(&mbs, |idx| -> candle_core::Result<(Tensor, usize)> {
            let (l, n) = mlp.ce_sum(&rows(&t["x"], idx), &rows(&t["y"], idx))?;
            if idx[0] == 0 {
                return Ok((l, n));
            }
            // sqrt'(0) = inf, times d(0·w)/dw = 0 -> NaN gradient with a finite loss.
            let b = mlp.get("fc2.bias");
            let bad = b.mul(&b.zeros_like()?)?.sqrt()?.sum_all()?;
            Ok(((l + bad)?, n))
        })
        .unwrap_err();
    match &err {
        TrainError::NonFiniteGrad {
            step: 1,
            micro_batch: 1,
            param,
            ..
        } => assert_eq!(param, "fc2.bias"),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn missing_gradient_names_the_parameter() {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let frozen =
        Var::from_tensor(&Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let mut params = mlp.params.clone();
    params.push(("lm_head.orphan".to_string(), frozen.clone()));
    let mut c = cfg(1, 8);
    let mut tr = Trainer::new(params.clone(), c.clone()).unwrap();
    let err = tr
        .step(&[()], |_| mlp.ce_sum(&t["x"], &t["y"]))
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::MissingGrad { name } if name == "lm_head.orphan"),
        "{err}"
    );
    assert!(err.to_string().contains("lm_head.orphan"));

    // Direct optimizer use reports it too.
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default(), |_, _| true).unwrap();
    let grads = mlp.ce_sum(&t["x"], &t["y"]).unwrap().0.backward().unwrap();
    let err = opt.step(&grads, 1e-3).unwrap_err();
    assert!(
        matches!(&err, TrainError::MissingGrad { name } if name == "lm_head.orphan"),
        "{err}"
    );

    // Opt-in skipping leaves the parameter untouched and trains the rest.
    c.allow_missing_grads = true;
    let mut tr = Trainer::new(params, c).unwrap();
    tr.step(&[()], |_| mlp.ce_sum(&t["x"], &t["y"])).unwrap();
    assert_eq!(
        frozen.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1f32; 6]
    );
}

#[test]
fn optimizer_state_load_errors_name_the_tensor() {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let mut opt = AdamW::new(mlp.params.clone(), AdamWConfig::default(), |_, _| true).unwrap();
    let grads = mlp.ce_sum(&t["x"], &t["y"]).unwrap().0.backward().unwrap();
    opt.step(&grads, 1e-3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    opt.save(&path).unwrap();

    let var = |shape: (usize, usize)| {
        Var::from_tensor(&Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()).unwrap()
    };
    // Mis-shaped parameter.
    let mut p = mlp.params.clone();
    p[3].1 = var((4, 4));
    let mut o = AdamW::new(p, AdamWConfig::default(), |_, _| true).unwrap();
    let err = o.load(&path).unwrap_err();
    assert!(
        matches!(&err, TrainError::StateShape { tensor, .. } if tensor == "fc2.weight.exp_avg"),
        "{err}"
    );
    assert_eq!(o.step_count(), 0, "failed load must not change state");
    // A parameter the file does not have.
    let mut p = mlp.params.clone();
    p.push(("extra.weight".into(), var((2, 2))));
    let err = AdamW::new(p, AdamWConfig::default(), |_, _| true)
        .unwrap()
        .load(&path)
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::StateMissing { tensor, .. } if tensor == "extra.weight.exp_avg"),
        "{err}"
    );
    // A tensor the optimizer does not have.
    let p = mlp.params[..4].to_vec();
    let err = AdamW::new(p, AdamWConfig::default(), |_, _| true)
        .unwrap()
        .load(&path)
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::StateUnexpected { tensor, .. } if tensor.starts_with("fc2.bias")),
        "{err}"
    );
    // Different betas.
    let c = AdamWConfig {
        beta2: 0.99,
        ..AdamWConfig::default()
    };
    let err = AdamW::new(mlp.params.clone(), c, |_, _| true)
        .unwrap()
        .load(&path)
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::ConfigMismatch { what, .. } if what == "beta2"),
        "{err}"
    );
    // Round trip restores the step.
    let mut o = AdamW::new(mlp.params.clone(), AdamWConfig::default(), |_, _| true).unwrap();
    o.load(&path).unwrap();
    assert_eq!(o.step_count(), 1);
    // Trainer refuses a checkpoint made with another config, naming the key.
    let tr = Trainer::new(mlp.params.clone(), cfg(1, 8)).unwrap();
    tr.save_state(dir.path()).unwrap();
    let mut other = Trainer::new(
        mlp.params.clone(),
        TrainConfig {
            total_steps: 11,
            ..cfg(1, 8)
        },
    )
    .unwrap();
    let err = other.load_state(dir.path()).unwrap_err();
    assert!(
        matches!(&err, TrainError::ConfigMismatch { what, .. } if what == "config.total_steps"),
        "{err}"
    );
    // No temp files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: TrainConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, TrainConfig::default());
    assert_eq!(
        (
            c.lr,
            c.warmup_ratio,
            c.total_steps,
            c.batch_size,
            c.grad_accum
        ),
        (8e-6, 0.025, 100, 2, 2)
    );
    assert_eq!(
        (c.max_grad_norm, c.weight_decay, c.betas, c.eps),
        (1.0, 0.0, [0.9, 0.999], 1e-8)
    );
    assert_eq!(c.lr_schedule().unwrap().warmup_steps, 3); // ceil(0.025 * 100)
    let err =
        serde_json::from_str::<TrainConfig>(r#"{"lr": 1e-5, "learning_rate": 1}"#).unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    let c: TrainConfig =
        serde_json::from_str(r#"{"schedule": "cosine", "warmup_steps": 4}"#).unwrap();
    assert_eq!(c.lr_schedule().unwrap().warmup_steps, 4);
    assert!(Trainer::new(
        vec![],
        TrainConfig {
            grad_accum: 0,
            ..TrainConfig::default()
        }
    )
    .is_err());
}

#[test]
fn data_order_is_seeded_and_wraps() {
    let a = epoch_order(10, 7, 0);
    assert_eq!(a, epoch_order(10, 7, 0));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..10).collect::<Vec<_>>());
    assert_ne!(a, epoch_order(10, 7, 1));
    assert_ne!(a, epoch_order(10, 8, 0));
    let mut c = DataCursor::new(3, 1);
    let first = c.take(5);
    assert_eq!(&first[..3], &epoch_order(3, 1, 0)[..]);
    assert_eq!(&first[3..], &epoch_order(3, 1, 1)[..2]);
    assert_eq!((c.epoch, c.index), (1, 2));
}

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    let vars: Vec<Var> = mlp.params.iter().map(|(_, v)| v.clone()).collect();
    let mut grads = mlp.ce_sum(&t["x"], &t["y"]).unwrap().0.backward().unwrap();
    let before = clip_grad_norm(&mut grads, &vars, 0.0).unwrap();
    assert!(before > 0.1);
    assert_eq!(
        grad_norm(&grads, &vars).unwrap(),
        before,
        "max_norm 0 must not clip"
    );
    let n = clip_grad_norm(&mut grads, &vars, 0.1).unwrap();
    assert_eq!(n, before);
    let after = grad_norm(&grads, &vars).unwrap();
    assert!((after - 0.1).abs() < 1e-6, "{after}");
}

#[test]
fn bf16_compute_with_f32_master_weights() {
    // The model casts its f32 master weights to the compute dtype inside the forward; gradients
    // flow back through the cast as f32, so the optimizer sees f32 grads of f32 vars.
    let (t, _) = load_fixture();
    let mlp = Mlp::from_tensors(&t, "init.");
    // No warmup: with HF semantics the first step of a warmup schedule uses lr 0.
    let mut tr = Trainer::new(
        mlp.params.clone(),
        TrainConfig {
            warmup_steps: Some(0),
            ..cfg(1, 8)
        },
    )
    .unwrap();
    let before = mlp.values();
    let bf = DType::BF16;
    let stats = tr
        .step(&[()], |_| -> candle_core::Result<(Tensor, usize)> {
            let w = |n: &str| mlp.get(n).to_dtype(bf);
            let x = t["x"].to_dtype(bf)?;
            let h = x
                .matmul(&w("fc1.weight")?.t()?)?
                .broadcast_add(&w("fc1.bias")?)?;
            let h = h.relu()?.broadcast_mul(&w("norm.weight")?)?;
            let logits = h
                .matmul(&w("fc2.weight")?.t()?)?
                .broadcast_add(&w("fc2.bias")?)?
                .to_dtype(DType::F32)?;
            let lsm = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
            let picked = lsm.gather(&t["y"].to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
            Ok((picked.sum_all()?.neg()?, 8))
        })
        .unwrap();
    // bf16 forward loss close to the f32 loss of the same initial weights.
    let f32_loss = Mlp::from_tensors(&t, "init.")
        .ce_sum(&t["x"], &t["y"])
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap() as f64
        / 8.0;
    assert!(
        (stats.loss - f32_loss).abs() < 2e-2 * f32_loss,
        "{} vs {f32_loss}",
        stats.loss
    );
    assert!(stats.grad_norm > 0.0);
    assert_ne!(before, mlp.values(), "weights did not move");
    for (_, v) in &mlp.params {
        assert_eq!(v.dtype(), DType::F32);
    }
    // Non-f32 master weights are refused, naming the parameter.
    let half = Var::from_tensor(&Tensor::zeros(4, DType::BF16, &Device::Cpu).unwrap()).unwrap();
    let err = AdamW::new(
        vec![("x.weight".into(), half)],
        AdamWConfig::default(),
        |_, _| true,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, TrainError::UnsupportedDType { name, .. } if name == "x.weight"),
        "{err}"
    );
}

#[test]
fn duplicate_parameters_are_refused() {
    let v = Var::from_tensor(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let same_var = vec![("a".to_string(), v.clone()), ("b".to_string(), v.clone())];
    assert!(
        matches!(AdamW::new(same_var, AdamWConfig::default(), |_, _| true), Err(TrainError::DuplicateParam(n)) if n == "b")
    );
    let same_name = vec![("a".to_string(), v), ("a".to_string(), w)];
    assert!(
        matches!(AdamW::new(same_name, AdamWConfig::default(), |_, _| true), Err(TrainError::DuplicateParam(n)) if n == "a")
    );
}
