//! The one error type of the HTTP layer: every failure answers with a JSON
//! body `{"error": message, "kind": kind, "request_id": id}` and the status
//! that tells the client what to do; on `/v1/*` and the TEI routes the same
//! error is rendered in OpenAI's or TEI's shape ([`render_errors`]), so
//! their clients show the message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use embeddings_pipeline::PipelineError;

use crate::request_id::RequestId;

/// What went wrong, as a stable machine-readable `kind` and an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the body is not valid JSON (or not UTF-8); fix the syntax.
    MalformedJson,
    /// 413: the body is larger than `--max-body-bytes`; send less per request.
    PayloadTooLarge,
    /// 422: the JSON is well-formed but its content is not acceptable (wrong
    /// types, unknown slot, too many inputs, an input too long, a bad timestamp).
    Validation,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed,
    /// 408: the client did not send its request within the time limit.
    RequestTimeout,
    /// 429: the pipeline's queue is full; retry after `Retry-After` seconds.
    Overloaded,
    /// 503: the pipeline is not loaded (still loading, or it failed to load).
    Unavailable,
    /// 504: the embedding did not finish within the time limit.
    Timeout,
    /// 500: a failure inside the pipeline; the message says which.
    Internal,
    /// 401: the route needs an API key (`Authorization: Bearer KEY`) and
    /// none, or a wrong one, was sent.
    Unauthorized,
    /// 400: nothing to do (no inputs, no ids): TEI's `Empty`.
    Empty,
}

impl ErrorKind {
    /// The HTTP status for this kind.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Empty => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable `kind` string of the error body.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Validation => "validation",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::Empty => "empty",
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The class of error.
    pub kind: ErrorKind,
    /// A message for the person reading it: what was wrong and what to do.
    pub message: String,
    /// The request it answers.
    pub request_id: String,
    /// Seconds after which a retry makes sense (sent as `Retry-After`).
    pub retry_after_secs: Option<u64>,
    /// The request field at fault, when one is (OpenAI's `param`).
    pub param: Option<&'static str>,
}

impl ApiError {
    /// An error of `kind` for the request `id`.
    pub fn new(kind: ErrorKind, id: &RequestId, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            request_id: id.as_str().to_owned(),
            retry_after_secs: None,
            param: None,
        }
    }

    /// Names the request field at fault.
    #[must_use]
    pub fn param(mut self, field: &'static str) -> Self {
        self.param = Some(field);
        self
    }

    /// OpenAI's error `type` for this error.
    #[must_use]
    pub const fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Overloaded => "rate_limit_error",
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Internal => "server_error",
            ErrorKind::MalformedJson
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Validation
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::Empty => "invalid_request_error",
        }
    }

    /// TEI's `error_type` for this error, and the status TEI answers it
    /// with where TEI has one (its own statuses: `Validation` 422, `Empty`
    /// 400, `Overloaded` 429, `Backend` 424, `Unhealthy` 503); the limits
    /// TEI does not have (401, 404, 405, 408, 413, 504, malformed JSON)
    /// keep ours.
    #[must_use]
    pub const fn tei_type(&self) -> (&'static str, Option<StatusCode>) {
        match self.kind {
            ErrorKind::Validation => ("Validation", Some(StatusCode::UNPROCESSABLE_ENTITY)),
            ErrorKind::Empty => ("Empty", Some(StatusCode::BAD_REQUEST)),
            ErrorKind::Overloaded => ("Overloaded", Some(StatusCode::TOO_MANY_REQUESTS)),
            ErrorKind::Internal => ("Backend", Some(StatusCode::FAILED_DEPENDENCY)),
            ErrorKind::Unavailable => ("Unhealthy", Some(StatusCode::SERVICE_UNAVAILABLE)),
            ErrorKind::Timeout => ("Backend", None),
            ErrorKind::MalformedJson
            | ErrorKind::PayloadTooLarge
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::Unauthorized => ("Validation", None),
        }
    }

    /// The same error in TEI's shape, `{"error", "error_type"}`, keeping the
    /// headers of `response` (which rendered it in ours).
    #[must_use]
    pub fn into_tei(self, response: Response) -> Response {
        let (error_type, status) = self.tei_type();
        let body = serde_json::json!({
            "error": crate::redact::paths(&self.message),
            "error_type": error_type,
        });
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        if let Some(status) = status {
            parts.status = status;
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::from_parts(parts, axum::body::Body::from(bytes))
    }

    /// The same error in OpenAI's shape, `{"error": {message, type, param,
    /// code}, "request_id"}` (`code` is our `kind`), keeping the status and
    /// headers of `response` (which rendered it in ours).
    #[must_use]
    pub fn into_openai(self, response: Response) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": crate::redact::paths(&self.message),
                "type": self.openai_type(),
                "param": self.param,
                "code": self.kind.as_str(),
            },
            "request_id": self.request_id,
        });
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::from_parts(parts, axum::body::Body::from(bytes))
    }

    /// Adds a `Retry-After` header.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The answer to a request the pipeline refused or failed: a status
    /// from the error's kind (client mistakes 4xx, the service's own
    /// failures 5xx), sizes over a limit 413, and `Retry-After` on 429 when
    /// there is a delay to advise.
    #[must_use]
    pub fn from_pipeline(id: &RequestId, error: &PipelineError) -> Self {
        use embeddings_types::ErrorKind as Kind;
        match error {
            PipelineError::RequestTooLarge { .. } | PipelineError::ResponseTooLarge { .. } => {
                return Self::new(ErrorKind::PayloadTooLarge, id, error.to_string());
            }
            PipelineError::OverBudget { retry_after, .. } => {
                let refused = Self::new(ErrorKind::Overloaded, id, error.to_string());
                // No measured drain rate: no delay is made up.
                return match retry_after {
                    Some(d) => refused.retry_after(d.as_secs().max(1)),
                    None => refused,
                };
            }
            _ => {}
        }
        let kind = match error.kind() {
            Kind::Validation | Kind::Tokenization => ErrorKind::Validation,
            Kind::Overload => {
                return Self::new(ErrorKind::Overloaded, id, error.to_string()).retry_after(1);
            }
            Kind::Timeout => ErrorKind::Timeout,
            // Only the pipeline's own bookkeeping sees a cancellation (the
            // caller is gone); an internal error if one ever reaches here.
            Kind::Inference | Kind::Internal | Kind::Cancelled => ErrorKind::Internal,
        };
        Self::new(kind, id, error.to_string())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    kind: &'a str,
    request_id: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = crate::redact::paths(&self.message);
        let body = Body {
            error: &message,
            kind: self.kind.as_str(),
            request_id: &self.request_id,
        };
        let json =
            serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
        let mut response = (self.kind.status(), json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // Kept for `render_errors`, which re-renders it for OpenAI and TEI clients.
        response.extensions_mut().insert(self);
        response
    }
}

