//! Recording: exact totals under concurrency, averages, windows, bad input,
//! configuration and the JSON snapshot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use embeddings_metrics::{
    Clock, ManualClock, MemoryGauge, MetricsConfig, MetricsError, PipelineMetrics,
};
use embeddings_types::{ErrorKind, MetricsSnapshot, ModelId, Stage};
use proptest::prelude::*;

fn manual() -> (PipelineMetrics, ManualClock) {
    let (clock, hand) = Clock::manual();
    (
        PipelineMetrics::with_config_and_clock(MetricsConfig::default(), clock).unwrap(),
        hand,
    )
}

#[test]
fn eight_threads_times_100k_of_every_method_are_exact() {
    const THREADS: u64 = 8;
    const N: u64 = 100_000;
    let metrics = PipelineMetrics::new();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let m = &metrics;
            scope.spawn(move || {
                for i in 0..N {
                    let model = ModelId::ALL[(i % 12) as usize];
                    let kind = ErrorKind::ALL[(i % 6) as usize];
                    m.record_embedding(i % 5_000 + t);
                    m.record_cache_hit();
                    m.record_cache_miss();
                    m.record_error();
                    m.record_error_kind(kind, None);
                    m.record_model_failure(model, kind);
                    m.record_model_request(model);
                    m.record_model_latency(model, i % 777);
                    m.record_stage(Stage::ALL[(i % 4) as usize], i % 1000);
                    m.record_batch((i % 64) as usize, i);
                    m.record_cache_eviction(2);
                    m.queue_depth_inc();
                    m.in_flight_inc();
                    m.queue_depth_dec();
                    m.in_flight_dec();
                }
            });
        }
    });
    let total = THREADS * N;
    let s = metrics.snapshot();
    assert_eq!(s.embeddings_generated, total);
    assert_eq!(s.latency.count, total);
    let expected_sum: u64 = (0..THREADS)
        .map(|t| (0..N).map(|i| i % 5_000 + t).sum::<u64>())
        .sum();
    assert_eq!(s.latency.sum, expected_sum);
    assert_eq!(s.cache_hits, total);
    assert_eq!(s.cache_misses, total);
    assert_eq!(s.cache_hit_rate, 0.5);
    assert_eq!(s.cache_evictions, 2 * total);
    assert_eq!(s.errors, 3 * total);
    assert_eq!(s.errors, s.errors_by_kind.values().sum::<u64>());
    // record_error -> internal; the two kinded calls spread evenly over 6 kinds.
    for kind in ErrorKind::ALL {
        let per_kind = 2 * THREADS * (0..N).filter(|i| i % 6 == kind.index() as u64).count() as u64;
        let extra = if kind == ErrorKind::Internal {
            total
        } else {
            0
        };
        assert_eq!(s.errors_by_kind[&kind], per_kind + extra, "{kind}");
    }
    assert_eq!(s.batches_processed, total);
    assert_eq!(
        s.batch_items_processed,
        THREADS * (0..N).map(|i| i % 64).sum::<u64>()
    );
    assert_eq!(s.batch_size.count, total);
    assert_eq!(s.batch_latency.count, total);
    assert_eq!(s.batch_latency.sum, THREADS * (0..N).sum::<u64>());
    for model in ModelId::ALL {
        let m = &s.models[&model];
        let n = THREADS * (0..N).filter(|i| i % 12 == model.index() as u64).count() as u64;
        assert_eq!(m.requests, n, "{model}");
        assert_eq!(m.failures, n, "{model}");
        assert_eq!(m.failures, m.errors_by_kind.values().sum::<u64>());
        assert_eq!(m.timeouts, m.errors_by_kind[&ErrorKind::Timeout]);
        assert_eq!(m.latency.count, n);
    }
    let timeouts = THREADS
        * (0..N)
            .filter(|i| i % 6 == ErrorKind::Timeout.index() as u64)
            .count() as u64;
    assert_eq!(s.models.values().map(|m| m.timeouts).sum::<u64>(), timeouts);
    for stage in Stage::ALL {
        assert_eq!(s.stages[&stage].count, total / 4, "{stage}");
    }
    assert_eq!(s.gauges.queue_depth, 0);
    assert_eq!(s.gauges.in_flight, 0);
    assert!(s.gauges.queue_depth_max >= 1 && s.gauges.queue_depth_max <= THREADS);
}

