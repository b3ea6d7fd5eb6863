//! [`MetricsSnapshot`]: a point-in-time, serializable copy of everything the
//! recorder in `embeddings-metrics` holds.
//!
//! Units: latencies are **microseconds** (`_us` fields and every latency
//! histogram), rates are per second unless the name says per minute, memory
//! is bytes, durations serialize as seconds (see [`crate::duration`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ErrorKind, ModelId, Stage};

/// A summary of one histogram at snapshot time.
///
/// Quantiles are estimates whose relative error is at most
/// [`relative_error`](Self::relative_error) (for example `0.01` = 1%) against
/// the exact quantile of the recorded values; `count`, `sum`, `min` and `max`
/// are exact. With nothing recorded every field is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values, wrapping at `u64::MAX` like a Prometheus counter.
    pub sum: u64,
    /// Smallest recorded value.
    pub min: u64,
    /// Largest recorded value.
    pub max: u64,
    /// `sum / count` computed in floating point; 0.0 when empty.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The documented relative-error bound of the quantiles above.
    pub relative_error: f64,
}

/// What the recorder knows about one model slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    /// Inputs this slot computed (cache hits are not slot requests).
    pub requests: u64,
    /// Failures attributed to this slot (any kind): a failure that served
    /// several slots counts once for each of them.
    pub failures: u64,
    /// Failures of kind `timeout` attributed to this slot (also in
    /// `failures`). The pipeline counts timeouts per request, not per slot,
    /// so from it this stays 0; a caller may attribute its own.
    pub timeouts: u64,
    /// Failures attributed to this slot, by kind.
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// Exponential moving average of this slot's latency, µs.
    pub avg_latency_us: u64,
    /// Distribution of this slot's latency, µs.
    pub latency: HistogramSnapshot,
    /// Tokens per computed input as this slot's tokenizer saw them (special
    /// tokens included, before truncation); transformer slots only.
    #[serde(default)]
    pub input_tokens: HistogramSnapshot,
    /// Computed inputs longer than this slot's model takes, cut to fit.
    #[serde(default)]
    pub truncated_inputs: u64,
    /// Tokens cut from those inputs.
    #[serde(default)]
    pub truncated_tokens: u64,
    /// Tokens of computed inputs that were the tokenizer's unknown token
    /// (`[UNK]`): text the vocabulary cannot represent.
    #[serde(default)]
    pub unknown_tokens: u64,
}

/// Point-in-time gauges. Memory figures are `None` until a caller has set
/// them: the recorder never invents a figure it was not given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GaugeSnapshot {
    /// Requests waiting in the submission queue now (the unit of
    /// `[batching] queue_capacity`; never above it).
    pub queue_depth: u64,
    /// The largest queue depth seen since creation or the last reset.
    pub queue_depth_max: u64,
    /// Requests being processed now.
    pub in_flight: u64,
    /// Worker threads running inference.
    pub workers: u64,
    /// Resident set size of the process, bytes.
    pub process_rss_bytes: Option<u64>,
    /// GPU memory in use, bytes.
    pub gpu_memory_used_bytes: Option<u64>,
    /// GPU memory in total, bytes.
    pub gpu_memory_total_bytes: Option<u64>,
    /// Memory held by the embedding cache, bytes.
    pub cache_bytes: Option<u64>,
    /// Entries in the embedding cache.
    pub cache_entries: Option<u64>,
}

/// A serializable copy of the recorder's state.
///
/// The first eleven fields are the reference spec's contract; the rest are
/// additions for production use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Embeddings computed by the models and delivered to a caller that was
    /// still waiting (cache hits excluded; see `inputs_served`), since
    /// creation or the last reset.
    pub embeddings_generated: u64,
    /// Embedding-cache hits.
    pub cache_hits: u64,
    /// Embedding-cache misses.
    pub cache_misses: u64,
    /// `hits / (hits + misses)`, in `0.0..=1.0`; 0.0 before any lookup.
    pub cache_hit_rate: f64,
    /// Rolling (exponential moving) average embedding latency, µs. 0 before
    /// any sample: check `latency.count` (0 means unknown, not 0 µs).
    pub avg_latency_us: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Rolling (exponential moving) average latency per model, µs; only the
    /// models with at least one sample are present (an absent model is
    /// unknown, never "0 µs").
    pub model_latencies: HashMap<ModelId, u64>,
    /// Batches processed.
    pub batches_processed: u64,
    /// Items in all processed batches.
    pub batch_items_processed: u64,
    /// Lifetime throughput: embeddings per second since creation or reset.
    pub throughput: f64,
    /// When the snapshot was taken.
    pub timestamp: DateTime<Utc>,

    /// Entries evicted from the embedding cache.
    pub cache_evictions: u64,
    /// Time since creation or the last reset.
    #[serde(with = "crate::duration")]
    pub uptime: Duration,
    /// Exact lifetime mean embedding latency, µs (0.0 when empty).
    pub mean_latency_us: f64,
    /// Embedding latency distribution, µs.
    pub latency: HistogramSnapshot,
    /// Whole-batch latency distribution, µs.
    pub batch_latency: HistogramSnapshot,
    /// Batch size distribution, items.
    pub batch_size: HistogramSnapshot,
    /// Latency per stage, µs; every stage is present.
    pub stages: BTreeMap<Stage, HistogramSnapshot>,
    /// Per-model figures; every model is present.
    pub models: BTreeMap<ModelId, ModelSnapshot>,
    /// Errors by kind; every kind is present.
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// Failures of the service itself (kinds `inference`, `timeout`,
    /// `internal`: [`ErrorKind::is_service_failure`]) in the last 60 s. Not
    /// extrapolated: on a recorder younger than 60 s it is the count so far.
    pub error_rate_per_minute: f64,
    /// Embeddings per second over the last 10 s.
    pub throughput_10s: f64,
    /// Embeddings per second over the last 60 s.
    pub throughput_60s: f64,
    /// Gauges: queue, workers, memory.
    pub gauges: GaugeSnapshot,
    /// Inputs answered successfully, cache hits included (each input once,
    /// however many slots it returned). Absent in older JSON: 0.
    #[serde(default)]
    pub inputs_served: u64,
    /// Inputs that were empty or only whitespace, accepted under
    /// `[input] empty_text = "embed"` (rejected ones are `validation`
    /// errors). Absent in older JSON: 0.
    #[serde(default)]
    pub empty_inputs: u64,
}
