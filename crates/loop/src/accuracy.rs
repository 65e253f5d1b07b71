//! Task accuracy as lm-evaluation-harness 0.4 measures it with its Hugging Face backend (`lm_eval
//! --model hf`), so a number here is the number `lm_eval` prints for the same model and documents.
//!
//! - Multiple choice (`sciq`, `arc_easy`, `arc_challenge`): each option is scored by the summed
//!   log-likelihood of `" " + option` after the prompt; `acc` takes the best option, `acc_norm` the
//!   best per character of the option. Requests are tokenized as `HFLM._encode_pair` does (trailing
//!   spaces of the context move to the continuation; the continuation's ids are the whole string's
//!   ids past the context's) and truncated from the left to the model's `max_length + 1` tokens.
//! - Generation (`gsm8k`): greedy decoding until lm-eval's stop strings (and the EOS text), at most
//!   `max_gen_toks` new tokens, the prompt cut from the left to `max_length - max_gen_toks`; the
//!   answer is extracted by its `strict-match` and `flexible-extract` filters and compared by its
//!   `exact_match` (regexes to ignore, lower case).
//! - Few-shot examples come from the train split by lm-eval's default sampler: one
//!   `random.Random(1234)` per task, `sample(train, n)` for each evaluated document in order. Python's
//!   Mersenne Twister and `Random.sample` are reproduced here ([`PyRandom`]).
//!
//! `max_length` is the model's `max_position_embeddings` (what HFLM reads from the config).
//! Parity: `tests/accuracy_parity.rs` against `scripts/make_accuracy_fixtures.py`.

use std::collections::HashSet;

use candle_core::{DType, Tensor};
use crossfeed_data::{Cell, TaskKind, TaskRows};
use crossfeed_generate::{GenerationConfig, Generator, SamplingParams};
use crossfeed_model::{cuda_rules, transfer, Batch, CausalLm, TextTokenizer};
use regex::Regex;

use crate::error::{LoopError, Result};

/// lm-eval's default `fewshot_random_seed`.
pub const FEWSHOT_SEED: u64 = 1234;
/// lm-eval's default `max_gen_toks`.
pub const MAX_GEN_TOKS: usize = 256;
/// lm-eval's gsm8k `until` (the tokenizer's EOS text is added to it).
pub const GSM8K_UNTIL: [&str; 3] = ["Question:", "</s>", "<|im_end|>"];
/// lm-eval's gsm8k filters.
pub const STRICT_MATCH: &str = r"#### (\-?[0-9\.\,]+)";
pub const FLEXIBLE_EXTRACT: &str = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";
const FALLBACK: &str = "[invalid]";
/// HFLM's length when the config names none.
const DEFAULT_MAX_LENGTH: usize = 2048;

/// A multiple-choice document: options are scored as `" " + choice` after `context`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceDoc {
    pub context: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

/// A generation document: `context` is the prompt (lm-eval's `doc_to_text`), `target` the reference
/// answer (`doc_to_target`; also the answer when the document is a few-shot example).
#[derive(Debug, Clone, PartialEq)]
pub struct GenDoc {
    pub context: String,
    pub target: String,
}

/// The documents of one task, with the pool few-shot examples are drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum AccuracyDocs {
    Choice { docs: Vec<ChoiceDoc>, fewshot: Vec<ChoiceDoc> },
    Gen { docs: Vec<GenDoc>, fewshot: Vec<GenDoc> },
    /// A custom task's `generate_until` + regex filter + `exact_match` (`rule`).
    Match { docs: Vec<GenDoc>, fewshot: Vec<GenDoc>, rule: MatchRule },
}

/// How a custom exact-match task stops, extracts and compares (`custom.accuracy`, type `exact_match`).
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRule {
    pub until: Vec<String>,
    pub regex: Option<String>,
    pub group_select: isize,
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
}

