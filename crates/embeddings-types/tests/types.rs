//! Behaviour of the plain-data types: names, indices, errors and JSON round trips.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use embeddings_types::{
    ComponentHealth, ErrorKind, GaugeSnapshot, HealthStatus, HistogramSnapshot, MetricsSnapshot,
    ModelId, ModelSnapshot, OutputKind, Stage, TypesError,
};
use proptest::prelude::*;

#[test]
fn model_ids_are_in_the_specified_order() {
    let names: Vec<_> = ModelId::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(
        names,
        [
            "semantic",
            "temporal_recent",
            "temporal_periodic",
            "temporal_positional",
            "causal",
            "sparse",
            "code",
            "graph",
            "hdc",
            "multimodal",
            "entity",
            "late_interaction"
        ]
    );
    assert_eq!(ModelId::COUNT, 12);
    for (i, m) in ModelId::ALL.iter().enumerate() {
        assert_eq!(m.index(), i);
        assert_eq!(ModelId::from_index(i), Ok(*m));
        assert_eq!(ModelId::try_from(i as u8), Ok(*m));
        assert_eq!(u8::from(*m) as usize, i);
        assert_eq!(m.to_string().parse::<ModelId>(), Ok(*m));
    }
}

#[test]
fn bad_names_and_indices_are_typed_errors_that_list_the_valid_choices() {
    let err = "nope".parse::<ModelId>().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TypesError::UnknownName { what: "model", .. }));
    for m in ModelId::ALL {
        assert!(msg.contains(m.as_str()), "{msg}");
    }
    assert!(!msg.ends_with(", "));
    // Names are exact: no case folding, no whitespace trimming.
    assert!("Semantic".parse::<ModelId>().is_err());
    assert!(" semantic".parse::<ModelId>().is_err());
    assert_eq!(
        ModelId::from_index(12),
        Err(TypesError::IndexOutOfRange {
            what: "model",
            index: 12,
            max: 11
        })
    );
    assert!(ModelId::try_from(255u8).is_err());
    assert!(
        "queue"
            .parse::<Stage>()
            .unwrap_err()
            .to_string()
            .contains("queue_wait")
    );
    assert!(ErrorKind::from_index(7).is_err());
}

#[test]
fn output_kinds() {
    assert_eq!(ModelId::Sparse.output_kind(), OutputKind::Sparse);
    assert_eq!(ModelId::LateInteraction.output_kind(), OutputKind::PerToken);
    assert_eq!(ModelId::Causal.output_kind(), OutputKind::Dense);
    assert_eq!(
        serde_json::to_string(&OutputKind::PerToken).unwrap(),
        "\"per_token\""
    );
}

