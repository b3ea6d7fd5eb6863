//! The text encoder behind every exposition of this crate, public so that
//! callers can expose their own metrics in the same format, next to (or
//! instead of) a [`PipelineMetrics`](crate::PipelineMetrics).
//!
//! Everything that does not change between scrapes is prepared once:
//!
//! - a [`Family`] validates its name and pre-renders its `# HELP` / `# TYPE`
//!   (/ `# UNIT`) header in both formats;
//! - a [`Labels`] set validates its names and pre-renders `name="value",...`
//!   with the values escaped;
//! - [`ExportBounds`] pre-render every `le` text and locate every bound in the
//!   [`Histogram`] bucket order.
//!
//! A render then only reads values and formats numbers: an [`Encoder`] over
//! any [`fmt::Write`] hands out one [`FamilyWriter`] per family, whose
//! methods write complete sample lines (each call ends with whole lines
//! written, so nothing is left buffered).
//!
//! ```
//! use embeddings_metrics::{
//!     Counter, Encoder, ExportBounds, Family, Format, Histogram, Labels, DEFAULT_LATENCY_BOUNDS_US,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once, at start-up.
//! let requests = Family::counter("app_requests", "Requests served.")?;
//! let in_flight = Family::gauge("app_in_flight", "Requests being served.")?;
//! let bounds = ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, 6)?; // µs, exported as seconds
//! let latency = Family::histogram("app_latency_seconds", "Request latency.", bounds)?;
//! let get = Labels::new([("method", "GET")])?;
//! let (hits, micros) = (Counter::new(), Histogram::new());
//!
//! // On the hot path.
//! hits.inc();
//! micros.record(1_500);
//!
//! // On every scrape.
//! let mut text = String::new();
//! let mut e = Encoder::new(&mut text, Format::Prometheus);
//! e.family(&requests)?.counter(&get, hits.get())?;
//! e.family(&in_flight)?.gauge(&Labels::empty(), 3_u64)?;
//! e.family(&latency)?.histogram(&get, &micros)?;
//! e.finish()?;
//! assert!(text.contains("app_requests_total{method=\"GET\"} 1\n"));
//! assert!(text.contains("app_latency_seconds_bucket{method=\"GET\",le=\"0.002\"} 1\n"));
//! assert!(text.contains("app_latency_seconds_sum{method=\"GET\"} 0.0015\n"));
//! # Ok(())
//! # }
//! ```
//!
//! # Size
//! This file is ~930 lines, over the workspace's ~700: the encoder, its
//! families, label sets and export bounds share one formatting contract
//! (both formats, escaping, canonical `le` texts) and its unit tests check
//! private pre-rendered state; about 60 lines are those tests.

use std::fmt::{self, Write};

use crate::MetricsError;
use crate::config::{check_bounds, is_name};
use crate::exemplar::Exemplars;
use crate::expose::Format;
use crate::histogram::{self, Histogram, HistogramCounts, MAX_PRECISION_BITS, MIN_PRECISION_BITS};

// ---------------------------------------------------------------------------
// Number formatting, straight into a `String` (no `fmt` machinery, no UTF-8
// re-validation).

/// Appends `n` in decimal.
#[inline]
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while i > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(buf.len() - i);
    for &digit in &buf[i..] {
        // The mask is a no-op on ASCII digits; it lets the compiler take the
        // one-byte path of `push` without a UTF-8 encoding branch.
        out.push(char::from(digit & 0x7f));
    }
}

/// Appends `value / 10^decimals` as an exact decimal (`1500`, 6 → `0.0015`).
/// With `canonical`, an integral result gets `.0` (`1000000`, 6 → `1.0`):
/// the OpenMetrics rule for `le`, also used in the Prometheus format so that
/// series match across formats.
pub(crate) fn push_decimal(out: &mut String, value: u64, decimals: u8, canonical: bool) {
    // 10^19 is the largest power of ten in a u64; beyond it the integer part
    // is 0 and the fraction is `value`, zero-padded.
    let (int, mut frac) = match 10u64.checked_pow(u32::from(decimals)) {
        Some(scale) => (value / scale, value % scale),
        None => (0, value),
    };
    push_u64(out, int);
    if frac == 0 {
        if canonical {
            out.push_str(".0");
        }
        return;
    }
    let mut digits = u32::from(decimals);
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    out.push('.');
    let significant = frac.ilog10() + 1;
    for _ in significant..digits {
        out.push('0');
    }
    push_u64(out, frac);
}

