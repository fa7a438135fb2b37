//! The crate's layering, checked from its source: each module may use only
//! the modules below it (src/lib.rs gives the order), so data flows one way
//! and the model never depends on training, nor training on retrieval.

use std::fs;
use std::path::Path;

/// Bottom first, as in src/lib.rs.
const LAYERS: [&str; 11] = [
    "kernels",
    "files",
    "progress",
    "data",
    "model",
    "train",
    "checkpoint",
    "retrieval",
    "eval",
    "serve",
    "cli",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|&m| m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        let Some(own) = rank(module) else {
            continue; // lib.rs, main.rs
        };
        checked += 1;
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if let Some(used) = rank(&name) {
                    if used > own {
                        upward.push(format!("{}:{}: {module} uses {name}", rel.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(checked > 30, "found only {checked} source files");
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}
