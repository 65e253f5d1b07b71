//! The toy world: deterministic, disjoint splits, correct answers, distinguishable tasks.

use crossfeed_data::toy::{arithmetic, choice, facts};
use crossfeed_data::*;
use std::collections::HashSet;

fn small() -> ToySizes {
    ToySizes { train: 400, eval: 60, public_train: 300, public_eval: 40 }
}

#[test]
fn deterministic_and_sized() {
    let a = toy_world(7, &small());
    assert_eq!(a, toy_world(7, &small()));
    assert_ne!(a, toy_world(8, &small()));
    for t in a.private_tasks() {
        assert_eq!((t.train.len(), t.eval.len()), (400, 60), "{:?}", t.kind);
    }
    assert_eq!((a.public.train.len(), a.public.eval.len()), (300, 40));
    assert_eq!(a.all_text().len(), 3 * 460 + 340);
    assert_eq!(a.train_text().len(), 3 * 400 + 300);
    // The default sizes are reachable.
    let d = toy_world(0, &ToySizes::default());
    assert!(d.private_tasks().iter().all(|t| t.train.len() == 2000 && t.eval.len() == 200));
}

#[test]
fn splits_are_disjoint() {
    let w = toy_world(3, &small());
    for t in [&w.public, &w.arithmetic, &w.facts, &w.choice] {
        let key = |e: &Example| if e.prompt.is_empty() { e.completion.clone() } else { e.prompt.clone() };
        let train: HashSet<String> = t.train.iter().map(key).collect();
        assert_eq!(train.len(), t.train.len(), "{:?} train has duplicates", t.kind);
        assert!(t.eval.iter().all(|e| !train.contains(&key(e))), "{:?} eval overlaps train", t.kind);
    }
}

#[test]
fn arithmetic_checks_out() {
    let w = toy_world(11, &small());
    for e in w.arithmetic.train.iter().chain(&w.arithmetic.eval) {
        let final_line = e.completion.lines().last().unwrap();
        let n: i64 = final_line.strip_prefix("#### ").unwrap().parse().unwrap();
        assert_eq!(arithmetic::solve(&e.prompt), Some(n), "{}", e.text());
        assert_eq!(gsm8k_final_answer(&e.completion), Some(n.to_string()));
        // Every worked step is true arithmetic and they chain.
        let steps: Vec<&str> = e.completion.lines().filter(|l| l.contains(" = ")).collect();
        assert!((2..=3).contains(&steps.len()));
        let mut prev: Option<i64> = None;
        for s in steps {
            let t: Vec<&str> = s.split_whitespace().collect();
            let (x, op, y, z): (i64, &str, i64, i64) = (t[0].parse().unwrap(), t[1], t[2].parse().unwrap(), t[4].parse().unwrap());
            assert_eq!(z, match op { "+" => x + y, "-" => x - y, "*" => x * y, _ => panic!("{op}") });
            assert!(z >= 0);
            if let Some(p) = prev {
                assert_eq!(x, p);
            }
            prev = Some(z);
        }
        assert_eq!(prev, Some(n));
        assert!(e.prompt.starts_with("Question: ") && e.prompt.ends_with("\nAnswer:"));
    }
}

#[test]
fn facts_and_choices_are_correct() {
    let w = toy_world(5, &small());
    assert_eq!(w.table.len(), 128);
    for e in w.facts.train.iter().chain(&w.facts.eval) {
        let (support, rest) = e.prompt.split_once("\nQuestion: ").unwrap();
        let q = rest.strip_suffix("\nAnswer:").unwrap();
        let c = w.table.iter().find(|c| q.contains(&format!(" {}", c.name))).unwrap();
        let want = if q.starts_with("What do") || q.starts_with("What food") {
            &c.food
        } else if q.starts_with("Where") {
            &c.home
        } else if q.starts_with("What color") {
            &c.color
        } else {
            &c.size
        };
        assert_eq!(e.completion, format!(" {want}"));
        assert!(support.contains(want.as_str()), "answer is in the support: {}", e.text());
    }
    for e in w.choice.train.iter().chain(&w.choice.eval) {
        let opts: Vec<&str> = e.prompt.lines().filter(|l| l.len() > 3 && l.as_bytes()[1] == b'.').collect();
        assert_eq!(opts.len(), 4);
        let gold = e.completion.trim_start();
        assert!(opts.contains(&gold), "{}", e.text());
        let text = |o: &str| o[3..].to_string();
        if e.prompt.contains("largest") {
            let max = opts.iter().map(|o| text(o).parse::<u32>().unwrap()).max().unwrap();
            assert_eq!(text(gold), max.to_string());
        } else {
            let cat = e.prompt.split_whitespace().nth(5).unwrap().trim_end_matches('?');
            for o in &opts {
                assert_eq!(choice::category_of(&text(o)) == Some(cat), *o == gold, "{}", e.text());
            }
        }
    }
    let _ = facts::COLORS;
}

#[test]
fn tasks_are_distinguishable() {
    // Each task has content words no other task uses, so cross-task loss is high until its text
    // enters the mix.
    let w = toy_world(1, &small());
    let words = |t: &ToyTask| -> HashSet<String> {
        t.train.iter().flat_map(|e| e.text().split_whitespace().map(|s| s.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).collect::<Vec<_>>()).filter(|s| s.len() > 3 && !s.chars().all(|c| c.is_ascii_digit())).collect()
    };
    let sets: Vec<HashSet<String>> = [&w.public, &w.arithmetic, &w.facts, &w.choice].iter().map(|t| words(t)).collect();
    for (i, s) in sets.iter().enumerate() {
        let own = s.iter().filter(|x| sets.iter().enumerate().all(|(j, o)| j == i || !o.contains(*x))).count();
        let shared_frac = 1.0 - own as f64 / s.len() as f64;
        assert!(own >= 10 && shared_frac < 0.5, "task {i}: {own} own words of {}", s.len());
    }
    // Small vocabulary overall.
    let all: HashSet<&String> = sets.iter().flatten().collect();
    assert!(all.len() < 600, "{} words", all.len());
}