/// Appends a float: shortest round-trip decimal, or `NaN` / `+Inf` / `-Inf`
/// (the spelling both formats accept).
fn push_f64(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing into a String cannot fail.
        let _ = write!(out, "{value}");
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

/// Escapes HELP text: backslash and newline; also `"` in OpenMetrics.
fn escape_help(help: &str, openmetrics: bool, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------
// Labels

/// A validated label set, rendered once (`name="value",...`, values escaped)
/// so that writing a sample only copies it.
///
/// ```
/// use embeddings_metrics::{Labels, MetricsError};
/// let labels = Labels::new([("model", "semantic"), ("replica", "eu \"1\"")]).unwrap();
/// assert_eq!(labels.as_str(), r#"model="semantic",replica="eu \"1\"""#);
/// assert!(matches!(Labels::new([("le", "1")]), Err(MetricsError::InvalidLabel { .. })));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels {
    text: String,
}

impl Labels {
    /// No labels.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            text: String::new(),
        }
    }

    /// The labels `pairs`, in order.
    ///
    /// # Errors
    /// [`MetricsError::InvalidLabel`] for a name that is not
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, starts with `__` (reserved), is `le`
    /// (reserved for histogram buckets), or appears twice.
    pub fn new<I, K, V>(pairs: I) -> Result<Self, MetricsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut labels = Self::empty();
        let mut names: Vec<String> = Vec::new();
        for (name, value) in pairs {
            let name = name.as_ref();
            if !is_name(name)
                || name.starts_with("__")
                || name == "le"
                || names.iter().any(|n| n == name)
            {
                return Err(MetricsError::InvalidLabel {
                    name: name.to_owned(),
                });
            }
            names.push(name.to_owned());
            labels.push(name, value.as_ref());
        }
        Ok(labels)
    }

    /// Labels whose names the caller has already validated.
    pub(crate) fn unchecked(pairs: &[(&str, &str)]) -> Self {
        let mut labels = Self::empty();
        for (name, value) in pairs {
            labels.push(name, value);
        }
        labels
    }

    fn push(&mut self, name: &str, value: &str) {
        if !self.text.is_empty() {
            self.text.push(',');
        }
        self.text.push_str(name);
        self.text.push_str("=\"");
        escape_label_value(value, &mut self.text);
        self.text.push('"');
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The rendered set, `name="value",...` (escaped), without braces.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

// ---------------------------------------------------------------------------
// Exported bounds

/// The `le` bounds of an exported histogram family: validated against a
/// [`Histogram`] precision, with every `le` text rendered once.
///
/// Values are integers (µs, bytes, items…) exported as `value / 10^decimals`,
/// written as exact decimals: `decimals = 6` exports µs as seconds, `0`
/// exports integers as they are. `le` texts are canonical (`1.0`, not `1`).
///
/// Every bound must be an exact bucket edge at the given precision (see
/// [`histogram::is_edge`]), so each exported
/// count is exact. An edge stays an edge at every higher precision, so the
/// bounds also fit finer histograms; written with a coarser histogram, a
/// bound that is not one of its edges counts up to the edge below it (like
/// [`HistogramCounts::count_le`]).
///
/// ```
/// use embeddings_metrics::{ExportBounds, MetricsError, DEFAULT_LATENCY_BOUNDS_US};
/// let seconds = ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, 6).unwrap();
/// assert_eq!(seconds.bounds().len(), 23);
/// assert!(matches!(
///     ExportBounds::new(&[1000, 2500], 6, 6),
///     Err(MetricsError::BoundNotAnEdge { bound: 2500, below: 2496, .. })
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportBounds {
    bounds: Vec<u64>,
    decimals: u8,
    bits: u32,
    /// `bound_end` of each bound at `bits`.
    ends: Vec<usize>,
    /// `<le text>"} ` per bound: everything of a bucket line between the
    /// series prefix and the count.
    tails: Vec<String>,
}

impl ExportBounds {
    /// Bounds for histograms of `precision_bits` precision, exported divided
    /// by `10^decimals`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidPrecision`] for precision bits out of range;
    /// [`MetricsError::InvalidBounds`] unless strictly increasing and at most
    /// [`MAX_EXPORTED_BOUNDS`](crate::MAX_EXPORTED_BOUNDS);
    /// [`MetricsError::BoundNotAnEdge`] for a bound that is not a bucket edge.
    pub fn new(bounds: &[u64], decimals: u8, precision_bits: u32) -> Result<Self, MetricsError> {
        if !(MIN_PRECISION_BITS..=MAX_PRECISION_BITS).contains(&precision_bits) {
            return Err(MetricsError::InvalidPrecision {
                bits: precision_bits,
            });
        }
        check_bounds("export", bounds, precision_bits)?;
        Ok(Self::unchecked(bounds, decimals, precision_bits))
    }

    /// Bounds already validated by the caller.
    pub(crate) fn unchecked(bounds: &[u64], decimals: u8, bits: u32) -> Self {
        let tails = bounds
            .iter()
            .map(|b| {
                let mut tail = String::with_capacity(24);
                push_decimal(&mut tail, *b, decimals, true);
                tail.push_str("\"} ");
                tail
            })
            .collect();
        Self {
            bounds: bounds.to_vec(),
            decimals,
            bits,
            ends: bounds
                .iter()
                .map(|b| histogram::bound_end(*b, bits))
                .collect(),
            tails,
        }
    }

    /// The bounds, in the histogram's unit.
    #[must_use]
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }

    /// The exported value is the recorded one divided by `10^decimals`.
    #[must_use]
    pub fn decimals(&self) -> u8 {
        self.decimals
    }

    /// The precision the bounds were validated against.
    #[must_use]
    pub fn precision_bits(&self) -> u32 {
        self.bits
    }
}

