//! Prometheus text 0.0.4 and OpenMetrics 1.0 text encoders.
//!
//! # What is exported
//!
//! Counters and histograms — never pre-computed quantiles or averages alone —
//! so `sum by (model) (rate(...))` and `histogram_quantile(...)` aggregate
//! correctly across replicas. Moving averages and windowed rates are exported
//! *in addition* as gauges, for dashboards of a single replica.
//!
//! Latencies are exported in seconds (the base unit), from integer µs, as
//! exact decimals. Every counter and histogram series exists from the first
//! scrape, at zero. A gauge whose value is unknown has its family declared
//! (`# HELP`/`# TYPE`) but no sample: the caller-set memory gauges until a
//! figure is set, and the moving averages until their first sample.
//! Exporting 0 would invent a figure.
//!
//! # Cardinality
//!
//! The internal histograms have thousands of fine buckets (for the snapshot's
//! quantiles); the exposition exports only the configured `le` bounds
//! ([`DEFAULT_LATENCY_BOUNDS_US`](crate::DEFAULT_LATENCY_BOUNDS_US), 23 + `+Inf`)
//! which are exact internal bucket edges, so every exported count is exact.
//! `le` values are canonical: an integral bound carries `.0` (OpenMetrics
//! rule), the same in both formats so series match across formats.
//!
//! # Differences between the formats
//!
//! OpenMetrics names a counter family without `_total` and its sample with it,
//! adds `# UNIT` for families with a unit suffix (`_seconds`, `_bytes`),
//! escapes `"` in HELP text, and ends with `# EOF`.
//!
//! # One code path
//!
//! Everything here is written through the public [`Encoder`](crate::Encoder):
//! the families, label sets and `le` texts of a recorder are prepared once,
//! when it is built ([`Exposition`]), so a scrape only reads and formats
//! numbers.

use std::fmt::{self, Write};
use std::sync::atomic::Ordering;

use embeddings_types::{ErrorKind, ModelId, Stage};

use crate::config::{INPUT_TOKEN_BOUNDS, MetricsConfig};
use crate::encode::{Encoder, ExportBounds, Family, Labels, Value};
use crate::gauges::MemoryGauge;
use crate::pipeline::PipelineMetrics;

/// `Content-Type` of [`PipelineMetrics::render_prometheus`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of [`PipelineMetrics::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text format.
    OpenMetrics,
}

