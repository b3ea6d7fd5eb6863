//! The server's shared state: the request limits, where loading the
//! pipeline stands, and what every handler reads (`AppState`), with the
//! health report before the pipeline has loaded. The router and handlers
//! over it are in `app.rs`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use embeddings_health::{
    ComponentChecks, GpuObservation, HealthPolicy, HealthReport, Observation, ProbeResult,
    RegistryState,
};
use embeddings_metrics::PipelineMetrics;
use embeddings_pipeline::{DeviceKind, EmbeddingPipeline, LoadError};
use embeddings_types::ModelId;
use serde::Serialize;

use crate::auth::ApiKeys;
use crate::cli::Args;
use crate::cpu::CpuPlan;
use crate::error::{ApiError, ErrorKind};
use crate::http_metrics::HttpMetrics;
use crate::request_id::RequestId;

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