// ---------------------------------------------------------------------------
// Families

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family: a validated name, its HELP text and type, rendered once
/// as the header of both formats. Histogram families carry their
/// [`ExportBounds`].
///
/// Name the family without the `_total` of a counter's sample (it is
/// appended) and with a unit suffix where one applies: a family named
/// `…_seconds` or `…_bytes` gets an OpenMetrics `# UNIT` line.
///
/// ```
/// use embeddings_metrics::{Family, MetricsError};
/// assert!(Family::counter("jobs", "Jobs run.").is_ok());
/// assert!(matches!(Family::counter("jobs_total", "x"), Err(MetricsError::InvalidMetricName { .. })));
/// assert!(matches!(Family::gauge("9lives", "x"), Err(MetricsError::InvalidMetricName { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    kind: Kind,
    name: String,
    prometheus_header: String,
    openmetrics_header: String,
    bounds: Option<ExportBounds>,
}

impl Family {
    /// A counter family: samples `<name>_total`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidMetricName`] unless `name` matches
    /// `[a-zA-Z_][a-zA-Z0-9_]*` and does not end in `_total`.
    pub fn counter(name: &str, help: &str) -> Result<Self, MetricsError> {
        if name.ends_with("_total") {
            return Err(MetricsError::InvalidMetricName {
                name: name.to_owned(),
            });
        }
        Self::checked(Kind::Counter, name, help, None)
    }

