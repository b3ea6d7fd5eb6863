//! Table-driven tests of every health rule, at its boundaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: helpers outside #[test] fns may unwrap, as tests do (clippy.toml).
mod common;

use common::{GIB, Inputs, at, check_invariants};
use embeddings_health::{
    GpuObservation, HealthPolicy, HealthPolicySpec, HealthRule, SlotState, Value, Verdict,
};
use embeddings_types::ModelId;

use HealthRule as R;
use Verdict::{Degraded, Healthy, Unhealthy};

fn fail_models(inputs: &mut Inputs, n: usize) {
    for model in ModelId::ALL.iter().rev().take(n) {
        inputs
            .registry
            .mark_failed(*model, format!("{model}: checkpoint not found"));
    }
}

type Case = (
    &'static str,
    fn(&mut Inputs),
    Verdict,
    &'static [HealthRule],
);

const CASES: &[Case] = &[
    ("all good", |_| {}, Healthy, &[]),
    // Models: the spec's "at least 10 of 12".
    (
        "11 of 12 loaded",
        |i| fail_models(i, 1),
        Degraded,
        &[R::AllModelsLoaded],
    ),
    (
        "exactly 10 of 12 loaded",
        |i| fail_models(i, 2),
        Degraded,
        &[R::AllModelsLoaded],
    ),
    (
        "9 of 12 loaded",
        |i| fail_models(i, 3),
        Unhealthy,
        &[R::ModelsLoaded],
    ),
    (
        "0 of 12 loaded",
        |i| fail_models(i, 12),
        Unhealthy,
        &[R::ModelsLoaded],
    ),
    (
        "10 loaded, 2 still loading",
        |i| {
            i.registry.mark_loading(ModelId::Code);
            i.registry.mark_loading(ModelId::Graph);
        },
        Degraded,
        &[R::AllModelsLoaded],
    ),
    (
        "nothing loaded yet (startup)",
        |i| i.registry = Default::default(),
        Unhealthy,
        &[R::ModelsLoaded],
    ),
    // GPU: "below 90%".
    (
        "GPU 89.9% (899/1000)",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 899,
                total_bytes: 1000,
            }
        },
        Healthy,
        &[],
    ),
    (
        "GPU 90% (900/1000)",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 900,
                total_bytes: 1000,
            }
        },
        Unhealthy,
        &[R::GpuMemory],
    ),
    (
        "GPU just under 90% of 80 GiB",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 72 * GIB - 1,
                total_bytes: 80 * GIB,
            }
        },
        Healthy,
        &[],
    ),
    (
        "GPU exactly 90% of 80 GiB",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 72 * GIB,
                total_bytes: 80 * GIB,
            }
        },
        Unhealthy,
        &[R::GpuMemory],
    ),
    (
        "GPU used above total",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 2000,
                total_bytes: 1000,
            }
        },
        Unhealthy,
        &[R::GpuMemory],
    ),
    (
        "GPU total 0 is a failed reading",
        |i| {
            i.gpu = GpuObservation::Reading {
                used_bytes: 0,
                total_bytes: 0,
            }
        },
        Unhealthy,
        &[R::GpuMemory],
    ),
    (
        "GPU expected but unreadable",
        |i| {
            i.gpu = GpuObservation::Unreadable {
                reason: "NVML: device lost".into(),
            }
        },
        Unhealthy,
        &[R::GpuMemory],
    ),
    (
        "CPU deployment, no GPU",
        |i| i.gpu = GpuObservation::NotExpected,
        Healthy,
        &[],
    ),
    // Error rate: "below 10 per minute".
    (
        "9.99 errors/min",
        |i| i.snapshot.error_rate_per_minute = 9.99,
        Healthy,
        &[],
    ),
    (
        "10 errors/min",
        |i| i.snapshot.error_rate_per_minute = 10.0,
        Unhealthy,
        &[R::ErrorRate],
    ),
    (
        "NaN errors/min",
        |i| i.snapshot.error_rate_per_minute = f64::NAN,
        Unhealthy,
        &[R::ErrorRate],
    ),
    (
        "infinite errors/min",
        |i| i.snapshot.error_rate_per_minute = f64::INFINITY,
        Unhealthy,
        &[R::ErrorRate],
    ),
    (
        "negative errors/min",
        |i| i.snapshot.error_rate_per_minute = -1.0,
        Unhealthy,
        &[R::ErrorRate],
    ),
    // Components, each off in turn.
    (
        "model registry down",
        |i| i.components.model_registry = false,
        Unhealthy,
        &[R::ModelRegistry],
    ),
    (
        "fusion down",
        |i| i.components.fusemoe = false,
        Unhealthy,
        &[R::Fusemoe],
    ),
    (
        "batch processor down",
        |i| i.components.batch_processor = false,
        Unhealthy,
        &[R::BatchProcessor],
    ),
    (
        "cache manager down",
        |i| i.components.cache_manager = false,
        Degraded,
        &[R::CacheManager],
    ),
    // Snapshot sanity and freshness.
    (
        "NaN throughput",
        |i| i.snapshot.throughput_10s = f64::NAN,
        Degraded,
        &[R::MetricsInput],
    ),
    (
        "negative throughput",
        |i| i.snapshot.throughput = -5.0,
        Degraded,
        &[R::MetricsInput],
    ),
    (
        "hit rate above 1",
        |i| i.snapshot.cache_hit_rate = 1.5,
        Degraded,
        &[R::MetricsInput],
    ),
    (
        "infinite mean latency",
        |i| i.snapshot.mean_latency_us = f64::INFINITY,
        Degraded,
        &[R::MetricsInput],
    ),
    (
        "snapshot exactly 60 s old",
        |i| i.now = at(60),
        Healthy,
        &[],
    ),
    (
        "snapshot 61 s old",
        |i| i.now = at(61),
        Degraded,
        &[R::SnapshotFresh],
    ),
    (
        "snapshot from the future",
        |i| i.now = at(-30),
        Healthy,
        &[],
    ),
    // Several at once: the worst wins, every failure is reported.
    (
        "cache down and 9 loaded",
        |i| {
            i.components.cache_manager = false;
            fail_models(i, 3);
        },
        Unhealthy,
        &[R::ModelsLoaded, R::CacheManager],
    ),
    (
        "everything wrong",
        |i| {
            fail_models(i, 12);
            i.gpu = GpuObservation::Unreadable {
                reason: "no driver".into(),
            };
            i.snapshot.error_rate_per_minute = 99.0;
            i.components = Default::default();
            i.snapshot.cache_hit_rate = f64::NAN;
            i.now = at(600);
        },
        Unhealthy,
        &[
            R::ModelsLoaded,
            R::GpuMemory,
            R::ErrorRate,
            R::ModelRegistry,
            R::Fusemoe,
            R::BatchProcessor,
            R::CacheManager,
            R::MetricsInput,
            R::SnapshotFresh,
        ],
    ),
    // The quality canary: cosines at least 0.9999, batch deviation at most 1e-4.
    ("no canary run yet", |i| i.canary = None, Healthy, &[]),
    (
        "canary reference cosine exactly 0.9999",
        |i| set_canary(i, |s| s.cosine_to_reference = Some(0.9999)),
        Healthy,
        &[],
    ),
    (
        "canary reference cosine 0.99989",
        |i| set_canary(i, |s| s.cosine_to_reference = Some(0.99989)),
        Degraded,
        &[R::Canary],
    ),
    (
        "canary start-up cosine 0.5",
        |i| set_canary(i, |s| s.cosine_to_startup = 0.5),
        Degraded,
        &[R::Canary],
    ),
    (
        "canary batch deviation exactly 1e-4",
        |i| set_canary(i, |s| s.batch_deviation = 1e-4),
        Healthy,
        &[],
    ),
    (
        "canary batch deviation 2e-4",
        |i| set_canary(i, |s| s.batch_deviation = 2e-4),
        Degraded,
        &[R::Canary],
    ),
    (
        "canary cosine NaN",
        |i| set_canary(i, |s| s.cosine_to_startup = f64::NAN),
        Degraded,
        &[R::Canary],
    ),
];

