//! Not part of the API: a quiet [`MetricsSnapshot`] for examples, tests and
//! benchmarks (the types crate has no `Default` for it, on purpose).

use std::time::Duration;

use chrono::{DateTime, Utc};
use embeddings_types::{
    ErrorKind, GaugeSnapshot, HistogramSnapshot, MetricsSnapshot, ModelId, ModelSnapshot, Stage,
};

/// A snapshot taken at `now` of a pipeline up for an hour, serving about 100
/// embeddings per second with no errors, a 90% cache hit rate and a p95 of 20 ms.
#[must_use]
pub fn snapshot(now: DateTime<Utc>) -> MetricsSnapshot {
    let latency = HistogramSnapshot {
        count: 360_000,
        sum: 360_000 * 8_000,
        min: 1_000,
        max: 90_000,
        mean: 8_000.0,
        p50: 7_000,
        p90: 15_000,
        p95: 20_000,
        p99: 40_000,
        p999: 80_000,
        relative_error: 0.01,
    };
    MetricsSnapshot {
        embeddings_generated: 360_000,
        cache_hits: 90_000,
        cache_misses: 10_000,
        cache_hit_rate: 0.9,
        avg_latency_us: 8_000,
        errors: 0,
        model_latencies: ModelId::ALL.iter().map(|m| (*m, 8_000)).collect(),
        batches_processed: 11_250,
        batch_items_processed: 360_000,
        throughput: 100.0,
        timestamp: now,
        cache_evictions: 0,
        uptime: Duration::from_secs(3_600),
        mean_latency_us: 8_000.0,
        latency,
        batch_latency: latency,
        batch_size: HistogramSnapshot::default(),
        stages: Stage::ALL
            .iter()
            .map(|s| (*s, HistogramSnapshot::default()))
            .collect(),
        models: ModelId::ALL
            .iter()
            .map(|m| (*m, ModelSnapshot::default()))
            .collect(),
        errors_by_kind: ErrorKind::ALL.iter().map(|k| (*k, 0)).collect(),
        error_rate_per_minute: 0.0,
        throughput_10s: 100.0,
        throughput_60s: 100.0,
        gauges: GaugeSnapshot {
            queue_depth: 0,
            queue_depth_max: 32,
            in_flight: 0,
            workers: 4,
            process_rss_bytes: Some(4 << 30),
            gpu_memory_used_bytes: Some(30 << 30),
            gpu_memory_total_bytes: Some(80 << 30),
            cache_bytes: Some(256 << 20),
            cache_entries: Some(50_000),
        },
        inputs_served: 0,
        empty_inputs: 0,
    }
}

/// A fixed instant (2025-06-15T15:06:40Z), for callers without chrono.
#[must_use]
pub fn fixed_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap_or_default()
}
