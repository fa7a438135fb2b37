//! The crate's layering, checked from its source as rules over the import
//! graph: every module is listed in one order (src/lib.rs gives it) and
//! imports only the modules below it, so data flows one way; inference
//! (`retrieval`, `eval`, `export`, `serve`) never reads `train`; the
//! submodules inside a module import each other without a circle; and the
//! Python bindings use the library, never the command line.
//!
//! A file's imports are every path it names (`use` lines and paths written
//! in code alike), resolved from the file's own place: `crate::`, `super::`
//! and `self::` paths, grouped imports (`use crate::{a, b::c}`) and, in a
//! module's `mod.rs`, paths through its child modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom first, as in src/lib.rs.
const LAYERS: [&str; 17] = [
    "kernels",
    "files",
    "progress",
    "text",
    "workers",
    "settings",
    "data",
    "model",
    "train",
    "checkpoint",
    "retrieval",
    "eval",
    "export",
    "serve",
    "cli",
    "lib",
    "main",
];

/// Modules that answer queries from a saved model: none may import `train`
/// (the model they read is a `model::Artifact`).
const INFERENCE: [&str; 4] = ["retrieval", "eval", "export", "serve"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|&m| m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under src/: `data/columnar.rs` is
/// `[data, columnar]`, `model/mod.rs` is `[model]`, `lib.rs` is `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        let last = parts.pop().unwrap();
        if parts.is_empty() && last != "lib" {
            parts.push(last); // main.rs is a module of its own here
        }
    }
    parts
}

/// Code without its comments (line comments and doc comments; a `//`
/// inside a string is rare enough in this crate not to matter).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.split("//").next().unwrap_or("")))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths that start at `at` in `code` (`crate::a::b`, `super::x`,
/// `crate::{a, b::c}`): each as its segments, braces expanded one level.
fn paths_at(code: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = code;
    loop {
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() {
            break;
        }
        segments.push(name.clone());
        rest = &rest[name.len()..];
        let Some(after) = rest.strip_prefix("::") else {
            break;
        };
        rest = after.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            return inner
                .split(',')
                .map(|item| {
                    let mut path = segments.clone();
                    path.extend(paths_at(item.trim()).into_iter().next().unwrap_or_default());
                    path
                })
                .collect();
        }
    }
    vec![segments]
}

/// Every path a line names from the crate's root or the file's own place.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(start) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue; // `foo::super::` is not a path from here
            }
            out.extend(paths_at(&code[at..]));
        }
    }
    // `use child::X;` in a module file: a path through its own child.
    if let Some(used) = code.trim_start().strip_prefix("use ") {
        let used = used.trim_start();
        if !["crate::", "super::", "self::", "std::", "core::"]
            .iter()
            .any(|p| used.starts_with(p))
        {
            for mut path in paths_at(used) {
                path.insert(0, "self".into());
                out.push(path);
            }
        }
    }
    out
}

/// `path` as seen from module `here`, resolved to a path from the root.
fn resolve(here: &[String], path: &[String]) -> Vec<String> {
    let mut at: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        _ => at = here.to_vec(),
    }
    for seg in rest {
        match seg.as_str() {
            "self" => {}
            "super" => {
                at.pop();
            }
            _ => at.push(seg.clone()),
        }
    }
    at
}

struct Import {
    file: String,
    line: usize,
    from: Vec<String>,
    to: Vec<String>,
    /// Written in test code: after the file's `#[cfg(test)]`, or in a
    /// module compiled only for tests (`#[cfg(test)] mod gradcheck;`).
    in_tests: bool,
}

struct Crate {
    /// The top-level modules found in src/ (a file or a folder).
    modules: BTreeSet<String>,
    /// For each top-level module, its direct submodules (files or folders).
    children: BTreeMap<String, BTreeSet<String>>,
    imports: Vec<Import>,
    files: usize,
}

/// The modules declared for tests only (`#[cfg(test)] mod name;`), by
/// their module path.
fn test_only_modules(src: &Path, files: &[PathBuf]) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for file in files {
        let here = module_path(file.strip_prefix(src).unwrap());
        let text = fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]" {
                let declared = pair[1]
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                if let Some(name) = declared
                    .strip_prefix("mod ")
                    .and_then(|m| m.strip_suffix(';'))
                {
                    let mut path = here.clone();
                    path.push(name.to_string());
                    out.insert(path);
                }
            }
        }
    }
    out
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut imports = Vec::new();
    let test_only = test_only_modules(&src, &files);
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let here = module_path(rel);
        let top = here.first().cloned().unwrap_or_else(|| "lib".into());
        modules.insert(top.clone());
        if let Some(child) = here.get(1) {
            children.entry(top).or_default().insert(child.clone());
        }
        let text = fs::read_to_string(file).unwrap();
        let test_module = test_only.iter().any(|t| here.starts_with(t));
        let mut in_tests = test_module;
        for (line, code) in code_lines(&text) {
            in_tests |= code.trim() == "#[cfg(test)]";
            for path in named_paths(code) {
                imports.push(Import {
                    file: rel.display().to_string(),
                    line,
                    from: here.clone(),
                    to: resolve(&here, &path),
                    in_tests,
                });
            }
        }
    }
    Crate {
        modules,
        children,
        imports,
        files: files.len(),
    }
}