/// Changes the `semantic` entry of the canary report.
fn set_canary(inputs: &mut Inputs, change: fn(&mut embeddings_types::SlotCanary)) {
    if let Some(slot) = inputs.canary.as_mut().and_then(|r| r.slots.first_mut()) {
        change(slot);
    }
}

#[test]
fn a_canary_reason_names_the_slot_and_the_figure() {
    let mut inputs = Inputs::good();
    set_canary(&mut inputs, |s| {
        s.cosine_to_reference = Some(0.93);
        s.batch_deviation = 0.5;
    });
    let report = inputs.report();
    let [reason] = report.reasons.as_slice() else {
        panic!("one reason: {report}");
    };
    // The cosine is reported first; the deviation waits for its turn.
    assert_eq!(
        reason.observed,
        Value::Canary {
            model: ModelId::Semantic,
            figure: embeddings_types::CanaryFigure::CosineToReference,
            value: 0.93
        }
    );
    assert_eq!(reason.threshold, Value::Cosine(0.9999));
    assert_eq!(
        reason.to_string(),
        "canary (degraded): observed semantic cosine_to_reference = 0.93, expected at least cosine 0.9999"
    );
}

#[test]
fn every_rule_at_its_boundary() {
    for (name, mutate, verdict, rules) in CASES {
        let mut inputs = Inputs::good();
        mutate(&mut inputs);
        let report = inputs.report();
        check_invariants(&report, inputs.warmed_up);
        let got: Vec<_> = report.reasons.iter().map(|r| r.rule).collect();
        assert_eq!(report.verdict, *verdict, "{name}: {report}");
        assert_eq!(got, *rules, "{name}: {report}");
        assert_eq!(report.status.healthy, *verdict != Unhealthy, "{name}");
    }
}

