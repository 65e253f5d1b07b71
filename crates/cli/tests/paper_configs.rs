//! The paper configs are complete: similarity is measured with all-MiniLM-L6-v2, and the K = 3 task
//! scaling experiment (SciQ, GSM8K, ARC) exists for both architectures.

use crossfeed_loop::ExperimentConfig;
use std::path::Path;

#[test]
fn paper_configs_measure_similarity_and_cover_k3() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut k3 = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("paper-") && name.ends_with(".toml")) {
            continue;
        }
        let c = ExperimentConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.eval.embed_model, "sentence-transformers/all-MiniLM-L6-v2", "{name}");
        assert_eq!(c.name, name.trim_end_matches(".toml"), "{name}: name differs from the file name");
        if c.k == 3 {
            let kinds: Vec<&str> = c.private.iter().map(|t| t.kind.name()).collect();
            assert_eq!(kinds, ["sciq", "gsm8k", "arc_challenge"], "{name}");
            k3.push(c.base_model.clone());
        }
    }
    k3.sort();
    assert_eq!(k3, ["facebook/opt-350m", "meta-llama/Llama-3.2-1B"]);
}
