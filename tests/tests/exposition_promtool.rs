//! Renders a realistic, concurrently recorded workload in both exposition
//! formats and checks them with `promtool check metrics` (the Prometheus
//! project's own parser and linter).
//!
//! promtool 2.42 parses its input as the Prometheus text format only: fed
//! OpenMetrics, it reads the counter sample `x_total` of family `x` as a
//! separate, untyped metric without help and fails the lint. So:
//!
//! - the Prometheus rendering goes to promtool as is, which must exit 0 with
//!   no output (no parse error, no lint complaint);
//! - the OpenMetrics rendering goes through a strict structural check of the
//!   OpenMetrics 1.0 rules we rely on (metadata before samples, one block per
//!   family, sample suffixes per type, `# UNIT` matching the name suffix,
//!   label syntax and escapes, canonical `le`, cumulative buckets ending in
//!   `+Inf` equal to `_count`, `# EOF` last), and is then mechanically
//!   translated to the Prometheus format, which must be byte-identical to the
//!   Prometheus rendering (so promtool's verdict on that covers it too), and
//!   that translation is also fed to promtool.
//!
//! Both renderings use a manual clock, so they describe the same instant.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use embeddings_metrics::{
    Clock, Counter, DEFAULT_LATENCY_BOUNDS_US, Encoder, ExportBounds, Family as MetricFamily,
    Format, Histogram, Labels, MetricsConfig, PipelineMetrics, Value,
};
use embeddings_tests::{
    check_openmetrics, openmetrics_to_prometheus, promtool, promtool_check, write_temp,
};
use embeddings_types::{ErrorKind, ModelId, Stage};

fn workload() -> Arc<PipelineMetrics> {
    let (clock, hand) = Clock::manual();
    let config = MetricsConfig::default().with_const_label("replica", "eu-1 \"blue\"\\pool\nB");
    let metrics = Arc::new(PipelineMetrics::with_config_and_clock(config, clock).unwrap());
    metrics.set_workers(4);
    metrics.set_process_rss_bytes(512 << 20);
    metrics.set_gpu_memory_bytes(6 << 30, 24 << 30);
    // Cache figures deliberately left unset: their families must still parse.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let m = Arc::clone(&metrics);
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let _in_flight = m.track_in_flight();
                    m.queue_depth_inc();
                    let model = ModelId::ALL[((i + t) % 12) as usize];
                    m.record_model_request(model);
                    m.record_stage(Stage::QueueWait, i % 300);
                    m.record_stage(Stage::Tokenization, 50 + i % 100);
                    m.record_stage(Stage::Inference, 800 + (i * 37) % 20_000);
                    m.record_stage(Stage::Fusion, 30 + i % 70);
                    m.record_model_latency(model, 700 + (i * 53) % 25_000);
                    if i % 3 == 0 {
                        m.record_cache_hit();
                    } else {
                        m.record_cache_miss();
                    }
                    if i % 97 == 0 {
                        m.record_model_failure(model, ErrorKind::ALL[(i % 6) as usize]);
                    } else if i % 501 == 0 {
                        m.record_error();
                    } else {
                        let latency = 1_000 + (i * 71) % 40_000;
                        if i % 5 == 0 {
                            // Ids with characters that need escaping, up to the longest kept.
                            let id = format!("r\\{t}\"{i}-{}", "x".repeat((i % 120) as usize));
                            m.record_embedding_for(Duration::from_micros(latency), &id);
                        } else {
                            m.record_embedding(latency);
                        }
                    }
                    if i % 32 == 31 {
                        m.record_batch(32, 20_000 + i);
                        m.record_cache_eviction(2);
                    }
                    m.queue_depth_dec();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    hand.advance(Duration::from_millis(42_500));
    metrics
}

#[test]
fn prometheus_rendering_passes_promtool() {
    let metrics = workload();
    let text = metrics.render_prometheus();
    promtool_check(&write_temp("metrics.prom", &text));
    // And a fresh recorder (every series at zero) too.
    let fresh = PipelineMetrics::new().render_prometheus();
    promtool_check(&write_temp("fresh.prom", &fresh));
}

