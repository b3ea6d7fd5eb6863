//! Exposition: golden text, escaping, every series from the start, exact
//! bucket counts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use embeddings_metrics::{
    Clock, Format, MetricsConfig, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE,
    PipelineMetrics,
};
use embeddings_types::{ErrorKind, ModelId, Stage};
use proptest::prelude::*;

fn tiny() -> PipelineMetrics {
    let config = MetricsConfig::default()
        .with_prefix("t_")
        .with_latency_bounds_us(vec![100, 1_000])
        .with_batch_size_bounds(vec![1, 8]);
    PipelineMetrics::with_config_and_clock(config, Clock::manual().0).unwrap()
}

/// The lines of family `name` (from its `# HELP` to the next family).
fn family(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("# HELP {name} "))
        .unwrap_or_else(|| panic!("no family {name}"));
    let rest = &text[start..];
    let end = rest[1..].find("# HELP ").map_or(rest.len(), |i| i + 1);
    let block = &rest[..end];
    block.strip_suffix("# EOF\n").unwrap_or(block).to_owned()
}

#[test]
fn golden_prometheus_counter_and_histogram_families() {
    let m = tiny();
    assert_eq!(
        family(&m.render_prometheus(), "t_errors_total"),
        "# HELP t_errors_total Failures by kind, each counted once per failed unit (request, input or computation); client kinds (validation, tokenization, overload, cancelled) do not feed errors_per_minute.\n\
         # TYPE t_errors_total counter\n\
         t_errors_total{kind=\"validation\"} 0\n\
         t_errors_total{kind=\"tokenization\"} 0\n\
         t_errors_total{kind=\"inference\"} 0\n\
         t_errors_total{kind=\"timeout\"} 0\n\
         t_errors_total{kind=\"overload\"} 0\n\
         t_errors_total{kind=\"internal\"} 0\n\
         t_errors_total{kind=\"cancelled\"} 0\n"
    );
    for v in [0, 100, 101, 1_000, 2_500_000] {
        m.record_batch(8, v);
    }
    assert_eq!(
        family(&m.render_prometheus(), "t_batch_latency_seconds"),
        "# HELP t_batch_latency_seconds Latency of whole batches.\n\
         # TYPE t_batch_latency_seconds histogram\n\
         t_batch_latency_seconds_bucket{le=\"0.0001\"} 2\n\
         t_batch_latency_seconds_bucket{le=\"0.001\"} 4\n\
         t_batch_latency_seconds_bucket{le=\"+Inf\"} 5\n\
         t_batch_latency_seconds_sum 2.501201\n\
         t_batch_latency_seconds_count 5\n"
    );
    assert_eq!(
        family(&m.render_prometheus(), "t_batch_size"),
        "# HELP t_batch_size Items per processed batch.\n\
         # TYPE t_batch_size histogram\n\
         t_batch_size_bucket{le=\"1.0\"} 0\n\
         t_batch_size_bucket{le=\"8.0\"} 5\n\
         t_batch_size_bucket{le=\"+Inf\"} 5\n\
         t_batch_size_sum 40\n\
         t_batch_size_count 5\n"
    );
}

