//! Task accuracy against lm-evaluation-harness 0.4.13 (`scripts/make_accuracy_fixtures.py`: its HF
//! backend, f32 CPU, on two fixture models over task files in the hub schemas): per-request token ids
//! and log-likelihoods (1e-4), every per-document decision, gsm8k contexts (few-shot draws included),
//! generations, filtered answers and exact matches, the aggregate metrics and `make_table`'s output.

use std::path::PathBuf;

use candle_core::{DType, Device};
use crossfeed_data::{task_rows, SourceConfig, TaskConfig, TaskKind};
use crossfeed_loop::accuracy::{self, AccuracyOptions, DocResult};
use crossfeed_loop::LoopError;
use crossfeed_model::{CausalLm, TextTokenizer};
use regex::Regex;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Value {
    let p = repo().join("tests/fixtures/accuracy").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn task_cfg(kind: TaskKind) -> TaskConfig {
    let dir = match kind {
        TaskKind::Sciq => "sciq",
        TaskKind::Gsm8k => "gsm8k",
        _ => "ai2_arc",
    };
    TaskConfig {
        source: SourceConfig::Local { dir: repo().join("tests/fixtures/accuracy/data").join(dir), config: None },
        ..TaskConfig::new(kind)
    }
}

fn kind_of(task: &str) -> TaskKind {
    match task {
        "sciq" => TaskKind::Sciq,
        "arc_easy" => TaskKind::ArcEasy,
        "arc_challenge" => TaskKind::ArcChallenge,
        _ => TaskKind::Gsm8k,
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_model(name: &str) {
    let fx = fixture(&format!("{name}.json"));
    let dir = repo().join("tests/fixtures/models").join(name);
    let model = CausalLm::load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    assert_eq!(accuracy::max_length(&model) as u64, fx["max_length"].as_u64().unwrap(), "{name}: max_length");
    let mut results = Vec::new();
    for run in fx["runs"].as_array().unwrap() {
        let task = run["task"].as_str().unwrap();
        let kind = kind_of(task);
        let shots = run["num_fewshot"].as_u64().unwrap() as usize;
        let rows = task_rows(&task_cfg(kind), shots > 0).unwrap();
        let docs = accuracy::docs_from_rows(&rows).unwrap();
        let opts = AccuracyOptions {
            num_fewshot: shots,
            batch_size: 3,
            max_gen_toks: run["max_gen_toks"].as_u64().unwrap_or(256) as usize,
            fewshot_seed: accuracy::FEWSHOT_SEED,
        };
        let res = accuracy::evaluate(&model, &tok, task, accuracy::task_version(kind), &docs, &opts).unwrap();
        let examples = run["examples"].as_array().unwrap();
        assert_eq!(res.per_doc.len(), examples.len(), "{name} {task}: documents");
        for (doc, ex) in res.per_doc.iter().zip(examples) {
            let at = format!("{name} {task} doc {}", ex["doc_id"]);
            match doc {
                DocResult::Choice { loglikelihoods, is_greedy, acc, acc_norm } => {
                    for (j, req) in ex["requests"].as_array().unwrap().iter().enumerate() {
                        let (c, x) = (req[0].as_str().unwrap(), req[1].as_str().unwrap());
                        let (ctx, cont) = accuracy::encode_pair(&tok, c, x).unwrap();
                        assert_eq!(ctx, ids(&ex["context_enc"][j]), "{at}: context ids of request {j}");
                        assert_eq!(cont, ids(&ex["continuation_enc"][j]), "{at}: continuation ids of request {j}");
                        let want = ex["loglikelihoods"][j].as_f64().unwrap();
                        assert!((loglikelihoods[j] - want).abs() < 1e-4, "{at}: loglikelihood {j}: {} vs lm-eval {want}", loglikelihoods[j]);
                        assert_eq!(is_greedy[j], ex["is_greedy"][j].as_bool().unwrap(), "{at}: is_greedy {j}");
                    }
                    assert_eq!(*acc, ex["acc"].as_f64().unwrap() == 1.0, "{at}: acc");
                    assert_eq!(*acc_norm, ex["acc_norm"].as_f64().unwrap() == 1.0, "{at}: acc_norm");
                }
                DocResult::Gen { context, generation, strict, flexible, strict_em, flexible_em } => {
                    assert_eq!(context, ex["context"].as_str().unwrap(), "{at}: few-shot context");
                    let enc = tok.encode(context).unwrap();
                    let keep = accuracy::max_length(&model) - opts.max_gen_toks;
                    assert_eq!(enc[enc.len().saturating_sub(keep)..].to_vec(), ids(&ex["context_ids"]), "{at}: truncated context ids");
                    assert_eq!(generation, ex["generation"].as_str().unwrap(), "{at}: greedy generation");
                    assert_eq!(strict, ex["filtered"]["strict-match"].as_str().unwrap(), "{at}: strict-match");
                    assert_eq!(flexible, ex["filtered"]["flexible-extract"].as_str().unwrap(), "{at}: flexible-extract");
                    assert_eq!(*strict_em, ex["exact_match"]["strict-match"].as_f64().unwrap() == 1.0, "{at}: strict exact_match");
                    assert_eq!(*flexible_em, ex["exact_match"]["flexible-extract"].as_f64().unwrap() == 1.0, "{at}: flexible exact_match");
                }
            }
        }
        for m in &res.metrics {
            let key = format!("{},{}", m.lm_eval_metric, m.filter);
            let want = run["metrics"][&key].as_f64().unwrap_or_else(|| panic!("{name} {task}: fixture lacks {key}"));
            assert_eq!(m.value, want, "{name} {task}: {key}");
        }
        // The fixtures were written with bootstrap_iters = 0: lm-eval printed no standard error.
        let mut shown = res.clone();
        shown.metrics.iter_mut().for_each(|m| m.stderr = None);
        assert_eq!(accuracy::markdown_table(std::slice::from_ref(&shown)), run["table"].as_str().unwrap(), "{name} {task}: table");
        results.push(res);
    }
    assert!(!results.is_empty());
}

#[test]
fn opt_matches_lm_eval() {
    check_model("opt125");
}

#[test]
fn llama_matches_lm_eval() {
    check_model("llama");
}

#[test]
fn gsm8k_filters_match_lm_eval() {
    let fx = fixture("filters.json");
    let strict = Regex::new(accuracy::STRICT_MATCH).unwrap();
    let flex = Regex::new(accuracy::FLEXIBLE_EXTRACT).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let s = accuracy::regex_filter(&strict, 0, text);
        let f = accuracy::regex_filter(&flex, -1, text);
        assert_eq!(s, case["strict-match"].as_str().unwrap(), "strict-match of {text:?}");
        assert_eq!(f, case["flexible-extract"].as_str().unwrap(), "flexible-extract of {text:?}");
        for (target, want) in case["exact_match"].as_object().unwrap() {
            for (pred, w) in [&s, &f, &text.to_string()].into_iter().zip(want.as_array().unwrap()) {
                assert_eq!(accuracy::gsm8k_exact_match(pred, target), w.as_f64().unwrap() == 1.0, "exact_match({pred:?}, {target:?})");
            }
        }
    }
}

/// A tokenizer with ids past the model's embedding table is an error naming both sizes, checked before
/// any forward pass: not a panic on a logits row, nor a failed embedding lookup when the id is in the
/// context (the model's 330 rows; 16 added tokens take the tokenizer to ids 320..=335).
#[test]
fn a_tokenizer_larger_than_the_model_is_an_error_naming_both_sizes() {
    let src = repo().join("tests/fixtures/models/llama");
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join("tokenizer.json");
    let mut tj: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for i in 0..16 {
        let added = serde_json::json!({"id": 320 + i, "content": format!("<x{i}>"), "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false});
        tj["added_tokens"].as_array_mut().unwrap().push(added);
    }
    std::fs::write(&path, serde_json::to_string(&tj).unwrap()).unwrap();
    let model = CausalLm::load_dir(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    let tok = TextTokenizer::from_dir(tmp.path()).unwrap();
    let id = *accuracy::encode_pair(&tok, "a b", " <x15>").unwrap().1.iter().max().unwrap();
    assert!(id >= 330, "{id}");
    let e = accuracy::loglikelihoods(&model, &tok, &[("a b".into(), " <x15>".into())], 2).unwrap_err().to_string();
    assert!(e.contains(&format!("id {id}")) && e.contains("330 rows") && e.contains(&format!("{} ids", tok.len())), "{e}");
    // In the context (the embedding lookup, before any logits), for scoring and for generation.
    let ctx_id = *accuracy::encode_pair(&tok, "a <x15> b", " c").unwrap().0.iter().max().unwrap();
    assert!(ctx_id >= 330, "{ctx_id}");
    let e = accuracy::loglikelihoods(&model, &tok, &[("a <x15> b".into(), " c".into())], 2).unwrap_err();
    assert!(matches!(e, LoopError::TokenPastVocab { id, tokenizer, vocab: 330 } if id == ctx_id && tokenizer == tok.len()), "{e}");
    let e = accuracy::generate_until(&model, &tok, &["a <x15> b".into()], &["\n"], 4, 1).unwrap_err();
    assert!(matches!(e, LoopError::TokenPastVocab { vocab: 330, .. }), "{e}");
}

/// Scoring reads each batch's log-likelihoods and greedy flags with one host sync, on the generic path
/// too, and gives the fast path's numbers there.
#[test]
fn one_host_sync_per_scored_batch() {
    let dir = repo().join("tests/fixtures/models/opt125");
    let model = CausalLm::load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let reqs: Vec<(String, String)> = (0..7).map(|i| (format!("The answer to question {i} is"), format!(" {}", i * 3))).collect();
    let fast = accuracy::loglikelihoods(&model, &tok, &reqs, 3).unwrap();
    let (before, generic, after) = crossfeed_model::fastpath::with_generic(|| {
        let before = crossfeed_model::transfer::counts();
        let generic = accuracy::loglikelihoods(&model, &tok, &reqs, 3).unwrap();
        (before, generic, crossfeed_model::transfer::counts())
    });
    assert_eq!(after.0 - before.0, 3, "host syncs for 7 requests in batches of 3");
    for (a, b) in fast.iter().zip(&generic) {
        assert!((a.loglikelihood - b.loglikelihood).abs() < 1e-4, "{a:?} vs {b:?}");
        assert_eq!(a.is_greedy, b.is_greedy);
    }
}
