//! The module graph inside each crate has no cycle, and the loop does not import the theory crate.
//!
//! An import circle inside a crate (metrics → tensorboard → metrics, demo ↔ experiment) means neither
//! file can be read, changed or moved without the other; the fix is a third file both import. The
//! graph is read from the sources: a file `src/a.rs` or `src/a/…` is module `a`; an edge `a → b` is any
//! `crate::b` path in `a` (`use crate::b::X`, `use crate::{b::X, …}`, `crate::b::f()`), or a
//! `crate::X` whose `X` the crate root re-exports from `b`. The root (`lib.rs`/`main.rs`) is the crate's
//! table of contents and is left out; so is code after a file's first `#[cfg(test)]` (unit tests may
//! reach across modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for p in std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()) {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: `//` comments cut off, everything from the first `#[cfg(test)]` on dropped.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source");
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every `crate::` path in `code`, including each member of a
/// `crate::{a::X, b, …}` group (nested braces inside a member are skipped).
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `crossfeed_crate::` or `$crate::` are not this crate's paths.
        if code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident_at(group[start..].trim_start()).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident_at(group[start..].trim_start()).to_string());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// Names the crate root re-exports (`pub use a::{X, Y}` / `pub use a::X`), mapped to their module.
fn reexports(root_code: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in root_code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let rest = rest.trim_start_matches("crate::");
        let module = ident_at(rest).to_string();
        if !modules.contains(&module) {
            continue;
        }
        for name in rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|n| !n.is_empty()) {
            map.entry(name.to_string()).or_insert_with(|| module.clone());
        }
    }
    map
}

/// Module → modules it imports, for the crate at `krate`.
fn graph(krate: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = krate.join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let module_of = |f: &Path| -> Option<String> {
        let rel = f.strip_prefix(&src).ok()?;
        let first = rel.components().next()?.as_os_str().to_string_lossy().to_string();
        let m = first.trim_end_matches(".rs").to_string();
        (m != "lib" && m != "main").then_some(m)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let root_code: String = ["lib.rs", "main.rs"].iter().map(|r| src.join(r)).filter(|p| p.is_file()).map(|p| code(&p)).collect();
    let via_root = reexports(&root_code, &modules);
    let mut g: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let Some(from) = module_of(f) else { continue };
        for r in crate_refs(&code(f)) {
            let to = if modules.contains(&r) { Some(r) } else { via_root.get(&r).cloned() };
            if let Some(to) = to.filter(|t| *t != from) {
                g.get_mut(&from).expect("module").insert(to);
            }
        }
    }
    g
}

/// One cycle of `g` as `a -> b -> … -> a`, if there is any.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in &g[n] {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_inside_any_crate() {
    let mut cycles = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let krate = entry.expect("entry").path();
        if !krate.join("src").is_dir() {
            continue;
        }
        let g = graph(&krate);
        checked += g.len();
        if let Some(c) = find_cycle(&g) {
            cycles.push(format!("{}: {}", krate.file_name().expect("name").to_string_lossy(), c.join(" -> ")));
        }
    }
    assert!(checked > 50, "only {checked} modules found: the walk is broken");
    assert!(cycles.is_empty(), "import cycles (move what both need into a third file):\n{}", cycles.join("\n"));
}

#[test]
fn the_parser_sees_each_kind_of_reference() {
    let code = "use crate::a::X;\nuse crate::{b::Y, c, d::{e, f}};\nfn g() { crate::h::k(); other_crate::z(); $crate::q }\n";
    assert_eq!(crate_refs(code), ["a", "b", "c", "d", "h"]);
    let modules: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let re = reexports("pub use a::{X, Y};\npub use b::Z;\npub use other::W;", &modules);
    assert_eq!((re["X"].as_str(), re["Y"].as_str(), re["Z"].as_str(), re.get("W")), ("a", "a", "b", None));
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])].into_iter().map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect())).collect();
    assert_eq!(find_cycle(&g).expect("cycle"), ["a", "b", "c", "a"]);
}

/// The loop draws its figures with crossfeed-figure; the theory crate is the paper's math only.
#[test]
fn loop_does_not_depend_on_theory() {
    let manifest = std::fs::read_to_string(root().join("crates/loop/Cargo.toml")).expect("crates/loop/Cargo.toml");
    assert!(!manifest.contains("crossfeed-theory"), "crates/loop/Cargo.toml depends on crossfeed-theory");
    let mut files = Vec::new();
    rs_files(&root().join("crates/loop/src"), &mut files);
    for f in files {
        assert!(!code(&f).contains("crossfeed_theory"), "{} imports crossfeed_theory", f.display());
    }
}
