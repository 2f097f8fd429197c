//! Tidy checks on the source tree, as rust-analyzer's tidy test does: the layering rules,
//! where `unsafe` may appear, and that ARCHITECTURE.md's code map names paths that exist.
//! Plain file reading; no root needed.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The file's lines that are code (comments and doc comments left out).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.split(" // ").next().unwrap_or(l).to_string()))
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap().display().to_string()
}

#[test]
fn the_node_side_never_imports_the_control_plane() {
    let mut offences = Vec::new();
    // The node (kubelet, proxy) and everything both sides share stay free of `master`.
    for dir in ["src/kubelet", "src/proxy", "src/network", "src/runtime", "src/image", "src/api", "src/sys"] {
        for file in rust_files(&repo().join(dir)) {
            for (n, line) in code_lines(&file) {
                if line.contains("crate::master")
                    || line.contains("rkube::master")
                    || line.contains("super::master")
                {
                    offences.push(format!("{}:{n}: {}", relative(&file), line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "node-side code imports master:\n{}", offences.join("\n"));
}

#[test]
fn unsafe_code_lives_only_in_sys_modules() {
    let allowed = |rel: &str| rel.starts_with("src/sys/") || rel == "src/bin/rkube-monitor/sys.rs";
    let mut offences = Vec::new();
    for dir in ["src", "tests", "examples"] {
        for file in rust_files(&repo().join(dir)) {
            let rel = relative(&file);
            if allowed(&rel) {
                continue;
            }
            for (n, line) in code_lines(&file) {
                let words: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
                if words.contains(&"unsafe") && !line.contains("unsafe_") && !line.contains("\"") {
                    offences.push(format!("{rel}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "unsafe outside src/sys/:\n{}", offences.join("\n"));
}

#[test]
fn the_code_map_names_real_paths_once_each() {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let map = text.split("## Code map").nth(1).expect("a code map section");
    let map = map.split("\n## ").next().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = 0;
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        rows += 1;
        let first = row.split('|').nth(1).unwrap();
        for path in first.split('`').skip(1).step_by(2) {
            assert!(repo().join(path).exists(), "ARCHITECTURE.md names {path}, which does not exist");
            assert!(seen.insert(path.to_string()), "ARCHITECTURE.md lists {path} twice");
        }
    }
    assert!(rows > 10, "the code map has only {rows} rows");
    // And every top-level folder of src/ is on the map.
    for entry in std::fs::read_dir(repo().join("src")).unwrap().flatten().filter(|e| e.path().is_dir()) {
        let name = format!("src/{}/", entry.file_name().to_string_lossy());
        let bin = name == "src/bin/";
        assert!(bin || seen.contains(&name), "ARCHITECTURE.md's code map does not name {name}");
    }
}