#[test]
fn status_carries_the_observations() {
    let mut inputs = Inputs::good();
    inputs
        .registry
        .mark_failed(ModelId::Sparse, "out of memory");
    inputs.snapshot.error_rate_per_minute = 2.5;
    let report = inputs.report();
    let s = &report.status;
    assert_eq!(s.models_loaded.len(), 11);
    assert!(!s.models_loaded.contains(&ModelId::Sparse));
    assert_eq!(s.models_failed, vec![ModelId::Sparse]);
    assert_eq!(report.model_failures[0].reason, "out of memory");
    assert_eq!(s.gpu_memory_used, usize::try_from(30 * GIB).unwrap());
    assert_eq!(s.gpu_memory_available, usize::try_from(80 * GIB).unwrap());
    assert_eq!(s.cache_size, 50_000);
    assert_eq!(s.cache_memory_bytes, 256 << 20);
    assert!((s.error_rate - 2.5).abs() < f64::EPSILON);
    assert!(s.components.gpu_required && s.components.gpu_available);
    assert_eq!(report.gpu_memory_fraction, Some(0.375));
    assert_eq!(report.evaluated_at, inputs.now);
    assert!(!s.is_fully_healthy());
    assert_eq!(s.unhealthy_components(), Vec::<&str>::new());
}

#[test]
fn cpu_deployment_reports_no_gpu_and_invents_no_figure() {
    let mut inputs = Inputs::good();
    inputs.gpu = GpuObservation::NotExpected;
    let report = inputs.report();
    assert_eq!(report.verdict, Healthy);
    assert!(!report.status.components.gpu_required);
    assert!(!report.status.components.gpu_available);
    assert_eq!(report.status.gpu_memory_used, 0);
    assert_eq!(report.gpu_memory_fraction, None);
    assert!(report.status.is_fully_healthy());

    // Expected but no gauges: unreadable, not zero.
    let mut gauges = inputs.snapshot.gauges.clone();
    gauges.gpu_memory_used_bytes = None;
    assert!(matches!(
        GpuObservation::from_gauges(true, &gauges),
        GpuObservation::Unreadable { .. }
    ));
    assert_eq!(
        GpuObservation::from_gauges(false, &gauges),
        GpuObservation::NotExpected
    );
    inputs.gpu = GpuObservation::from_gauges(true, &gauges);
    let report = inputs.report();
    assert_eq!(report.verdict, Unhealthy);
    assert!(!report.status.components.gpu_available);
    assert_eq!(report.status.unhealthy_components(), vec!["gpu"]);
}

