//! External tools the tests need, installed by the project itself so a fresh
//! machine needs no manual step.

use std::path::PathBuf;
use std::process::Command;

use crate::Result;

/// Returns the path of `promtool`, installing Debian's `prometheus` package
/// when it is missing (CI runs as root; elsewhere `sudo` is tried).
pub(crate) fn ensure_promtool() -> Result<PathBuf> {
    if let Some(path) = which("promtool") {
        println!("xtask: promtool found at {}", path.display());
        return Ok(path);
    }
    println!("xtask: promtool not found; installing Debian package `prometheus`");
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| -> Result {
        let mut cmd = if as_root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let status = cmd.status().map_err(|e| {
            format!(
                "could not run apt-get ({e}); install promtool by hand: apt-get install prometheus"
            )
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed ({status}); install promtool by hand: apt-get install prometheus",
                args.join(" ")
            ))
        }
    };
    apt(&["update", "-qq"])?;
    apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "prometheus",
    ])?;
    which("promtool")
        .ok_or_else(|| "promtool is still missing after installing `prometheus`".to_owned())
}

/// Finds an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
