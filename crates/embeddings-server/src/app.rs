//! The router, the shared state and the handlers.
//!
//! The server binds before the pipeline has loaded: until then the embedding
//! endpoints answer 503 and the readiness and startup probes fail, while
//! `/metrics`, `/health` and `/livez` work. None of the observability
//! endpoints touches the inference queue, so they stay fast under load;
//! they are in `ops.rs`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
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
use embeddings_health::{
    ComponentChecks, GpuObservation, HealthPolicy, HealthReport, Observation, ProbeResult,
    RegistryState,
};
use embeddings_metrics::PipelineMetrics;
use embeddings_pipeline::{
    DeviceKind, EmbedInput, EmbedOptions, EmbedResponse, EmbeddingPipeline, LoadError,
};
use embeddings_types::ModelId;
use serde::Serialize;
use tower::ServiceBuilder;

use crate::api::{self, EmbedRequest};
use crate::auth::{self, ApiKeys};
use crate::cli::Args;
use crate::cpu::CpuPlan;
use crate::error::{ApiError, ErrorKind};
use crate::http_metrics::HttpMetrics;
use crate::openai;
use crate::ops;
pub use crate::ops::render_metrics;
use crate::request_id::{self, RequestId};
use crate::routes::{Endpoint, Group};
use crate::tei;

/// Request limits, from the command line.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// Most inputs per request.
    pub max_inputs: usize,
    /// Most characters per input.
    pub max_input_chars: usize,
    /// Longest a request may take, seconds.
    pub request_timeout_secs: u64,
    /// Longest the body may take to arrive, seconds (within the request's).
    pub body_timeout_secs: u64,
    /// Embedding requests handled at once; more get 429 at once.
    pub max_concurrent_requests: usize,
}

impl Limits {
    /// The limits given on the command line.
    #[must_use]
    pub fn from_args(args: &Args) -> Self {
        Self {
            max_body_bytes: args.max_body_bytes,
            max_inputs: args.max_inputs,
            max_input_chars: args.max_input_chars,
            request_timeout_secs: args.request_timeout_secs,
            body_timeout_secs: args.body_timeout_secs,
            max_concurrent_requests: usize::try_from(args.max_concurrent_requests)
                .unwrap_or(usize::MAX),
        }
    }

    /// When a request arriving now must be answered: one budget for reading
    /// the body and embedding together.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(self.request_timeout_secs.max(1))
    }
}

/// Where loading the pipeline stands.
#[derive(Debug)]
pub enum Loaded {
    /// Ready to serve.
    Ready(Arc<EmbeddingPipeline>),
    /// Loading failed; the error says why and what to do.
    Failed(LoadError),
}

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The pipeline's recorder; exists before the pipeline so `/metrics` works while loading.
    pub metrics: Arc<PipelineMetrics>,
    /// The HTTP layer's recorder.
    pub http: HttpMetrics,
    /// Set once, when loading ends.
    pub pipeline: OnceLock<Loaded>,
    /// Request limits.
    pub limits: Limits,
    /// Health thresholds while the pipeline loads: the `[health]` section
    /// of the configuration once the loader has read it, the defaults until
    /// then (and when there is no configuration file). Once loaded, the
    /// pipeline evaluates its own (the same) policy.
    pub policy: OnceLock<HealthPolicy>,
    /// The device the configuration asks for, once the loader has read it
    /// (unset: no configuration read yet, or none given, which is the CPU).
    /// While the pipeline is not loaded, a CUDA deployment is reported as
    /// expecting a GPU that is not (yet) available, with the reason.
    pub device: OnceLock<DeviceKind>,
    /// When the server started.
    pub started: Instant,
    /// The API keys; `None`: the server is open.
    pub auth: Option<ApiKeys>,
    /// Whether `/metrics`, `/health` and `/info` need the key too.
    pub protect_observability: bool,
    /// The server's own heartbeat (µs since the Unix epoch; `i64::MIN`:
    /// none yet), ticked by the housekeeping task (`serve.rs`): while the
    /// pipeline loads, liveness is judged by it.
    pub heartbeat_us: AtomicI64,
    /// Whether the loader thread is still running (set by
    /// [`AppState::loader_started`], cleared when it ends however it ends).
    /// Still loading with no loader running: liveness fails.
    pub loader_running: AtomicBool,
    /// When the pipeline finished loading (OpenAI's `created` of its models).
    pub loaded_at: OnceLock<DateTime<Utc>>,
    /// The compute threads decided at start (`None` in tests that build the
    /// state without the binary's start-up).
    pub cpu: Option<CpuPlan>,
    /// The container's memory limit, bytes, read at start
    /// ([`crate::memory_limit`]); `None`: no limit, or none read.
    pub memory_limit: Option<u64>,
    /// The slot TEI's `/embed` serves (`--tei-slot`).
    pub tei_slot: ModelId,
    /// The in-process alert engine (`GET /alerts`).
    pub alerts: crate::alerts::Alerts,
    /// The quality canary's schedule and outcomes (`GET /quality`).
    pub quality: crate::quality::Quality,
}

