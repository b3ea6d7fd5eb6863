//! Resolving a [`ModelSource`] to a folder on disk.

use std::path::{Path, PathBuf};

use crate::config::ModelSource;
use crate::error::LoadError;

/// The Hugging Face cache root: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`,
/// else `$HOME/.cache/huggingface`.
fn default_hf_home() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("HF_HOME")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("huggingface")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("huggingface")))
}

/// Resolves `source` to a model folder (which is not checked for content).
///
/// - `path`: absolute, or relative to `models_dir`.
/// - `hf_repo = "ORG/NAME"`: `<hf_home>/hub/models--ORG--NAME/snapshots/<rev>/`
///   where `<rev>` is the commit named by `refs/<revision>` (default
///   `refs/main`), or `revision` itself when it is a snapshot folder, or the
///   only snapshot when there is no ref.
pub(crate) fn resolve(
    name: &str,
    source: &ModelSource,
    models_dir: &Path,
) -> Result<PathBuf, LoadError> {
    if let Some(path) = &source.path {
        let dir = if path.is_absolute() {
            path.clone()
        } else {
            models_dir.join(path)
        };
        if !dir.is_dir() {
            return Err(LoadError::ModelDirNotFound {
                model: name.to_owned(),
                path: dir,
            });
        }
        return Ok(dir);
    }
    let repo = source.hf_repo.clone().unwrap_or_default();
    let fail = |reason: String| LoadError::HfCache {
        repo: repo.clone(),
        reason,
    };
    let home = source
        .hf_home
        .clone()
        .or_else(default_hf_home)
        .ok_or_else(|| fail("no cache root: set HF_HOME or `hf_home`".into()))?;
    let repo_dir = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    if !repo_dir.is_dir() {
        return Err(fail(format!("{} does not exist", repo_dir.display())));
    }
    let snapshots = repo_dir.join("snapshots");
    let revision = source.revision.as_deref().unwrap_or("main");
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = if ref_file.is_file() {
        std::fs::read_to_string(&ref_file)
            .map_err(|e| fail(format!("cannot read {}: {e}", ref_file.display())))?
            .trim()
            .to_owned()
    } else if snapshots.join(revision).is_dir() {
        revision.to_owned()
    } else if source.revision.is_some() {
        return Err(fail(format!(
            "revision `{revision}` is neither a ref under {} nor a snapshot",
            repo_dir.join("refs").display()
        )));
    } else {
        let entries = std::fs::read_dir(&snapshots)
            .map_err(|e| fail(format!("cannot list {}: {e}", snapshots.display())))?;
        let mut revs: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        revs.sort();
        match revs.as_slice() {
            [only] => only.clone(),
            [] => return Err(fail(format!("{} holds no snapshot", snapshots.display()))),
            many => {
                return Err(fail(format!(
                    "no refs/main and several snapshots ({}); set `revision`",
                    many.join(", ")
                )));
            }
        }
    };
    if commit.is_empty() || commit.contains('/') || commit.contains("..") {
        return Err(fail(format!(
            "ref `{revision}` holds an invalid commit `{commit}`"
        )));
    }
    let dir = snapshots.join(&commit);
    if !dir.is_dir() {
        return Err(fail(format!("snapshot {} does not exist", dir.display())));
    }
    Ok(dir)
}
