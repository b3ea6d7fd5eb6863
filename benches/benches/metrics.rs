//! Recording and exposition cost of `embeddings-metrics`, with its peers
//! measured in the same run: raw `AtomicU64::fetch_add` (the floor), the
//! `prometheus` crate, `prometheus-client`, `metrics` + `metrics-exporter-prometheus`,
//! and the single-threaded `hdrhistogram`.
//!
//! Groups: `counter/*` and `histogram/*` (recording, one thread and two
//! threads on one metric), `snapshot`, `render/12-counters-12-histograms`
//! (the same 12 labelled counters and 12 labelled histograms, 23 bounds,
//! populated with the same values, rendered by each library) and
//! `render/pipeline-full` (every family of a `PipelineMetrics` after a
//! realistic workload). Results and targets: `BENCHMARKS.md`.
//!
//! Two-thread groups report the time per operation *per thread* while both
//! threads hit the same metric; aggregate throughput is `2 / time`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark set-up: a failed unwrap is a failed benchmark"
)]

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use embeddings_metrics::{
    Counter, DEFAULT_LATENCY_BOUNDS_US, Encoder, ExportBounds, Family, Format, Histogram, Labels,
    PipelineMetrics,
};
use embeddings_types::{ErrorKind, ModelId, Stage};

/// Latencies (µs) cycled through by histogram benches: a spread over four
/// decades so bucket lookup is not always the same cache line.
const VALUES: [u64; 16] = [
    850, 1_200, 95, 4_700, 12_000, 330, 2_900, 61_000, 1_050, 7_800, 410, 150_000, 2_200, 18, 990,
    5_500,
];

/// Runs `op(i)` `iters` times on each of two threads at once and returns the
/// wall time; criterion divides by `iters`, giving time per op per thread.
fn two_threads<F: Fn(u64) + Sync>(iters: u64, op: F) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for i in 0..iters {
                    op(i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

struct Peers {
    raw: AtomicU64,
    prom_counter: prometheus::IntCounter,
    prom_hist: prometheus::Histogram,
    pc_counter: prometheus_client::metrics::counter::Counter,
    pc_hist: prometheus_client::metrics::histogram::Histogram,
    m_counter: metrics::Counter,
    m_hist: metrics::Histogram,
    _m_recorder: metrics_exporter_prometheus::PrometheusRecorder,
}

/// Latency buckets in seconds shared by the peers: 1 ms .. ~16 s, 15 buckets.
fn peer_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_1, 2.0, 18).unwrap_or_default()
}

impl Peers {
    fn new() -> Self {
        let prom_counter = prometheus::IntCounter::new("c_total", "c").unwrap();
        let prom_hist = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("h_seconds", "h").buckets(peer_buckets()),
        )
        .unwrap();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&peer_buckets())
            .unwrap()
            .build_recorder();
        let (m_counter, m_hist) = metrics::with_local_recorder(&recorder, || {
            (
                metrics::counter!("c_total"),
                metrics::histogram!("h_seconds"),
            )
        });
        Self {
            raw: AtomicU64::new(0),
            prom_counter,
            prom_hist,
            pc_counter: Default::default(),
            pc_hist: prometheus_client::metrics::histogram::Histogram::new(peer_buckets()),
            m_counter,
            m_hist,
            _m_recorder: recorder,
        }
    }
}

