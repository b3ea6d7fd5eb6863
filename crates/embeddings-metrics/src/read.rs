//! The read side of [`PipelineMetrics`]: counter totals (net of the reset
//! baseline), windowed rates and the [`MetricsSnapshot`]. Recording is in
//! `pipeline.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use chrono::Utc;
use embeddings_types::{ErrorKind, MetricsSnapshot, ModelId, ModelSnapshot, Stage};

use crate::pipeline::{KINDS, NANOS_PER_SEC, PipelineMetrics, Totals};

/// The windowed rates, read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) uptime: Duration,
    pub(crate) throughput: f64,
    pub(crate) throughput_10s: f64,
    pub(crate) throughput_60s: f64,
    pub(crate) errors_per_minute: f64,
}

impl PipelineMetrics {
    /// Windowed and lifetime rates at one clock reading.
    ///
    /// Windows are one-second slots: "the last W seconds" is the current
    /// (partial) second and the W − 1 before it. A throughput divides the
    /// events in the window by the time observed, `clamp(uptime, 1 s, W)`,
    /// so a young recorder is not under-reported (and never divides by
    /// zero). Errors per minute is the *count* of service failures in the
    /// last 60 s, never extrapolated: one failure at 1 s of uptime reads 1,
    /// not 60.
    pub(crate) fn rates(&self) -> Rates {
        let now = self.clock.now_nanos();
        let uptime = self.uptime_nanos(now);
        let second = now / NANOS_PER_SEC;
        let base = self.baseline.embeddings.load(Ordering::Acquire);
        let (mut emb10, mut emb60, mut err60, mut total) = (0u64, 0u64, 0u64, 0u64);
        for s in self.stripes.iter() {
            emb10 = emb10.saturating_add(s.embedding_window.sum_recent(second, 10));
            emb60 = emb60.saturating_add(s.embedding_window.sum_recent(second, 60));
            err60 = err60.saturating_add(s.error_window.sum_recent(second, 60));
            total = total.wrapping_add(s.counters.embeddings.load(Ordering::Relaxed));
        }
        let total = total.wrapping_sub(base);
        let uptime_s = uptime as f64 / NANOS_PER_SEC as f64;
        let observed = |window: f64| uptime_s.clamp(1.0, window);
        Rates {
            uptime: Duration::from_nanos(uptime),
            throughput: if uptime == 0 {
                0.0
            } else {
                total as f64 / uptime_s
            },
            throughput_10s: emb10 as f64 / observed(10.0),
            throughput_60s: emb60 as f64 / observed(60.0),
            errors_per_minute: err60 as f64,
        }
    }

    /// Counter totals since creation or the last reset.
    pub(crate) fn totals(&self) -> Totals {
        // Start from minus the baseline, then add every stripe (wrapping):
        // the result is the count since the reset. The baseline is read
        // first and the fence pairs with `reset`'s Release fence, so each
        // cell read below is at least as new as the one its baseline came
        // from, and no total ever shows below zero.
        let mut t = Totals::default();
        t.zip_cells(&self.baseline, |v, cell| {
            *v = cell.load(Ordering::Relaxed).wrapping_neg();
        });
        fence(Ordering::Acquire);
        for s in self.stripes.iter() {
            t.add_cells(&s.counters);
        }
        t
    }

    /// Counter totals since creation (stripes summed, no baseline).
    pub(crate) fn raw_totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.stripes.iter() {
            t.add_cells(&s.counters);
        }
        t
    }

    /// A serializable copy of everything recorded.
    ///
    /// Every model, stage and error kind is present (zero when unused); memory
    /// gauges are `None` until set. See [Snapshots](Self#snapshots) for
    /// consistency under concurrent writes, and [`rates`](Self::error_rate_per_minute)
    /// for the window rule.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        let t = self.totals();
        let rates = self.rates();
        let latency = self.latency.snapshot();
        let by_kind = |counts: &[u64; KINDS]| -> BTreeMap<ErrorKind, u64> {
            ErrorKind::ALL
                .iter()
                .map(|k| (*k, counts[k.index()]))
                .collect()
        };
        let models: BTreeMap<ModelId, ModelSnapshot> = ModelId::ALL
            .iter()
            .map(|m| {
                let i = m.index();
                let errors = &t.model_errors[i];
                let snap = ModelSnapshot {
                    requests: t.model_requests[i],
                    failures: errors.iter().fold(0u64, |a, n| a.wrapping_add(*n)),
                    timeouts: errors[ErrorKind::Timeout.index()],
                    errors_by_kind: by_kind(errors),
                    avg_latency_us: self.model_ema[i].get_within(self.model_latency[i].min_max()),
                    latency: self.model_latency[i].snapshot(),
                    input_tokens: self.input_tokens[i].snapshot(),
                    truncated_inputs: t.model_truncated_inputs[i],
                    truncated_tokens: t.model_truncated_tokens[i],
                    unknown_tokens: t.model_unknown_tokens[i],
                };
                (*m, snap)
            })
            .collect();
        MetricsSnapshot {
            embeddings_generated: t.embeddings,
            cache_hits: t.cache_hits,
            cache_misses: t.cache_misses,
            cache_hit_rate: hit_rate(t.cache_hits, t.cache_misses),
            avg_latency_us: self.average_latency_us(),
            errors: t.errors.iter().fold(0u64, |a, n| a.wrapping_add(*n)),
            model_latencies: models
                .iter()
                .filter(|(_, s)| s.latency.count > 0)
                .map(|(m, s)| (*m, s.avg_latency_us))
                .collect::<HashMap<_, _>>(),
            batches_processed: t.batches,
            batch_items_processed: t.batch_items,
            throughput: rates.throughput,
            timestamp: Utc::now(),
            cache_evictions: t.cache_evictions,
            uptime: rates.uptime,
            mean_latency_us: latency.mean,
            latency,
            batch_latency: self.batch_latency.snapshot(),
            batch_size: self.batch_size.snapshot(),
            stages: Stage::ALL
                .iter()
                .map(|s| (*s, self.stage_latency[s.index()].snapshot()))
                .collect(),
            models,
            errors_by_kind: by_kind(&t.errors),
            error_rate_per_minute: rates.errors_per_minute,
            throughput_10s: rates.throughput_10s,
            throughput_60s: rates.throughput_60s,
            gauges: self.gauges.snapshot(),
            inputs_served: t.inputs_served,
            empty_inputs: t.empty_inputs,
        }
    }
}

/// `hits / (hits + misses)`, 0 before any lookup.
pub(crate) fn hit_rate(hits: u64, misses: u64) -> f64 {
    let lookups = hits as f64 + misses as f64;
    if lookups == 0.0 {
        0.0
    } else {
        (hits as f64 / lookups).clamp(0.0, 1.0)
    }
}
