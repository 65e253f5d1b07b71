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

/// Each crate's paragraph (from its `**`crates/<name>`**` to the next heading or crate) names every
/// file and folder of its `src/` in backticks (`plan.rs`, `toy/`), crate roots aside: a new concept gets
/// its line when its file is added.
#[test]
fn every_source_file_is_in_its_crates_paragraph() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let krate = entry.expect("entry").path();
        let name = krate.file_name().expect("name").to_string_lossy().to_string();
        let Some(start) = doc.find(&format!("**`crates/{name}`**")) else { continue };
        let rest = &doc[start + 1..];
        let end = [rest.find("\n**`crates/"), rest.find("\n## ")].into_iter().flatten().min().unwrap_or(rest.len());
        let para = &rest[..end];
        for f in std::fs::read_dir(krate.join("src")).expect("src/").map(|e| e.expect("entry").path()) {
            let file = f.file_name().expect("name").to_string_lossy().to_string();
            let shown = if f.is_dir() { format!("`{file}/`") } else { format!("`{file}`") };
            if file != "lib.rs" && file != "main.rs" && !para.contains(&shown) {
                missing.push(format!("crates/{name}: {shown}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md does not name, in the crate's paragraph:\n{}", missing.join("\n"));
}

/// Every `.rs` file under `crates/<name>/src`, as (crate name, path relative to the repo, code lines
/// with `//` comments cut off).
fn sources() -> Vec<(String, String, Vec<String>)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()) {
            if e.is_dir() {
                walk(&e, out);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.push(e);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let krate = entry.expect("entry").path();
        let src = krate.join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        walk(&src, &mut files);
        let name = krate.file_name().expect("name").to_string_lossy().to_string();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source");
            let code = text.lines().map(|l| l.split("//").next().unwrap_or("").to_string()).collect();
            let rel = f.strip_prefix(&root).unwrap_or(&f).to_string_lossy().to_string();
            out.push((name.clone(), rel, code));
        }
    }
    out
}

/// Lines of `crates/*/src` outside `allowed` crates that contain any of `needles`.
fn offenders(needles: &[&str], allowed: &[&str], allow_files: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (krate, file, lines) in sources() {
        if allowed.contains(&krate.as_str()) || allow_files.contains(&file.as_str()) {
            continue;
        }
        for (i, l) in lines.iter().enumerate() {
            if needles.iter().any(|n| l.contains(n)) {
                found.push(format!("{file}:{}: {}", i + 1, l.trim()));
            }
        }
    }
    found
}

/// Files reach their place only through crossfeed-fsio (temp sibling, fsync, rename, directory fsync):
/// a crate that renames by itself skips one of those steps sooner or later.
#[test]
fn only_fsio_renames_files() {
    let found = offenders(&["rename(", "hard_link("], &["fsio"], &[]);
    assert!(found.is_empty(), "rename or hard_link outside crates/fsio (use crossfeed_fsio::write_atomic, write_new, commit or replace_dir):\n{}", found.join("\n"));
}

/// Only the CLI talks to the user; libraries return what they have to say (errors, notes, events).
#[test]
fn only_cli_prints() {
    let found = offenders(&["println!", "print!(", "eprint!(", "dbg!(", "stdout()", "stderr()"], &["cli"], &[]);
    assert!(found.is_empty(), "printing outside crates/cli:\n{}", found.join("\n"));
}