fn counters(c: &mut Criterion) {
    let ours = PipelineMetrics::new();
    let counter = Counter::new();
    let p = Peers::new();

    let mut g = c.benchmark_group("counter/1-thread");
    g.bench_function("raw AtomicU64::fetch_add", |b| {
        b.iter(|| p.raw.fetch_add(1, Ordering::Relaxed))
    });
    g.bench_function("ours record_cache_hit", |b| {
        b.iter(|| ours.record_cache_hit())
    });
    g.bench_function("ours Counter::inc", |b| b.iter(|| counter.inc()));
    g.bench_function("prometheus IntCounter::inc", |b| {
        b.iter(|| p.prom_counter.inc())
    });
    g.bench_function("prometheus-client Counter::inc", |b| {
        b.iter(|| p.pc_counter.inc())
    });
    g.bench_function("metrics Counter::increment", |b| {
        b.iter(|| p.m_counter.increment(1))
    });
    g.finish();

    let mut g = c.benchmark_group("counter/2-threads-same-metric");
    g.bench_function("raw AtomicU64::fetch_add", |b| {
        b.iter_custom(|n| {
            two_threads(n, |_| {
                black_box(p.raw.fetch_add(1, Ordering::Relaxed));
            })
        })
    });
    g.bench_function("ours record_cache_hit", |b| {
        b.iter_custom(|n| two_threads(n, |_| ours.record_cache_hit()))
    });
    g.bench_function("ours Counter::inc", |b| {
        b.iter_custom(|n| two_threads(n, |_| counter.inc()))
    });
    g.bench_function("prometheus IntCounter::inc", |b| {
        b.iter_custom(|n| two_threads(n, |_| p.prom_counter.inc()))
    });
    g.bench_function("prometheus-client Counter::inc", |b| {
        b.iter_custom(|n| {
            two_threads(n, |_| {
                p.pc_counter.inc();
            })
        })
    });
    g.bench_function("metrics Counter::increment", |b| {
        b.iter_custom(|n| two_threads(n, |_| p.m_counter.increment(1)))
    });
    g.finish();
}

fn value(i: u64) -> u64 {
    VALUES[(i & 15) as usize]
}

