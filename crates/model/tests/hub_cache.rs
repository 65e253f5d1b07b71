//! A hub id served from the local `hf-hub` cache in offline mode: the layout `huggingface-cli download`
//! leaves (`$HF_HOME/hub/models--owner--name/{refs/main, snapshots/<commit>/…}`) loads into the same
//! model as the directory it was made from. (Its own binary: it sets `HF_HOME` for the process.)

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use crossfeed_model::{CausalLm, HubOptions};

#[test]
fn offline_hub_id_loads_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub").join("models--crossfeed-test--tiny-opt");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    let src = fixture("opt350");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if !name.to_string_lossy().starts_with("golden") {
            std::fs::copy(&path, snapshot.join(name)).unwrap();
        }
    }
    std::env::set_var("HF_HOME", home.path());

    let offline = HubOptions { offline: true, revision: None };
    let from_hub = CausalLm::load("crossfeed-test/tiny-opt", &Device::Cpu, DType::F32, &offline).expect("cached hub id loads offline");
    assert_eq!(from_hub.source_dir, snapshot);
    let from_dir = CausalLm::load_dir(&src, &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::new(&[[2u32, 10, 20, 30]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 4), DType::U32, &Device::Cpu).unwrap();
    let batch = crossfeed_model::Batch { input_ids: ids, attention_mask: mask, label_mask: None, host: None };
    let (a, b) = (from_hub.forward_batch(&batch).unwrap(), from_dir.forward_batch(&batch).unwrap());
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // A revision that is not cached is an offline miss with the fetch hint.
    let pinned = HubOptions { offline: true, revision: Some("v2".into()) };
    let e = CausalLm::load("crossfeed-test/tiny-opt", &Device::Cpu, DType::F32, &pinned).expect_err("uncached revision").to_string();
    assert!(e.contains("crossfeed-test/tiny-opt") && e.contains("offline"), "{e}");
}
