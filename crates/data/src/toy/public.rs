//! Public passages (the BookCorpus stand-in): 3–5 sentences of templated narrative English, in
//! lower case like BookCorpus's tokenized lines. Empty prompt; the passage is the completion.

use super::pick;
use crate::example::Example;
use crate::rng::Stream;

const SUBJECTS: &[&str] = &["the old man", "a young girl", "the farmer", "my brother", "the teacher", "her mother", "the stranger", "a tired soldier", "the baker", "his friend"];
const VERBS: &[&str] = &["walked to", "looked at", "ran toward", "sat by", "waited near", "stared at", "came back to", "thought about"];
const PLACES: &[&str] = &["the river", "the old house", "the market", "the window", "the forest", "the bridge", "the church", "the station", "the garden", "the door"];
const WEATHER: &[&str] = &["the sky was gray", "the wind was cold", "the sun was low", "rain fell softly", "the night was quiet", "the air smelled of smoke"];
const FEELINGS: &[&str] = &["felt happy", "was afraid", "smiled", "sighed", "laughed quietly", "said nothing", "closed the door", "turned away"];
const SPEECH: &[&str] = &["we should go home", "i do not know", "it is getting late", "look at that", "you were right", "come with me"];
const TIMES: &[&str] = &["in the morning", "after dinner", "later that day", "at dawn", "that evening", "before noon"];

fn sentence(rng: &mut Stream) -> String {
    match rng.below(5) {
        0 => format!("{} {} {} .", pick(rng, SUBJECTS), pick(rng, VERBS), pick(rng, PLACES)),
        1 => format!("{} and {} .", pick(rng, WEATHER), pick(rng, WEATHER)),
        2 => format!("{} {} .", pick(rng, SUBJECTS), pick(rng, FEELINGS)),
        3 => format!("`` {} , '' said {} .", pick(rng, SPEECH), pick(rng, SUBJECTS)),
        _ => format!("{} , {} {} {} .", pick(rng, TIMES), pick(rng, SUBJECTS), pick(rng, VERBS), pick(rng, PLACES)),
    }
}

/// One passage.
pub fn passage(rng: &mut Stream) -> Example {
    let n = 3 + rng.below(3);
    let s: Vec<String> = (0..n).map(|_| sentence(rng)).collect();
    Example::new("", s.join(" "))
}
