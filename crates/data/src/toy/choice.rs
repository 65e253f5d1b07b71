//! Lettered multiple choice (ARC-shaped): prompt `"Question: …\nA. …\nB. …\nC. …\nD. …\nAnswer:"`,
//! completion `" <letter>. <text>"` (the same default format as the real ARC task).
//! Two kinds of question: "Which word names a <category>?" (one option from the category, three
//! from others) and "Which number is the largest?".

use super::pick;
use crate::example::Example;
use crate::rng::Stream;
use crate::task::letter;

/// (category, members).
pub const CATEGORIES: &[(&str, &[&str])] = &[
    ("tool", &["hammer", "saw", "drill", "wrench", "shovel", "rake", "chisel", "pliers"]),
    ("fruit", &["pear", "plum", "mango", "lemon", "grape", "peach", "cherry", "melon"]),
    ("vehicle", &["truck", "boat", "train", "bicycle", "plane", "wagon", "scooter", "canoe"]),
    ("instrument", &["drum", "flute", "violin", "piano", "harp", "trumpet", "banjo", "cello"]),
    ("metal", &["iron", "copper", "silver", "gold", "tin", "zinc", "nickel", "lead"]),
    ("garment", &["shirt", "scarf", "jacket", "sock", "glove", "boot", "hat", "coat"]),
];

/// One question with four options.
pub fn question(rng: &mut Stream) -> Example {
    let (q, options, gold) = if rng.below(4) == 0 {
        let mut nums: Vec<u64> = Vec::new();
        while nums.len() < 4 {
            let x = 10 + rng.below(90);
            if !nums.contains(&x) {
                nums.push(x);
            }
        }
        let gold = (0..4).max_by_key(|&i| nums[i]).unwrap();
        ("Which number is the largest?".to_string(), nums.iter().map(|x| x.to_string()).collect::<Vec<_>>(), gold)
    } else {
        let ci = rng.below(CATEGORIES.len() as u64) as usize;
        let (cat, members) = CATEGORIES[ci];
        let gold = rng.below(4) as usize;
        let mut options = Vec::new();
        let mut used = Vec::new();
        for i in 0..4 {
            if i == gold {
                options.push(pick(rng, members).to_string());
            } else {
                let mut cj = rng.below(CATEGORIES.len() as u64) as usize;
                while cj == ci || used.contains(&cj) {
                    cj = rng.below(CATEGORIES.len() as u64) as usize;
                }
                used.push(cj);
                options.push(pick(rng, CATEGORIES[cj].1).to_string());
            }
        }
        let article = if cat.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        (format!("Which word names {article} {cat}?"), options, gold)
    };
    let lines: Vec<String> = options.iter().enumerate().map(|(i, o)| format!("{}. {}", letter(i), o)).collect();
    Example::new(
        format!("Question: {q}\n{}\nAnswer:", lines.join("\n")),
        format!(" {}. {}", letter(gold), options[gold]),
    )
}

/// The category a word belongs to, if any (for checks).
pub fn category_of(word: &str) -> Option<&'static str> {
    CATEGORIES.iter().find(|(_, m)| m.contains(&word)).map(|(c, _)| *c)
}
