//! `cargo xtask serve [ARGS]`: fetches the model when it is missing, then runs
//! the release build of `embeddings-server` with `--models-dir models`
//! (unless the arguments name their own) and any further arguments (for example `--bind 0.0.0.0:8080`).
//!
//! `cargo xtask serve --cuda [ARGS]` does the same with the CUDA build
//! (toolkit and run-time libraries from PyPI, see `cuda.rs`); the server
//! still needs `--config` with `device = "cuda"` to use the GPU, and the
//! NVIDIA driver to open it.

use std::process::Command;

use crate::{Result, cuda, fetch_models, project_root};

pub(crate) fn run(args: &[String]) -> Result {
    fetch_models::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = project_root();
    let mut command = Command::new(cargo);
    let args = match args.split_first() {
        Some((first, rest)) if first == "--cuda" => {
            let toolkit = cuda::ensure(true)?;
            let mut library_path = vec![toolkit.lib_dir()];
            if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
                library_path.extend(std::env::split_paths(&path));
            }
            let library_path =
                std::env::join_paths(library_path).map_err(|e| format!("LD_LIBRARY_PATH: {e}"))?;
            command
                .arg("run")
                .args(cuda::cargo_args(true)?)
                .arg("--")
                .envs(toolkit.build_env())
                .env("LD_LIBRARY_PATH", library_path);
            rest
        }
        _ => {
            command.args(["run", "--release", "-p", "embeddings-server", "--"]);
            args
        }
    };
    // The server rejects a repeated flag: the user's own `--models-dir` wins.
    if !args
        .iter()
        .any(|a| a == "--models-dir" || a.starts_with("--models-dir="))
    {
        command.arg("--models-dir").arg(root.join("models"));
    }
    let status = command
        .args(args)
        .current_dir(&root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("embeddings-server exited with {status}"))
    }
}
