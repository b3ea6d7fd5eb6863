//! Keeps absolute filesystem paths out of what clients read: error bodies,
//! `/health`, `/info` and the probes name `…/parent/file` instead of the
//! whole path, which tells a stranger how the host is laid out. The log keeps
//! the full paths for the operator; `--show-paths` puts them back in the
//! answers too (for debugging).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether answers show full paths (`--show-paths`); process-wide, because
/// error bodies are rendered where no server state is at hand.
static SHOW_PATHS: AtomicBool = AtomicBool::new(false);

/// Sets whether answers show full paths.
pub fn show_paths(show: bool) {
    SHOW_PATHS.store(show, Ordering::Relaxed);
}

/// Characters that can come right before a path in a message.
fn opens_path(previous: Option<char>) -> bool {
    previous.is_none_or(|c| c.is_whitespace() || "`\"'(=:[{,".contains(c))
}

/// Characters that end a path in a message.
fn ends_path(c: char) -> bool {
    c.is_whitespace() || "`\"'),;]}".contains(c)
}

/// `text` with each absolute path of three or more components shortened to
/// its last two (`/home/ci/models/m/config.json` → `…/m/config.json`);
/// shorter ones (`/health`, `/v1/embeddings`) are routes, kept as they are.
#[must_use]
pub fn paths(text: &str) -> Cow<'_, str> {
    if SHOW_PATHS.load(Ordering::Relaxed) || !text.contains('/') {
        return Cow::Borrowed(text);
    }
    shorten(text)
}

fn shorten(text: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut previous = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '/' && opens_path(previous) {
            let end = rest.find(ends_path).unwrap_or(rest.len());
            let path = &rest[..end];
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            if parts.len() >= 3 {
                out.push('…');
                for p in &parts[parts.len() - 2..] {
                    out.push('/');
                    out.push_str(p);
                }
                if path.ends_with('/') {
                    out.push('/');
                }
                changed = true;
            } else {
                out.push_str(path);
            }
            previous = path.chars().last();
            rest = &rest[end..];
            continue;
        }
        out.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Shortens the paths in every string of a JSON document.
pub fn json(value: &mut serde_json::Value) {
    if SHOW_PATHS.load(Ordering::Relaxed) {
        return;
    }
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(short) = shorten(s) {
                *s = short;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(json),
        serde_json::Value::Object(map) => map.values_mut().for_each(json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_absolute_paths_keep_only_their_last_two_parts() {
        assert_eq!(
            shorten("cannot read /home/ci/work/models/mini/config.json: not found"),
            "cannot read …/mini/config.json: not found"
        );
        assert_eq!(
            shorten("model folder `/srv/a/b/` missing"),
            "model folder `…/a/b/` missing"
        );
        assert_eq!(
            shorten("(\"/tmp/x/y/z\")"),
            "(\"…/y/z\")",
            "quoted and bracketed paths"
        );
    }

    #[test]
    fn routes_relative_paths_and_plain_slashes_are_kept() {
        for text in [
            "see /health for the reasons",
            "POST /v1/embeddings",
            "models/all-MiniLM-L6-v2/config.json",
            "1/2 of the slots",
            "ORG/NAME",
        ] {
            assert!(matches!(shorten(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn json_strings_are_shortened_everywhere_in_the_document() {
        let mut v = serde_json::json!({
            "reason": "missing /a/b/c/d.json",
            "list": ["/x/y/z/w", 3],
            "nested": {"ok": "/health"}
        });
        json(&mut v);
        assert_eq!(v["reason"], "missing …/c/d.json");
        assert_eq!(v["list"][0], "…/z/w");
        assert_eq!(v["nested"]["ok"], "/health");
    }
}