impl MatchRule {
    /// HF `evaluate`'s `exact_match` with this rule's options (punctuation: Python's
    /// `string.punctuation`, ASCII).
    pub fn exact_match(&self, prediction: &str, reference: &str) -> bool {
        let norm = |s: &str| -> String {
            let s = if self.ignore_case { s.to_lowercase() } else { s.to_string() };
            if self.ignore_punctuation { s.chars().filter(|c| !c.is_ascii_punctuation()).collect() } else { s }
        };
        norm(prediction) == norm(reference)
    }
}

impl AccuracyDocs {
    pub fn len(&self) -> usize {
        match self {
            AccuracyDocs::Choice { docs, .. } => docs.len(),
            AccuracyDocs::Gen { docs, .. } => docs.len(),
            AccuracyDocs::Match { docs, .. } => docs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `n` documents (all when `n` is 0).
    pub fn truncate(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self {
            AccuracyDocs::Choice { docs, .. } => docs.truncate(n),
            AccuracyDocs::Gen { docs, .. } => docs.truncate(n),
            AccuracyDocs::Match { docs, .. } => docs.truncate(n),
        }
    }
}

/// The lm-eval task a crossfeed task kind is scored as.
pub fn lm_eval_task(kind: TaskKind) -> Option<&'static str> {
    match kind {
        TaskKind::Sciq => Some("sciq"),
        TaskKind::ArcEasy => Some("arc_easy"),
        TaskKind::ArcChallenge => Some("arc_challenge"),
        TaskKind::Gsm8k => Some("gsm8k"),
        _ => None,
    }
}

/// lm-eval's task version (its YAML's `metadata.version`), printed in its table.
pub fn task_version(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Gsm8k => "3",
        TaskKind::Sciq | TaskKind::ArcEasy | TaskKind::ArcChallenge => "1",
        _ => "    N/A",
    }
}

/// lm-eval's default `num_fewshot` for the task (gsm8k 5; the rest 0).
pub fn default_fewshot(kind: TaskKind) -> usize {
    if kind == TaskKind::Gsm8k {
        5
    } else {
        0
    }
}

/// lm-eval's documents for rows of a task in its hub schema (`TaskKind::columns` order).
pub fn docs_from_rows(rows: &TaskRows) -> Result<AccuracyDocs> {
    let kind = rows.kind;
    let col = |name: &str| -> usize { kind.columns().iter().position(|c| c.0 == name).expect("known column") };
    let s = |cells: &[Cell], name: &str| cells[col(name)].as_str().to_string();
    match kind {
        TaskKind::Sciq => {
            let doc = |c: &Vec<Cell>| ChoiceDoc {
                context: format!("{}\nQuestion: {}\nAnswer:", s(c, "support").trim_start(), s(c, "question")),
                choices: vec![s(c, "distractor1"), s(c, "distractor2"), s(c, "distractor3"), s(c, "correct_answer")],
                gold: 3,
            };
            Ok(AccuracyDocs::Choice { docs: rows.eval.iter().map(doc).collect(), fewshot: rows.train.iter().map(doc).collect() })
        }
        TaskKind::ArcEasy | TaskKind::ArcChallenge => {
            let doc = |c: &Vec<Cell>| -> Result<ChoiceDoc> {
                let Cell::Choices { text, label } = &c[col("choices")] else {
                    return Err(LoopError::Config("ARC row without choices".into()));
                };
                let key = s(c, "answerKey");
                let gold = label
                    .iter()
                    .position(|l| *l == key)
                    .or_else(|| label.iter().position(|l| l.trim() == key.trim()))
                    .ok_or_else(|| LoopError::Config(format!("ARC row {}: answerKey {key:?} is not among choices.label {label:?}", s(c, "id"))))?;
                Ok(ChoiceDoc { context: format!("Question: {}\nAnswer:", s(c, "question")), choices: text.clone(), gold })
            };
            Ok(AccuracyDocs::Choice {
                docs: rows.eval.iter().map(doc).collect::<Result<_>>()?,
                fewshot: rows.train.iter().map(doc).collect::<Result<_>>()?,
            })
        }
        TaskKind::Gsm8k => {
            let doc = |c: &Vec<Cell>| GenDoc { context: format!("Question: {}\nAnswer:", s(c, "question")), target: s(c, "answer") };
            Ok(AccuracyDocs::Gen { docs: rows.eval.iter().map(doc).collect(), fewshot: rows.train.iter().map(doc).collect() })
        }
        other => Err(LoopError::Config(format!("task {} has no accuracy form", other.name()))),
    }
}

