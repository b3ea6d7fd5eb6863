//! Liveness, readiness and startup probes, and their HTTP codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: helpers outside #[test] fns may unwrap, as tests do (clippy.toml).
mod common;

use std::time::Duration;

use common::{Inputs, at, t0};
use embeddings_health::{
    GpuObservation, HealthPolicy, Probe, ProbeFailure, RegistryState, Verdict, probe,
};
use embeddings_types::ModelId;

#[test]
fn all_good_all_probes_pass_with_200() {
    let report = Inputs::good().report();
    for result in [
        report.probes.liveness,
        report.probes.readiness,
        report.probes.startup,
    ] {
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(result.http_status(), 200);
    }
    assert_eq!(report.probes.liveness.probe, Probe::Liveness);
    assert_eq!(report.probes.readiness.probe, Probe::Readiness);
    assert_eq!(report.probes.startup.probe, Probe::Startup);
}

#[test]
fn liveness_follows_progress_not_models() {
    let policy = HealthPolicy::default(); // timeout 30 s
    let live = |progress, uptime_s, now| {
        probe::liveness(&policy, progress, Duration::from_secs(uptime_s), now)
    };
    assert!(
        live(Some(t0()), 3_600, at(30)).is_ok(),
        "exactly the timeout is alive"
    );
    let stalled = live(Some(t0()), 3_600, at(31));
    assert_eq!(stalled.http_status(), 503);
    assert_eq!(
        stalled.failure,
        Some(ProbeFailure::Stalled {
            idle_seconds: 31.0,
            timeout_seconds: 30.0
        })
    );
    assert!(
        live(Some(at(100)), 3_600, t0()).is_ok(),
        "progress in the future (skew) is alive"
    );
    assert!(
        live(None, 5, t0()).is_ok(),
        "a fresh process gets one timeout of grace"
    );
    assert!(
        !live(None, 31, t0()).is_ok(),
        "no progress since start, past the grace"
    );

    // Every model failed: alive (restarting won't help), not ready.
    let mut inputs = Inputs::good();
    inputs.registry = RegistryState::new();
    for m in ModelId::ALL {
        inputs.registry.mark_failed(m, "missing checkpoint");
    }
    let report = inputs.report();
    assert_eq!(report.verdict, Verdict::Unhealthy);
    assert_eq!(report.probes.liveness.http_status(), 200);
    assert_eq!(
        report.probes.readiness.failure,
        Some(ProbeFailure::NoModelLoaded)
    );
    assert_eq!(report.probes.readiness.http_status(), 503);
    assert_eq!(
        report.probes.startup.failure,
        Some(ProbeFailure::LoadFailed { failed: 12 }),
        "loading is over and it failed: the start failed (restart it)"
    );
}

#[test]
fn readiness_needs_minimum_viable_and_warm_up() {
    type Case = (&'static str, fn(&mut Inputs), Option<ProbeFailure>);
    let cases: &[Case] = &[
        (
            "not warmed up",
            |i| i.warmed_up = false,
            Some(ProbeFailure::NotWarmedUp),
        ),
        (
            "registry down",
            |i| i.components.model_registry = false,
            Some(ProbeFailure::ModelRegistryDown),
        ),
        (
            "batch down",
            |i| i.components.batch_processor = false,
            Some(ProbeFailure::BatchProcessorDown),
        ),
        (
            "gpu unreadable",
            |i| {
                i.gpu = GpuObservation::Unreadable {
                    reason: "lost".into(),
                }
            },
            Some(ProbeFailure::GpuUnavailable),
        ),
        (
            "no model",
            |i| i.registry = RegistryState::new(),
            Some(ProbeFailure::NoModelLoaded),
        ),
        // Unhealthy by the spec, yet per-slot embeddings can be served: stay in rotation.
        ("fusion down", |i| i.components.fusemoe = false, None),
        (
            "error rate high",
            |i| i.snapshot.error_rate_per_minute = 50.0,
            None,
        ),
        (
            "gpu at 95%",
            |i| {
                i.gpu = GpuObservation::Reading {
                    used_bytes: 95,
                    total_bytes: 100,
                }
            },
            None,
        ),
        ("cache down", |i| i.components.cache_manager = false, None),
        (
            "cpu deployment",
            |i| i.gpu = GpuObservation::NotExpected,
            None,
        ),
    ];
    for (name, mutate, failure) in cases {
        let mut inputs = Inputs::good();
        mutate(&mut inputs);
        let report = inputs.report();
        common::check_invariants(&report, inputs.warmed_up);
        assert_eq!(report.probes.readiness.failure, *failure, "{name}");
        let code = if failure.is_some() { 503 } else { 200 };
        assert_eq!(report.probes.readiness.http_status(), code, "{name}");
    }
}

#[test]
fn startup_waits_for_every_slot_to_settle() {
    let mut registry = RegistryState::new();
    let result = probe::startup(&registry);
    assert_eq!(
        result.failure,
        Some(ProbeFailure::ModelsLoading { loading: 12 })
    );
    assert_eq!(result.http_status(), 503);
    for m in ModelId::ALL.into_iter().skip(1) {
        registry.mark_loaded(m);
    }
    assert_eq!(
        probe::startup(&registry).failure,
        Some(ProbeFailure::ModelsLoading { loading: 1 })
    );
    registry.mark_failed(ModelId::Semantic, "oom");
    assert_eq!(probe::startup(&registry).http_status(), 200);
    // Every slot failed: the start failed, it is not still going on.
    let mut none = RegistryState::new();
    for m in ModelId::ALL {
        none.mark_failed(m, "no weights");
    }
    let result = probe::startup(&none);
    assert_eq!(
        result.failure,
        Some(ProbeFailure::LoadFailed { failed: 12 })
    );
    assert_eq!(result.http_status(), 503);
    assert!(result.failure.unwrap().to_string().contains("/health"));
    assert_eq!(
        ProbeFailure::ModelsLoading { loading: 3 }.to_string(),
        "3 model slot(s) still loading"
    );
}
