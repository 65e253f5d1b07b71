//! Fact questions about a fixed knowledge table of invented creatures, answered from a supporting
//! sentence (SciQ-shaped): prompt `"{support}\nQuestion: {question}\nAnswer:"`, completion
//! `" {answer}"`, e.g. `Glims are small blue creatures that eat moss and live in caves.\nQuestion: What do glims eat?\nAnswer:` → ` moss`.

use super::pick;
use crate::example::Example;
use crate::rng::Stream;
use serde::{Deserialize, Serialize};

pub const COLORS: &[&str] = &["red", "blue", "green", "yellow", "white", "black", "purple", "orange"];
pub const FOODS: &[&str] = &["moss", "seeds", "leaves", "bugs", "fish", "roots", "berries", "sand"];
pub const HOMES: &[&str] = &["caves", "trees", "lakes", "hills", "deserts", "marshes", "nests", "rivers"];
pub const SIZES: &[&str] = &["tiny", "small", "large", "huge"];
const ONSETS: &[&str] = &["gl", "br", "sn", "tr", "pl", "kr", "fl", "dr", "sk", "v", "z", "m"];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "oo", "ee"];
const CODAS: &[&str] = &["m", "b", "x", "p", "nd", "rk", "sh", "t"];

/// One row of the knowledge table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creature {
    /// Plural name, e.g. `glims`.
    pub name: String,
    pub color: String,
    pub food: String,
    pub home: String,
    pub size: String,
}

/// The fixed table for a seed: 128 creatures with distinct names.
pub fn knowledge_table(seed: u64) -> Vec<Creature> {
    let mut rng = Stream::new(seed, "toy-table", 0, 0);
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < 128 {
        let name = format!("{}{}{}s", pick(&mut rng, ONSETS), pick(&mut rng, VOWELS), pick(&mut rng, CODAS));
        if !names.insert(name.clone()) {
            continue;
        }
        out.push(Creature {
            name,
            color: pick(&mut rng, COLORS).to_string(),
            food: pick(&mut rng, FOODS).to_string(),
            home: pick(&mut rng, HOMES).to_string(),
            size: pick(&mut rng, SIZES).to_string(),
        });
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Which attribute a question asks about: (question template, answer).
pub fn question(rng: &mut Stream, table: &[Creature]) -> Example {
    let c = pick(rng, table);
    let n = &c.name;
    let support = match rng.below(4) {
        0 => format!("{} are {} {} creatures that eat {} and live in {}.", capitalize(n), c.size, c.color, c.food, c.home),
        1 => format!("{} live in {} and eat {}. They are {} and {}.", capitalize(n), c.home, c.food, c.size, c.color),
        2 => format!("In {} you can find {}, which are {} and feed on {}. They are {}.", c.home, n, c.color, c.food, c.size),
        _ => format!("The {} {} {} eat {} in their {}.", c.size, c.color, n, c.food, c.home),
    };
    let (q, a) = match rng.below(8) {
        0 => (format!("What do {n} eat?"), &c.food),
        1 => (format!("What food do {n} like?"), &c.food),
        2 => (format!("Where do {n} live?"), &c.home),
        3 => (format!("Where can you find {n}?"), &c.home),
        4 => (format!("What color are {n}?"), &c.color),
        5 => (format!("What color do {n} have?"), &c.color),
        6 => (format!("How big are {n}?"), &c.size),
        _ => (format!("What size are {n}?"), &c.size),
    };
    Example::new(format!("{support}\nQuestion: {q}\nAnswer:"), format!(" {a}"))
}
