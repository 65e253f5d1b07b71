//! Multi-step arithmetic word problems (GSM8K-shaped). Prompt `"Question: …\nAnswer:"`, completion
//! `" <one line per step>\n#### N"`, e.g.
//! `Question: Ana has 7 apples. Ana buys 5 more apples. Ana gives 3 apples to Ben. How many apples does Ana have now?\nAnswer:`
//! ` Ana starts with 7 apples.\n7 + 5 = 12\n12 - 3 = 9\n#### 9`.

use super::pick;
use crate::example::Example;
use crate::rng::Stream;

pub const NAMES: &[&str] = &["Ana", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou"];
pub const ITEMS: &[&str] = &["apples", "pens", "cards", "shells", "coins", "books", "stones", "cups", "stamps", "beads"];

/// One problem: 2 or 3 steps of `+`, `-`, `×2`, `×3`; values stay in 0..=99.
pub fn problem(rng: &mut Stream) -> Example {
    let name = *pick(rng, NAMES);
    let mut other = *pick(rng, NAMES);
    while other == name {
        other = *pick(rng, NAMES);
    }
    let item = *pick(rng, ITEMS);
    let start = 2 + rng.below(19) as i64;
    let steps = 2 + rng.below(2);
    let mut cur = start;
    let mut q = format!("Question: {name} has {start} {item}.");
    let mut a = format!(" {name} starts with {start} {item}.");
    for _ in 0..steps {
        let choice = rng.below(4);
        let (sentence, line, next) = if choice == 3 && cur <= 30 {
            let k = 2 + rng.below(2) as i64;
            let verb = if k == 2 { "doubles" } else { "triples" };
            (format!(" {name} {verb} the {item}."), format!("{cur} * {k} = {}", cur * k), cur * k)
        } else if choice >= 2 && cur > 1 {
            let b = 1 + rng.below(cur.min(9) as u64) as i64;
            if rng.below(2) == 0 {
                (format!(" {name} gives {b} {item} to {other}."), format!("{cur} - {b} = {}", cur - b), cur - b)
            } else {
                (format!(" {name} loses {b} {item}."), format!("{cur} - {b} = {}", cur - b), cur - b)
            }
        } else {
            let b = 1 + rng.below(9) as i64;
            let verb = if rng.below(2) == 0 { "buys" } else { "finds" };
            (format!(" {name} {verb} {b} more {item}."), format!("{cur} + {b} = {}", cur + b), cur + b)
        };
        q.push_str(&sentence);
        a.push('\n');
        a.push_str(&line);
        cur = next;
    }
    q.push_str(&format!(" How many {item} does {name} have now?\nAnswer:"));
    a.push_str(&format!("\n#### {cur}"));
    Example::new(q, a)
}

/// Solve a problem from its question text alone (the independent check used by the tests).
pub fn solve(prompt: &str) -> Option<i64> {
    let body = prompt.strip_prefix("Question: ")?.split('\n').next()?;
    let mut cur: Option<i64> = None;
    for sentence in body.split('.').map(str::trim).filter(|s| !s.is_empty()) {
        let w: Vec<&str> = sentence.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|x| x.parse::<i64>().ok());
        match w.get(1).copied() {
            Some("has") => cur = num(2),
            Some("buys") | Some("finds") => cur = Some(cur? + num(2)?),
            Some("gives") | Some("loses") => cur = Some(cur? - num(2)?),
            Some("doubles") => cur = Some(cur? * 2),
            Some("triples") => cur = Some(cur? * 3),
            _ => {}
        }
    }
    cur
}