/// Renders the errors of each surface in its clients' shape: OpenAI's on
/// `/v1/*` (see [`ApiError::into_openai`]), TEI's on the TEI routes (see
/// [`ApiError::into_tei`]), ours elsewhere. Covers the routes' own errors
/// and those of the layers in front of them (API key, load shedding, 404,
/// 405).
pub async fn render_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let style = crate::routes::Style::of(&request);
    let mut response = next.run(request).await;
    let Some(error) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    match style {
        crate::routes::Style::OpenAi => error.into_openai(response),
        crate::routes::Style::Tei => error.into_tei(response),
        crate::routes::Style::Native => response,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id() -> RequestId {
        RequestId("test".to_owned())
    }

    #[test]
    fn pipeline_refusals_map_to_the_status_that_tells_the_client_what_to_do() {
        let over = |retry_after| PipelineError::OverBudget {
            tokens: 10,
            in_use: 95,
            budget: 100,
            retry_after,
        };
        let e = ApiError::from_pipeline(&id(), &over(Some(Duration::from_millis(2500))));
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert_eq!(e.retry_after_secs, Some(2));
        let e = ApiError::from_pipeline(&id(), &over(None));
        assert_eq!(e.retry_after_secs, None, "no measured delay: none advised");
        let e = ApiError::from_pipeline(
            &id(),
            &PipelineError::RequestTooLarge {
                tokens: 200,
                budget: 100,
            },
        );
        assert_eq!(e.kind.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let e = ApiError::from_pipeline(&id(), &PipelineError::Overloaded { capacity: 4 });
        assert_eq!(e.retry_after_secs, Some(1));
        let e = ApiError::from_pipeline(
            &id(),
            &PipelineError::DeadlineExceeded {
                after: Duration::from_secs(1),
            },
        );
        assert_eq!(e.kind.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn every_kind_has_a_tei_error_type_and_tei_statuses_where_tei_has_them() {
        use ErrorKind as K;
        let cases = [
            (K::Validation, "Validation", 422),
            (K::Empty, "Empty", 400),
            (K::Overloaded, "Overloaded", 429),
            (K::Internal, "Backend", 424),
            (K::Unavailable, "Unhealthy", 503),
            (K::Timeout, "Backend", 504),
            (K::MalformedJson, "Validation", 400),
            (K::PayloadTooLarge, "Validation", 413),
            (K::Unauthorized, "Validation", 401),
        ];
        for (kind, error_type, status) in cases {
            let e = ApiError::new(kind, &id(), "why");
            let response = e.clone().into_response();
            let tei = e.into_tei(response);
            assert_eq!(tei.status().as_u16(), status, "{kind:?}");
            let (t, _) = ApiError::new(kind, &id(), "").tei_type();
            assert_eq!(t, error_type, "{kind:?}");
        }
    }
}