#[test]
fn more_threads_than_slots_stay_exact_and_reset_races_never_go_negative() {
    // 3 × SHARDS writers alive at once: SHARDS own a stripe (load + store),
    // the rest share the overflow stripe (fetch_add).
    let threads = 3 * embeddings_metrics::SHARDS;
    const N: u64 = 20_000;
    let metrics = PipelineMetrics::new();
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                start.wait();
                for i in 0..N {
                    metrics.record_cache_hit();
                    metrics.record_model_request(ModelId::ALL[(i % 12) as usize]);
                }
            });
        }
        start.wait();
        // Resets racing with the writers: a read after a reset never shows
        // more than was ever recorded, nor a wrapped (negative) total.
        for _ in 0..200 {
            metrics.reset();
            let hits = metrics.snapshot().cache_hits;
            assert!(hits <= threads as u64 * N, "{hits}");
        }
    });
    // Writers done: a reset zeroes exactly, and counting resumes exactly.
    metrics.reset();
    assert_eq!(metrics.snapshot().cache_hits, 0);
    assert_eq!(metrics.cache_hit_rate(), 0.0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..N {
                    metrics.record_cache_hit();
                    metrics.record_cache_miss();
                }
            });
        }
    });
    let s = metrics.snapshot();
    assert_eq!(
        (s.cache_hits, s.cache_misses),
        (threads as u64 * N, threads as u64 * N)
    );
    assert_eq!(metrics.cache_hit_rate(), 0.5);
}

#[test]
fn errors_window_counts_only_the_last_60_seconds() {
    let (m, hand) = manual();
    for _ in 0..30 {
        m.record_error();
    }
    hand.advance(Duration::from_secs(30));
    for _ in 0..10 {
        m.record_error_kind(ErrorKind::Timeout, Some(ModelId::Code));
    }
    hand.advance(Duration::from_secs(30)); // now t = 60 s: the first 30 are 60 s old
    assert_eq!(m.error_rate_per_minute(), 10.0);
    assert_eq!(m.snapshot().errors, 40, "lifetime total is unaffected");
    hand.advance(Duration::from_secs(31));
    assert_eq!(m.error_rate_per_minute(), 0.0);
    assert_eq!(m.snapshot().error_rate_per_minute, 0.0);
}

#[test]
fn young_recorder_error_rate_is_a_count_not_an_extrapolation() {
    let (m, hand) = manual();
    assert_eq!(m.error_rate_per_minute(), 0.0);
    hand.advance(Duration::from_secs(1));
    m.record_error();
    // One failure at 1 s of uptime is 1 in the last minute, not 60.
    assert_eq!(m.error_rate_per_minute(), 1.0);
}

#[test]
fn client_errors_are_counted_but_do_not_feed_the_error_rate() {
    let (m, hand) = manual();
    hand.advance(Duration::from_secs(90));
    for kind in [
        ErrorKind::Validation,
        ErrorKind::Tokenization,
        ErrorKind::Overload,
        ErrorKind::Cancelled,
    ] {
        for _ in 0..20 {
            m.record_failure(kind, &[]);
        }
    }
    let s = m.snapshot();
    assert_eq!(s.errors, 80);
    assert_eq!(s.error_rate_per_minute, 0.0);
    for kind in ErrorKind::SERVICE_FAILURES {
        m.record_failure(kind, &[]);
    }
    assert_eq!(m.error_rate_per_minute(), 3.0);
}

#[test]
fn one_failure_serving_several_slots_counts_once() {
    let (m, _hand) = manual();
    let slots = [ModelId::Semantic, ModelId::Code, ModelId::Causal];
    m.record_failure(ErrorKind::Inference, &slots);
    let s = m.snapshot();
    assert_eq!(s.errors, 1);
    assert_eq!(s.errors_by_kind[&ErrorKind::Inference], 1);
    assert_eq!(s.error_rate_per_minute, 1.0);
    for model in ModelId::ALL {
        let expected = u64::from(slots.contains(&model));
        assert_eq!(s.models[&model].failures, expected, "{model}");
        assert_eq!(
            s.models[&model].errors_by_kind[&ErrorKind::Inference],
            expected
        );
    }
}

