//! API keys: `Authorization: Bearer KEY` on the embedding routes (and, with
//! `--protect-observability`, on `/metrics`, `/health` and `/info`). The
//! probes stay open, so an orchestrator needs no secret.
//!
//! Keys are held as SHA-256 digests and compared in constant time, so
//! neither a key's bytes nor its length leak through timing; a key is never
//! logged.

use std::path::Path;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::app::{AppState, request_id};
use crate::error::{ApiError, ErrorKind};

/// The accepted keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys, not even their digests.
        f.debug_struct("ApiKeys")
            .field("keys", &self.digests.len())
            .finish()
    }
}

/// Why the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file could not be read.
    #[error("cannot read the API key file {path}: {source}; check the path and its permissions")]
    File {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A key source was given (`--api-key`, `EMBEDDINGS_API_KEY`,
    /// `--api-key-file`) but holds no key: refusing to start is safer than
    /// silently serving without one.
    #[error(
        "an API key source was given but holds no key (empty EMBEDDINGS_API_KEY or --api-key, or a key file with only comments); set a key or remove the setting"
    )]
    NoKey,
    /// A key is shorter than the minimum.
    #[error(
        "an API key is {len} characters long; use at least {MIN_KEY_CHARS} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
}

/// The shortest key accepted: 16 characters (a guessable key is no key).
pub const MIN_KEY_CHARS: usize = 16;

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// The keys given on the command line (or `EMBEDDINGS_API_KEY`,
    /// comma-separated) plus those in `file` (one per line; blank lines and
    /// lines starting with `#` are skipped). `None` when no key source was
    /// given: the server is open.
    ///
    /// # Errors
    /// [`AuthError`] when the file cannot be read or a key is too short.
    pub fn load(keys: &[String], file: Option<&Path>) -> Result<Option<Self>, AuthError> {
        let mut all: Vec<String> = keys.iter().map(|k| k.trim().to_owned()).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
                path: path.display().to_string(),
                source,
            })?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let asked = !all.is_empty() || file.is_some();
        all.retain(|k| !k.is_empty());
        if asked && all.is_empty() {
            return Err(AuthError::NoKey);
        }
        if let Some(short) = all.iter().find(|k| k.chars().count() < MIN_KEY_CHARS) {
            return Err(AuthError::TooShort {
                len: short.chars().count(),
            });
        }
        Ok((!all.is_empty()).then(|| Self {
            digests: all.iter().map(|k| digest(k.as_bytes())).collect(),
        }))
    }

    /// Whether `headers` carry `Authorization: Bearer KEY` with an accepted
    /// key. Every key is compared, whichever matches.
    #[must_use]
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 7235).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
        else {
            return false;
        };
        let presented = digest(presented.trim().as_bytes());
        self.digests.iter().fold(false, |ok, key| {
            ok | constant_time_eq::constant_time_eq_32(key, &presented)
        })
    }
}

/// Refuses (401) a request without an accepted API key, on the routes it
/// guards (see [`crate::app::router`]). Inside the request counter, so each refusal is
/// counted once, as `code="401"`.
pub(crate) async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(keys) = &state.auth
        && !keys.allows(request.headers())
    {
        let id = request_id(request.extensions());
        let mut response = ApiError::new(
            ErrorKind::Unauthorized,
            &id,
            "this route needs an API key: send `Authorization: Bearer KEY` with a key the server was started with (--api-key-file, EMBEDDINGS_API_KEY or --api-key)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{ApiKeys, AuthError};

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn keys_from_flags_and_file_match_only_as_bearer_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# ops\n\nfile-key-0123456789\n").unwrap();
        let keys = ApiKeys::load(&["flag-key-0123456789".into()], Some(&file))
            .unwrap()
            .unwrap();
        assert!(keys.allows(&with("Bearer flag-key-0123456789")));
        assert!(keys.allows(&with("Bearer file-key-0123456789")));
        assert!(keys.allows(&with("BEARER file-key-0123456789")));
        assert!(!keys.allows(&with("Bearer flag-key-012345678")));
        assert!(!keys.allows(&with("flag-key-0123456789")));
        assert!(!keys.allows(&with("Basic flag-key-0123456789")));
        assert!(!keys.allows(&HeaderMap::new()));
        assert!(!format!("{keys:?}").contains("key-0123"));
    }

    #[test]
    fn no_key_is_an_open_server_and_short_or_unreadable_keys_are_errors() {
        assert!(ApiKeys::load(&[], None).unwrap().is_none());
        assert!(matches!(
            ApiKeys::load(&[" ".into()], None),
            Err(AuthError::NoKey)
        ));
        let dir = tempfile::tempdir().unwrap();
        let comments = dir.path().join("keys");
        std::fs::write(&comments, "# no key yet\n").unwrap();
        assert!(matches!(
            ApiKeys::load(&[], Some(&comments)),
            Err(AuthError::NoKey)
        ));
        assert!(matches!(
            ApiKeys::load(&["short".into()], None),
            Err(AuthError::TooShort { len: 5 })
        ));
        let missing = std::path::Path::new("/nonexistent/keys");
        assert!(matches!(
            ApiKeys::load(&[], Some(missing)),
            Err(AuthError::File { .. })
        ));
    }
}