#[test]
fn every_module_is_listed_in_the_layers() {
    let c = read_crate();
    assert!(c.files > 40, "found only {} source files", c.files);
    let listed: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = c.modules.difference(&listed).collect();
    assert!(missing.is_empty(), "modules not in LAYERS: {missing:?}");
    let gone: Vec<_> = listed.difference(&c.modules).collect();
    assert!(gone.is_empty(), "LAYERS names modules src/ lacks: {gone:?}");
    // lib.rs says the same order in its header.
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let header: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut last = 0;
    for m in &LAYERS[..LAYERS.len() - 2] {
        let at = header
            .find(&format!("`{m}`"))
            .unwrap_or_else(|| panic!("src/lib.rs's header does not name `{m}`"));
        assert!(at >= last, "src/lib.rs's header names `{m}` out of order");
        last = at;
    }
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let c = read_crate();
    let mut upward = Vec::new();
    let mut checked = 0;
    for i in &c.imports {
        let (Some(from), Some(to)) = (i.from.first(), i.to.first()) else {
            continue;
        };
        let (Some(own), Some(used)) = (rank(from), rank(to)) else {
            continue; // a path into a local item (`self::Foo`), not a module
        };
        checked += 1;
        if used > own {
            upward.push(format!("{}:{}: {from} uses {to}", i.file, i.line));
        }
    }
    assert!(checked > 100, "resolved only {checked} imports");
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn inference_never_imports_training() {
    let c = read_crate();
    let bad: Vec<String> = c
        .imports
        .iter()
        .filter(|i| {
            i.from
                .first()
                .is_some_and(|m| INFERENCE.contains(&m.as_str()))
                && i.to.first().is_some_and(|m| m == "train")
        })
        .map(|i| format!("{}:{}: {}", i.file, i.line, i.to.join("::")))
        .collect();
    assert!(
        bad.is_empty(),
        "inference imports train:\n{}",
        bad.join("\n")
    );
}

#[test]
fn submodules_import_each_other_without_a_circle() {
    let c = read_crate();
    // Sibling edges inside each top-level module: `data::columnar` ->
    // `data::table`. A module's own mod.rs (re-exports) is no node, and
    // test code (which may use any module's test helpers) no edge.
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for i in c.imports.iter().filter(|i| !i.in_tests) {
        let (Some(top), Some(from), Some(to)) = (i.from.first(), i.from.get(1), i.to.get(1)) else {
            continue;
        };
        if i.to.first() != Some(top) || from == to {
            continue;
        }
        if c.children.get(top).is_some_and(|s| s.contains(to)) {
            edges
                .entry((top.clone(), from.clone()))
                .or_default()
                .insert(to.clone());
        }
    }
    assert!(
        edges.contains_key(&("data".into(), "source".into())),
        "found no sibling imports in data/ (the scan is broken)"
    );
    // Depth-first search for a back edge.
    fn visit(
        node: &(String, String),
        edges: &BTreeMap<(String, String), BTreeSet<String>>,
        state: &mut BTreeMap<(String, String), u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let at = stack.iter().position(|n| *n == node.1).unwrap_or(0);
                let mut circle = stack[at..].to_vec();
                circle.push(node.1.clone());
                return Some(circle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(node.clone(), 1);
        stack.push(node.1.clone());
        for next in edges.get(node).into_iter().flatten() {
            let next = (node.0.clone(), next.clone());
            if let Some(circle) = visit(&next, edges, state, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut state, &mut Vec::new()) {
            panic!("a circle in {}/: {}", node.0, circle.join(" -> "));
        }
    }
}

#[test]
fn the_scan_resolves_every_kind_of_path() {
    let here: Vec<String> = vec!["data".into(), "columnar".into()];
    let resolved = |code: &str| -> Vec<String> {
        named_paths(code)
            .iter()
            .map(|p| resolve(&here, p).join("::"))
            .collect()
    };
    assert_eq!(
        resolved("use super::table::{Catalog, DataError};"),
        ["data::table::Catalog", "data::table::DataError"]
    );
    assert_eq!(
        resolved("use crate::{train, model::Params};"),
        ["train", "model::Params"]
    );
    assert_eq!(resolved("let x = crate::train::run(a);"), ["train::run"]);
    assert_eq!(
        resolved("use self::inner::X;"),
        ["data::columnar::inner::X"]
    );
    assert_eq!(resolved("use table::Y;"), ["data::columnar::table::Y"]);
    assert!(resolved("use std::path::Path;").is_empty());
    let commented = code_lines("let s = 1; // crate::train::run")
        .next()
        .unwrap()
        .1;
    assert!(resolved(commented).is_empty());
    assert_eq!(module_path(Path::new("model/mod.rs")), ["model"]);
    assert_eq!(module_path(Path::new("lib.rs")), Vec::<String>::new());
    assert_eq!(module_path(Path::new("main.rs")), ["main"]);
}

#[test]
fn the_python_bindings_use_the_library_not_the_command_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/src");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(!files.is_empty());
    let mut bad = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (line, code) in code_lines(&text) {
            if code.contains("seqrec::cli") {
                bad.push(format!("{}:{line}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "python/ uses seqrec::cli:\n{}",
        bad.join("\n")
    );
}

/// `seqrec.load` reads a model for inference, as `seqrec recommend` does
/// (`checkpoint::load_for_inference*`): never training's whole state
/// (`checkpoint::load`, with the optimiser's moments), which only a resumed
/// training reads.
#[test]
fn the_python_bindings_load_models_for_inference() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/src/model.rs");
    let text = fs::read_to_string(&file).unwrap();
    let mut whole_loads = Vec::new();
    let mut inference_loads = 0;
    for (line, code) in code_lines(&text) {
        if code.contains("checkpoint::load(") {
            whole_loads.push(line);
        }
        if code.contains("checkpoint::load_for_inference") {
            inference_loads += 1;
        }
    }
    assert!(inference_loads > 0, "seqrec.load reads no model file");
    assert!(
        whole_loads.is_empty(),
        "python/src/model.rs reads training's whole state at lines {whole_loads:?}"
    );
}