    /// A gauge family: samples `<name>`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidMetricName`] unless `name` matches
    /// `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn gauge(name: &str, help: &str) -> Result<Self, MetricsError> {
        Self::checked(Kind::Gauge, name, help, None)
    }

    /// A histogram family exported at `bounds`: samples `<name>_bucket`,
    /// `<name>_sum`, `<name>_count`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidMetricName`] unless `name` matches
    /// `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn histogram(name: &str, help: &str, bounds: ExportBounds) -> Result<Self, MetricsError> {
        Self::checked(Kind::Histogram, name, help, Some(bounds))
    }

    fn checked(
        kind: Kind,
        name: &str,
        help: &str,
        bounds: Option<ExportBounds>,
    ) -> Result<Self, MetricsError> {
        if !is_name(name) {
            return Err(MetricsError::InvalidMetricName {
                name: name.to_owned(),
            });
        }
        Ok(Self::build(kind, name, help, bounds))
    }

    pub(crate) fn unchecked_counter(name: &str, help: &str) -> Self {
        Self::build(Kind::Counter, name, help, None)
    }

    pub(crate) fn unchecked_gauge(name: &str, help: &str) -> Self {
        Self::build(Kind::Gauge, name, help, None)
    }

    pub(crate) fn unchecked_histogram(name: &str, help: &str, bounds: ExportBounds) -> Self {
        Self::build(Kind::Histogram, name, help, Some(bounds))
    }

    fn build(kind: Kind, name: &str, help: &str, bounds: Option<ExportBounds>) -> Self {
        let type_line = match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
            Kind::Histogram => " histogram\n",
        };
        let header = |openmetrics: bool| {
            // Prometheus names a counter family like its sample (`x_total`);
            // OpenMetrics names it `x` and its sample `x_total`.
            let suffix = if kind == Kind::Counter && !openmetrics {
                "_total"
            } else {
                ""
            };
            let mut h = String::with_capacity(2 * name.len() + help.len() + 40);
            h.push_str("# HELP ");
            h.push_str(name);
            h.push_str(suffix);
            h.push(' ');
            escape_help(help, openmetrics, &mut h);
            h.push_str("\n# TYPE ");
            h.push_str(name);
            h.push_str(suffix);
            h.push_str(type_line);
            if openmetrics {
                let unit = ["seconds", "bytes"]
                    .into_iter()
                    .find(|u| name.strip_suffix(u).is_some_and(|rest| rest.ends_with('_')));
                if let Some(unit) = unit {
                    h.push_str("# UNIT ");
                    h.push_str(name);
                    h.push(' ');
                    h.push_str(unit);
                    h.push('\n');
                }
            }
            h
        };
        Self {
            kind,
            name: name.to_owned(),
            prometheus_header: header(false),
            openmetrics_header: header(true),
            bounds,
        }
    }

    /// The family name (a counter's without `_total`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exported bounds of a histogram family; `None` for the others.
    #[must_use]
    pub fn bounds(&self) -> Option<&ExportBounds> {
        self.bounds.as_ref()
    }
}

// ---------------------------------------------------------------------------
// Values

/// A gauge value.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
    /// A float: the shortest decimal that reads back as the same `f64`;
    /// NaN and infinities as `NaN`, `+Inf`, `-Inf`.
    F64(f64),
    /// `value / 10^decimals`, written as an exact decimal (µs as seconds:
    /// `decimals = 6`).
    Scaled {
        /// The integer value.
        value: u64,
        /// Decimal places to shift it by.
        decimals: u8,
    },
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Self::U64(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::I64(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self::F64(value)
    }
}

fn push_value(out: &mut String, value: Value) {
    match value {
        Value::U64(n) => push_u64(out, n),
        Value::I64(n) => {
            if n < 0 {
                out.push('-');
            }
            push_u64(out, n.unsigned_abs());
        }
        Value::F64(f) => push_f64(out, f),
        Value::Scaled { value, decimals } => push_decimal(out, value, decimals, false),
    }
}

// ---------------------------------------------------------------------------
// The encoder

/// Reusable buffers of one encoding pass.
#[derive(Debug, Default)]
struct Buffers {
    /// The text of the current call, written to the output in one piece.
    scratch: String,
    /// `<name>_bucket{<labels>,le="` of the current histogram series.
    line: String,
    cumulative: Vec<u64>,
    /// Bound ends for a histogram whose precision differs from its bounds'.
    ends: Vec<usize>,
    counts_ends: Vec<usize>,
}

