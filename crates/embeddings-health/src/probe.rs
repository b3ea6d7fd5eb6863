//! Kubernetes-style probes: liveness, readiness and startup.
//!
//! | Probe | Passes (HTTP 200) when | Fails (HTTP 503) when |
//! |---|---|---|
//! | liveness | progress was recorded within `liveness_timeout` (or, with none recorded yet, the process is younger than that) | no progress for longer: restart the process |
//! | readiness | minimum viable (registry and batch processor up, a required GPU present, at least one slot loaded) **and** warmed up | otherwise: take the instance out of the load balancer |
//! | startup | no slot is still loading and at least one loaded | some slot is still loading: hold the other probes off; or loading ended with none loaded: the start failed (restart, and read `/health` for why) |
//!
//! Liveness never looks at models: a process whose models failed to load is
//! alive (restarting it would not help) but not ready. Readiness does not
//! follow the verdict: with fusion down or a high error rate the verdict is
//! unhealthy, yet per-slot embeddings can still be served, so the instance
//! stays in rotation while the health endpoint reports the problem.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use embeddings_types::HealthStatus;
use serde::{Deserialize, Serialize};

use crate::{HealthPolicy, RegistryState};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// Can the process make progress? Failing means "restart me".
    Liveness,
    /// Can it serve now? Failing means "send no traffic".
    Readiness,
    /// Is it still starting (models loading)? Failing means "wait".
    Startup,
}

/// Why a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "failure")]
#[non_exhaustive]
pub enum ProbeFailure {
    /// Liveness: no progress for longer than the timeout.
    Stalled {
        /// Seconds since the last recorded progress (or since start).
        idle_seconds: f64,
        /// The policy's liveness timeout, seconds.
        timeout_seconds: f64,
    },
    /// Readiness: the model registry is down.
    ModelRegistryDown,
    /// Readiness: the batch processor is down.
    BatchProcessorDown,
    /// Readiness: a GPU is required and not available.
    GpuUnavailable,
    /// Readiness: no model slot is loaded.
    NoModelLoaded,
    /// Readiness: warm-up has not finished.
    NotWarmedUp,
    /// Startup: slots are still loading.
    ModelsLoading {
        /// How many.
        loading: usize,
    },
    /// Startup: loading has ended and no slot could be loaded.
    LoadFailed {
        /// Slots that failed.
        failed: usize,
    },
    /// Liveness: the thread loading the pipeline stopped without reporting
    /// an outcome; it will never become ready.
    LoaderGone,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stalled {
                idle_seconds,
                timeout_seconds,
            } => write!(
                f,
                "no progress for {idle_seconds:.1} s (timeout {timeout_seconds:.1} s)"
            ),
            Self::ModelRegistryDown => f.write_str("the model registry is down"),
            Self::BatchProcessorDown => f.write_str("the batch processor is down"),
            Self::GpuUnavailable => f.write_str("a GPU is required but not available"),
            Self::NoModelLoaded => f.write_str("no model slot is loaded"),
            Self::NotWarmedUp => f.write_str("warm-up has not finished"),
            Self::ModelsLoading { loading } => write!(f, "{loading} model slot(s) still loading"),
            Self::LoadFailed { failed } => write!(
                f,
                "loading ended with no slot loaded ({failed} failed); see /health for the reasons"
            ),
            Self::LoaderGone => f.write_str(
                "the loader stopped without reporting an outcome; the process will never become ready",
            ),
        }
    }
}

/// The outcome of one probe.
///
/// ```
/// use embeddings_health::{probe, RegistryState};
/// let result = probe::startup(&RegistryState::new());
/// assert!(!result.is_ok());
/// assert_eq!(result.http_status(), 503);
/// assert_eq!(probe::startup(&RegistryState::all_loaded()).http_status(), 200);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Which probe.
    pub probe: Probe,
    /// `None` when it passed; otherwise the first check that failed.
    pub failure: Option<ProbeFailure>,
}

impl ProbeResult {
    const fn new(probe: Probe, failure: Option<ProbeFailure>) -> Self {
        Self { probe, failure }
    }

    /// Whether the probe passed.
    #[must_use]
    pub const fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The HTTP status the server answers with: 200 when passed, 503
    /// (Service Unavailable) when failed.
    #[must_use]
    pub const fn http_status(&self) -> u16 {
        if self.is_ok() { 200 } else { 503 }
    }
}

/// All three probes, as computed by an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    /// See [`liveness`].
    pub liveness: ProbeResult,
    /// See [`readiness`].
    pub readiness: ProbeResult,
    /// See [`startup`].
    pub startup: ProbeResult,
}

/// Elapsed time from `earlier` to `now`, zero when `earlier` is in the future
/// (clock skew never makes anything look older than it is).
pub(crate) fn elapsed(earlier: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - earlier).to_std().unwrap_or(Duration::ZERO)
}

/// Liveness: the process's work loop ticked within the policy's liveness
/// timeout. `last_progress` is a heartbeat that ticks while idle too (see
/// [`Observation::last_progress`](crate::Observation::last_progress)), not
/// the time of the last request. `last_progress == None` (none recorded yet) counts the time
/// since start (`uptime`) instead, so a fresh process gets one timeout's
/// grace. Not tied to model state.
#[must_use]
pub fn liveness(
    policy: &HealthPolicy,
    last_progress: Option<DateTime<Utc>>,
    uptime: Duration,
    now: DateTime<Utc>,
) -> ProbeResult {
    let idle = last_progress.map_or(uptime, |at| elapsed(at, now));
    let timeout = policy.liveness_timeout();
    let failure = (idle > timeout).then_some(ProbeFailure::Stalled {
        idle_seconds: idle.as_secs_f64(),
        timeout_seconds: timeout.as_secs_f64(),
    });
    ProbeResult::new(Probe::Liveness, failure)
}

/// Readiness: `status.is_minimum_viable() && warmed_up`, reporting the
/// first missing condition.
#[must_use]
pub fn readiness(status: &HealthStatus, warmed_up: bool) -> ProbeResult {
    let c = &status.components;
    let failure = if !c.model_registry {
        Some(ProbeFailure::ModelRegistryDown)
    } else if !c.batch_processor {
        Some(ProbeFailure::BatchProcessorDown)
    } else if !c.gpu_ok() {
        Some(ProbeFailure::GpuUnavailable)
    } else if status.models_loaded.is_empty() {
        Some(ProbeFailure::NoModelLoaded)
    } else if !warmed_up {
        Some(ProbeFailure::NotWarmedUp)
    } else {
        None
    };
    ProbeResult::new(Probe::Readiness, failure)
}

/// Startup: done when no slot is still loading (every slot is loaded or
/// failed) and at least one slot loaded; a start where every slot failed
/// has failed ([`ProbeFailure::LoadFailed`]), so the orchestrator restarts
/// the process rather than wait on it. Kubernetes stops asking once it
/// passes, so a later reload does not matter.
#[must_use]
pub fn startup(registry: &RegistryState) -> ProbeResult {
    let loading = registry.loading_count();
    let failure = if loading > 0 {
        Some(ProbeFailure::ModelsLoading { loading })
    } else if registry.loaded_count() == 0 {
        Some(ProbeFailure::LoadFailed {
            failed: registry.failed_count(),
        })
    } else {
        None
    };
    ProbeResult::new(Probe::Startup, failure)
}

impl ProbeResult {
    /// A failed liveness probe for a loader that stopped without an outcome
    /// (the server decides this; the registry cannot see threads).
    #[must_use]
    pub const fn loader_gone() -> Self {
        Self::new(Probe::Liveness, Some(ProbeFailure::LoaderGone))
    }
}
