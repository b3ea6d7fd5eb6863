//! `cargo xtask py-setup`: the Python virtual environment for the client
//! compatibility tests in `tests/python/` (the real `openai`,
//! `huggingface_hub` and LlamaIndex clients against the real server binary).
//!
//! The venv lives at `target/py-venv` (ignored by git, removed by
//! `cargo clean`) and is built with `python3 -m venv` and
//! `pip install -r tests/python/requirements.txt`. The SHA-256 of the
//! requirements file is stored inside it once the install has succeeded, so
//! the command is a no-op while the pins are unchanged and rebuilds the venv
//! from scratch when they change (or when an earlier install broke off).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::{Result, project_root, run_checked};

/// The pinned client libraries, relative to the workspace root.
pub(crate) const REQUIREMENTS: &str = "tests/python/requirements.txt";
/// The test suite, relative to the workspace root.
pub(crate) const TESTS: &str = "tests/python";
/// The venv, relative to the workspace root.
const VENV: &str = "target/py-venv";
/// The file inside the venv holding the SHA-256 of the requirements it was
/// built from; written last, so its presence means the install completed.
const STAMP: &str = "requirements.sha256";
/// The oldest Python the pins install on (`openai` needs `httpx2`, which
/// requires 3.11).
const MIN_PYTHON: (u32, u32) = (3, 11);

/// `cargo xtask py-setup`: makes sure the venv is current and prints the path
/// of its interpreter.
pub(crate) fn run() -> Result {
    let python = ensure_venv()?;
    println!("{}", python.display());
    Ok(())
}

/// Returns the venv's `python`, creating or rebuilding the venv first when it
/// is missing or was built from other requirements.
pub(crate) fn ensure_venv() -> Result<PathBuf> {
    let root = project_root();
    let requirements = root.join(REQUIREMENTS);
    let wanted = sha256_hex(
        &fs::read(&requirements)
            .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?,
    );
    let venv = root.join(VENV);
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP);
    if python.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        println!(
            "xtask: {} is up to date with {REQUIREMENTS}",
            venv.display()
        );
        return Ok(python);
    }

    let base = find_python()?;
    if venv.exists() {
        println!(
            "xtask: rebuilding {} ({REQUIREMENTS} changed or the last install did not finish)",
            venv.display()
        );
        fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove the old venv {}: {e}", venv.display()))?;
    }
    let started = Instant::now();
    println!("xtask: creating {} with {base}", venv.display());
    run_checked(
        Command::new(&base).args(["-m", "venv"]).arg(&venv),
        &format!("{base} -m venv"),
        "on Debian, `apt-get install python3-venv` provides the venv module",
    )?;
    if !python.is_file() {
        return Err(format!(
            "`{base} -m venv` succeeded but left no {}",
            python.display()
        ));
    }
    println!("xtask: installing the pinned clients from {REQUIREMENTS} (PyPI)");
    run_checked(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
        "pip install -r tests/python/requirements.txt",
        "check that PyPI is reachable from this machine and that the pinned versions still exist",
    )?;
    fs::write(&stamp, format!("{wanted}\n"))
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    println!(
        "xtask: {} ready in {:.1?}",
        venv.display(),
        started.elapsed()
    );
    Ok(python)
}

/// Finds a Python 3 of at least [`MIN_PYTHON`] that has the `venv` and
/// `ensurepip` modules (`python3 -m venv` needs both to give the venv a pip).
fn find_python() -> Result<String> {
    let probe = format!(
        "import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= {MIN_PYTHON:?} else 3)"
    );
    let mut seen = Vec::new();
    for candidate in ["python3", "python"] {
        let Ok(out) = Command::new(candidate).args(["-c", &probe]).output() else {
            continue;
        };
        if out.status.success() {
            return Ok(candidate.to_owned());
        }
        let version = Command::new(candidate)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let why = if out.status.code() == Some(3) {
            "too old".to_owned()
        } else {
            "lacks the venv or ensurepip module".to_owned()
        };
        seen.push(format!("`{candidate}` ({version}) {why}"));
    }
    let (major, minor) = MIN_PYTHON;
    let seen = if seen.is_empty() {
        "no python3 on PATH".to_owned()
    } else {
        seen.join("; ")
    };
    Err(format!(
        "the Python client tests need Python >= {major}.{minor} with the venv module ({seen}); \
         on Debian: apt-get install python3 python3-venv"
    ))
}

/// The SHA-256 of `bytes`, as lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `python -m pytest -q tests/python` with the venv's interpreter, against the
/// server binary `server` and the models in `models_dir`.
pub(crate) fn pytest(python: &Path, server: &Path, models_dir: &Path) -> Result {
    let root = project_root();
    let status = Command::new(python)
        .args(["-m", "pytest", "-q", TESTS])
        .env("EMBEDDINGS_SERVER_BIN", server)
        .env("EMBEDDINGS_MODELS_DIR", models_dir)
        // No __pycache__ folders in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root)
        .status()
        .map_err(|e| format!("could not run {} -m pytest: {e}", python.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the Python client tests failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_of_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn requirements_pin_every_package_exactly() {
        let path = project_root().join(REQUIREMENTS);
        let text = fs::read_to_string(&path).unwrap_or_default();
        let pins: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(!pins.is_empty(), "{} lists no package", path.display());
        for line in pins {
            assert!(line.contains("=="), "{line:?} is not pinned with ==");
        }
    }
}