/// Writes metric families in [`Format::Prometheus`] or
/// [`Format::OpenMetrics`] text to any [`fmt::Write`]; see the
/// [module docs](crate::encode) for an example.
///
/// Call [`family`](Self::family) once per family, in any order (each family
/// once), write its samples through the returned [`FamilyWriter`], then
/// [`finish`](Self::finish), which ends an OpenMetrics exposition with
/// `# EOF`. Every method writes whole lines before it returns.
pub struct Encoder<'a> {
    out: &'a mut dyn Write,
    format: Format,
    buf: Buffers,
}

impl fmt::Debug for Encoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl<'a> Encoder<'a> {
    /// An encoder appending `format` text to `out`.
    pub fn new(out: &'a mut dyn Write, format: Format) -> Self {
        Self {
            out,
            format,
            buf: Buffers {
                scratch: String::with_capacity(2048),
                line: String::with_capacity(128),
                cumulative: Vec::with_capacity(32),
                ..Buffers::default()
            },
        }
    }

    /// The format being written.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes the header of `family` and returns the writer of its samples.
    ///
    /// # Errors
    /// Only those of the output.
    pub fn family<'e>(&'e mut self, family: &'e Family) -> Result<FamilyWriter<'e>, fmt::Error> {
        self.out.write_str(match self.format {
            Format::Prometheus => &family.prometheus_header,
            Format::OpenMetrics => &family.openmetrics_header,
        })?;
        Ok(FamilyWriter {
            out: &mut *self.out,
            buf: &mut self.buf,
            family,
            format: self.format,
        })
    }

    /// Ends the exposition: `# EOF` in OpenMetrics, nothing in Prometheus.
    ///
    /// # Errors
    /// Only those of the output.
    pub fn finish(self) -> fmt::Result {
        match self.format {
            Format::OpenMetrics => self.out.write_str("# EOF\n"),
            Format::Prometheus => Ok(()),
        }
    }
}

/// Writes the samples of one [`Family`]; from [`Encoder::family`].
///
/// Each method writes one series (a histogram's `_bucket`, `_sum` and
/// `_count` lines together). A method of another kind than the family's
/// (a gauge sample in a counter family, say) writes nothing and returns
/// [`fmt::Error`]: it would make the exposition invalid.
pub struct FamilyWriter<'e> {
    out: &'e mut dyn Write,
    buf: &'e mut Buffers,
    family: &'e Family,
    format: Format,
}

impl fmt::Debug for FamilyWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FamilyWriter")
            .field("family", &self.family.name)
            .finish_non_exhaustive()
    }
}

/// Appends `{labels}` (nothing for an empty set).
#[inline]
fn push_labels(out: &mut String, labels: &Labels) {
    if !labels.is_empty() {
        out.push('{');
        out.push_str(&labels.text);
        out.push('}');
    }
}

