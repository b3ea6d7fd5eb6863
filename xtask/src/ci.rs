//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, cuda, fetch_models, project_root, python, tools};

/// Runs the CI sequence from the workspace root.
pub(crate) fn run() -> Result {
    let started = Instant::now();
    let root = project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let step = |name: &str, args: &[&str], env: &[(&str, &str)]| -> Result {
        println!("\n==> xtask ci: {name}: cargo {}", args.join(" "));
        let t = Instant::now();
        let status = Command::new(&cargo)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(&root)
            .status()
            .map_err(|e| format!("{name}: could not start cargo: {e}"))?;
        println!("==> xtask ci: {name}: {status} in {:.1?}", t.elapsed());
        if status.success() {
            Ok(())
        } else {
            Err(format!("{name} failed ({status})"))
        }
    };

    step("fmt", &["fmt", "--all", "--", "--check"], &[])?;
    step(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;

    // The exposition tests run the real Prometheus parser.
    let promtool = tools::ensure_promtool()?;
    let promtool = promtool.to_string_lossy().into_owned();
    // The Alertmanager example is checked with the real amtool.
    let amtool = tools::ensure_amtool()?;
    let amtool = amtool.to_string_lossy().into_owned();

    // The pipeline's tests run the real model (reference vectors, all slots).
    println!("\n==> xtask ci: fetch-models");
    fetch_models::run()?;

    let test_env = [
        ("EMBEDDINGS_PROMTOOL", promtool.as_str()),
        ("EMBEDDINGS_AMTOOL", amtool.as_str()),
    ];
    step("test", &["test", "--workspace"], &test_env)?;

    // The real client libraries (openai, huggingface_hub, LlamaIndex) against
    // the real server binary: the proof that we are a drop-in for OpenAI's
    // embeddings API and for Text Embeddings Inference.
    println!("\n==> xtask ci: python: py-setup");
    let venv_python = python::ensure_venv()?;
    // The server binary the test step built (its integration tests run it).
    // The same command with `--no-run` finds it up to date; `cargo build -p
    // embeddings-server` would resolve other features (no dev-dependencies)
    // and rebuild most of the tree, minutes on two cores.
    step(
        "python: server build (the test step's)",
        &["test", "--workspace", "--no-run"],
        &test_env,
    )?;
    let server = target_dir(&root).join("debug").join("embeddings-server");
    println!(
        "\n==> xtask ci: python: pytest -q {} (server {})",
        python::TESTS,
        server.display()
    );
    let t = Instant::now();
    python::pytest(&venv_python, &server, &root.join("models"))?;
    println!("==> xtask ci: python: passed in {:.1?}", t.elapsed());
    step(
        "doc",
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The one optional default feature (`embeddings-health`'s `toml`). A
    // workspace-wide `--no-default-features` build does not test it: the
    // pipeline's dependency turns it back on.
    step(
        "no-default-features",
        &["check", "-p", "embeddings-health", "--no-default-features"],
        &[],
    )?;

    // The `cuda` feature, compiled with the toolkit from PyPI (no GPU
    // needed), warnings denied; then the tests that make sense without a GPU
    // against that binary: it links no CUDA library, starts, serves on the
    // CPU, and reports a CUDA configuration's GPU as unavailable, with why.
    println!("\n==> xtask ci: cuda: toolkit and build (target/cuda/)");
    let t = Instant::now();
    let cuda_server = cuda::build(false)?;
    println!("==> xtask ci: cuda: built in {:.1?}", t.elapsed());
    let cuda_server = cuda_server.to_string_lossy().into_owned();
    step(
        "cuda: tests without a GPU",
        // `--workspace`, as the test step: `-p embeddings-server` alone
        // resolves other features and recompiles the candle crates (minutes).
        &["test", "--workspace", "--test", "device", "--", "--ignored"],
        &[("EMBEDDINGS_CUDA_SERVER", cuda_server.as_str())],
    )?;

    println!("\n==> xtask ci: all green in {:.1?}", started.elapsed());
    Ok(())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the
/// workspace root), else `target/` in the workspace.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
}
