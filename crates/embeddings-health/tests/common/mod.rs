//! Shared fixtures: an all-good set of inputs that each test makes worse.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use embeddings_health::doc_support::snapshot;
use embeddings_health::{
    ComponentChecks, GpuObservation, HealthPolicy, HealthReport, Observation, RegistryState,
    Verdict,
};
use embeddings_types::{CanaryReport, MetricsSnapshot, ModelId, SlotCanary};

/// A fixed instant, so tests never read the clock.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

pub const GIB: u64 = 1 << 30;

/// Everything the evaluator looks at, owned, starting all good.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub registry: RegistryState,
    pub snapshot: MetricsSnapshot,
    pub gpu: GpuObservation,
    pub components: ComponentChecks,
    pub warmed_up: bool,
    pub last_progress: Option<DateTime<Utc>>,
    pub uptime: Duration,
    pub now: DateTime<Utc>,
    pub canary: Option<CanaryReport>,
}

/// A canary report whose every figure is perfect, for `semantic` and `hdc`.
pub fn good_canary() -> CanaryReport {
    let slot = |model| SlotCanary {
        model,
        cosine_to_startup: 1.0,
        cosine_to_reference: (model == ModelId::Semantic).then_some(0.999_999),
        batch_deviation: 1e-7,
    };
    CanaryReport {
        completed_at: t0(),
        duration: Duration::from_millis(300),
        probes: 8,
        slots: vec![slot(ModelId::Semantic), slot(ModelId::Hdc)],
    }
}

impl Inputs {
    pub fn good() -> Self {
        Self {
            registry: RegistryState::all_loaded(),
            snapshot: snapshot(t0()),
            gpu: GpuObservation::Reading {
                used_bytes: 30 * GIB,
                total_bytes: 80 * GIB,
            },
            components: ComponentChecks::all_up(),
            warmed_up: true,
            last_progress: Some(t0()),
            uptime: Duration::from_secs(3_600),
            now: t0(),
            canary: Some(good_canary()),
        }
    }

    pub fn report_with(&self, policy: &HealthPolicy) -> HealthReport {
        let observation =
            Observation::new(&self.registry, &self.snapshot, &self.gpu, self.components)
                .with_warmed_up(self.warmed_up)
                .with_last_progress(self.last_progress)
                .with_uptime(self.uptime)
                .with_canary(self.canary.as_ref());
        policy.evaluate(&observation, self.now)
    }

    pub fn report(&self) -> HealthReport {
        self.report_with(&HealthPolicy::default())
    }
}

/// The invariants every report must keep.
pub fn check_invariants(report: &HealthReport, warmed_up: bool) {
    let worst = report
        .reasons
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Healthy);
    assert_eq!(
        report.verdict, worst,
        "verdict is the worst reason: {report}"
    );
    assert_eq!(
        report.status.healthy,
        report.verdict.can_serve(),
        "healthy agrees: {report}"
    );
    for reason in &report.reasons {
        assert_eq!(reason.verdict, reason.rule.verdict_on_failure());
    }
    let mut rules: Vec<_> = report.reasons.iter().map(|r| r.rule).collect();
    let before = rules.clone();
    rules.sort();
    rules.dedup();
    assert_eq!(rules, before, "one reason per rule, in rule order");
    assert_eq!(
        report.probes.readiness.is_ok(),
        report.status.is_minimum_viable() && warmed_up,
        "readiness is minimum viable and warmed up"
    );
    assert_eq!(
        report.status.models_failed.len(),
        report.model_failures.len()
    );
}
