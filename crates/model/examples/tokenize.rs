//! Times tokenizing one paper-sized mixture (12,500 passages of ~128 words) with OPT's real GPT-2 BPE
//! (tests/fixtures/models/opt125: 50,265 tokens). Measurement behind `tokenizers` building at
//! opt-level 1 (BENCHMARKS.md "Cold build"); not a test.
//!
//!     cargo run --release -p crossfeed-model --example tokenize
//!     cargo run --release -p crossfeed-model --example tokenize --config 'profile.release.package.tokenizers.opt-level=3'

use std::path::Path;
use std::time::Instant;

use crossfeed_model::TextTokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/opt125");
    let tok = TextTokenizer::from_dir(&dir)?;
    let words = "the a he she they it was had said looked at into door room light dark night morning hand eyes face voice back away down up just then again never always old young little long small good man woman girl boy father mother house car road window water fire, \"yes.\" 1,234 don't".split(' ').collect::<Vec<_>>();
    // A fixed linear congruential stream: the same passages every run.
    let mut x: u64 = 1;
    let passages: Vec<String> = (0..12_500)
        .map(|_| {
            (0..128)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    words[(x >> 33) as usize % words.len()]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut best = f64::INFINITY;
    let mut tokens = 0usize;
    for _ in 0..3 {
        let t = Instant::now();
        tokens = 0;
        for p in &passages {
            tokens += tok.encode(p)?.len();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("12,500 passages, {tokens} tokens: {best:.2} s (best of 3), {:.0} tokens/s, one thread", tokens as f64 / best);
    Ok(())
}
