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
//! exact decimals. Every series exists from the first scrape, at zero — except
//! the caller-set memory gauges, whose family is declared (`# HELP`/`# TYPE`)
//! but which have no sample until a figure is set: exporting 0 would invent a
//! figure.
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

use std::fmt::{self, Write};
use std::sync::atomic::Ordering;

use embeddings_types::{ErrorKind, ModelId, Stage};

use crate::gauges::MemoryGauge;
use crate::histogram::{BoundIndex, Histogram, HistogramCounts};
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

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value",...` for the constant labels, escaped once at construction.
pub(crate) fn render_const_labels(labels: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push('"');
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A sample value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    /// Integer µs written as decimal seconds.
    Micros(u64),
    Float(f64),
}

/// Writes `n` in decimal without going through `fmt` machinery.
fn write_u64<W: Write>(out: &mut W, mut n: u64) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"))
}

/// Writes integer µs as exact decimal seconds (`1500` → `0.0015`); with
/// `canonical`, an integral result gets `.0` (`1000000` → `1.0`).
fn write_seconds<W: Write>(out: &mut W, micros: u64, canonical: bool) -> fmt::Result {
    write_u64(out, micros / 1_000_000)?;
    let mut frac = micros % 1_000_000;
    if frac == 0 {
        return if canonical {
            out.write_str(".0")
        } else {
            Ok(())
        };
    }
    let mut digits = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    let mut buf = [b'0'; 7];
    buf[0] = b'.';
    let mut i = digits;
    while frac > 0 {
        buf[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
        i -= 1;
    }
    out.write_str(std::str::from_utf8(&buf[..=digits]).unwrap_or(""))
}

struct Encoder<'a, W> {
    out: &'a mut W,
    om: bool,
    prefix: &'a str,
    consts: &'a str,
    counts: HistogramCounts,
    cumulative: Vec<u64>,
    line: String,
}

impl<W: Write> Encoder<'_, W> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) -> fmt::Result {
        let counter = kind == Kind::Counter;
        // Prometheus: the family is named like its sample (`x_total`).
        // OpenMetrics: the family is `x`, its sample `x_total`.
        let suffix = if counter && !self.om { "_total" } else { "" };
        self.out.write_str("# HELP ")?;
        self.name(name, suffix)?;
        self.out.write_char(' ')?;
        for c in help.chars() {
            match c {
                '\\' => self.out.write_str("\\\\")?,
                '\n' => self.out.write_str("\\n")?,
                '"' if self.om => self.out.write_str("\\\"")?,
                c => self.out.write_char(c)?,
            }
        }
        self.out.write_str("\n# TYPE ")?;
        self.name(name, suffix)?;
        self.out.write_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
            Kind::Histogram => " histogram\n",
        })?;
        if self.om {
            let unit = ["seconds", "bytes"]
                .into_iter()
                .find(|u| name.strip_suffix(u).is_some_and(|rest| rest.ends_with('_')));
            if let Some(unit) = unit {
                self.out.write_str("# UNIT ")?;
                self.name(name, "")?;
                self.out.write_char(' ')?;
                self.out.write_str(unit)?;
                self.out.write_char('\n')?;
            }
        }
        Ok(())
    }

    fn name(&mut self, name: &str, suffix: &str) -> fmt::Result {
        self.out.write_str(self.prefix)?;
        self.out.write_str(name)?;
        self.out.write_str(suffix)
    }

    /// One sample line. Label values here are this crate's `snake_case`
    /// names (model, stage, kind, window), which need no escaping; constant
    /// labels were escaped at construction.
    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: Value,
    ) -> fmt::Result {
        self.name(name, suffix)?;
        let any = !self.consts.is_empty() || !labels.is_empty();
        if any {
            self.out.write_char('{')?;
            let mut first = true;
            if !self.consts.is_empty() {
                self.out.write_str(self.consts)?;
                first = false;
            }
            for (k, v) in labels {
                if !first {
                    self.out.write_char(',')?;
                }
                first = false;
                self.out.write_str(k)?;
                self.out.write_str("=\"")?;
                self.out.write_str(v)?;
                self.out.write_char('"')?;
            }
            self.out.write_char('}')?;
        }
        self.out.write_char(' ')?;
        match value {
            Value::Int(n) => write_u64(self.out, n)?,
            Value::Micros(us) => write_seconds(self.out, us, false)?,
            // Every float here is finite by construction; guard anyway so
            // the output always parses.
            Value::Float(f) if f.is_finite() => write!(self.out, "{f}")?,
            Value::Float(_) => self.out.write_char('0')?,
        }
        self.out.write_char('\n')
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> fmt::Result {
        self.sample(name, "_total", labels, Value::Int(value))
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: Value) -> fmt::Result {
        self.sample(name, "", labels, value)
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram series.
    /// `le_texts` are the pre-formatted bounds; `micros`: values are µs,
    /// exported as seconds.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
        le_texts: &[String],
        bound_index: &[BoundIndex],
        micros: bool,
    ) -> fmt::Result {
        histogram.counts_into(&mut self.counts);
        self.counts
            .cumulative_into(bound_index, &mut self.cumulative);
        let count = self.counts.count();
        // Everything before the `le` value is the same on every bucket line
        // of the series: build it once.
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.push_str(self.prefix);
        line.push_str(name);
        line.push_str("_bucket{");
        line.push_str(self.consts);
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 || !self.consts.is_empty() {
                line.push(',');
            }
            line.push_str(k);
            line.push_str("=\"");
            line.push_str(v);
            line.push('"');
        }
        if !labels.is_empty() || !self.consts.is_empty() {
            line.push(',');
        }
        line.push_str("le=\"");
        for (le, cum) in le_texts.iter().zip(&self.cumulative) {
            self.out.write_str(&line)?;
            self.out.write_str(le)?;
            self.out.write_str("\"} ")?;
            write_u64(self.out, *cum)?;
            self.out.write_char('\n')?;
        }
        self.out.write_str(&line)?;
        self.out.write_str("+Inf\"} ")?;
        write_u64(self.out, count)?;
        self.out.write_char('\n')?;
        self.line = line;
        let sum = self.counts.sum();
        let sum = if micros {
            Value::Micros(sum)
        } else {
            Value::Int(sum)
        };
        self.sample(name, "_sum", labels, sum)?;
        self.sample(name, "_count", labels, Value::Int(count))
    }
}

