//! docs/ARCHITECTURE.md names every crate under crates/, so the map cannot silently drift.

#[test]
fn every_crate_is_in_the_architecture_doc() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let name = entry.expect("entry").file_name().to_string_lossy().to_string();
        if root.join("crates").join(&name).join("Cargo.toml").exists() {
            assert!(doc.contains(&format!("crates/{name}")), "docs/ARCHITECTURE.md does not mention crates/{name}");
        }
    }
}
