//! External tools the tests need, fetched by the project itself so a fresh
//! machine needs no manual step.
//!
//! They come from Debian's packages, **unpacked, never installed**: `apt-get
//! download` fetches the `.deb` and `dpkg-deb -x` extracts it under
//! `target/tools/<package>/`, so no maintainer script runs and no service
//! starts. `prometheus` gives `promtool` (and the server), and
//! `prometheus-alertmanager` gives `amtool`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, project_root};

/// `promtool`, from Debian's `prometheus` package.
pub(crate) fn ensure_promtool() -> Result<PathBuf> {
    debian_tool("prometheus", "promtool")
}

/// `amtool`, from Debian's `prometheus-alertmanager` package.
pub(crate) fn ensure_amtool() -> Result<PathBuf> {
    debian_tool("prometheus-alertmanager", "amtool")
}

/// `binary` from Debian package `package`, unpacked under
/// `target/tools/<package>/` when not there yet.
fn debian_tool(package: &str, binary: &str) -> Result<PathBuf> {
    let dir = project_root().join("target").join("tools").join(package);
    let path = dir.join("usr").join("bin").join(binary);
    if path.is_file() {
        println!("xtask: {binary} found at {}", path.display());
        return Ok(path);
    }
    println!("xtask: fetching {binary} (Debian package `{package}`, unpacked, not installed)");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !run(Command::new("apt-get")
        .args(["download", "-qq", package])
        .current_dir(&dir))
    {
        // The package lists may be missing on a fresh machine: fetch them
        // (this needs root, as CI is) and try once more.
        let updated = run(Command::new("apt-get").args(["update", "-qq"]));
        if !updated
            || !run(Command::new("apt-get")
                .args(["download", "-qq", package])
                .current_dir(&dir))
        {
            return Err(format!(
                "could not download Debian package `{package}` with apt-get (as root, run `apt-get update` first); it provides {binary}"
            ));
        }
    }
    let deb = newest_deb(&dir, package)?;
    if !run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir)) {
        return Err(format!("could not unpack {} with dpkg-deb", deb.display()));
    }
    if path.is_file() {
        println!("xtask: {binary} unpacked at {}", path.display());
        Ok(path)
    } else {
        Err(format!(
            "{} holds no usr/bin/{binary}; is `{package}` the right package?",
            deb.display()
        ))
    }
}

/// The `.deb` of `package` that `apt-get download` left in `dir`.
fn newest_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .max()
        .ok_or_else(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                dir.display()
            )
        })
}

/// Runs `cmd`; whether it started and succeeded.
fn run(cmd: &mut Command) -> bool {
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}