impl Format {
    /// The HTTP `Content-Type` of this format.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

const MODELS: usize = ModelId::COUNT;
const KINDS: usize = ErrorKind::COUNT;
const STAGES: usize = Stage::COUNT;

/// The counters without labels, in output order: (name, help).
const SIMPLE_COUNTERS: [(&str, &str); 7] = [
    (
        "generated",
        "Embeddings computed by the models and delivered to a waiting caller (cache hits excluded).",
    ),
    (
        "inputs_served",
        "Inputs answered successfully, cache hits included.",
    ),
    ("cache_hits", "Embedding-cache hits."),
    ("cache_misses", "Embedding-cache misses."),
    (
        "cache_evictions",
        "Entries evicted from the embedding cache.",
    ),
    (
        "batches",
        "Batches computed (a worker batch, or the cache misses of one blocking call).",
    ),
    ("batch_items", "Inputs in all computed batches."),
];

/// The integer gauges without labels, in output order: (name, help).
const PLAIN_GAUGES: [(&str, &str); 4] = [
    (
        "queue_depth",
        "Requests waiting in the submission queue (the unit of queue_capacity).",
    ),
    (
        "queue_depth_max",
        "Largest queue depth since start or reset.",
    ),
    ("in_flight_requests", "Requests being processed."),
    ("workers", "Worker threads running inference."),
];

/// The caller-set memory gauges, in [`MemoryGauge::ALL`] order: (name, help).
const MEMORY_GAUGES: [(&str, &str); 5] = [
    (
        "process_resident_memory_bytes",
        "Resident set size of the process.",
    ),
    ("gpu_memory_used_bytes", "GPU memory in use."),
    ("gpu_memory_capacity_bytes", "GPU memory in total."),
    ("cache_memory_bytes", "Memory held by the embedding cache."),
    ("cache_entries", "Entries in the embedding cache."),
];

/// Windows of the throughput gauge, in output order.
const WINDOWS: [&str; 3] = ["10s", "60s", "lifetime"];

/// Everything fixed about a recorder's exposition, prepared once from its
/// config: families (names with the prefix, headers of both formats, `le`
/// texts) and label sets (constant labels first, values escaped).
#[derive(Debug)]
pub(crate) struct Exposition {
    simple_counters: [Family; 7],
    errors: Family,
    model_requests: Family,
    model_errors: Family,
    latency_ema: Family,
    model_latency_ema: Family,
    throughput: Family,
    errors_per_minute: Family,
    uptime: Family,
    plain_gauges: [Family; 4],
    memory: [Family; 5],
    latency: Family,
    model_latency: Family,
    stage_latency: Family,
    batch_latency: Family,
    batch_size: Family,
    empty_inputs: Family,
    input_tokens: Family,
    truncated_inputs: Family,
    truncated_tokens: Family,
    unknown_tokens: Family,
    /// Only the constant labels.
    none: Labels,
    model: [Labels; MODELS],
    stage: [Labels; STAGES],
    kind: [Labels; KINDS],
    model_kind: [[Labels; KINDS]; MODELS],
    window: [Labels; 3],
}

impl Exposition {
    /// Prepares the exposition of a recorder with `config` (validated by the
    /// caller, or the default).
    pub(crate) fn new(config: &MetricsConfig) -> Self {
        let prefix = config.prefix.as_str();
        let name = |n: &str| format!("{prefix}{n}");
        let counter = |n: &str, help: &str| Family::unchecked_counter(&name(n), help);
        let gauge = |n: &str, help: &str| Family::unchecked_gauge(&name(n), help);
        let bits = config.histogram_precision_bits;
        let seconds = ExportBounds::unchecked(&config.latency_bounds_us, 6, bits);
        let histogram = |n: &str, help: &str, bounds: &ExportBounds| {
            Family::unchecked_histogram(&name(n), help, bounds.clone())
        };
        let consts: Vec<(&str, &str)> = config
            .const_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let labels = |extra: &[(&str, &str)]| {
            let mut pairs = consts.clone();
            pairs.extend_from_slice(extra);
            Labels::unchecked(&pairs)
        };
        Self {
            simple_counters: SIMPLE_COUNTERS.map(|(n, help)| counter(n, help)),
            errors: counter(
                "errors",
                "Failures by kind, each counted once per failed unit (request, input or computation); client kinds (validation, tokenization, overload, cancelled) do not feed errors_per_minute.",
            ),
            model_requests: counter("model_requests", "Requests routed to each model slot."),
            model_errors: counter(
                "model_errors",
                "Failures attributed to each model slot by kind; one failure serving several slots counts once in errors and once here per slot.",
            ),
            latency_ema: gauge(
                "latency_ema_seconds",
                "Exponential moving average of embedding latency; no sample until one is recorded.",
            ),
            model_latency_ema: gauge(
                "model_latency_ema_seconds",
                "Exponential moving average of each model slot's latency; no sample for a slot never timed.",
            ),
            throughput: gauge(
                "throughput_per_second",
                "Embeddings per second over the last 10 s, 60 s, and since start.",
            ),
            errors_per_minute: gauge(
                "errors_per_minute",
                "Service failures (inference, timeout, internal) in the last 60 s; not extrapolated.",
            ),
            uptime: gauge(
                "uptime_seconds",
                "Time since the recorder was created or reset.",
            ),
            plain_gauges: PLAIN_GAUGES.map(|(n, help)| gauge(n, help)),
            memory: MEMORY_GAUGES.map(|(n, help)| gauge(n, help)),
            latency: histogram(
                "latency_seconds",
                "Per computed input: from submission to the end of the forward chunk that computed it.",
                &seconds,
            ),
            model_latency: histogram(
                "model_latency_seconds",
                "Latency of each model slot.",
                &seconds,
            ),
            stage_latency: histogram(
                "stage_latency_seconds",
                "Latency of each pipeline stage.",
                &seconds,
            ),
            batch_latency: histogram(
                "batch_latency_seconds",
                "Latency of whole batches.",
                &seconds,
            ),
            batch_size: histogram(
                "batch_size",
                "Items per processed batch.",
                &ExportBounds::unchecked(&config.batch_size_bounds, 0, bits),
            ),
            empty_inputs: counter(
                "empty_inputs",
                "Inputs that were empty or only whitespace, accepted under [input] empty_text = \"embed\" (rejected ones are validation errors).",
            ),
            input_tokens: histogram(
                "input_tokens",
                "Tokens per computed input as each transformer slot's tokenizer saw it (special tokens included, before truncation).",
                &ExportBounds::unchecked(&INPUT_TOKEN_BOUNDS, 0, bits),
            ),
            truncated_inputs: counter(
                "truncated_inputs",
                "Computed inputs longer than the slot's model takes, cut to fit ([input] truncation = \"truncate\").",
            ),
            truncated_tokens: counter(
                "truncated_tokens",
                "Tokens cut from truncated inputs, per slot.",
            ),
            unknown_tokens: counter(
                "unknown_tokens",
                "Tokens of computed inputs that were the tokenizer's unknown token ([UNK]), per slot.",
            ),
            none: labels(&[]),
            model: ModelId::ALL.map(|m| labels(&[("model", m.as_str())])),
            stage: Stage::ALL.map(|s| labels(&[("stage", s.as_str())])),
            kind: ErrorKind::ALL.map(|k| labels(&[("kind", k.as_str())])),
            model_kind: ModelId::ALL.map(|m| {
                ErrorKind::ALL.map(|k| labels(&[("model", m.as_str()), ("kind", k.as_str())]))
            }),
            window: WINDOWS.map(|w| labels(&[("window", w)])),
        }
    }
}

impl PipelineMetrics {
    /// Everything in Prometheus text format 0.0.4 (serve with
    /// [`PROMETHEUS_CONTENT_TYPE`]).
    ///
    /// ```
    /// let metrics = embeddings_metrics::PipelineMetrics::new();
    /// metrics.record_cache_hit();
    /// let text = metrics.render_prometheus();
    /// assert!(text.contains("# TYPE embeddings_cache_hits_total counter\nembeddings_cache_hits_total 1\n"));
    /// assert!(text.contains("embeddings_model_requests_total{model=\"semantic\"} 0\n"));
    /// ```
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        self.render(Format::Prometheus)
    }