/// The `le` texts of `bounds`: canonical decimal seconds from µs, or
/// integers with `.0`.
pub(crate) fn le_texts(bounds: &[u64], micros: bool) -> Vec<String> {
    bounds
        .iter()
        .map(|b| {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = if micros {
                write_seconds(&mut text, *b, true)
            } else {
                write_u64(&mut text, *b).and_then(|()| text.write_str(".0"))
            };
            text
        })
        .collect()
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
        let om = format == Format::OpenMetrics;
        let mut e = Encoder {
            out,
            om,
            prefix: &self.config.prefix,
            consts: &self.const_labels,
            counts: HistogramCounts::empty(self.config.histogram_precision_bits),
            cumulative: Vec::with_capacity(self.config.latency_bounds_us.len().max(16)),
            line: String::with_capacity(128),
        };
        let t = self.totals();
        let rates = self.rates();

        // --- counters ---
        let simple = [
            (
                "generated",
                "Embeddings generated successfully.",
                t.embeddings,
            ),
            ("cache_hits", "Embedding-cache hits.", t.cache_hits),
            ("cache_misses", "Embedding-cache misses.", t.cache_misses),
            (
                "cache_evictions",
                "Entries evicted from the embedding cache.",
                t.cache_evictions,
            ),
            ("batches", "Batches processed.", t.batches),
            (
                "batch_items",
                "Items in all processed batches.",
                t.batch_items,
            ),
        ];
        for (name, help, value) in simple {
            e.family(name, Kind::Counter, help)?;
            e.counter(name, &[], value)?;
        }
        e.family(
            "errors",
            Kind::Counter,
            "Errors by kind; an error without a known cause counts as internal.",
        )?;
        for kind in ErrorKind::ALL {
            e.counter("errors", &[("kind", kind.as_str())], t.errors[kind.index()])?;
        }
        e.family(
            "model_requests",
            Kind::Counter,
            "Requests routed to each model slot.",
        )?;
        for model in ModelId::ALL {
            e.counter(
                "model_requests",
                &[("model", model.as_str())],
                t.model_requests[model.index()],
            )?;
        }
        e.family(
            "model_errors",
            Kind::Counter,
            "Failures of each model slot by kind (timeouts have kind=\"timeout\"); also counted in errors.",
        )?;
        for model in ModelId::ALL {
            for kind in ErrorKind::ALL {
                let labels = [("model", model.as_str()), ("kind", kind.as_str())];
                e.counter(
                    "model_errors",
                    &labels,
                    t.model_errors[model.index()][kind.index()],
                )?;
            }
        }

        // --- gauges ---
        e.family(
            "latency_ema_seconds",
            Kind::Gauge,
            "Exponential moving average of embedding latency.",
        )?;
        e.gauge(
            "latency_ema_seconds",
            &[],
            Value::Micros(self.average_latency_us()),
        )?;
        e.family(
            "model_latency_ema_seconds",
            Kind::Gauge,
            "Exponential moving average of each model slot's latency.",
        )?;
        for model in ModelId::ALL {
            let ema = self.model_ema[model.index()]
                .get_within(self.model_latency[model.index()].min_max());
            e.gauge(
                "model_latency_ema_seconds",
                &[("model", model.as_str())],
                Value::Micros(ema),
            )?;
        }
        e.family(
            "throughput_per_second",
            Kind::Gauge,
            "Embeddings per second over the last 10 s, 60 s, and since start.",
        )?;
        for (window, v) in [
            ("10s", rates.throughput_10s),
            ("60s", rates.throughput_60s),
            ("lifetime", rates.throughput),
        ] {
            e.gauge(
                "throughput_per_second",
                &[("window", window)],
                Value::Float(v),
            )?;
        }
        e.family(
            "errors_per_minute",
            Kind::Gauge,
            "Errors per minute over the last 60 s.",
        )?;
        e.gauge(
            "errors_per_minute",
            &[],
            Value::Float(rates.errors_per_minute),
        )?;
        e.family(
            "uptime_seconds",
            Kind::Gauge,
            "Time since the recorder was created or reset.",
        )?;
        let uptime_us = u64::try_from(rates.uptime.as_micros()).unwrap_or(u64::MAX);
        e.gauge("uptime_seconds", &[], Value::Micros(uptime_us))?;
        let g = self.gauges.snapshot();
        let plain = [
            (
                "queue_depth",
                "Items waiting in the submission queue.",
                g.queue_depth,
            ),
            (
                "queue_depth_max",
                "Largest queue depth since start or reset.",
                g.queue_depth_max,
            ),
            (
                "in_flight_requests",
                "Requests being processed.",
                g.in_flight,
            ),
            ("workers", "Worker threads running inference.", g.workers),
        ];
        for (name, help, value) in plain {
            e.family(name, Kind::Gauge, help)?;
            e.gauge(name, &[], Value::Int(value))?;
        }
        let memory = [
            (
                "process_resident_memory_bytes",
                "Resident set size of the process.",
                MemoryGauge::ProcessRss,
            ),
            (
                "gpu_memory_used_bytes",
                "GPU memory in use.",
                MemoryGauge::GpuUsed,
            ),
            (
                "gpu_memory_capacity_bytes",
                "GPU memory in total.",
                MemoryGauge::GpuTotal,
            ),
            (
                "cache_memory_bytes",
                "Memory held by the embedding cache.",
                MemoryGauge::CacheBytes,
            ),
            (
                "cache_entries",
                "Entries in the embedding cache.",
                MemoryGauge::CacheEntries,
            ),
        ];
        for (name, help, gauge) in memory {
            e.family(name, Kind::Gauge, help)?;
            if let Some(value) = self.gauges.memory(gauge) {
                e.gauge(name, &[], Value::Int(value))?;
            }
        }

        // --- histograms ---
        let lat_bounds = &self.latency_le;
        let lat_index = &self.latency_bound_index;
        e.family("latency_seconds", Kind::Histogram, "Embedding latency.")?;
        e.histogram(
            "latency_seconds",
            &[],
            &self.latency,
            lat_bounds,
            lat_index,
            true,
        )?;
        e.family(
            "model_latency_seconds",
            Kind::Histogram,
            "Latency of each model slot.",
        )?;
        for model in ModelId::ALL {
            let h = &self.model_latency[model.index()];
            e.histogram(
                "model_latency_seconds",
                &[("model", model.as_str())],
                h,
                lat_bounds,
                lat_index,
                true,
            )?;
        }
        e.family(
            "stage_latency_seconds",
            Kind::Histogram,
            "Latency of each pipeline stage.",
        )?;
        for stage in Stage::ALL {
            let h = &self.stage_latency[stage.index()];
            e.histogram(
                "stage_latency_seconds",
                &[("stage", stage.as_str())],
                h,
                lat_bounds,
                lat_index,
                true,
            )?;
        }
        e.family(
            "batch_latency_seconds",
            Kind::Histogram,
            "Latency of whole batches.",
        )?;
        e.histogram(
            "batch_latency_seconds",
            &[],
            &self.batch_latency,
            lat_bounds,
            lat_index,
            true,
        )?;
        e.family("batch_size", Kind::Histogram, "Items per processed batch.")?;
        let (batch_bounds, batch_index) = (&self.batch_le, &self.batch_bound_index);
        e.histogram(
            "batch_size",
            &[],
            &self.batch_size,
            batch_bounds,
            batch_index,
            false,
        )?;

        if om {
            e.out.write_str("# EOF\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(us: u64, canonical: bool) -> String {
        let mut s = String::new();
        write_seconds(&mut s, us, canonical).unwrap();
        s
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0, false), "0");
        assert_eq!(seconds(0, true), "0.0");
        assert_eq!(seconds(1, false), "0.000001");
        assert_eq!(seconds(1500, false), "0.0015");
        assert_eq!(seconds(1_000_000, true), "1.0");
        assert_eq!(seconds(1_024_000, true), "1.024");
        assert_eq!(seconds(65_536_000, true), "65.536");
        assert_eq!(seconds(u64::MAX, false), "18446744073709.551615");
        let mut s = String::new();
        write_u64(&mut s, u64::MAX).unwrap();
        write_u64(&mut s, 0).unwrap();
        assert_eq!(s, "184467440737095516150");
    }

    #[test]
    fn label_escaping() {
        let mut s = String::new();
        escape_label_value("a\\b\"c\nd", &mut s);
        assert_eq!(s, r#"a\\b\"c\nd"#);
    }
}
