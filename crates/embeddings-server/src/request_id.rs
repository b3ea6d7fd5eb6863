//! Request ids: taken from the `x-request-id` header when it is usable,
//! generated otherwise, and returned on every response, put in the tracing
//! span and in every error body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id we keep; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of one request, available to handlers as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client id is kept when it is 1..=128 visible ASCII characters (no spaces
/// or control characters), so it is safe in logs and headers.
fn acceptable(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A new id: unique within the process (a counter) and very likely across
/// restarts (the start time in nanoseconds), formatted like
/// `0189a3c2f1d4e5b6-000000000000002a`.
fn generate() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{epoch:016x}-{n:016x}")
}

/// Middleware: resolves the id, runs the request inside a span carrying it,
/// and sets the header on the response.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(generate, str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_checked() {
        assert!(acceptable("abc-123"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable("new\nline"));
        assert!(!acceptable(&"x".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(acceptable(&"x".repeat(MAX_REQUEST_ID_LEN)));
    }

    #[test]
    fn generated_ids_are_unique_and_acceptable() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(acceptable(&a) && acceptable(&b));
    }
}
