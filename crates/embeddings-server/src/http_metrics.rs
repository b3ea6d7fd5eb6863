//! Per-endpoint request counters and latency histograms of the HTTP layer.
//!
//! Each request moves exactly one `embeddings_http_requests_total{endpoint,code}`
//! series, once, whatever the outcome (the middleware in [`crate::app`] is the
//! only writer), so rejected requests are never double counted. Every series
//! exists from the start at zero.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::routes::Endpoint;

use embeddings_metrics::histogram::DEFAULT_PRECISION_BITS;
use embeddings_metrics::{
    Counter, DEFAULT_LATENCY_BOUNDS_US, Encoder, Exemplars, ExportBounds, Family, Histogram,
    Labels, MetricsError,
};

/// The endpoints, as they appear in the `endpoint` label.
pub const ENDPOINTS: [&str; Endpoint::ALL.len()] = {
    let mut labels = [""; Endpoint::ALL.len()];
    let mut i = 0;
    while i < labels.len() {
        labels[i] = Endpoint::ALL[i].label();
        i += 1;
    }
    labels
};

/// The status codes the server answers with, as they appear in the `code` label.
pub const CODES: [u16; 13] = [
    200, 400, 401, 404, 405, 408, 413, 422, 429, 500, 503, 504, 0,
];

/// Index of `code` in [`CODES`]; unknown codes go to the last slot (`code="other"`).
fn code_index(code: u16) -> usize {
    CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(CODES.len() - 1)
}

/// Index of `endpoint` in [`ENDPOINTS`]; unknown ones count as `other`.
#[must_use]
pub fn endpoint_index(endpoint: &str) -> usize {
    ENDPOINTS
        .iter()
        .position(|e| *e == endpoint)
        .unwrap_or(ENDPOINTS.len() - 1)
}

/// The HTTP layer's recorder.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Vec<Counter>,
    request_labels: Vec<Labels>,
    durations: Vec<Histogram>,
    /// The latest request id per duration bucket, per endpoint.
    exemplars: Vec<Exemplars>,
    endpoint_labels: Vec<Labels>,
    requests_family: Family,
    duration_family: Family,
    /// Connections open now (accepted and not yet closed).
    open: AtomicU64,
    /// Connections closed unserved because `--max-connections` were open.
    refused: Counter,
    /// Open connections asked to close to make room for a new one.
    evicted: Counter,
    open_family: Family,
    refused_family: Family,
    evicted_family: Family,
}

impl HttpMetrics {
    /// A recorder with every series at zero.
    ///
    /// # Errors
    /// Only if the fixed names above were invalid (a bug, caught by tests).
    pub fn new(prefix: &str) -> Result<Self, MetricsError> {
        let mut request_labels = Vec::new();
        for endpoint in ENDPOINTS {
            for code in CODES {
                let code = if code == 0 {
                    "other".to_owned()
                } else {
                    code.to_string()
                };
                request_labels.push(Labels::new([
                    ("endpoint", endpoint),
                    ("code", code.as_str()),
                ])?);
            }
        }
        let endpoint_labels = ENDPOINTS
            .iter()
            .map(|e| Labels::new([("endpoint", *e)]))
            .collect::<Result<Vec<_>, _>>()?;
        // Microseconds recorded, seconds exported (6 decimals), at the histograms' precision.
        let bounds = ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, DEFAULT_PRECISION_BITS)?;
        Ok(Self {
            requests: (0..request_labels.len()).map(|_| Counter::new()).collect(),
            request_labels,
            durations: ENDPOINTS.iter().map(|_| Histogram::new()).collect(),
            exemplars: ENDPOINTS.iter().map(|_| Exemplars::new(&bounds)).collect(),
            endpoint_labels,
            requests_family: Family::counter(
                &format!("{prefix}http_requests"),
                "HTTP requests answered, by endpoint and status code.",
            )?,
            duration_family: Family::histogram(
                &format!("{prefix}http_request_duration_seconds"),
                "Time from receiving a request to sending its response head, by endpoint.",
                bounds,
            )?,
            open: AtomicU64::new(0),
            refused: Counter::new(),
            evicted: Counter::new(),
            open_family: Family::gauge(
                &format!("{prefix}http_connections_open"),
                "HTTP connections open now.",
            )?,
            refused_family: Family::counter(
                &format!("{prefix}http_connections_refused"),
                "Connections closed unserved: --max-connections were open and none became free.",
            )?,
            evicted_family: Family::counter(
                &format!("{prefix}http_connections_evicted"),
                "Open connections asked to close (once idle) to make room for a new one at --max-connections.",
            )?,
        })
    }

    /// Counts one answered request, and keeps `request_id` as the exemplar
    /// of the duration bucket it lands in.
    pub fn record(&self, endpoint: usize, code: u16, micros: u64, request_id: &str) {
        let endpoint = endpoint.min(ENDPOINTS.len() - 1);
        if let Some(c) = self.requests.get(endpoint * CODES.len() + code_index(code)) {
            c.inc();
        }
        if let Some(h) = self.durations.get(endpoint) {
            h.record(micros);
        }
        if let Some(e) = self.exemplars.get(endpoint) {
            e.record(micros, request_id);
        }
    }

    /// Counts one connection opened; the guard counts it closed.
    pub fn connection_opened(&self) -> ConnectionGuard<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { metrics: self }
    }

    /// Counts one connection refused for the connection limit.
    pub fn connection_refused(&self) {
        self.refused.inc();
    }

    /// Counts one open connection asked to close for a new one.
    pub fn connection_evicted(&self) {
        self.evicted.inc();
    }

    /// The count for one endpoint and code (for tests and `/info`).
    #[must_use]
    pub fn count(&self, endpoint: &str, code: u16) -> u64 {
        let i = endpoint_index(endpoint) * CODES.len() + code_index(code);
        self.requests.get(i).map_or(0, Counter::get)
    }

    /// Writes both families.
    ///
    /// # Errors
    /// Only those of the underlying writer.
    pub fn encode(&self, encoder: &mut Encoder<'_>) -> std::fmt::Result {
        {
            let mut family = encoder.family(&self.requests_family)?;
            for (counter, labels) in self.requests.iter().zip(&self.request_labels) {
                family.counter(labels, counter.get())?;
            }
        }
        {
            let mut family = encoder.family(&self.duration_family)?;
            for ((histogram, exemplars), labels) in self
                .durations
                .iter()
                .zip(&self.exemplars)
                .zip(&self.endpoint_labels)
            {
                family.histogram_with_exemplars(labels, histogram, exemplars)?;
            }
        }
        let none = Labels::empty();
        encoder
            .family(&self.open_family)?
            .gauge(&none, self.open.load(Ordering::Relaxed))?;
        encoder
            .family(&self.refused_family)?
            .counter(&none, self.refused.get())?;
        encoder
            .family(&self.evicted_family)?
            .counter(&none, self.evicted.get())?;
        Ok(())
    }
}

/// Counts a connection open while it lives; see [`HttpMetrics::connection_opened`].
#[derive(Debug)]
#[must_use = "the connection counts as closed when the guard is dropped"]
pub struct ConnectionGuard<'a> {
    metrics: &'a HttpMetrics,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
    }
}
