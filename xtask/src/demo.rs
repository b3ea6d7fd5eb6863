//! `cargo xtask demo`: runs the metrics demo (`crates/embeddings-metrics/examples/demo.rs`)
//! in release mode: a concurrent workload recorded into `PipelineMetrics`, then
//! the JSON snapshot and the Prometheus exposition.

use std::process::Command;

use crate::{Result, project_root};

pub(crate) fn run(args: &[String]) -> Result {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "embeddings-metrics",
            "--example",
            "demo",
            "--",
        ])
        .args(args)
        .current_dir(project_root())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the demo failed ({status})"))
    }
}