#[test]
fn golden_openmetrics_counter_and_histogram_families() {
    let m = tiny();
    m.record_cache_hit();
    m.record_batch(8, 1_000);
    let text = m.render_openmetrics();
    assert!(text.ends_with("t_input_tokens_count{model=\"late_interaction\"} 0\n# EOF\n"));
    assert_eq!(
        family(&text, "t_cache_hits"),
        "# HELP t_cache_hits Embedding-cache hits.\n\
         # TYPE t_cache_hits counter\n\
         t_cache_hits_total 1\n"
    );
    assert_eq!(
        family(&text, "t_batch_latency_seconds"),
        "# HELP t_batch_latency_seconds Latency of whole batches.\n\
         # TYPE t_batch_latency_seconds histogram\n\
         # UNIT t_batch_latency_seconds seconds\n\
         t_batch_latency_seconds_bucket{le=\"0.0001\"} 0\n\
         t_batch_latency_seconds_bucket{le=\"0.001\"} 1\n\
         t_batch_latency_seconds_bucket{le=\"+Inf\"} 1\n\
         t_batch_latency_seconds_sum 0.001\n\
         t_batch_latency_seconds_count 1\n"
    );
    assert_eq!(
        family(&text, "t_gpu_memory_used_bytes"),
        "# HELP t_gpu_memory_used_bytes GPU memory in use.\n\
         # TYPE t_gpu_memory_used_bytes gauge\n\
         # UNIT t_gpu_memory_used_bytes bytes\n",
        "an unset memory figure has no sample"
    );
    assert!(text.contains("# HELP t_model_errors Failures attributed to each model slot by kind; one failure serving several slots counts once in errors and once here per slot.\n"));
    assert_eq!(Format::OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
    assert_eq!(Format::Prometheus.content_type(), PROMETHEUS_CONTENT_TYPE);
}

#[test]
fn latency_exemplars_carry_the_request_id_in_openmetrics_only() {
    let m = tiny();
    m.record_embedding_for(std::time::Duration::from_micros(700), "req-7");
    m.record_embedding(50);
    m.record_embedding_for(std::time::Duration::from_micros(5_000), "req-9");
    let text = m.render_openmetrics();
    let latency = family(&text, "t_latency_seconds");
    let lines: Vec<&str> = latency
        .lines()
        .filter(|l| l.starts_with("t_latency_seconds_bucket"))
        .map(|l| {
            if l.contains(" # ") {
                l.rsplit_once(' ').map_or(l, |(head, _timestamp)| head)
            } else {
                l
            }
        })
        .collect();
    // The timestamp (last field) is wall-clock time; the rest is exact.
    assert_eq!(
        lines,
        [
            "t_latency_seconds_bucket{le=\"0.0001\"} 1",
            "t_latency_seconds_bucket{le=\"0.001\"} 2 # {request_id=\"req-7\"} 0.0007",
            "t_latency_seconds_bucket{le=\"+Inf\"} 3 # {request_id=\"req-9\"} 0.005",
        ]
    );
    assert!(
        !m.render_prometheus().contains("req-"),
        "the 0.0.4 text has no exemplars"
    );
    m.reset();
    assert!(!m.render_openmetrics().contains("request_id"));
}

#[test]
fn const_label_values_are_escaped() {
    let config = MetricsConfig::default().with_const_label("replica", "a\\b\"c\nd");
    let m = PipelineMetrics::with_config(config).unwrap();
    for text in [m.render_prometheus(), m.render_openmetrics()] {
        assert!(
            text.contains("embeddings_generated_total{replica=\"a\\\\b\\\"c\\nd\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "embeddings_errors_total{replica=\"a\\\\b\\\"c\\nd\",kind=\"timeout\"} 0\n"
            )
        );
        assert!(text.contains(
            "embeddings_latency_seconds_bucket{replica=\"a\\\\b\\\"c\\nd\",le=\"+Inf\"} 0\n"
        ));
        // No raw newline inside any line.
        assert!(
            text.lines().all(|l| l.starts_with('#')
                || l.matches('"').count() % 2 == 0
                || l.contains("\\\""))
        );
    }
}

#[test]
fn every_series_exists_from_the_start_at_zero() {
    // A manual clock, so uptime is exactly zero too.
    let m = PipelineMetrics::with_config_and_clock(MetricsConfig::default(), Clock::manual().0)
        .unwrap();
    let text = m.render_prometheus();
    for model in ModelId::ALL {
        assert!(text.contains(&format!(
            "embeddings_model_requests_total{{model=\"{model}\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "embeddings_model_latency_seconds_count{{model=\"{model}\"}} 0\n"
        )));
        // An average of no sample is unknown: no series at all.
        assert!(!text.contains(&format!(
            "embeddings_model_latency_ema_seconds{{model=\"{model}\"}}"
        )));
        for kind in ErrorKind::ALL {
            assert!(text.contains(&format!(
                "embeddings_model_errors_total{{model=\"{model}\",kind=\"{kind}\"}} 0\n"
            )));
        }
    }
    for stage in Stage::ALL {
        assert!(text.contains(&format!(
            "embeddings_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} 0\n"
        )));
    }
    for name in [
        "generated",
        "inputs_served",
        "cache_hits",
        "cache_misses",
        "cache_evictions",
        "batches",
        "batch_items",
    ] {
        assert!(
            text.contains(&format!("\nembeddings_{name}_total 0\n")),
            "{name}"
        );
    }
    for name in [
        "queue_depth",
        "queue_depth_max",
        "in_flight_requests",
        "workers",
        "uptime_seconds",
        "errors_per_minute",
    ] {
        assert!(text.contains(&format!("\nembeddings_{name} 0\n")), "{name}");
    }
    assert!(
        !text.contains("\nembeddings_latency_ema_seconds "),
        "no average of no sample"
    );
    // Every sample line is zero (memory gauges have none yet).
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.ends_with(" 0"), "{line}");
    }
    // Bounded cardinality: 23 bounds + Inf per latency series.
    let buckets = text
        .lines()
        .filter(|l| l.starts_with("embeddings_latency_seconds_bucket"))
        .count();
    assert_eq!(buckets, 24);
    // Every family has HELP and TYPE, each exactly once.
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(helps, types);
}

#[test]
fn write_variant_matches_render() {
    let m = PipelineMetrics::with_config_and_clock(MetricsConfig::default(), Clock::manual().0)
        .unwrap();
    m.record_embedding(5);
    let mut out = String::from("prefix\n");
    m.write_exposition(Format::Prometheus, &mut out).unwrap();
    assert_eq!(out, format!("prefix\n{}", m.render_prometheus()));
}

/// Parses `name{...le="x"...} value` lines of one family into (le, value).
fn buckets(text: &str, series_prefix: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| l.starts_with(series_prefix))
        .map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (le, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn exported_bucket_counts_are_exact(values in prop::collection::vec(prop_oneof![0u64..200_000, 0u64..100_000_000, Just(u64::MAX)], 0..300)) {
        let m = PipelineMetrics::new();
        for v in &values {
            m.record_stage(Stage::Inference, *v);
        }
        for text in [m.render_prometheus(), m.render_openmetrics()] {
            let got = buckets(&text, "embeddings_stage_latency_seconds_bucket{stage=\"inference\"");
            prop_assert_eq!(got.len(), embeddings_metrics::DEFAULT_LATENCY_BOUNDS_US.len() + 1);
            for ((le, count), bound) in got.iter().zip(embeddings_metrics::DEFAULT_LATENCY_BOUNDS_US) {
                let exact = values.iter().filter(|v| **v <= bound).count() as u64;
                prop_assert_eq!(*count, exact, "le={}", le);
            }
            let (le, inf) = got.last().unwrap();
            prop_assert_eq!(le.as_str(), "+Inf");
            prop_assert_eq!(*inf, values.len() as u64);
            let count_line = format!("embeddings_stage_latency_seconds_count{{stage=\"inference\"}} {}\n", values.len());
            prop_assert!(text.contains(&count_line));
        }
    }
}