#[test]
fn duration_forms_record_the_same_microseconds() {
    let (m, _hand) = manual();
    m.record_embedding_duration(Duration::from_micros(1_500));
    m.record_model_latency_duration(ModelId::Hdc, Duration::from_nanos(2_000_999));
    m.record_stage_duration(Stage::Fusion, Duration::from_micros(7));
    m.record_batch_duration(3, Duration::from_secs(1));
    let s = m.snapshot();
    assert_eq!((s.latency.count, s.latency.sum), (1, 1_500));
    assert_eq!(s.models[&ModelId::Hdc].latency.sum, 2_000);
    assert_eq!(s.stages[&Stage::Fusion].sum, 7);
    assert_eq!(
        (s.batch_latency.sum, s.batch_items_processed),
        (1_000_000, 3)
    );
    assert_eq!(
        embeddings_metrics::duration_micros(Duration::MAX),
        u64::MAX,
        "saturates"
    );
}

#[test]
fn throughput_windows_with_synthetic_time() {
    let (m, hand) = manual();
    assert_eq!(
        (m.throughput(), m.throughput_10s(), m.throughput_60s()),
        (0.0, 0.0, 0.0)
    );
    // 100 embeddings in each of 120 seconds, then 20 s of silence.
    for _ in 0..120 {
        for _ in 0..100 {
            m.record_embedding(1_000);
        }
        hand.advance(Duration::from_secs(1));
    }
    // At t = 120 s the current second is empty; the last 10 s hold 9 full seconds.
    assert_eq!(m.throughput_10s(), 90.0);
    assert_eq!(m.throughput_60s(), 5_900.0 / 60.0);
    assert_eq!(m.throughput(), 100.0);
    hand.advance(Duration::from_secs(20));
    assert_eq!(m.throughput_10s(), 0.0);
    // Seconds 81..=140 hold recordings in 81..=119.
    assert_eq!(m.throughput_60s(), 100.0 * 39.0 / 60.0);
    hand.advance(Duration::from_secs(60));
    let s = m.snapshot();
    assert_eq!((s.throughput_10s, s.throughput_60s), (0.0, 0.0));
    assert_eq!(s.embeddings_generated, 12_000);
    assert_eq!(s.throughput, 12_000.0 / 200.0);
    assert_eq!(s.uptime, Duration::from_secs(200));
}

