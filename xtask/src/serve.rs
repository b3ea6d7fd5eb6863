//! `cargo xtask serve [ARGS]`: fetches the model when it is missing, then runs
//! the release build of `embeddings-server` with `--models-dir models`
//! (unless the arguments name their own) and any further arguments (for example `--bind 0.0.0.0:8080`).

use std::process::Command;

use crate::{Result, fetch_models, project_root};

pub(crate) fn run(args: &[String]) -> Result {
    fetch_models::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = project_root();
    let mut command = Command::new(cargo);
    command.args(["run", "--release", "-p", "embeddings-server", "--"]);
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