/// Python's `random.Random` (MT19937, seeded as `Random(int)` seeds it), far enough for
/// `Random.sample`: lm-eval draws its few-shot examples with it.
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    pub fn new(seed: u64) -> Self {
        let mut key = Vec::new();
        let mut n = seed;
        while n > 0 {
            key.push(n as u32);
            n >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom { mt: [0; 624], index: 624 };
        r.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            self.mt[i] = 1_812_433_253u32.wrapping_mul(self.mt[i - 1] ^ (self.mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `Random._randbelow(n)` for `0 < n < 2**32`.
    fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = (self.next_u32() >> (32 - k)) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// The indices `Random.sample(range(n), k)` returns.
    pub fn sample(&mut self, n: usize, k: usize) -> Result<Vec<usize>> {
        if k > n {
            return Err(LoopError::Config(format!("{k} few-shot examples asked for, the train split has {n}")));
        }
        let mut setsize = 21usize;
        if k > 5 {
            setsize += 4usize.pow(((k * 3) as f64).log(4.0).ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        Ok(out)
    }
}

/// Each document's context with `n` few-shot examples in front, drawn as lm-eval draws them (one
/// RNG for the task, documents in order): `q₁ a₁\n\nq₂ a₂\n\n…\n\nq`.
pub fn fewshot_contexts(contexts: &[String], shots: &[String], n: usize, seed: u64) -> Result<Vec<String>> {
    if n == 0 {
        return Ok(contexts.to_vec());
    }
    let mut rng = PyRandom::new(seed);
    contexts
        .iter()
        .map(|c| {
            let picked = rng.sample(shots.len(), n)?;
            let mut s: String = picked.iter().map(|&i| shots[i].as_str()).collect::<Vec<_>>().join("\n\n");
            s.push_str("\n\n");
            s.push_str(c);
            Ok(s)
        })
        .collect()
}

/// The model's `max_length` as HFLM reads it.
pub fn max_length(model: &CausalLm) -> usize {
    match model.max_position_embeddings() {
        0 => DEFAULT_MAX_LENGTH,
        n => n,
    }
}

/// `HFLM._encode_pair`: (context ids, continuation ids).
pub fn encode_pair(tok: &TextTokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    if context.is_empty() {
        // lm-eval scores an empty context after its prefix token (BOS, else EOS).
        let prefix = tok.bos_id.or(tok.eos_id).unwrap_or(0);
        return Ok((vec![prefix], tok.encode(continuation)?));
    }
    let kept = context.trim_end().len();
    let (context, continuation) = (&context[..kept], format!("{}{continuation}", &context[kept..]));
    let whole = tok.encode(&format!("{context}{continuation}"))?;
    let ctx = tok.encode(context)?;
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    Ok((ctx, cont))
}

/// The log-likelihood of one continuation and whether greedy decoding would have produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub loglikelihood: f64,
    pub is_greedy: bool,
}

/// `HFLM.loglikelihood` over `(context, continuation)` requests, `batch_size` rows per forward pass.
pub fn loglikelihoods(model: &CausalLm, tok: &TextTokenizer, requests: &[(String, String)], batch_size: usize) -> Result<Vec<Scored>> {
    let max_len = max_length(model);
    let pad = model.pad_id(tok);
    let mut rows = Vec::with_capacity(requests.len());
    for (c, x) in requests {
        let (ctx, cont) = encode_pair(tok, c, x)?;
        if cont.is_empty() || cont.len() > max_len {
            return Err(LoopError::Config(format!("continuation {x:?} has {} tokens (allowed: 1 to max_length = {max_len})", cont.len())));
        }
        let whole: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
        check_ids(model, tok, &whole)?;
        // lm-eval: (context + continuation)[-(max_length + 1):][:-1]
        let start = whole.len().saturating_sub(max_len + 1);
        rows.push((whole[start..whole.len() - 1].to_vec(), cont));
    }
    let model = model.frozen()?;
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|r| r.0.clone()).collect();
        let batch = Batch::right_padded(&seqs, pad, max_len, None, &model.device)?;
        let logits = model.forward_batch(&batch)?;
        out.extend(score_batch(&logits, chunk, tok.len())?);
    }
    Ok(out)
}

/// Every id of a request must have an embedding row and a logit: checked before any forward pass, so
/// a tokenizer larger than the model is an error naming both sizes rather than a failed lookup (an
/// index past the logits row would panic).
fn check_ids(model: &CausalLm, tok: &TextTokenizer, ids: &[u32]) -> Result<()> {
    let vocab = model.vocab_size();
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(&id) => Err(LoopError::TokenPastVocab { id, tokenizer: tok.len(), vocab }),
        None => Ok(()),
    }
}

/// The [`Scored`] of each `(input ids, continuation)` row from the batch's `logits: [B, T, V]`, read
/// with one host sync: the continuation positions of every row are gathered on the device, their
/// log-probabilities and greedy tokens ([`cuda_rules::argmax`], tie-safe) come back in one vector.
fn score_batch(logits: &Tensor, chunk: &[(Vec<u32>, Vec<u32>)], tokenizer_len: usize) -> Result<Vec<Scored>> {
    let (b, t, v) = logits.dims3()?;
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (i, (inp, cont)) in chunk.iter().enumerate() {
        for (j, &id) in cont.iter().enumerate() {
            // check_ids ran on every request against vocab_size; this guards the gather against a
            // head narrower than that.
            if id as usize >= v {
                return Err(LoopError::TokenPastVocab { id, tokenizer: tokenizer_len, vocab: v });
            }
            positions.push((i * t + inp.len() - cont.len() + j) as u32);
            targets.push(id);
        }
    }
    let n = positions.len();
    positions.extend(targets);
    let ids = transfer::upload(positions, 2 * n, logits.device())?;
    let rows = cuda_rules::index_select(&logits.reshape((b * t, v))?, &ids.narrow(0, 0, n)?, 0)?;
    let logp = crossfeed_model::loss::log_softmax_last(&rows)?;
    let ll = cuda_rules::gather(&logp, &ids.narrow(0, n, n)?.unsqueeze(1)?, 1)?.squeeze(1)?;
    // Token ids are exact in f32 (below 2^24), so both halves travel in one f32 vector.
    let greedy = cuda_rules::argmax(&logp)?.to_dtype(DType::F32)?;
    let host: Vec<f32> = transfer::vec1(&Tensor::cat(&[&ll.to_dtype(DType::F32)?, &greedy], 0)?)?;
    let (ll, greedy) = host.split_at(n);
    let mut at = 0;
    Ok(chunk
        .iter()
        .map(|(_, cont)| {
            let span = at..at + cont.len();
            at += cont.len();
            Scored {
                loglikelihood: ll[span.clone()].iter().map(|&x| x as f64).sum(),
                is_greedy: greedy[span].iter().zip(cont).all(|(&g, &c)| g as u32 == c),
            }
        })
        .collect())
}

/// `HFLM.generate_until` with greedy decoding: completions of `contexts`, each cut before the first
/// of `until` and the EOS text.
pub fn generate_until(model: &CausalLm, tok: &TextTokenizer, contexts: &[String], until: &[&str], max_gen_toks: usize, batch_size: usize) -> Result<Vec<String>> {
    let max_len = max_length(model);
    if max_gen_toks == 0 || max_gen_toks >= max_len {
        return Err(LoopError::Config(format!("max_gen_toks = {max_gen_toks} (allowed: 1 to max_length - 1 = {})", max_len - 1)));
    }
    let mut stop: Vec<String> = until.iter().filter(|s| !s.is_empty()).map(|s| s.to_string()).collect();
    if let Some(eos) = tok.eos_id {
        let text = tok.decode(&[eos], false)?;
        if !text.is_empty() {
            stop.push(text);
        }
    }
    let cfg = GenerationConfig {
        sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
        max_new_tokens: max_gen_toks,
        min_new_tokens: 0,
        stop,
        seed: 0,
        batch_size: batch_size.max(1),
        max_prompt_len: max_len - max_gen_toks,
    };
    let ids: Vec<Vec<u32>> = contexts.iter().map(|c| tok.encode(c)).collect::<std::result::Result<_, _>>()?;
    for c in &ids {
        check_ids(model, tok, c)?;
    }
    let model = model.frozen()?;
    Ok(Generator::new(&model, tok, cfg).run(&ids, |_, _| {})?.into_iter().map(|c| c.text).collect())
}

/// lm-eval's `RegexFilter` + `take_first`: the `group_select`-th match (negative counts from the end);
/// with several groups its first non-empty one; stripped; `[invalid]` when nothing matches.
pub fn regex_filter(re: &Regex, group_select: isize, text: &str) -> String {
    let matches: Vec<regex::Captures> = re.captures_iter(text).collect();
    let idx = if group_select < 0 { matches.len() as isize + group_select } else { group_select };
    let Some(m) = usize::try_from(idx).ok().and_then(|i| matches.get(i)) else {
        return FALLBACK.to_string();
    };
    let groups = re.captures_len() - 1;
    let picked = match groups {
        0 => m.get(0).map_or("", |g| g.as_str()),
        1 => m.get(1).map_or("", |g| g.as_str()),
        _ => (1..=groups).filter_map(|g| m.get(g)).map(|g| g.as_str()).find(|s| !s.is_empty()).unwrap_or(FALLBACK),
    };
    picked.trim().to_string()
}

/// gsm8k's `regexes_to_ignore` (`","`, `"\$"`, `"(?s).*#### "`, `"\.$"`) applied in order, then lower
/// case, as `exact_match` does to both sides. Python's `$` also matches before a final newline, which
/// Rust's regex does not, so the rules are written out.
pub fn gsm8k_normalize(s: &str) -> String {
    let mut s: String = s.chars().filter(|&c| c != ',' && c != '$').collect();
    if let Some(i) = s.rfind("#### ") {
        s = s[i + 5..].to_string();
    }
    if s.ends_with('.') {
        s.pop();
    } else if s.ends_with(".\n") {
        s.remove(s.len() - 2);
    }
    s.to_lowercase()
}

/// lm-eval's gsm8k `exact_match` of one prediction against the reference answer.
pub fn gsm8k_exact_match(prediction: &str, reference: &str) -> bool {
    gsm8k_normalize(prediction) == gsm8k_normalize(reference)
}

/// One task's outcome: per-document decisions and the aggregate metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyResult {
    pub task: String,
    pub version: String,
    pub num_fewshot: usize,
    /// (metric, filter, value, stderr) in lm-eval's table order.
    pub metrics: Vec<Metric>,
    pub examples: usize,
    pub per_doc: Vec<DocResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// crossfeed's name (`acc`, `acc_norm`, `exact_match`, `exact_match_flexible`).
    pub name: String,
    /// lm-eval's metric and filter.
    pub lm_eval_metric: String,
    pub filter: String,
    pub value: f64,
    /// Standard error of the mean (lm-eval's `mean_stderr`); `None` for fewer than two documents.
    pub stderr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DocResult {
    Choice { loglikelihoods: Vec<f64>, is_greedy: Vec<bool>, acc: bool, acc_norm: bool },
    Gen { context: String, generation: String, strict: String, flexible: String, strict_em: bool, flexible_em: bool },
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccuracyOptions {
    pub num_fewshot: usize,
    pub batch_size: usize,
    pub max_gen_toks: usize,
    pub fewshot_seed: u64,
}

fn mean_stderr(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.len() > 1).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() / n.sqrt());
    (mean, sd)
}