#[test]
fn reset_zeroes_accumulations_but_not_current_state() {
    let (m, hand) = manual();
    m.record_embedding(10);
    m.record_error();
    m.set_queue_depth(7);
    m.queue_depth_dec();
    m.set_workers(3);
    m.set_cache_size(1 << 20, 10);
    hand.advance(Duration::from_secs(5));
    m.reset();
    let s = m.snapshot();
    assert_eq!(
        (
            s.embeddings_generated,
            s.errors,
            s.avg_latency_us,
            s.latency.count
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(s.error_rate_per_minute, 0.0);
    assert_eq!(s.uptime, Duration::ZERO);
    assert_eq!(
        (
            s.gauges.queue_depth,
            s.gauges.queue_depth_max,
            s.gauges.workers
        ),
        (6, 6, 3)
    );
    assert_eq!(s.gauges.cache_entries, Some(10));
}

#[test]
fn bad_inputs_never_panic_or_produce_nan() {
    let m = PipelineMetrics::new();
    let s = m.snapshot();
    for v in [
        s.cache_hit_rate,
        s.throughput,
        s.throughput_10s,
        s.throughput_60s,
        s.error_rate_per_minute,
        s.mean_latency_us,
        s.latency.mean,
    ] {
        assert_eq!(v, 0.0);
    }
    assert_eq!(
        (m.cache_hit_rate(), m.average_latency_us(), m.throughput()),
        (0.0, 0, 0.0)
    );
    assert_eq!(
        s.gauges.process_rss_bytes, None,
        "memory figures are never invented"
    );

    m.record_embedding(0);
    m.record_embedding(u64::MAX);
    m.record_model_latency(ModelId::Hdc, u64::MAX);
    m.record_stage(Stage::Fusion, u64::MAX);
    m.record_batch(usize::MAX, u64::MAX);
    m.record_batch(0, 0);
    m.record_cache_eviction(u64::MAX);
    m.record_cache_eviction(2); // wraps like a counter
    m.set_queue_depth(u64::MAX);
    m.queue_depth_inc();
    m.set_memory_gauge(MemoryGauge::GpuTotal, Some(u64::MAX));
    for _ in 0..3 {
        m.in_flight_dec(); // unmatched: reads clamp at 0
    }
    let s = m.snapshot();
    assert_eq!(s.latency.min, 0);
    assert_eq!(s.latency.max, u64::MAX);
    assert_eq!(s.latency.sum, u64::MAX, "0 + MAX");
    assert_eq!(s.batch_size.max, u64::MAX);
    assert_eq!(s.batch_items_processed, u64::MAX);
    assert_eq!(s.cache_evictions, 1);
    assert_eq!(s.gauges.in_flight, 0);
    assert_eq!(s.gauges.queue_depth_max, i64::MAX as u64);
    assert_eq!(s.gauges.gpu_memory_total_bytes, Some(u64::MAX - 1));
    assert_eq!(s.models[&ModelId::Hdc].avg_latency_us, u64::MAX);
    let floats = [
        s.cache_hit_rate,
        s.throughput,
        s.mean_latency_us,
        s.latency.mean,
        s.batch_size.mean,
    ];
    assert!(floats.iter().all(|f| f.is_finite()), "{floats:?}");
    // Rendering extreme values still works.
    assert!(
        m.render_prometheus()
            .contains("embeddings_batch_size_bucket{le=\"+Inf\"} 2\n")
    );
    assert!(m.render_openmetrics().ends_with("# EOF\n"));
}

#[test]
fn invalid_config_is_a_typed_error() {
    for alpha in [f64::NAN, 0.0, -0.1, 1.000_001, f64::INFINITY] {
        let err = PipelineMetrics::with_config(MetricsConfig::default().with_ema_alpha(alpha))
            .unwrap_err();
        assert!(
            matches!(err, MetricsError::InvalidAlpha { .. }),
            "{alpha}: {err}"
        );
    }
    assert!(PipelineMetrics::with_config(MetricsConfig::default().with_ema_alpha(1.0)).is_ok());
    let cases = [
        MetricsConfig::default().with_precision_bits(0),
        MetricsConfig::default().with_precision_bits(11),
        MetricsConfig::default().with_latency_bounds_us(vec![100, 100]),
        MetricsConfig::default().with_latency_bounds_us(vec![2_500]),
        MetricsConfig::default().with_prefix("9bad"),
        MetricsConfig::default().with_prefix("has:colon_"),
        MetricsConfig::default().with_const_label("le", "x"),
        MetricsConfig::default().with_const_label("__x", "x"),
        MetricsConfig::default()
            .with_const_label("a", "1")
            .with_const_label("a", "2"),
        // Default bounds are not edges at 2 bits; snap_bounds fixes that (below).
        MetricsConfig::default().with_precision_bits(2),
    ];
    for config in cases {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(PipelineMetrics::with_config(config).is_err());
    }
    let err = MetricsConfig::default()
        .with_latency_bounds_us(vec![2_500])
        .validate()
        .unwrap_err();
    assert_eq!(
        err,
        MetricsError::BoundNotAnEdge {
            family: "latency",
            bound: 2_500,
            bits: 6,
            below: 2_496,
            above: 2_528
        }
    );
    assert!(err.to_string().contains("2496"));
    let snapped = MetricsConfig::default()
        .with_precision_bits(2)
        .snap_bounds();
    assert!(snapped.validate().is_ok(), "{snapped:?}");
    assert!(MetricsConfig::default().validate().is_ok());
    assert!(MetricsConfig::default().with_prefix("").validate().is_ok());
}

#[test]
fn snapshot_json_round_trip() {
    let (m, hand) = manual();
    m.record_embedding(1_234);
    m.record_model_latency(ModelId::LateInteraction, 99);
    m.record_model_failure(ModelId::Graph, ErrorKind::Overload);
    m.record_batch(8, 4_000);
    m.set_gpu_memory_bytes(1, 2);
    hand.advance(Duration::from_millis(2_500));
    let s = m.snapshot();
    let json = serde_json::to_string(&s).unwrap();
    let back: MetricsSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    // Only the models with a sample have an average: unknown is not 0.
    assert_eq!(back.model_latencies.len(), 1);
    assert_eq!(back.models.len(), ModelId::COUNT);
    assert_eq!(back.stages.len(), Stage::COUNT);
    assert_eq!(back.errors_by_kind.len(), ErrorKind::COUNT);
    assert_eq!(back.model_latencies[&ModelId::LateInteraction], 99);
    assert!(!back.model_latencies.contains_key(&ModelId::Semantic));
}

#[test]
fn global_registry_set_and_reset() {
    // The only test in this binary touching the global.
    let mine = Arc::new(PipelineMetrics::new());
    embeddings_metrics::set_global(Arc::clone(&mine));
    embeddings_metrics::global().record_cache_miss();
    assert_eq!(mine.snapshot().cache_misses, 1);
    let dropped = embeddings_metrics::reset_global().unwrap();
    assert!(Arc::ptr_eq(&dropped, &mine));
    let fresh = embeddings_metrics::global();
    assert!(!Arc::ptr_eq(&fresh, &mine));
    assert!(Arc::ptr_eq(&fresh, &embeddings_metrics::global()));
}

#[test]
fn send_sync_default() {
    fn assert_traits<T: Send + Sync + Default>() {}
    assert_traits::<PipelineMetrics>();
    assert_traits::<embeddings_metrics::Histogram>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ema_and_mean_stay_within_min_max(values in prop::collection::vec(any::<u64>(), 1..200), alpha in 0.001f64..=1.0) {
        let m = PipelineMetrics::with_config(MetricsConfig::default().with_ema_alpha(alpha)).unwrap();
        for v in &values {
            m.record_embedding(*v);
            m.record_model_latency(ModelId::Causal, *v);
        }
        let (lo, hi) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        let s = m.snapshot();
        prop_assert!(lo <= s.avg_latency_us && s.avg_latency_us <= hi);
        prop_assert!(lo <= s.model_latencies[&ModelId::Causal] && s.model_latencies[&ModelId::Causal] <= hi);
        // The mean is exact while the sum does not wrap.
        if values.iter().try_fold(0u64, |a, v| a.checked_add(*v)).is_some() {
            prop_assert!(lo as f64 <= s.mean_latency_us && s.mean_latency_us <= hi as f64);
        }
    }

    #[test]
    fn ema_and_mean_stay_within_min_max_concurrently(
        values in prop::collection::vec(0u64..10_000_000, 4..400),
        alpha in 0.001f64..=1.0,
    ) {
        let m = PipelineMetrics::with_config(MetricsConfig::default().with_ema_alpha(alpha)).unwrap();
        std::thread::scope(|scope| {
            for chunk in values.chunks(values.len().div_ceil(4)) {
                let m = &m;
                scope.spawn(move || {
                    for v in chunk {
                        m.record_embedding(*v);
                    }
                });
            }
        });
        let (lo, hi) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        let s = m.snapshot();
        prop_assert_eq!(s.latency.count, values.len() as u64);
        prop_assert!(lo <= s.avg_latency_us && s.avg_latency_us <= hi);
        prop_assert!(lo as f64 <= s.mean_latency_us && s.mean_latency_us <= hi as f64);
    }
}

#[test]
fn input_telemetry_is_counted_per_slot_once_per_call() {
    let m = PipelineMetrics::new();
    m.record_input_tokens(ModelId::Semantic, 300, 44, 2);
    m.record_input_tokens(ModelId::Semantic, 10, 0, 0);
    m.record_input_tokens(ModelId::Code, 300, 44, 0);
    m.record_empty_input();
    let snap = m.snapshot();
    let semantic = &snap.models[&ModelId::Semantic];
    assert_eq!(
        (
            semantic.truncated_inputs,
            semantic.truncated_tokens,
            semantic.unknown_tokens
        ),
        (1, 44, 2)
    );
    assert_eq!(
        (semantic.input_tokens.count, semantic.input_tokens.sum),
        (2, 310)
    );
    assert_eq!(snap.models[&ModelId::Code].truncated_inputs, 1);
    assert_eq!(snap.models[&ModelId::Hdc].input_tokens.count, 0);
    assert_eq!(snap.empty_inputs, 1);
    let text = m.render_prometheus();
    assert!(text.contains("embeddings_truncated_inputs_total{model=\"semantic\"} 1\n"));
    assert!(text.contains("embeddings_truncated_tokens_total{model=\"semantic\"} 44\n"));
    assert!(text.contains("embeddings_unknown_tokens_total{model=\"semantic\"} 2\n"));
    assert!(text.contains("embeddings_empty_inputs_total 1\n"));
    assert!(text.contains("embeddings_input_tokens_bucket{model=\"semantic\",le=\"256.0\"} 1\n"));
    m.reset();
    let snap = m.snapshot();
    assert_eq!(snap.models[&ModelId::Semantic].truncated_inputs, 0);
    assert_eq!(snap.models[&ModelId::Semantic].input_tokens.count, 0);
    assert_eq!(snap.empty_inputs, 0);
}