#[test]
fn openmetrics_rendering_is_strictly_valid_and_matches_prometheus() {
    let metrics = workload();
    let om = metrics.render_openmetrics();
    let prom = metrics.render_prometheus();
    assert!(
        om.contains(" # {request_id=\"r\\\\"),
        "the workload keeps exemplars"
    );
    check_openmetrics(&om);
    let translated = openmetrics_to_prometheus(&om);
    assert_eq!(
        translated, prom,
        "OpenMetrics and Prometheus renderings disagree"
    );
    promtool_check(&write_temp("translated.prom", &translated));
    check_openmetrics(&PipelineMetrics::new().render_openmetrics());
}

/// Custom families written with the public encoder — counters, gauges of
/// every value kind, histograms in seconds and in plain integers, labels
/// needing escapes — followed by a recorder's own exposition through the
/// same encoder, as a server exposing both would.
fn custom_exposition(format: Format) -> String {
    let requests =
        MetricFamily::counter("app_requests", "Requests by route, \"quoted\" help.").unwrap();
    let temperature = MetricFamily::gauge("app_temperature_celsius", "A gauge.").unwrap();
    let latency = MetricFamily::histogram(
        "app_latency_seconds",
        "Request latency.",
        ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, 6).unwrap(),
    )
    .unwrap();
    let payload = MetricFamily::histogram(
        "app_payload_bytes",
        "Payload sizes.",
        ExportBounds::new(&[0, 64, 1024, 65_536], 0, 6).unwrap(),
    )
    .unwrap();
    let routes: Vec<Labels> = ["/", "/embed", "/odd \"route\"\\x\ny"]
        .iter()
        .map(|r| Labels::new([("route", *r), ("replica", "eu-1")]).unwrap())
        .collect();
    let counters: Vec<Counter> = routes.iter().map(|_| Counter::new()).collect();
    let histograms: Vec<Histogram> = routes.iter().map(|_| Histogram::new()).collect();
    let sizes = Histogram::new();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (counters, histograms, sizes) = (&counters, &histograms, &sizes);
            s.spawn(move || {
                for i in 0..3_000u64 {
                    let r = ((i + t) % 3) as usize;
                    counters[r].inc();
                    histograms[r].record(50 + (i * 7_919) % 3_000_000);
                    sizes.record((i * 31) % 100_000);
                }
            });
        }
    });

    let mut text = String::new();
    let mut e = Encoder::new(&mut text, format);
    let mut f = e.family(&requests).unwrap();
    for (labels, counter) in routes.iter().zip(&counters) {
        f.counter(labels, counter.get()).unwrap();
    }
    let mut f = e.family(&temperature).unwrap();
    f.gauge(&routes[0], -4_i64).unwrap();
    f.gauge(&routes[1], 21.25).unwrap();
    f.gauge(
        &routes[2],
        Value::Scaled {
            value: 36_600,
            decimals: 3,
        },
    )
    .unwrap();
    let mut f = e.family(&latency).unwrap();
    for (labels, histogram) in routes.iter().zip(&histograms) {
        f.histogram(labels, histogram).unwrap();
    }
    e.family(&payload)
        .unwrap()
        .histogram_counts(&Labels::empty(), &sizes.counts())
        .unwrap();
    // The recorder's own families, prefixed apart, through the same encoder.
    let metrics = workload();
    let own = match format {
        Format::Prometheus => metrics.render_prometheus(),
        Format::OpenMetrics => metrics.render_openmetrics(),
    };
    e.finish().unwrap();
    // Both end the exposition: keep a single `# EOF`, last.
    let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
    body + &own
}

#[test]
fn custom_families_pass_promtool_and_the_strict_openmetrics_check() {
    let prom = custom_exposition(Format::Prometheus);
    promtool_check(&write_temp("custom.prom", &prom));
    let om = custom_exposition(Format::OpenMetrics);
    check_openmetrics(&om);
    let translated = openmetrics_to_prometheus(&om);
    promtool_check(&write_temp("custom-translated.prom", &translated));
}

#[test]
fn promtool_rejects_a_broken_exposition() {
    // Guards against a check that passes vacuously.
    let bad = "# TYPE x_seconds_total counter\nx_seconds_total{a=\"1\" 3\n";
    let file = write_temp("bad.prom", bad);
    let input = std::fs::File::open(&file).unwrap();
    let status = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