/// Index of the largest value, the first on ties (`np.argmax`).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Scores `docs` on `model` and aggregates as lm-eval does. `task` and `version` label the result.
pub fn evaluate(model: &CausalLm, tok: &TextTokenizer, task: &str, version: &str, docs: &AccuracyDocs, opts: &AccuracyOptions) -> Result<AccuracyResult> {
    let metric = |name: &str, m: &str, f: &str, v: &[f64]| {
        let (value, stderr) = mean_stderr(v);
        Metric { name: name.into(), lm_eval_metric: m.into(), filter: f.into(), value, stderr }
    };
    match docs {
        AccuracyDocs::Choice { docs, fewshot } => {
            let shots: Vec<String> = fewshot.iter().map(|d| format!("{} {}", d.context, d.choices[d.gold])).collect();
            let contexts: Vec<String> = docs.iter().map(|d| d.context.clone()).collect();
            let contexts = fewshot_contexts(&contexts, &shots, opts.num_fewshot, opts.fewshot_seed)?;
            let requests: Vec<(String, String)> =
                docs.iter().zip(&contexts).flat_map(|(d, c)| d.choices.iter().map(move |x| (c.clone(), format!(" {x}")))).collect();
            let scored = loglikelihoods(model, tok, &requests, opts.batch_size)?;
            let mut per_doc = Vec::with_capacity(docs.len());
            let mut at = 0;
            for d in docs {
                let s = &scored[at..at + d.choices.len()];
                at += d.choices.len();
                let lls: Vec<f64> = s.iter().map(|x| x.loglikelihood).collect();
                let norm: Vec<f64> = lls.iter().zip(&d.choices).map(|(l, c)| l / c.chars().count() as f64).collect();
                per_doc.push(DocResult::Choice {
                    is_greedy: s.iter().map(|x| x.is_greedy).collect(),
                    acc: argmax(&lls) == d.gold,
                    acc_norm: argmax(&norm) == d.gold,
                    loglikelihoods: lls,
                });
            }
            let pick = |f: fn(&DocResult) -> bool| -> Vec<f64> { per_doc.iter().map(|d| f64::from(u8::from(f(d)))).collect() };
            let acc = pick(|d| matches!(d, DocResult::Choice { acc: true, .. }));
            let acc_norm = pick(|d| matches!(d, DocResult::Choice { acc_norm: true, .. }));
            Ok(AccuracyResult {
                task: task.into(),
                version: version.into(),
                num_fewshot: opts.num_fewshot,
                metrics: vec![metric("acc", "acc", "none", &acc), metric("acc_norm", "acc_norm", "none", &acc_norm)],
                examples: docs.len(),
                per_doc,
            })
        }
        AccuracyDocs::Match { docs, fewshot, rule } => {
            let shots: Vec<String> = fewshot.iter().map(|d| format!("{} {}", d.context, d.target)).collect();
            let contexts: Vec<String> = docs.iter().map(|d| d.context.clone()).collect();
            let contexts = fewshot_contexts(&contexts, &shots, opts.num_fewshot, opts.fewshot_seed)?;
            let until: Vec<&str> = rule.until.iter().map(String::as_str).collect();
            let generations = generate_until(model, tok, &contexts, &until, opts.max_gen_toks, opts.batch_size)?;
            let re = rule.regex.as_deref().map(Regex::new).transpose().map_err(|e| LoopError::Config(format!("custom.accuracy.regex: {e}")))?;
            let per_doc: Vec<DocResult> = docs
                .iter()
                .zip(contexts)
                .zip(generations)
                .map(|((d, context), generation)| {
                    let extracted = match &re {
                        Some(re) => regex_filter(re, rule.group_select, &generation),
                        None => generation.clone(),
                    };
                    let em = rule.exact_match(&extracted, &d.target);
                    DocResult::Gen { strict_em: em, flexible_em: em, context, generation, strict: extracted.clone(), flexible: extracted }
                })
                .collect();
            let em: Vec<f64> = per_doc.iter().map(|d| f64::from(u8::from(matches!(d, DocResult::Gen { strict_em: true, .. })))).collect();
            let filter = if rule.regex.is_some() { "regex" } else { "none" };
            Ok(AccuracyResult {
                task: task.into(),
                version: version.into(),
                num_fewshot: opts.num_fewshot,
                metrics: vec![metric("exact_match", "exact_match", filter, &em)],
                examples: docs.len(),
                per_doc,
            })
        }
        AccuracyDocs::Gen { docs, fewshot } => {
            let shots: Vec<String> = fewshot.iter().map(|d| format!("{} {}", d.context, d.target)).collect();
            let contexts: Vec<String> = docs.iter().map(|d| d.context.clone()).collect();
            let contexts = fewshot_contexts(&contexts, &shots, opts.num_fewshot, opts.fewshot_seed)?;
            let generations = generate_until(model, tok, &contexts, &GSM8K_UNTIL, opts.max_gen_toks, opts.batch_size)?;
            let (strict_re, flex_re) = (Regex::new(STRICT_MATCH).expect("valid"), Regex::new(FLEXIBLE_EXTRACT).expect("valid"));
            let per_doc: Vec<DocResult> = docs
                .iter()
                .zip(contexts)
                .zip(generations)
                .map(|((d, context), generation)| {
                    let strict = regex_filter(&strict_re, 0, &generation);
                    let flexible = regex_filter(&flex_re, -1, &generation);
                    DocResult::Gen {
                        strict_em: gsm8k_exact_match(&strict, &d.target),
                        flexible_em: gsm8k_exact_match(&flexible, &d.target),
                        context,
                        generation,
                        strict,
                        flexible,
                    }
                })
                .collect();
            let pick = |strict: bool| -> Vec<f64> {
                per_doc
                    .iter()
                    .map(|d| match d {
                        DocResult::Gen { strict_em, flexible_em, .. } => f64::from(u8::from(if strict { *strict_em } else { *flexible_em })),
                        DocResult::Choice { .. } => 0.0,
                    })
                    .collect()
            };
            Ok(AccuracyResult {
                task: task.into(),
                version: version.into(),
                num_fewshot: opts.num_fewshot,
                // lm-eval's table sorts by "metric,filter": flexible-extract before strict-match.
                metrics: vec![
                    metric("exact_match_flexible", "exact_match", "flexible-extract", &pick(false)),
                    metric("exact_match", "exact_match", "strict-match", &pick(true)),
                ],
                examples: docs.len(),
                per_doc,
            })
        }
    }
}

