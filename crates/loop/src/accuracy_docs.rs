//! What each private task's accuracy is measured on, in the loop. Real tasks get
//! lm-evaluation-harness's documents for the very eval rows the CE matrix scores. The demo's toy
//! tasks have forms of their own: `toy_arithmetic` is GSM8K-shaped (a generated answer ending in
//! `#### N`, scored by the gsm8k filters), `toy_facts` is multiple choice over every value of the
//! attribute asked about, `toy_choice` multiple choice over its lettered options. `toy_public` (like
//! BookCorpus) has none. Each document's result is recorded in the eval stage's `accuracy.jsonl`.

use crossfeed_data::toy::facts::{COLORS, FOODS, HOMES, SIZES};
use crossfeed_data::{Example, TaskData, TaskKind};

use crate::accuracy::{self, AccuracyDocs, ChoiceDoc, DocResult, GenDoc, MatchRule};
use crate::config::ExperimentConfig;
use crate::error::Result;

/// Per-document accuracy records of an eval stage (lm-eval's `log_samples`, abridged).
pub const ACCURACY_FILE: &str = "accuracy.jsonl";

pub fn record(set: &str, index: usize, d: &DocResult) -> serde_json::Value {
    match d {
        DocResult::Choice { loglikelihoods, is_greedy, acc, acc_norm } => serde_json::json!({
            "eval_set": set, "index": index, "loglikelihoods": loglikelihoods, "is_greedy": is_greedy, "acc": acc, "acc_norm": acc_norm,
        }),
        DocResult::Gen { generation, strict, flexible, strict_em, flexible_em, .. } => serde_json::json!({
            "eval_set": set, "index": index, "generation": generation, "strict_match": strict, "flexible_extract": flexible,
            "exact_match": strict_em, "exact_match_flexible": flexible_em,
        }),
    }
}

/// Private task `i`'s accuracy documents: lm-evaluation-harness's for a real task (the very rows the
/// CE set scores, capped as it is), the toy task's own form otherwise; `None` for a task without one.
pub fn private_task_docs(cfg: &ExperimentConfig, i: usize, t: &TaskData, examples: &[Example]) -> Result<Option<(AccuracyDocs, usize)>> {
    let kind = t.kind;
    let (mut docs, shots) = if accuracy::lm_eval_task(kind).is_some() {
        let shots = cfg.eval.accuracy_fewshot.unwrap_or_else(|| accuracy::default_fewshot(kind));
        let rows = crossfeed_data::task_rows(&cfg.private[i], shots > 0)?;
        (accuracy::docs_from_rows(&rows)?, shots)
    } else if let Some(d) = custom_docs(&cfg.private[i])? {
        (d, cfg.eval.accuracy_fewshot.unwrap_or(0))
    } else {
        match toy_docs(kind, examples, &t.train) {
            Some(d) => (d, cfg.eval.accuracy_fewshot.unwrap_or(0)),
            None => return Ok(None),
        }
    };
    docs.truncate(examples.len());
    docs.truncate(cfg.eval.accuracy_examples);
    Ok(Some((docs, shots)))
}

/// A custom task's accuracy documents (`custom.accuracy`): multiple choice, scored as
/// lm-evaluation-harness scores `multiple_choice` (acc, acc_norm), or exact match of a greedy
/// generation (`generate_until`, regex filter, `exact_match`); `None` without one.
pub fn custom_docs(task: &crossfeed_data::TaskConfig) -> Result<Option<AccuracyDocs>> {
    let mk = |v: Vec<crossfeed_data::ChoiceRow>| -> Vec<ChoiceDoc> { v.into_iter().map(|(context, choices, gold)| ChoiceDoc { context, choices, gold }).collect() };
    if let Some((docs, fewshot)) = crossfeed_data::custom_choice_docs(task)? {
        return Ok(Some(AccuracyDocs::Choice { docs: mk(docs), fewshot: mk(fewshot) }));
    }
    let Some(crossfeed_data::CustomAccuracy::ExactMatch { stop, regex, group_select, ignore_case, ignore_punctuation, .. }) = task.custom.as_ref().and_then(|c| c.accuracy.clone()) else {
        return Ok(None);
    };
    let Some((docs, fewshot)) = crossfeed_data::custom_match_docs(task)? else { return Ok(None) };
    let gen = |v: Vec<(String, String)>| -> Vec<GenDoc> { v.into_iter().map(|(context, target)| GenDoc { context, target }).collect() };
    let rule = MatchRule { until: stop.unwrap_or_else(|| vec!["\n\n".into()]), regex, group_select, ignore_case, ignore_punctuation };
    Ok(Some(AccuracyDocs::Match { docs: gen(docs), fewshot: gen(fewshot), rule }))
}

