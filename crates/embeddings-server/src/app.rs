//! The router, the shared state and the handlers.
//!
//! The server binds before the pipeline has loaded: until then the embedding
//! endpoints answer 503 and the readiness and startup probes fail, while
//! `/metrics`, `/health` and `/livez` work. None of the observability
//! endpoints touches the inference queue, so they stay fast under load;
//! they are in `ops.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Extension, Router};
use chrono::{DateTime, Utc};
use embeddings_pipeline::{EmbedInput, EmbedOptions, EmbedResponse};
use embeddings_types::ModelId;
use serde::Serialize;
use tower::ServiceBuilder;

use crate::api::{self, EmbedRequest};
use crate::auth::{self};
use crate::error::{ApiError, ErrorKind};
use crate::openai;
use crate::ops;
pub use crate::ops::render_metrics;
use crate::request_id::{self, RequestId};
use crate::routes::{Endpoint, Group};
use crate::tei;

pub use crate::state::{AppState, Limits, Loaded, LoaderGuard};

/// Builds the router over `state`. The embedding routes (and, with
/// `--protect-observability`, `/metrics`, `/health`, `/info`) sit behind the
/// API-key check as whole sub-routers, so a route added to one of them is
/// guarded without a list to update; the probes never are.
pub fn router(state: Arc<AppState>) -> Router {
    let guard = || middleware::from_fn_with_state(Arc::clone(&state), auth::require_key);
    // At most `--max-concurrent-requests` embedding requests at once; more
    // are shed at once with 429 (counted as `code="429"`), never queued.
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            |Extension(id): Extension<RequestId>, _: BoxError| async move {
                ApiError::new(
                    ErrorKind::Overloaded,
                    &id,
                    "too many embedding requests in flight (--max-concurrent-requests); retry shortly",
                )
                .retry_after(1)
            },
        ))
        .load_shed()
        .concurrency_limit(state.limits.max_concurrent_requests);
    let (mut compute, mut catalog, mut observability, mut probes) =
        (Router::new(), Router::new(), Router::new(), Router::new());
    for endpoint in Endpoint::ALL {
        let Some(path) = endpoint.path() else {
            continue;
        };
        let handler = match endpoint {
            Endpoint::EmbedMulti => post(embed),
            Endpoint::Embed | Endpoint::Root => post(tei::embed),
            Endpoint::EmbedSparse => post(tei::embed_sparse),
            Endpoint::EmbedAll => post(tei::embed_all),
            Endpoint::Tokenize => post(tei::tokenize),
            Endpoint::Decode => post(tei::decode),
            Endpoint::OpenAiEmbeddings | Endpoint::Embeddings => post(openai::embeddings),
            Endpoint::OpenAiModels => get(openai::models),
            Endpoint::OpenAiModel => get(openai::model),
            Endpoint::Metrics => get(ops::metrics),
            Endpoint::Health => get(ops::health),
            Endpoint::Info => get(ops::info),
            Endpoint::Alerts => get(crate::alerts::alerts),
            Endpoint::Livez => get(ops::livez),
            Endpoint::Quality => get(crate::quality::quality),
            Endpoint::Readyz => get(ops::readyz),
            Endpoint::Startupz => get(ops::startupz),
            Endpoint::Other => continue,
        };
        let group = match endpoint.group() {
            Group::Compute => &mut compute,
            Group::Catalog => &mut catalog,
            Group::Observability => &mut observability,
            Group::Probe => &mut probes,
        };
        *group = std::mem::take(group).route(path, handler);
    }
    let compute = compute.route_layer(shed).route_layer(guard());
    let catalog = catalog.route_layer(guard());
    if state.protect_observability {
        observability = observability.route_layer(guard());
    }
    Router::new()
        .merge(compute)
        .merge(catalog)
        .merge(observability)
        .merge(probes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .layer(middleware::from_fn(crate::error::render_errors))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// Counts every answered request exactly once, by endpoint and status.
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Endpoint::Other, |p| Endpoint::from_path(p.as_str()))
        .index();
    let id = request_id(request.extensions());
    let response = next.run(request).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .http
        .record(endpoint, response.status().as_u16(), micros, id.as_str());
    response
}

pub(crate) fn request_id(headers: &axum::http::Extensions) -> RequestId {
    headers
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId("unknown".to_owned()))
}

async fn not_found(request: Request) -> ApiError {
    let id = request_id(request.extensions());
    ApiError::new(
        ErrorKind::NotFound,
        &id,
        format!(
            "no endpoint at {}; the endpoints are {}",
            request.uri().path(),
            Endpoint::listing()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    let id = request_id(request.extensions());
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        &id,
        format!(
            "{} does not accept {}",
            request.uri().path(),
            request.method()
        ),
    )
}

/// Reads the body within the size limit and before `deadline`.
pub(crate) async fn read_body(
    state: &AppState,
    id: &RequestId,
    deadline: tokio::time::Instant,
    request: Request,
) -> Result<Bytes, ApiError> {
    let limit = state.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            id,
            format!(
                "the body is larger than {limit} bytes; send fewer or shorter inputs per request"
            ),
        )
    };
    // A declared length over the limit is refused at once, before any of
    // the body is read (a client cannot hold the connection by trickling it).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = request.into_body();
    // The body has its own, shorter deadline: a client trickling it cannot
    // hold a connection for the whole compute budget.
    let body_secs = state
        .limits
        .body_timeout_secs
        .min(state.limits.request_timeout_secs);
    let body_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(body_secs));
    match tokio::time::timeout_at(body_deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            ErrorKind::RequestTimeout,
            id,
            format!("the request body did not arrive within {body_secs} s"),
        )),
        Ok(Err(e)) => {
            let over = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .any(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    ErrorKind::MalformedJson,
                    id,
                    format!("could not read the request body: {e}"),
                ))
            }
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Parses JSON: syntax errors (and invalid UTF-8) are 400, content errors 422.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    id: &RequestId,
    bytes: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Data => ErrorKind::Validation,
            Category::Syntax | Category::Eof | Category::Io => ErrorKind::MalformedJson,
        };
        let hint = match kind {
            ErrorKind::Validation => {
                "; see the schema in the README (`inputs` is a string or an array of strings)"
            }
            _ => "; the body must be a UTF-8 JSON object",
        };
        ApiError::new(kind, id, format!("invalid request body: {e}{hint}"))
    })
}