/// lm-eval's `make_table` layout (pytablewriter's Markdown): headers centred, numeric columns right
/// aligned, a column's values printed with the most decimals any of them needs.
pub fn markdown_table(results: &[AccuracyResult]) -> String {
    let headers = ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"];
    let numeric = [false, true, false, true, false, false, true, false, false];
    let mut rows: Vec<[String; 9]> = Vec::new();
    let all_stderr = results.iter().flat_map(|r| &r.metrics).all(|m| m.stderr.is_some());
    let values: Vec<f64> = results.iter().flat_map(|r| r.metrics.iter().map(|m| m.value)).collect();
    let places = values.iter().map(|v| decimals(&format!("{v:.4}"))).max().unwrap_or(0);
    let stderr_places = results.iter().flat_map(|r| &r.metrics).filter_map(|m| m.stderr).map(|v| decimals(&format!("{v:.4}"))).max().unwrap_or(0);
    for r in results {
        for (i, m) in r.metrics.iter().enumerate() {
            let first = i == 0;
            rows.push([
                if first { r.task.clone() } else { String::new() },
                if first { r.version.clone() } else { String::new() },
                m.filter.clone(),
                r.num_fewshot.to_string(),
                m.lm_eval_metric.clone(),
                "↑".into(),
                format!("{:.*}", places, m.value),
                "±".into(),
                match m.stderr {
                    Some(s) if all_stderr => format!("{:.*}", stderr_places, s),
                    _ => "   N/A".into(),
                },
            ]);
        }
    }
    let mut numeric = numeric;
    numeric[8] = all_stderr;
    let width = |c: usize| -> usize { rows.iter().map(|r| r[c].chars().count()).chain([headers[c].chars().count(), 3]).max().unwrap_or(3) };
    let widths: Vec<usize> = (0..9).map(width).collect();
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("|{}|\n", cells.join("|"));
    out.push_str(&line(
        (0..9)
            .map(|c| {
                let pad = widths[c] - headers[c].chars().count();
                format!("{}{}{}", " ".repeat(pad / 2), headers[c], " ".repeat(pad - pad / 2))
            })
            .collect(),
    ));
    out.push_str(&line((0..9).map(|c| if numeric[c] { format!("{}:", "-".repeat(widths[c] - 1)) } else { "-".repeat(widths[c]) }).collect()));
    for r in &rows {
        out.push_str(&line(
            (0..9)
                .map(|c| {
                    let pad = widths[c] - r[c].chars().count();
                    if numeric[c] {
                        format!("{}{}", " ".repeat(pad), r[c])
                    } else {
                        format!("{}{}", r[c], " ".repeat(pad))
                    }
                })
                .collect(),
        ));
    }
    out
}

