//! The operator's endpoints: `/metrics`, `/health`, the probes and
//! `/info`. None of them touches the inference queue.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use embeddings_health::ProbeResult;
use embeddings_metrics::{Encoder, Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use serde::Serialize;

use crate::app::{AppState, Limits, Loaded, json_response, request_id};
use crate::cpu::CpuPlan;
use crate::process::ProcessStats;
use crate::request_id::RequestId;

/// Whether the `Accept` header asks for OpenMetrics.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Renders every family: the pipeline's, the HTTP layer's, process figures and build info.
#[must_use]
pub fn render_metrics(state: &AppState, format: Format) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(96 * 1024);
    let mut encoder = Encoder::new(&mut out, format);
    let prefix = &state.metrics.config().prefix;
    let result = (|| -> std::fmt::Result {
        let stats = ProcessStats::read();
        // The device and cache gauges are read now too, so a scrape never
        // shows a stale GPU figure (or one the device can no longer give).
        if let Some(pipeline) = state.ready() {
            pipeline.refresh_gauges();
        }
        state.metrics.encode(&mut encoder)?;
        state.http.encode(&mut encoder)?;
        crate::process_families::encode(&mut encoder, prefix, &stats)?;
        crate::capacity_families::encode(&mut encoder, prefix, state)?;
        state.alerts.encode(&mut encoder, prefix)?;
        crate::state_families::encode(&mut encoder, prefix, state)?;
        let report = state.ready().and_then(|p| p.canary_report());
        state
            .quality
            .encode(&mut encoder, prefix, report.as_ref())?;
        encoder.finish()
    })();
    if result.is_err() {
        let _ = writeln!(out, "# rendering failed");
    }
    out
}

/// Whether the `Accept` header asks for JSON (and not for OpenMetrics).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// `GET /metrics`: Prometheus 0.0.4 text by default, OpenMetrics 1.0 (with
/// exemplars) when the `Accept` header names it, and the pipeline recorder's
/// [`MetricsSnapshot`](embeddings_types::MetricsSnapshot) as JSON (exact
/// counts, the latency quantiles the server computes) for `application/json`.
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if wants_json(&headers) && !wants_openmetrics(&headers) {
        let id = request_id(request.extensions());
        if let Some(pipeline) = state.ready() {
            pipeline.refresh_gauges();
        }
        return json_response(StatusCode::OK, &id, &state.metrics.snapshot());
    }
    let (format, content_type) = if wants_openmetrics(&headers) {
        (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE)
    } else {
        (Format::Prometheus, PROMETHEUS_CONTENT_TYPE)
    };
    let body = render_metrics(&state, format);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer whose strings may hold filesystem paths (load errors,
/// slot failures): shortened unless `--show-paths`.
fn redacted_json<T: Serialize>(status: StatusCode, id: &RequestId, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(mut value) => {
            crate::redact::json(&mut value);
            json_response(status, id, &value)
        }
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            id,
            &serde_json::json!({"error": format!("could not encode the answer: {e}")}),
        ),
    }
}

/// A probe's answer; a failed one also carries the load failure, when
/// there is one, so whoever reads the probe sees why.
#[derive(Serialize)]
struct ProbeBody<'a> {
    #[serde(flatten)]
    result: &'a ProbeResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn probe_response(state: &AppState, id: &RequestId, result: &ProbeResult) -> Response {
    let status =
        StatusCode::from_u16(result.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = if result.is_ok() {
        None
    } else {
        state
            .load_error()
            .map(|e| crate::redact::paths(&e.to_string()).into_owned())
    };
    json_response(status, id, &ProbeBody { result, reason })
}

pub(crate) async fn health(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    let report = state.health();
    let status = if report.verdict.can_serve() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    redacted_json(status, &id, &report)
}

pub(crate) async fn livez(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    probe_response(&state, &id, &state.health().probes.liveness)
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    probe_response(&state, &id, &state.health().probes.readiness)
}

pub(crate) async fn startupz(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    probe_response(&state, &id, &state.health().probes.startup)
}

#[derive(Serialize)]
struct Info<'a> {
    name: &'static str,
    version: &'static str,
    state: &'static str,
    load_error: Option<String>,
    limits: Limits,
    cpu: Option<&'a CpuPlan>,
    /// Every route, its method and the protocol it speaks.
    routes: Vec<crate::routes::RouteInfo>,
    pipeline: Option<serde_json::Value>,
    /// TEI's fields, once the pipeline is loaded (only those with a true
    /// value here).
    #[serde(flatten)]
    tei: Option<TeiInfo>,
}

/// TEI's `/info` fields, for TEI clients.
#[derive(Serialize)]
struct TeiInfo {
    /// The folder of the checkpoint `--tei-slot` runs (or the model's name).
    model_id: Option<String>,
    model_dtype: &'static str,
    model_type: serde_json::Value,
    max_concurrent_requests: usize,
    max_input_length: Option<usize>,
    max_batch_tokens: usize,
    max_client_batch_size: usize,
    auto_truncate: bool,
}

fn tei_info(state: &AppState, pipeline: &embeddings_pipeline::EmbeddingPipeline) -> TeiInfo {
    use embeddings_pipeline::{Backend, HeadKind, TruncationPolicy};
    let registry = pipeline.describe();
    let slot = registry.slot(state.tei_slot);
    let (model_id, pooling) = match &slot.backend {
        Backend::Transformer { model, head } => {
            let dir = registry
                .models
                .iter()
                .find(|m| m.name == *model)
                .and_then(|m| m.dir.as_ref())
                .and_then(|d| d.file_name())
                .map(|f| f.to_string_lossy().into_owned());
            let pooling = match head {
                HeadKind::Cls => "cls",
                _ => "mean",
            };
            (Some(dir.unwrap_or_else(|| model.clone())), Some(pooling))
        }
        _ => (None, None),
    };
    TeiInfo {
        model_id,
        model_dtype: "float32",
        model_type: serde_json::json!({ "embedding": { "pooling": pooling } }),
        max_concurrent_requests: state.limits.max_concurrent_requests,
        max_input_length: pipeline.max_input_tokens(state.tei_slot),
        max_batch_tokens: pipeline.config().batching.max_batch_tokens,
        max_client_batch_size: state.limits.max_inputs,
        auto_truncate: pipeline.config().input.truncation == TruncationPolicy::Truncate,
    }
}

pub(crate) async fn info(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    let (state_name, load_error, pipeline, tei) = match state.pipeline.get() {
        None => ("loading", None, None, None),
        Some(Loaded::Failed(e)) => ("failed", Some(e.to_string()), None, None),
        Some(Loaded::Ready(p)) => (
            "ready",
            None,
            serde_json::to_value(p.limits()).ok(),
            Some(tei_info(&state, p)),
        ),
    };
    let body = Info {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        state: state_name,
        load_error,
        limits: state.limits,
        cpu: state.cpu.as_ref(),
        routes: crate::routes::Endpoint::table(),
        pipeline,
        tei,
    };
    redacted_json(StatusCode::OK, &id, &body)
}