fn histograms(c: &mut Criterion) {
    let ours = PipelineMetrics::new();
    let raw = Histogram::new();
    let p = Peers::new();
    let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();

    let mut g = c.benchmark_group("histogram/1-thread");
    let mut i = 0u64;
    g.bench_function("ours Histogram::record", |b| {
        b.iter(|| {
            i += 1;
            raw.record(value(i))
        })
    });
    g.bench_function("ours record_model_latency", |b| {
        b.iter(|| {
            i += 1;
            ours.record_model_latency(ModelId::Semantic, value(i))
        })
    });
    g.bench_function("ours record_embedding", |b| {
        b.iter(|| {
            i += 1;
            ours.record_embedding(value(i))
        })
    });
    g.bench_function("prometheus Histogram::observe", |b| {
        b.iter(|| {
            i += 1;
            p.prom_hist.observe(value(i) as f64 * 1e-6)
        })
    });
    g.bench_function("prometheus-client Histogram::observe", |b| {
        b.iter(|| {
            i += 1;
            p.pc_hist.observe(value(i) as f64 * 1e-6)
        })
    });
    g.bench_function("metrics Histogram::record", |b| {
        b.iter(|| {
            i += 1;
            p.m_hist.record(value(i) as f64 * 1e-6)
        })
    });
    g.bench_function("hdrhistogram record (not thread-safe)", |b| {
        b.iter(|| {
            i += 1;
            hdr.saturating_record(value(i))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("histogram/2-threads-same-metric");
    g.bench_function("ours Histogram::record", |b| {
        b.iter_custom(|n| two_threads(n, |i| raw.record(value(i))))
    });
    g.bench_function("ours record_model_latency", |b| {
        b.iter_custom(|n| {
            two_threads(n, |i| {
                ours.record_model_latency(ModelId::Semantic, value(i))
            })
        })
    });
    g.bench_function("ours record_embedding", |b| {
        b.iter_custom(|n| two_threads(n, |i| ours.record_embedding(value(i))))
    });
    g.bench_function("prometheus Histogram::observe", |b| {
        b.iter_custom(|n| two_threads(n, |i| p.prom_hist.observe(value(i) as f64 * 1e-6)))
    });
    g.bench_function("prometheus-client Histogram::observe", |b| {
        b.iter_custom(|n| two_threads(n, |i| p.pc_hist.observe(value(i) as f64 * 1e-6)))
    });
    g.bench_function("metrics Histogram::record", |b| {
        b.iter_custom(|n| two_threads(n, |i| p.m_hist.record(value(i) as f64 * 1e-6)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Snapshot and rendering.

/// Observations per series in the 12 + 12 registries.
const SERIES_OBSERVATIONS: u64 = 2_000;

/// The exported bounds every library uses: ours, in seconds.
fn bounds_seconds() -> Vec<f64> {
    DEFAULT_LATENCY_BOUNDS_US
        .iter()
        .map(|b| *b as f64 / 1e6)
        .collect()
}

/// The value model `m` records at step `i` (µs).
fn model_value(m: usize, i: u64) -> u64 {
    value(i) + (m as u64) * 37
}

/// A recorder after a realistic single-threaded workload: 20 000 requests
/// over the 12 model slots, all four stages, cache lookups, ~1 % failures,
/// batches of 32.
fn realistic_pipeline() -> PipelineMetrics {
    let m = PipelineMetrics::new();
    m.set_workers(4);
    m.set_process_rss_bytes(512 << 20);
    for i in 0..20_000u64 {
        let model = ModelId::ALL[(i % 12) as usize];
        m.record_model_request(model);
        m.record_stage(Stage::QueueWait, i % 300);
        m.record_stage(Stage::Tokenization, 50 + i % 100);
        m.record_stage(Stage::Inference, value(i));
        m.record_stage(Stage::Fusion, 30 + i % 70);
        m.record_model_latency(model, value(i) + 100);
        if i % 3 == 0 {
            m.record_cache_hit();
        } else {
            m.record_cache_miss();
        }
        if i % 97 == 0 {
            m.record_model_failure(model, ErrorKind::Timeout);
        } else {
            m.record_embedding(value(i) + 400);
        }
        if i % 32 == 31 {
            m.record_batch(32, 20_000 + i);
        }
    }
    m
}

fn snapshot(c: &mut Criterion) {
    let pipeline = realistic_pipeline();
    let mut g = c.benchmark_group("snapshot");
    g.bench_function("ours PipelineMetrics::snapshot", |b| {
        b.iter(|| pipeline.snapshot())
    });
    g.finish();
}

/// Our side of the 12 + 12 registry: what a user of the public encoder
/// writes — striped counters, live histograms, families and label sets
/// prepared once.
struct Ours {
    requests: Family,
    latency: Family,
    labels: Vec<Labels>,
    counters: Vec<Counter>,
    histograms: Vec<Histogram>,
}

impl Ours {
    fn new(models: &[&str]) -> Self {
        let bounds = ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, 6).unwrap();
        Self {
            requests: Family::counter("requests", "Requests per model.").unwrap(),
            latency: Family::histogram("latency_seconds", "Latency per model.", bounds).unwrap(),
            labels: models
                .iter()
                .map(|m| Labels::new([("model", *m)]).unwrap())
                .collect(),
            counters: models.iter().map(|_| Counter::new()).collect(),
            histograms: models.iter().map(|_| Histogram::new()).collect(),
        }
    }

    fn render(&self, format: Format) -> String {
        let mut out = String::new();
        let mut e = Encoder::new(&mut out, format);
        let mut f = e.family(&self.requests).unwrap();
        for (labels, counter) in self.labels.iter().zip(&self.counters) {
            f.counter(labels, counter.get()).unwrap();
        }
        let mut f = e.family(&self.latency).unwrap();
        for (labels, histogram) in self.labels.iter().zip(&self.histograms) {
            f.histogram(labels, histogram).unwrap();
        }
        e.finish().unwrap();
        out
    }
}

/// Sanity check outside the timing: every rendering holds the 12 `_count`
/// lines of the same data.
fn assert_counts(who: &str, text: &str) {
    let counts = text
        .lines()
        .filter(|l| l.starts_with("latency_seconds_count{") && l.ends_with(" 2000"))
        .count();
    assert_eq!(counts, 12, "{who} rendered:\n{text}");
}

fn render(c: &mut Criterion) {
    let models: Vec<&'static str> = ModelId::ALL.iter().map(|m| m.as_str()).collect();
    let bounds = bounds_seconds();
    let ours = Ours::new(&models);

    // prometheus
    let prom_registry = prometheus::Registry::new();
    let prom_requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new("requests_total", "Requests per model."),
        &["model"],
    )
    .unwrap();
    let prom_latency = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("latency_seconds", "Latency per model.")
            .buckets(bounds.clone()),
        &["model"],
    )
    .unwrap();
    prom_registry
        .register(Box::new(prom_requests.clone()))
        .unwrap();
    prom_registry
        .register(Box::new(prom_latency.clone()))
        .unwrap();

    // prometheus-client
    use prometheus_client::metrics::{counter::Counter as PcCounter, family::Family as PcFamily};
    type PcLabels = [(&'static str, &'static str); 1];
    let mut pc_registry = prometheus_client::registry::Registry::default();
    let pc_requests = PcFamily::<PcLabels, PcCounter>::default();
    let pc_bounds = bounds.clone();
    let pc_latency = PcFamily::<PcLabels, prometheus_client::metrics::histogram::Histogram, _>::new_with_constructor(
        move || prometheus_client::metrics::histogram::Histogram::new(pc_bounds.iter().copied()),
    );
    pc_registry.register("requests", "Requests per model.", pc_requests.clone());
    pc_registry.register("latency_seconds", "Latency per model.", pc_latency.clone());

    // metrics + metrics-exporter-prometheus
    let m_recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&bounds)
        .unwrap()
        .build_recorder();
    let m_handle = m_recorder.handle();
    let m_series: Vec<(metrics::Counter, metrics::Histogram)> =
        metrics::with_local_recorder(&m_recorder, || {
            models
                .iter()
                .map(|name| {
                    (
                        metrics::counter!("requests_total", "model" => *name),
                        metrics::histogram!("latency_seconds", "model" => *name),
                    )
                })
                .collect()
        });

    // The same data everywhere.
    for (mi, name) in models.iter().enumerate() {
        let labels = [("model", *name)];
        for i in 0..SERIES_OBSERVATIONS {
            let us = model_value(mi, i);
            let secs = us as f64 / 1e6;
            ours.counters[mi].inc();
            ours.histograms[mi].record(us);
            prom_requests.with_label_values(&[name]).inc();
            prom_latency.with_label_values(&[name]).observe(secs);
            pc_requests.get_or_create(&labels).inc();
            pc_latency.get_or_create(&labels).observe(secs);
            m_series[mi].0.increment(1);
            m_series[mi].1.record(secs);
        }
    }
    let prom_render = || {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&prom_registry.gather(), &mut out)
            .unwrap();
        out
    };
    let pc_render = || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &pc_registry).unwrap();
        out
    };
    assert_counts("ours (Prometheus)", &ours.render(Format::Prometheus));
    assert_counts("ours (OpenMetrics)", &ours.render(Format::OpenMetrics));
    assert_counts("prometheus", &prom_render());
    assert_counts("prometheus-client", &pc_render());
    assert_counts("metrics-exporter-prometheus", &m_handle.render());

    let mut g = c.benchmark_group("render/12-counters-12-histograms");
    g.bench_function("ours Encoder (Prometheus)", |b| {
        b.iter(|| ours.render(Format::Prometheus))
    });
    g.bench_function("ours Encoder (OpenMetrics)", |b| {
        b.iter(|| ours.render(Format::OpenMetrics))
    });
    g.bench_function("prometheus TextEncoder (gather + encode)", |b| {
        b.iter(prom_render)
    });
    g.bench_function("prometheus-client encode", |b| b.iter(pc_render));
    g.bench_function("metrics-exporter-prometheus render", |b| {
        b.iter(|| m_handle.render())
    });
    g.finish();

    let pipeline = realistic_pipeline();
    let mut g = c.benchmark_group("render/pipeline-full");
    g.bench_function("ours render_prometheus", |b| {
        b.iter(|| pipeline.render_prometheus())
    });
    g.bench_function("ours render_openmetrics", |b| {
        b.iter(|| pipeline.render_openmetrics())
    });
    g.finish();
}

criterion_group!(benches, counters, histograms, snapshot, render);
criterion_main!(benches);