impl AppState {
    /// Fresh state for a server that has not loaded its pipeline yet.
    ///
    /// # Errors
    /// If the HTTP metric families cannot be built (a bug).
    pub fn new(
        limits: Limits,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, embeddings_metrics::MetricsError> {
        Ok(Self {
            http: HttpMetrics::new(&metrics.config().prefix)?,
            metrics,
            pipeline: OnceLock::new(),
            limits,
            policy: OnceLock::new(),
            device: OnceLock::new(),
            started: Instant::now(),
            heartbeat_us: AtomicI64::new(i64::MIN),
            loader_running: AtomicBool::new(false),
            loaded_at: OnceLock::new(),
            cpu: None,
            memory_limit: None,
            tei_slot: ModelId::Semantic,
            alerts: crate::alerts::Alerts::new(embeddings_health::AlertConfig::default()),
            quality: crate::quality::Quality::new(None),
            auth: None,
            protect_observability: false,
        })
    }

    pub(crate) fn ready(&self) -> Option<&Arc<EmbeddingPipeline>> {
        match self.pipeline.get() {
            Some(Loaded::Ready(p)) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn unavailable(&self, id: &RequestId) -> ApiError {
        let message = match self.pipeline.get() {
            Some(Loaded::Failed(reason)) => format!("the pipeline failed to load: {reason}"),
            _ => "the pipeline is still loading its models; retry shortly (see /readyz)".to_owned(),
        };
        ApiError::new(ErrorKind::Unavailable, id, message).retry_after(1)
    }

    /// Marks the loader as running; the guard marks it ended when dropped
    /// (at the end of the loader's thread, or while that thread unwinds).
    #[must_use]
    pub fn loader_started(self: &Arc<Self>) -> LoaderGuard {
        self.loader_running.store(true, Ordering::SeqCst);
        LoaderGuard(Arc::clone(self))
    }

    /// Each slot's state: `loading` until the pipeline is built, then
    /// `loaded`, `disabled` or `failed` (all `failed` when loading failed).
    #[must_use]
    pub fn slot_states(&self) -> Vec<(ModelId, &'static str)> {
        use embeddings_pipeline::SlotState;
        match self.pipeline.get() {
            None => ModelId::ALL.iter().map(|&m| (m, "loading")).collect(),
            Some(Loaded::Failed(_)) => ModelId::ALL.iter().map(|&m| (m, "failed")).collect(),
            Some(Loaded::Ready(p)) => p
                .describe()
                .slots
                .iter()
                .map(|s| {
                    let state = match s.state {
                        SlotState::Loaded => "loaded",
                        SlotState::Disabled => "disabled",
                        _ => "failed",
                    };
                    (s.slot, state)
                })
                .collect(),
        }
    }

    /// The load failure, when loading failed.
    #[must_use]
    pub fn load_error(&self) -> Option<&LoadError> {
        match self.pipeline.get() {
            Some(Loaded::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// The health report: the pipeline's own when loaded, otherwise one built
    /// from the loading (or failed) state.
    #[must_use]
    pub fn health(&self) -> HealthReport {
        if let Some(pipeline) = self.ready() {
            return pipeline.health();
        }
        let mut report = self.health_before_load();
        if self.pipeline.get().is_none() && !self.loader_running.load(Ordering::SeqCst) {
            report.probes.liveness = ProbeResult::loader_gone();
        }
        report
    }

    fn health_before_load(&self) -> HealthReport {
        let mut registry = RegistryState::new();
        if let Some(Loaded::Failed(reason)) = self.pipeline.get() {
            for model in ModelId::ALL {
                registry.mark_failed(model, reason.to_string());
            }
        }
        let snapshot = self.metrics.snapshot();
        let now = Utc::now();
        let gpu = self.gpu_before_load();
        let heartbeat = match self.heartbeat_us.load(Ordering::Relaxed) {
            i64::MIN => None,
            us => DateTime::from_timestamp_micros(us),
        };
        let observation = Observation::new(&registry, &snapshot, &gpu, ComponentChecks::default())
            .with_uptime(self.started.elapsed())
            .with_last_progress(heartbeat);
        let default;
        let policy = match self.policy.get() {
            Some(p) => p,
            None => {
                default = HealthPolicy::default();
                &default
            }
        };
        policy.evaluate(&observation, now)
    }

    /// What is known of the GPU before the pipeline has loaded: nothing is
    /// expected on the CPU; a CUDA deployment expects one that cannot be read
    /// yet, with the reason (the load failure, which names a missing driver,
    /// or "still loading"), so `gpu_available` is false with a finding that
    /// says why, and the GPU gauges have no sample rather than a 0.
    fn gpu_before_load(&self) -> GpuObservation {
        if self.device.get() != Some(&DeviceKind::Cuda) {
            return GpuObservation::NotExpected;
        }
        let reason = match self.pipeline.get() {
            Some(Loaded::Failed(e)) => format!("the pipeline failed to load: {e}"),
            _ => "CUDA device 0 is not open yet: the pipeline is still loading".to_owned(),
        };
        GpuObservation::Unreadable { reason }
    }

    /// Ticks the server's heartbeat (see [`AppState::heartbeat_us`]).
    pub fn tick(&self) {
        self.heartbeat_us
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }
}

/// Clears [`AppState::loader_running`] when dropped.
#[derive(Debug)]
pub struct LoaderGuard(Arc<AppState>);

impl Drop for LoaderGuard {
    fn drop(&mut self) {
        self.0.loader_running.store(false, Ordering::SeqCst);
    }
}

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