impl FamilyWriter<'_> {
    /// Writes one counter sample, `<name>_total{labels} value`.
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a counter family; those of the output.
    pub fn counter(&mut self, labels: &Labels, value: u64) -> fmt::Result {
        self.sample(Kind::Counter, "_total", labels, Value::U64(value))
    }

    /// Writes one counter sample whose value is not an integer (for example
    /// CPU seconds), `<name>_total{labels} value`.
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a counter family; those of the output.
    pub fn counter_value(&mut self, labels: &Labels, value: impl Into<Value>) -> fmt::Result {
        self.sample(Kind::Counter, "_total", labels, value.into())
    }

    /// Writes one gauge sample, `<name>{labels} value`.
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a gauge family; those of the output.
    pub fn gauge(&mut self, labels: &Labels, value: impl Into<Value>) -> fmt::Result {
        self.sample(Kind::Gauge, "", labels, value.into())
    }

    fn sample(&mut self, kind: Kind, suffix: &str, labels: &Labels, value: Value) -> fmt::Result {
        if self.family.kind != kind {
            return Err(fmt::Error);
        }
        let out = &mut self.buf.scratch;
        out.clear();
        out.push_str(&self.family.name);
        out.push_str(suffix);
        push_labels(out, labels);
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.out.write_str(out)
    }

    /// Writes one histogram series from a live [`Histogram`]: a cumulative
    /// `_bucket` line per exported bound and `+Inf`, then `_sum` and
    /// `_count`. The counts are read straight from the histogram's stripes
    /// (see [`Histogram::counts`] for consistency while writers run: every
    /// bucket is exact, and `+Inf` always equals `_count`).
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a histogram family; those of the output.
    pub fn histogram(&mut self, labels: &Labels, histogram: &Histogram) -> fmt::Result {
        self.live_histogram(labels, histogram, None)
    }

    /// As [`histogram`](Self::histogram), with each bucket's exemplar (see
    /// [`Exemplars`]) after its count in OpenMetrics; the Prometheus text has
    /// no exemplars and is the same as [`histogram`](Self::histogram)'s.
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a histogram family or `exemplars`
    /// were made for other bounds than the family's; those of the output.
    pub fn histogram_with_exemplars(
        &mut self,
        labels: &Labels,
        histogram: &Histogram,
        exemplars: &Exemplars,
    ) -> fmt::Result {
        if histogram_bounds(self.family).is_some_and(|b| exemplars.bounds() != b.bounds()) {
            return Err(fmt::Error);
        }
        let exemplars = match self.format {
            Format::OpenMetrics => Some(exemplars),
            Format::Prometheus => None,
        };
        self.live_histogram(labels, histogram, exemplars)
    }

    /// The series of a live [`Histogram`], with `exemplars` when given.
    fn live_histogram(
        &mut self,
        labels: &Labels,
        histogram: &Histogram,
        exemplars: Option<&Exemplars>,
    ) -> fmt::Result {
        let Some(bounds) = histogram_bounds(self.family) else {
            return Err(fmt::Error);
        };
        let buf = &mut *self.buf;
        let ends = if histogram.precision_bits() == bounds.bits {
            &bounds.ends
        } else {
            fill_ends(&mut buf.ends, bounds, histogram.precision_bits());
            &buf.ends
        };
        let sum = histogram.cumulative_into(ends, &mut buf.cumulative);
        self.series(labels, bounds, sum, exemplars)
    }

    /// Writes one histogram series from a [`HistogramCounts`] read-out (for
    /// example one merged from several sources); otherwise as
    /// [`histogram`](Self::histogram).
    ///
    /// # Errors
    /// [`fmt::Error`] if the family is not a histogram family; those of the output.
    pub fn histogram_counts(&mut self, labels: &Labels, counts: &HistogramCounts) -> fmt::Result {
        let Some(bounds) = histogram_bounds(self.family) else {
            return Err(fmt::Error);
        };
        let buf = &mut *self.buf;
        let ends = if counts.precision_bits() == bounds.bits {
            &bounds.ends
        } else {
            fill_ends(&mut buf.counts_ends, bounds, counts.precision_bits());
            &buf.counts_ends
        };
        counts.cumulative_into(ends, &mut buf.cumulative);
        self.series(labels, bounds, counts.sum(), None)
    }

    /// Writes the series whose cumulative counts (then the total) are in
    /// `buf.cumulative`, each bucket followed by its exemplar when given.
    fn series(
        &mut self,
        labels: &Labels,
        bounds: &ExportBounds,
        sum: u64,
        exemplars: Option<&Exemplars>,
    ) -> fmt::Result {
        let Buffers {
            scratch,
            line,
            cumulative,
            ..
        } = &mut *self.buf;
        let name = &self.family.name;
        // Everything before the `le` value is the same on every bucket line.
        line.clear();
        line.push_str(name);
        line.push_str("_bucket{");
        if !labels.is_empty() {
            line.push_str(&labels.text);
            line.push(',');
        }
        line.push_str("le=\"");
        let count = cumulative.last().copied().unwrap_or(0);
        scratch.clear();
        scratch.reserve((bounds.tails.len() + 3) * (line.len() + 24));
        for (i, (tail, cum)) in bounds.tails.iter().zip(cumulative.iter()).enumerate() {
            scratch.push_str(line);
            scratch.push_str(tail);
            push_u64(scratch, *cum);
            if let Some(e) = exemplars {
                e.push_suffix(i, bounds.decimals, scratch);
            }
            scratch.push('\n');
        }
        scratch.push_str(line);
        scratch.push_str("+Inf\"} ");
        push_u64(scratch, count);
        if let Some(e) = exemplars {
            e.push_suffix(bounds.tails.len(), bounds.decimals, scratch);
        }
        scratch.push('\n');
        scratch.push_str(name);
        scratch.push_str("_sum");
        push_labels(scratch, labels);
        scratch.push(' ');
        push_decimal(scratch, sum, bounds.decimals, false);
        scratch.push('\n');
        scratch.push_str(name);
        scratch.push_str("_count");
        push_labels(scratch, labels);
        scratch.push(' ');
        push_u64(scratch, count);
        scratch.push('\n');
        self.out.write_str(scratch)
    }
}