pub(crate) fn check_inputs(
    state: &AppState,
    id: &RequestId,
    inputs: &[String],
) -> Result<(), ApiError> {
    let limits = &state.limits;
    if inputs.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Validation,
            id,
            "no inputs: send at least one text",
        ));
    }
    if inputs.len() > limits.max_inputs {
        return Err(ApiError::new(
            ErrorKind::Validation,
            id,
            format!(
                "{} inputs in one request; the limit is {}: split the request",
                inputs.len(),
                limits.max_inputs
            ),
        ));
    }
    for (i, text) in inputs.iter().enumerate() {
        let chars = text.chars().count();
        if chars > limits.max_input_chars {
            return Err(ApiError::new(
                ErrorKind::Validation,
                id,
                format!(
                    "input {i} has {chars} characters; the limit is {}: shorten or split it",
                    limits.max_input_chars
                ),
            ));
        }
    }
    Ok(())
}

fn parse_models(id: &RequestId, names: &[String]) -> Result<Vec<ModelId>, ApiError> {
    names
        .iter()
        .map(|n| {
            n.parse::<ModelId>()
                .map_err(|e| ApiError::new(ErrorKind::Validation, id, e.to_string()))
        })
        .collect()
}

/// Runs a request through the pipeline's queue, mapping failures to HTTP.
pub(crate) async fn run_pipeline(
    state: &AppState,
    id: &RequestId,
    deadline: tokio::time::Instant,
    inputs: Vec<EmbedInput>,
    options: EmbedOptions,
) -> Result<EmbedResponse, ApiError> {
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(id));
    };
    // The pipeline gets the same deadline, so it drops queued work nobody
    // waits for and counts the timeout itself, once.
    let options = EmbedOptions {
        deadline: Some(deadline.into_std()),
        request_id: Some(id.as_str().into()),
        ..options
    };
    let mut ticket = pipeline
        .submit(inputs, options)
        .map_err(|e| ApiError::from_pipeline(id, &e))?;
    let result = tokio::select! {
        // The answer first: one that is ready wins over a deadline that
        // passed meanwhile (it was counted as served).
        biased;
        result = &mut ticket => result,
        () = tokio::time::sleep_until(deadline) => {
            if ticket.is_committed() {
                // The pipeline has already decided (and counted) the answer:
                // take it rather than report a timeout it did not count.
                ticket.await
            } else {
                // Dropping the ticket: the pipeline counts this `timeout`.
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    id,
                    format!(
                        "the embedding did not finish within {} s; retry with fewer inputs",
                        state.limits.request_timeout_secs
                    ),
                ));
            }
        }
    };
    result.map_err(|e| ApiError::from_pipeline(id, &e))
}

pub(crate) fn server_timing(response: &mut Response, timings: &api::TimingsJson) {
    let value = format!(
        "queue;dur={:.3}, tokenize;dur={:.3}, inference;dur={:.3}, total;dur={:.3}",
        timings.queue, timings.tokenization, timings.inference, timings.total
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert("server-timing", v);
    }
}

pub(crate) fn timings(response: &EmbedResponse) -> api::TimingsJson {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    api::TimingsJson {
        queue: ms(response.timings.queue_wait),
        tokenization: ms(response.timings.tokenization),
        inference: ms(response.timings.inference),
        total: ms(response.timings.total),
    }
}

pub(crate) fn json_response<T: Serialize>(
    status: StatusCode,
    id: &RequestId,
    body: &T,
) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => ApiError::new(
            ErrorKind::Internal,
            id,
            format!("could not encode the response: {e}"),
        )
        .into_response(),
    }
}

async fn embed(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let deadline = state.limits.deadline();
    let bytes = read_body(&state, &id, deadline, request).await?;
    let body: EmbedRequest = parse_json(&id, &bytes)?;
    let texts = body.inputs.into_vec();
    check_inputs(&state, &id, &texts)?;
    let slots = body
        .models
        .as_deref()
        .map(|m| parse_models(&id, m))
        .transpose()?;
    let timestamp = body
        .timestamp
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::new(
                        ErrorKind::Validation,
                        &id,
                        format!(
                            "`timestamp` {t:?} is not RFC 3339 ({e}); use e.g. 2025-01-01T12:00:00Z"
                        ),
                    )
                })
        })
        .transpose()?;
    let base = body.position.unwrap_or(0);
    let inputs = texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let mut input = EmbedInput::new(text).with_position(base.saturating_add(i as u64));
            if let Some(t) = timestamp {
                input = input.with_timestamp(t);
            }
            input
        })
        .collect();
    let options = EmbedOptions {
        slots,
        fused: body.fused,
        ..EmbedOptions::default()
    };
    let result = run_pipeline(&state, &id, deadline, inputs, options).await?;
    let timings = timings(&result);
    let json = api::EmbedResponseJson {
        data: api::items(&result.embeddings),
        timings_ms: timings,
    };
    let mut response = json_response(StatusCode::OK, &id, &json);
    server_timing(&mut response, &timings);
    Ok(response)
}