/// Decimal places `s` needs once trailing zeros go.
fn decimals(s: &str) -> usize {
    match s.split_once('.') {
        Some((_, frac)) => frac.trim_end_matches('0').len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_random_matches_cpython() {
        // python3 -c "import random; r=random.Random(1234); print(r.getrandbits(32), r.getrandbits(32))"
        let mut r = PyRandom::new(1234);
        assert_eq!((r.next_u32(), r.next_u32()), (4_150_886_329, 3_342_196_574));
        // r=random.Random(1234); [r.sample(range(7),2) for _ in range(3)], [r.sample(range(7473),5) for _ in range(2)], r.sample(range(100),40)[:5]
        let mut r = PyRandom::new(1234);
        let small: Vec<Vec<usize>> = (0..3).map(|_| r.sample(7, 2).unwrap()).collect();
        assert_eq!(small, vec![vec![6, 3], vec![0, 6], vec![0, 4]]);
        let big: Vec<Vec<usize>> = (0..2).map(|_| r.sample(7473, 5).unwrap()).collect();
        assert_eq!(big, vec![vec![286, 5501, 5677, 687, 806], vec![6279, 2905, 1939, 142, 252]]);
        assert_eq!(r.sample(100, 40).unwrap()[..5], [2, 44, 82, 79, 61]);
        assert!(r.sample(3, 4).is_err());
    }

    #[test]
    fn normalize_follows_python_dollar() {
        assert_eq!(gsm8k_normalize("12.\n"), "12\n");
        assert_eq!(gsm8k_normalize("Tom has 13.\n#### 13"), "13");
        assert_eq!(gsm8k_normalize("$1,234."), "1234");
    }
}
