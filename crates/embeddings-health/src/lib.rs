//! Health rules, probes and alerting for the embeddings pipeline: one truthful answer to "can this pipeline serve right now?", with the reasons.
//!
//! - [`HealthPolicy`] holds the thresholds (validated; loadable with serde,
//!   for example from TOML with [`HealthPolicy::from_toml_str`]).
//!   [`HealthPolicy::evaluate`] turns an [`Observation`] (a
//!   [`RegistryState`], a [`MetricsSnapshot`](embeddings_types::MetricsSnapshot),
//!   a [`GpuObservation`], [`ComponentChecks`]) into a [`HealthReport`]: the
//!   spec's [`HealthStatus`](embeddings_types::HealthStatus), a [`Verdict`],
//!   one [`Reason`] per failed [`HealthRule`], and the [`probe`]s.
//! - [`AlertEngine`] evaluates [`AlertRule`]s over successive snapshots
//!   (pending → firing → resolved, with `for` durations and hysteresis),
//!   keeps a bounded history of [`AlertEvent`]s and hands them to
//!   [`AlertHandler`]s such as [`LogHandler`] and [`JsonLinesHandler`].
//!
//! Everything is a pure function of its inputs: the current time is an
//! argument, nothing reads the clock or sleeps.
//!
//! ```
//! use chrono::Utc;
//! # use embeddings_health::doc_support::snapshot;
//! use embeddings_health::{ComponentChecks, GpuObservation, HealthPolicy, Observation, RegistryState, Verdict};
//!
//! let now = Utc::now();
//! let snapshot = snapshot(now); // from embeddings-metrics
//! let registry = RegistryState::all_loaded();
//! let gpu = GpuObservation::from_gauges(true, &snapshot.gauges);
//! let observation = Observation::new(&registry, &snapshot, &gpu, ComponentChecks::all_up())
//!     .with_warmed_up(true);
//!
//! let report = HealthPolicy::default().evaluate(&observation, now);
//! assert_eq!(report.verdict, Verdict::Healthy);
//! assert!(report.status.is_fully_healthy());
//! assert_eq!(report.probes.readiness.http_status(), 200);
//! ```
//!
//! # Health rules and verdicts
//!
//! The verdict is the worst verdict among the failed rules (`Healthy` when
//! none failed), and `status.healthy == (verdict != Unhealthy)` always.
//!
//! | Rule | Fails when (defaults) | Verdict |
//! |---|---|---|
//! | `models_loaded` (spec) | fewer than `min_models_loaded` (10) of 12 slots loaded | Unhealthy |
//! | `all_models_loaded` | at least 10 but fewer than 12 loaded (failed or still loading) | Degraded |
//! | `gpu_memory` (spec) | a GPU is expected and it is unreadable, reports 0 bytes total, or `used / total >= 0.90` | Unhealthy |
//! | `error_rate` (spec) | `error_rate_per_minute >= 10`, or NaN, infinite, negative | Unhealthy |
//! | `model_registry` (spec core) | down | Unhealthy |
//! | `fusemoe` (spec core) | down | Unhealthy |
//! | `batch_processor` | down: nothing can be served (`is_minimum_viable` is false) | Unhealthy |
//! | `cache_manager` | down: serving continues, without the cache | Degraded |
//! | `metrics_input` | another snapshot figure is NaN, infinite, negative, or a hit rate above 1 | Degraded |
//! | `snapshot_fresh` | the snapshot is older than `max_snapshot_age` (60 s) | Degraded |
//!
//! A CPU deployment ([`GpuObservation::NotExpected`]) passes the GPU rule.
//! NaN, infinite or negative inputs never yield `Healthy`.
//!
//! # Probes
//!
//! See [`probe`]: liveness (progress within `liveness_timeout`, never tied
//! to models), readiness (minimum viable and warmed up), startup (no slot
//! still loading, and one loaded). Each maps to HTTP 200 when it passes and 503 when it
//! fails ([`ProbeResult::http_status`]).
//!
//! # Alerts
//!
//! See [`AlertEngine`] for the state machine and
//! [`AlertConfig::recommended_rules`] for the default rules and severities.
//! A missing input (no GPU figure, no drift score, an empty histogram)
//! neither fires nor resolves an alert.
//!
//! # Who depends on this
//!
//! The pipeline (to evaluate its own health and raise alerts) and the
//! server (to answer `/health`, `/livez`, `/readyz`, `/startupz`). It
//! depends only on `embeddings-types`, serde, chrono, thiserror and
//! serde_json; it never touches devices, HTTP or the recorder's atomics.
//!
//! # Feature flags
//!
//! - `toml` (default): [`HealthPolicy::from_toml_str`] and
//!   [`AlertConfig::from_toml_str`]. Without it, policies still deserialize
//!   (and validate) through serde from any format.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod alert;
#[doc(hidden)]
pub mod doc_support;
mod error;
mod evaluate;
mod observe;
mod policy;
pub mod probe;
mod verdict;

pub use alert::{
    AlertConfig, AlertConfigSpec, AlertEngine, AlertEvent, AlertHandler, AlertMetric, AlertRule,
    AlertRuleSpec, AlertState, Direction, JsonLinesHandler, LogHandler, MetricValues, Severity,
    Transition,
};
pub use error::{ConfigError, HandlerError};
pub use evaluate::{HealthReport, ModelFailure};
pub use observe::{ComponentChecks, GpuObservation, Observation, RegistryState, SlotState};
pub use policy::{HealthPolicy, HealthPolicySpec};
pub use probe::{Probe, ProbeFailure, ProbeResult, Probes};
pub use verdict::{Bound, HealthRule, Reason, Value, Verdict};