#[test]
fn reasons_name_rule_observed_value_and_threshold() {
    let mut inputs = Inputs::good();
    fail_models(&mut inputs, 3);
    inputs.gpu = GpuObservation::Reading {
        used_bytes: 950,
        total_bytes: 1000,
    };
    inputs.snapshot.error_rate_per_minute = 12.0;
    inputs.components.fusemoe = false;
    let report = inputs.report();
    let text: Vec<String> = report.reasons.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "models_loaded (unhealthy): observed 9 of 12 models loaded, expected at least 10 of 12 models loaded",
            "gpu_memory (unhealthy): observed 95.00% of GPU memory, expected below 90.00% of GPU memory",
            "error_rate (unhealthy): observed 12 errors/min, expected below 10 errors/min",
            "fusemoe (unhealthy): observed down, expected up",
        ]
    );
    let gpu = report.reason(HealthRule::GpuMemory).unwrap();
    assert_eq!(gpu.observed, Value::GpuFraction(0.95));
    assert!(report.to_string().starts_with("unhealthy: models_loaded"));

    let mut inputs = Inputs::good();
    inputs.gpu = GpuObservation::Unreadable {
        reason: "NVML: device lost".into(),
    };
    let report = inputs.report();
    assert!(
        report.reasons[0]
            .to_string()
            .contains("no reading (NVML: device lost)")
    );
}

#[test]
fn policy_thresholds_move_the_boundaries() {
    let policy = HealthPolicySpec {
        min_models_loaded: 12,
        max_gpu_memory_fraction: 0.5,
        max_error_rate_per_minute: 1.0,
        ..Default::default()
    }
    .build()
    .unwrap();
    let mut inputs = Inputs::good();
    assert_eq!(inputs.report_with(&policy).verdict, Healthy);
    inputs.registry.mark_failed(ModelId::Hdc, "x");
    assert_eq!(
        inputs.report_with(&policy).reasons[0].rule,
        HealthRule::ModelsLoaded
    );
    let mut inputs = Inputs::good();
    inputs.gpu = GpuObservation::Reading {
        used_bytes: 50,
        total_bytes: 100,
    };
    assert_eq!(inputs.report_with(&policy).verdict, Unhealthy);
    let mut inputs = Inputs::good();
    inputs.snapshot.error_rate_per_minute = 1.0;
    assert_eq!(inputs.report_with(&policy).verdict, Unhealthy);
    // The max policy value 1.0 allows everything below 100%.
    let lax = HealthPolicySpec {
        max_gpu_memory_fraction: 1.0,
        ..Default::default()
    }
    .build()
    .unwrap();
    let mut inputs = Inputs::good();
    inputs.gpu = GpuObservation::Reading {
        used_bytes: 99,
        total_bytes: 100,
    };
    assert_eq!(inputs.report_with(&lax).verdict, Healthy);
    inputs.gpu = GpuObservation::Reading {
        used_bytes: 100,
        total_bytes: 100,
    };
    assert_eq!(inputs.report_with(&lax).verdict, Unhealthy);
}

#[test]
fn slot_states_and_registry_accessors() {
    let mut registry = embeddings_health::RegistryState::new();
    assert_eq!(registry.loading_count(), 12);
    registry.mark_loaded(ModelId::Semantic);
    registry.mark_failed(ModelId::Causal, "bad weights");
    assert_eq!(
        (
            registry.loaded_count(),
            registry.failed_count(),
            registry.loading_count()
        ),
        (1, 1, 10)
    );
    assert_eq!(registry.get(ModelId::Semantic), &SlotState::Loaded);
    assert_eq!(registry.iter().count(), 12);
}

#[test]
fn report_serializes_to_json() {
    let mut inputs = Inputs::good();
    inputs.components.cache_manager = false;
    let report = inputs.report();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "degraded");
    assert_eq!(json["status"]["healthy"], true);
    assert_eq!(json["reasons"][0]["rule"], "cache_manager");
    assert_eq!(
        json["probes"]["readiness"]["failure"],
        serde_json::Value::Null
    );
    let back: embeddings_health::HealthReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn default_policy_is_the_spec() {
    let policy = HealthPolicy::default();
    assert_eq!(policy.min_models_loaded(), 10);
    assert!((policy.max_gpu_memory_fraction() - 0.9).abs() < f64::EPSILON);
    assert!((policy.max_error_rate_per_minute() - 10.0).abs() < f64::EPSILON);
}