#[test]
fn model_ids_serialize_as_names_also_as_map_keys() {
    let mut map = HashMap::new();
    map.insert(ModelId::TemporalRecent, 7u64);
    let json = serde_json::to_string(&map).unwrap();
    assert_eq!(json, r#"{"temporal_recent":7}"#);
    let back: HashMap<ModelId, u64> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
    let err = serde_json::from_str::<ModelId>("\"nope\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("late_interaction"), "{err}");
}

#[test]
fn durations_serialize_as_seconds_and_reject_what_is_not_a_duration() {
    let mut status = HealthStatus::new();
    status.uptime = Duration::from_millis(93_250);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["uptime"], serde_json::json!(93.25));
    for bad in ["-1.0", "1e400"] {
        let text = json.to_string().replace("93.25", bad);
        assert!(
            serde_json::from_str::<HealthStatus>(&text).is_err(),
            "{bad} accepted"
        );
    }
    assert!(matches!(
        embeddings_types::duration::from_secs(f64::NAN),
        Err(TypesError::InvalidDuration { .. })
    ));
}

#[test]
fn a_nan_error_rate_survives_json_as_null() {
    let mut status = HealthStatus::new();
    status.error_rate = f64::NAN;
    let json = serde_json::to_value(&status).unwrap();
    assert!(json["error_rate"].is_null());
    let back: HealthStatus = serde_json::from_value(json).unwrap();
    assert!(back.error_rate.is_nan());
}

#[test]
fn component_health_without_gpu_required_field_defaults_to_cpu_deployment() {
    let json = r#"{"model_registry":true,"batch_processor":true,"fusemoe":true,"cache_manager":true,"gpu_available":false}"#;
    let c: ComponentHealth = serde_json::from_str(json).unwrap();
    assert!(!c.gpu_required);
    assert!(c.gpu_ok());
}

#[test]
fn health_status_questions() {
    let fresh = HealthStatus::new();
    assert!(!fresh.healthy && !fresh.is_fully_healthy() && !fresh.is_minimum_viable());
    assert_eq!(
        fresh.unhealthy_components(),
        [
            "model_registry",
            "batch_processor",
            "fusemoe",
            "cache_manager"
        ]
    );

    let mut s = HealthStatus::new();
    s.healthy = true;
    s.components = ComponentHealth::all_up(false);
    s.models_loaded = ModelId::ALL[..10].to_vec();
    s.models_failed = ModelId::ALL[10..].to_vec();
    assert!(s.is_minimum_viable());
    assert!(!s.is_fully_healthy(), "two failed models");
    s.models_loaded = ModelId::ALL.to_vec();
    s.models_failed.clear();
    assert!(s.is_fully_healthy());

    // A deployment that needs a GPU and has none.
    s.components.gpu_required = true;
    s.components.gpu_available = false;
    assert_eq!(s.unhealthy_components(), ["gpu"]);
    assert!(!s.is_minimum_viable() && !s.is_fully_healthy());
    s.components.gpu_available = true;
    assert!(s.is_fully_healthy());

    // Fusion and cache are not needed to produce per-slot embeddings; the batch processor is.
    s.components.fusemoe = false;
    s.components.cache_manager = false;
    assert!(s.is_minimum_viable());
    s.components.batch_processor = false;
    assert!(!s.is_minimum_viable());
    s.components.batch_processor = true;
    s.models_loaded.clear();
    assert!(!s.is_minimum_viable());
}

fn model_id() -> impl Strategy<Value = ModelId> {
    (0usize..ModelId::COUNT).prop_map(|i| ModelId::ALL[i])
}

fn finite() -> impl Strategy<Value = f64> {
    -1e12f64..1e12
}

fn histogram() -> impl Strategy<Value = HistogramSnapshot> {
    (any::<[u64; 9]>(), finite(), 0.0f64..1.0).prop_map(|(v, mean, relative_error)| {
        HistogramSnapshot {
            count: v[0],
            sum: v[1],
            min: v[2],
            max: v[3],
            mean,
            p50: v[4],
            p90: v[5],
            p95: v[6],
            p99: v[7],
            p999: v[8],
            relative_error,
        }
    })
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // Whole microseconds within years 1970..2200: what RFC 3339 JSON carries exactly.
    (0i64..7_258_118_400_000_000).prop_map(|us| Utc.timestamp_micros(us).unwrap())
}

fn duration() -> impl Strategy<Value = Duration> {
    // Microsecond resolution, up to ~31 years: exact through f64 seconds.
    (0u64..1_000_000_000_000_000).prop_map(Duration::from_micros)
}

prop_compose! {
    fn metrics_snapshot()(
        counters in any::<[u64; 8]>(),
        rates in [finite(), finite(), finite(), finite(), finite(), finite()],
        latencies in proptest::collection::hash_map(model_id(), any::<u64>(), 0..12),
        h in histogram(),
        timestamp in timestamp(),
        uptime in duration(),
        gauge in proptest::option::of(any::<u64>()),
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            embeddings_generated: counters[0],
            cache_hits: counters[1],
            cache_misses: counters[2],
            cache_hit_rate: rates[0],
            avg_latency_us: counters[3],
            errors: counters[4],
            model_latencies: latencies,
            batches_processed: counters[5],
            batch_items_processed: counters[6],
            throughput: rates[1],
            timestamp,
            cache_evictions: counters[7],
            uptime,
            mean_latency_us: rates[2],
            latency: h,
            batch_latency: h,
            batch_size: HistogramSnapshot::default(),
            stages: Stage::ALL.iter().map(|s| (*s, h)).collect(),
            models: ModelId::ALL
                .iter()
                .map(|m| (*m, ModelSnapshot {
                    requests: counters[0],
                    failures: counters[1],
                    timeouts: counters[2],
                    errors_by_kind: ErrorKind::ALL.iter().map(|k| (*k, counters[3])).collect(),
                    avg_latency_us: counters[4],
                    latency: h,
                    input_tokens: h,
                    truncated_inputs: counters[5],
                    truncated_tokens: counters[6],
                    unknown_tokens: counters[7],
                }))
                .collect(),
            errors_by_kind: BTreeMap::new(),
            error_rate_per_minute: rates[3],
            throughput_10s: rates[4],
            throughput_60s: rates[5],
            gauges: GaugeSnapshot {
                queue_depth: counters[5],
                queue_depth_max: counters[6],
                in_flight: counters[7],
                workers: 2,
                process_rss_bytes: gauge,
                gpu_memory_used_bytes: None,
                gpu_memory_total_bytes: gauge,
                cache_bytes: gauge,
                cache_entries: None,
            },
            inputs_served: counters[0],
            empty_inputs: counters[1],
        }
    }
}

