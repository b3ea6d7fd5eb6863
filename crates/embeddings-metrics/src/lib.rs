//! Lock-free metrics for the embeddings pipeline: counters, gauges, latency histograms, windowed rates, and Prometheus / OpenMetrics text.
//!
//! - [`PipelineMetrics`]: the recorder. Every `record_*` method takes `&self`,
//!   is lock-free, never panics and never produces NaN; [`snapshot`](PipelineMetrics::snapshot)
//!   copies everything into an [`embeddings_types::MetricsSnapshot`];
//!   [`render_prometheus`](PipelineMetrics::render_prometheus) and
//!   [`render_openmetrics`](PipelineMetrics::render_openmetrics) serve a scrape.
//! - [`Histogram`] / [`HistogramCounts`]: the log-linear histogram behind every
//!   latency figure (≤ 0.78 % quantile error by default), mergeable.
//! - [`MetricsConfig`] and [`MetricsError`]: tunables (EMA alpha, precision,
//!   exported bounds, name prefix, constant labels), validated with a typed error.
//! - [`Clock`] / [`ManualClock`]: the time source of windowed rates; tests
//!   move a manual clock instead of sleeping.
//! - [`global`], [`set_global`], [`reset_global`]: an optional process-wide
//!   recorder.
//! - [`MemoryGauge`], [`InFlightGuard`], [`Format`]: gauges and exposition helpers.
//! - [`encode`]: the encoder behind both formats, public for custom metrics:
//!   [`Counter`] (striped like the recorder's own counters), [`Family`],
//!   [`Labels`], [`ExportBounds`], [`Encoder`] / [`FamilyWriter`], [`Value`].
//! - [`exemplar`]: [`Exemplars`], the latest request id per histogram bucket,
//!   written as OpenMetrics exemplars.
//!
//! ```
//! use embeddings_metrics::{PipelineMetrics, PROMETHEUS_CONTENT_TYPE};
//! use embeddings_types::{ErrorKind, ModelId, Stage};
//!
//! let metrics = PipelineMetrics::new();
//! metrics.record_cache_miss();
//! metrics.record_stage(Stage::Inference, 1_800);
//! metrics.record_model_request(ModelId::Semantic);
//! metrics.record_model_latency(ModelId::Semantic, 1_700);
//! metrics.record_embedding(2_000);
//! metrics.record_model_failure(ModelId::Code, ErrorKind::Timeout);
//!
//! let snap = metrics.snapshot();
//! assert_eq!(snap.embeddings_generated, 1);
//! assert_eq!(snap.avg_latency_us, 2_000);
//! assert_eq!(snap.errors, 1);
//! assert_eq!(snap.models[&ModelId::Code].timeouts, 1);
//! assert_eq!(snap.cache_hit_rate, 0.0);
//!
//! let body = metrics.render_prometheus();
//! assert!(body.contains("embeddings_latency_seconds_bucket{le=\"0.002\"} 1\n"));
//! assert!(PROMETHEUS_CONTENT_TYPE.starts_with("text/plain"));
//! ```
//!
//! **Who should depend on this:** the pipeline (which records), the server
//! (which serves `/metrics` and the JSON snapshot) and `embeddings-health`
//! (which reads snapshots). **Who should not:** clients that only read the
//! JSON — they need only `embeddings-types`. This crate does no I/O and knows
//! nothing of models, tensors, async runtimes or HTTP.
//!
//! # Performance design
//! Hot counters live in per-thread, cache-padded stripes: up to [`SHARDS`]
//! live threads each *own* a stripe and count there with a plain load and
//! store (no locked instruction, no shared cache line); further threads share
//! one overflow stripe with `fetch_add`; reads sum the stripes, and a reset
//! records a baseline instead of writing the owners' cells. Histograms stripe
//! per thread too (with atomic read-modify-writes), derive `count`
//! from their buckets, find the bucket with a `leading_zeros` bit trick, and
//! touch min/max only when a value improves on them. Rendering prepares every
//! fixed text (family headers, label sets, `le` texts) once at construction,
//! reads each histogram's cumulative counts straight from its stripes in one
//! pass, and formats numbers by hand into one buffer per series.
//!
//! # Feature flags
//! None.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
mod config;
mod counter;
mod ema;
pub mod encode;
mod error;
pub mod exemplar;
mod expose;
mod gauges;
mod global;
pub mod histogram;
mod pipeline;
mod read;
mod shard;
mod window;

pub use clock::{Clock, ManualClock};
pub use config::{
    DEFAULT_BATCH_SIZE_BOUNDS, DEFAULT_EMA_ALPHA, DEFAULT_LATENCY_BOUNDS_US, DEFAULT_PREFIX,
    INPUT_TOKEN_BOUNDS, MAX_EXPORTED_BOUNDS, MetricsConfig,
};
pub use counter::Counter;
pub use encode::{Encoder, ExportBounds, Family, FamilyWriter, Labels, Value, escape_label_value};
pub use error::MetricsError;
pub use exemplar::{Exemplar, Exemplars};
pub use expose::{Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use gauges::{InFlightGuard, MemoryGauge};
pub use global::{global, reset_global, set_global};
pub use histogram::{Histogram, HistogramCounts};
pub use pipeline::{PipelineMetrics, duration_micros};
pub use shard::SHARDS;