    /// Everything in OpenMetrics 1.0 text format, ending with `# EOF` (serve
    /// with [`OPENMETRICS_CONTENT_TYPE`]).
    #[must_use]
    pub fn render_openmetrics(&self) -> String {
        self.render(Format::OpenMetrics)
    }

    /// Everything in `format`, into a new string pre-sized from the last
    /// rendering.
    #[must_use]
    pub fn render(&self, format: Format) -> String {
        let hint = usize::try_from(self.render_hint.load(Ordering::Relaxed)).unwrap_or(0);
        let mut out = String::with_capacity(hint.max(4096) + hint / 8);
        // Writing into a String cannot fail.
        let _ = self.write_exposition(format, &mut out);
        self.render_hint.store(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Appends everything in `format` to `out` (a `String`, or any
    /// [`fmt::Write`]).
    ///
    /// # Errors
    /// Only those of `out`.
    pub fn write_exposition<W: Write>(&self, format: Format, out: &mut W) -> fmt::Result {
        let mut e = Encoder::new(out, format);
        self.encode(&mut e)?;
        e.finish()
    }

    /// Writes every family of this recorder into `e`, without ending the
    /// exposition, so a caller (the HTTP server) can add its own families to
    /// the same scrape before [`Encoder::finish`].
    ///
    /// # Errors
    /// Only those of the encoder's output.
    pub fn encode(&self, e: &mut Encoder<'_>) -> fmt::Result {
        let x = &self.exposition;
        let t = self.totals();
        let rates = self.rates();

        // --- counters ---
        let simple = [
            t.embeddings,
            t.inputs_served,
            t.cache_hits,
            t.cache_misses,
            t.cache_evictions,
            t.batches,
            t.batch_items,
        ];
        for (family, value) in x.simple_counters.iter().zip(simple) {
            e.family(family)?.counter(&x.none, value)?;
        }
        let mut f = e.family(&x.errors)?;
        for kind in ErrorKind::ALL {
            f.counter(&x.kind[kind.index()], t.errors[kind.index()])?;
        }
        let mut f = e.family(&x.model_requests)?;
        for model in ModelId::ALL {
            f.counter(&x.model[model.index()], t.model_requests[model.index()])?;
        }
        let mut f = e.family(&x.model_errors)?;
        for model in ModelId::ALL {
            for kind in ErrorKind::ALL {
                let (m, k) = (model.index(), kind.index());
                f.counter(&x.model_kind[m][k], t.model_errors[m][k])?;
            }
        }
        e.family(&x.empty_inputs)?
            .counter(&x.none, t.empty_inputs)?;
        for (family, values) in [
            (&x.truncated_inputs, &t.model_truncated_inputs),
            (&x.truncated_tokens, &t.model_truncated_tokens),
            (&x.unknown_tokens, &t.model_unknown_tokens),
        ] {
            let mut f = e.family(family)?;
            for model in ModelId::ALL {
                f.counter(&x.model[model.index()], values[model.index()])?;
            }
        }

        // --- gauges ---
        // An average of no sample is unknown: no series, never 0.
        let mut f = e.family(&x.latency_ema)?;
        if let Some(range) = self.latency.min_max() {
            f.gauge(&x.none, micros(self.latency_ema.get_within(Some(range))))?;
        }
        let mut f = e.family(&x.model_latency_ema)?;
        for model in ModelId::ALL {
            let i = model.index();
            if let Some(range) = self.model_latency[i].min_max() {
                f.gauge(
                    &x.model[i],
                    micros(self.model_ema[i].get_within(Some(range))),
                )?;
            }
        }
        let mut f = e.family(&x.throughput)?;
        let throughputs = [rates.throughput_10s, rates.throughput_60s, rates.throughput];
        for (labels, v) in x.window.iter().zip(throughputs) {
            f.gauge(labels, finite(v))?;
        }
        e.family(&x.errors_per_minute)?
            .gauge(&x.none, finite(rates.errors_per_minute))?;
        let uptime_us = u64::try_from(rates.uptime.as_micros()).unwrap_or(u64::MAX);
        e.family(&x.uptime)?.gauge(&x.none, micros(uptime_us))?;
        let g = self.gauges.snapshot();
        let plain = [g.queue_depth, g.queue_depth_max, g.in_flight, g.workers];
        for (family, value) in x.plain_gauges.iter().zip(plain) {
            e.family(family)?.gauge(&x.none, value)?;
        }
        for (family, gauge) in x.memory.iter().zip(MemoryGauge::ALL) {
            let mut f = e.family(family)?;
            if let Some(value) = self.gauges.memory(gauge) {
                f.gauge(&x.none, value)?;
            }
        }

        // --- histograms ---
        e.family(&x.latency)?.histogram_with_exemplars(
            &x.none,
            &self.latency,
            &self.latency_exemplars,
        )?;
        let mut f = e.family(&x.model_latency)?;
        for model in ModelId::ALL {
            f.histogram(&x.model[model.index()], &self.model_latency[model.index()])?;
        }
        let mut f = e.family(&x.stage_latency)?;
        for stage in Stage::ALL {
            f.histogram(&x.stage[stage.index()], &self.stage_latency[stage.index()])?;
        }
        e.family(&x.batch_latency)?
            .histogram(&x.none, &self.batch_latency)?;
        e.family(&x.batch_size)?
            .histogram(&x.none, &self.batch_size)?;
        let mut f = e.family(&x.input_tokens)?;
        for model in ModelId::ALL {
            f.histogram(&x.model[model.index()], &self.input_tokens[model.index()])?;
        }
        Ok(())
    }
}

/// Integer µs as a gauge in seconds.
fn micros(us: u64) -> Value {
    Value::Scaled {
        value: us,
        decimals: 6,
    }
}

/// A rate as a gauge; every rate is finite by construction, but a guard keeps
/// the output free of `NaN` whatever happens.
fn finite(v: f64) -> Value {
    Value::F64(if v.is_finite() { v } else { 0.0 })
}