prop_compose! {
    fn health_status()(
        healthy in any::<bool>(),
        loaded in proptest::collection::vec(model_id(), 0..12),
        failed in proptest::collection::vec(model_id(), 0..12),
        sizes in any::<[usize; 4]>(),
        uptime in duration(),
        last in proptest::option::of(timestamp()),
        error_rate in finite(),
        flags in any::<[bool; 6]>(),
    ) -> HealthStatus {
        HealthStatus {
            healthy,
            models_loaded: loaded,
            models_failed: failed,
            gpu_memory_used: sizes[0],
            gpu_memory_available: sizes[1],
            cache_size: sizes[2],
            cache_memory_bytes: sizes[3],
            uptime,
            last_embed_time: last,
            error_rate,
            components: ComponentHealth {
                model_registry: flags[0],
                batch_processor: flags[1],
                fusemoe: flags[2],
                cache_manager: flags[3],
                gpu_available: flags[4],
                gpu_required: flags[5],
            },
            gpu_memory: flags[4].then_some(embeddings_types::GpuMemory {
                used_bytes: sizes[0] as u64,
                total_bytes: sizes[1] as u64,
            }),
            cache: flags[3].then_some(embeddings_types::CacheFigures {
                entries: sizes[2] as u64,
                bytes: sizes[3] as u64,
            }),
        }
    }
}

proptest! {
    #[test]
    fn metrics_snapshot_json_round_trip(s in metrics_snapshot()) {
        let json = serde_json::to_string(&s).unwrap();
        let back: MetricsSnapshot = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &s);
        // Serializing again gives the same JSON (as a value: `model_latencies` is a HashMap).
        let again = serde_json::to_value(&back).unwrap();
        prop_assert_eq!(again, serde_json::from_str::<serde_json::Value>(&json).unwrap());
    }

    #[test]
    fn health_status_json_round_trip(s in health_status()) {
        let json = serde_json::to_string(&s).unwrap();
        let back: HealthStatus = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &s);
    }

    #[test]
    fn fully_healthy_implies_minimum_viable(s in health_status()) {
        if s.is_fully_healthy() {
            prop_assert!(s.is_minimum_viable());
            prop_assert!(s.unhealthy_components().is_empty());
        }
    }

    #[test]
    fn any_string_parses_to_a_model_or_a_typed_error(s in ".*") {
        match s.parse::<ModelId>() {
            Ok(m) => prop_assert_eq!(m.as_str(), s.as_str()),
            Err(TypesError::UnknownName { input, .. }) => prop_assert_eq!(input, s),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
