//! Tidy checks: repository-wide rules that are cheap to state and easy to break,
//! run as ordinary tests so `cargo test` (and so `cargo xtask ci`) enforces them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::project_root;

/// The library crates, lowest layer first. A crate may depend only on crates
/// that come before it.
const LAYERS: [&str; 5] = [
    "embeddings-types",
    "embeddings-metrics",
    "embeddings-health",
    "embeddings-pipeline",
    "embeddings-server",
];

fn manifest(krate: &str) -> Option<toml::Table> {
    let path = project_root().join("crates").join(krate).join("Cargo.toml");
    let text = fs::read_to_string(path).ok()?;
    text.parse::<toml::Table>().ok()
}

/// Names in `[dependencies]`, `[build-dependencies]` and, when `dev` is set,
/// `[dev-dependencies]`.
fn dependency_names(manifest: &toml::Table, dev: bool) -> Vec<String> {
    let mut sections = vec!["dependencies", "build-dependencies"];
    if dev {
        sections.push("dev-dependencies");
    }
    sections
        .into_iter()
        .filter_map(|s| manifest.get(s).and_then(toml::Value::as_table))
        .flat_map(|t| t.keys().cloned())
        .collect()
}

#[test]
fn library_dependencies_point_only_downward() {
    let mut seen = 0;
    for (layer, krate) in LAYERS.iter().enumerate() {
        let Some(manifest) = manifest(krate) else {
            continue;
        };
        seen += 1;
        for dep in dependency_names(&manifest, true) {
            if let Some(dep_layer) = LAYERS.iter().position(|l| *l == dep) {
                assert!(
                    dep_layer < layer,
                    "{krate} depends on {dep}, which is not below it (layers: {LAYERS:?})"
                );
            }
        }
    }
    assert!(
        seen >= 2,
        "expected to find the library crates under crates/"
    );
}

#[test]
fn types_depends_only_on_serde_chrono_thiserror() {
    let manifest = manifest("embeddings-types").expect("crates/embeddings-types/Cargo.toml");
    for dep in dependency_names(&manifest, false) {
        assert!(
            ["serde", "chrono", "thiserror"].contains(&dep.as_str()),
            "embeddings-types must stay plain data, but depends on {dep}"
        );
    }
}

#[test]
fn metrics_and_health_know_nothing_of_tensors_runtimes_or_http() {
    let forbidden = [
        "candle", "tokio", "hyper", "axum", "reqwest", "tower", "http", "cudarc",
    ];
    for krate in ["embeddings-metrics", "embeddings-health"] {
        let manifest = manifest(krate).expect("library crate manifest");
        for dep in dependency_names(&manifest, false) {
            assert!(
                !forbidden.iter().any(|f| dep.starts_with(f)),
                "{krate} must not depend on {dep}"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = project_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask/src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).is_ok_and(|t| t.trim_start().starts_with("//!")))
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc: {missing:?}"
    );
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let root = project_root();
    let ci = fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        ci.contains("cargo xtask ci"),
        ".ci/run must call `cargo xtask ci`"
    );
    let head: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("cargo xtask ci"),
        "README.md must show `cargo xtask ci` at the top"
    );
}

#[test]
fn library_crates_deny_missing_docs() {
    for krate in LAYERS {
        let lib = project_root().join("crates").join(krate).join("src/lib.rs");
        let Ok(text) = fs::read_to_string(&lib) else {
            continue;
        };
        assert!(
            text.contains("#![deny(missing_docs)]"),
            "{} lacks #![deny(missing_docs)]",
            lib.display()
        );
    }
}