/// The toy task's accuracy documents for its eval examples (few-shot examples, used only when
/// `eval.accuracy_fewshot` asks for them, come from the start of its train split); `None` for a kind
/// without a form.
pub fn toy_docs(kind: TaskKind, examples: &[Example], train: &[Example]) -> Option<AccuracyDocs> {
    let gen = |v: &[Example]| -> Vec<GenDoc> { v.iter().map(|e| GenDoc { context: e.prompt.clone(), target: e.completion.trim().to_string() }).collect() };
    match kind {
        TaskKind::ToyArithmetic => Some(AccuracyDocs::Gen { docs: gen(examples), fewshot: gen(train) }),
        TaskKind::ToyFacts => Some(AccuracyDocs::Choice { docs: examples.iter().filter_map(fact_doc).collect(), fewshot: train.iter().filter_map(fact_doc).collect() }),
        TaskKind::ToyChoice => Some(AccuracyDocs::Choice { docs: examples.iter().filter_map(lettered_doc).collect(), fewshot: train.iter().filter_map(lettered_doc).collect() }),
        _ => None,
    }
}

/// The options are every value of the asked attribute, in the table's order (the lists are disjoint,
/// so the answer names its attribute).
fn fact_doc(e: &Example) -> Option<ChoiceDoc> {
    let answer = e.completion.trim();
    let values = [COLORS, FOODS, HOMES, SIZES].into_iter().find(|v| v.contains(&answer))?;
    Some(ChoiceDoc {
        context: e.prompt.clone(),
        choices: values.iter().map(|v| v.to_string()).collect(),
        gold: values.iter().position(|v| *v == answer)?,
    })
}

/// The options are the prompt's `"A. text"` lines; the completion names one of them.
fn lettered_doc(e: &Example) -> Option<ChoiceDoc> {
    let choices: Vec<String> = e
        .prompt
        .lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 3 && b[0].is_ascii_uppercase() && &b[1..3] == b". "
        })
        .map(str::to_string)
        .collect();
    let gold = choices.iter().position(|c| c == e.completion.trim())?;
    Some(ChoiceDoc { context: e.prompt.clone(), choices, gold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_forms() {
        let facts = Example::new("Glims are tiny red creatures.\nQuestion: What color are glims?\nAnswer:", " red");
        let Some(AccuracyDocs::Choice { docs: d, .. }) = toy_docs(TaskKind::ToyFacts, std::slice::from_ref(&facts), &[]) else { panic!("facts have a form") };
        assert_eq!((d[0].choices.len(), d[0].choices[d[0].gold].as_str()), (COLORS.len(), "red"));
        let choice = Example::new("Question: Which word names a tool?\nA. pear\nB. saw\nC. boat\nD. drum\nAnswer:", " B. saw");
        let Some(AccuracyDocs::Choice { docs: d, .. }) = toy_docs(TaskKind::ToyChoice, &[choice], &[]) else { panic!("choice has a form") };
        assert_eq!((d[0].choices.len(), d[0].gold, d[0].choices[1].as_str()), (4, 1, "B. saw"));
        let arith = Example::new("Question: Ana has 2 pens. How many pens does Ana have now?\nAnswer:", " Ana starts with 2 pens.\n#### 2");
        let Some(AccuracyDocs::Gen { docs, fewshot }) = toy_docs(TaskKind::ToyArithmetic, std::slice::from_ref(&arith), &[arith.clone()]) else { panic!("arithmetic has a form") };
        assert!(docs[0].target.ends_with("#### 2") && fewshot.len() == 1);
        assert!(toy_docs(TaskKind::ToyPublic, &[], &[]).is_none());
    }

    #[test]
    fn custom_exact_match_rule() {
        use crate::accuracy::regex_filter;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.jsonl"), "{\"q\": \"sky?\", \"a\": \"Blue\"}\n").unwrap();
        std::fs::write(dir.path().join("test.jsonl"), "{\"q\": \"grass?\", \"a\": \"Green\"}\n").unwrap();
        let toml = format!(
            "kind = \"custom\"\nsource = {{ type = \"local\", dir = {:?} }}\n[custom]\nname = \"c\"\nprompt = \"{{{{q}}}}\"\nanswer = \" {{{{a}}}}\"\naccuracy = {{ type = \"exact_match\", target = \"{{{{a}}}}\", regex = \"answer: (\\\\w+)\", group_select = -1, ignore_case = true }}\n",
            dir.path().display().to_string()
        );
        let task: crossfeed_data::TaskConfig = toml::from_str(&toml).unwrap();
        let Some(AccuracyDocs::Match { docs, fewshot, rule }) = custom_docs(&task).unwrap() else { panic!("an exact-match form") };
        assert_eq!((docs[0].context.as_str(), docs[0].target.as_str(), fewshot.len()), ("grass?", "Green", 1));
        assert_eq!(rule.until, vec!["\n\n".to_string()], "lm-eval's default: the few-shot delimiter");
        let re = regex::Regex::new(rule.regex.as_deref().unwrap()).unwrap();
        let got = regex_filter(&re, rule.group_select, " answer: red, no, answer: GREEN ");
        assert_eq!(got, "GREEN");
        assert!(rule.exact_match(&got, "Green"));
        assert!(!MatchRule { ignore_case: false, ..rule.clone() }.exact_match(&got, "Green"));
        assert!(MatchRule { ignore_punctuation: true, ..rule.clone() }.exact_match("green!", "Green."));
        assert_eq!(regex_filter(&re, 0, "nothing"), "[invalid]");
    }
}