/// The bounds of a histogram family; `None` for the other kinds.
fn histogram_bounds(family: &Family) -> Option<&ExportBounds> {
    match family.kind {
        Kind::Histogram => family.bounds.as_ref(),
        Kind::Counter | Kind::Gauge => None,
    }
}

/// The bound ends of `bounds` at another precision than theirs.
fn fill_ends(ends: &mut Vec<usize>, bounds: &ExportBounds, bits: u32) {
    ends.clear();
    ends.extend(bounds.bounds.iter().map(|b| histogram::bound_end(*b, bits)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(value: u64, decimals: u8, canonical: bool) -> String {
        let mut s = String::new();
        push_decimal(&mut s, value, decimals, canonical);
        s
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(0, 6, false), "0");
        assert_eq!(decimal(0, 6, true), "0.0");
        assert_eq!(decimal(1, 6, false), "0.000001");
        assert_eq!(decimal(1500, 6, false), "0.0015");
        assert_eq!(decimal(1_000_000, 6, true), "1.0");
        assert_eq!(decimal(1_024_000, 6, true), "1.024");
        assert_eq!(decimal(65_536_000, 6, true), "65.536");
        assert_eq!(decimal(u64::MAX, 6, false), "18446744073709.551615");
        assert_eq!(decimal(8, 0, true), "8.0");
        assert_eq!(decimal(8, 0, false), "8");
        assert_eq!(decimal(12, 3, false), "0.012");
        assert_eq!(decimal(u64::MAX, 19, false), "1.8446744073709551615");
        assert_eq!(decimal(5, 20, false), "0.00000000000000000005");
        assert_eq!(decimal(u64::MAX, 22, false), "0.0018446744073709551615");
        let mut s = String::new();
        push_u64(&mut s, u64::MAX);
        push_u64(&mut s, 0);
        push_u64(&mut s, 10);
        assert_eq!(s, "18446744073709551615010");
    }

    #[test]
    fn values() {
        let text = |v: Value| {
            let mut s = String::new();
            push_value(&mut s, v);
            s
        };
        assert_eq!(text(Value::I64(i64::MIN)), "-9223372036854775808");
        assert_eq!(text(Value::I64(-3)), "-3");
        assert_eq!(text(Value::F64(0.25)), "0.25");
        assert_eq!(text(Value::F64(f64::NAN)), "NaN");
        assert_eq!(text(Value::F64(f64::NEG_INFINITY)), "-Inf");
        assert_eq!(text(Value::F64(f64::INFINITY)), "+Inf");
        assert_eq!(
            text(Value::Scaled {
                value: 2_500,
                decimals: 3
            }),
            "2.5"
        );
    }

    #[test]
    fn label_escaping() {
        let mut s = String::new();
        escape_label_value("a\\b\"c\nd", &mut s);
        assert_eq!(s, r#"a\\b\"c\nd"#);
    }
}
