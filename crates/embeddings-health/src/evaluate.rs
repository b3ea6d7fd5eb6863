//! The health evaluation: [`HealthPolicy::evaluate`] and its
//! [`HealthReport`].

use std::fmt;

use chrono::{DateTime, Utc};
use embeddings_types::{
    CacheFigures, CanaryFigure, ComponentHealth, GpuMemory, HealthStatus, ModelId,
};
use serde::{Deserialize, Serialize};

use crate::probe::{self, Probes, elapsed};
use crate::{
    Bound, GpuObservation, HealthPolicy, HealthRule, Observation, Reason, SlotState, Value, Verdict,
};

/// A slot that failed to load, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFailure {
    /// The slot.
    pub model: ModelId,
    /// The registry's reason.
    pub reason: String,
}

/// The result of one evaluation: the spec's [`HealthStatus`], the
/// [`Verdict`], the reasons, and the probes.
///
/// Invariant: `status.healthy == verdict.can_serve()`, and `verdict` is the
/// worst `reasons[i].verdict` ([`Verdict::Healthy`] when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The overall verdict.
    pub verdict: Verdict,
    /// The spec's status, with `healthy` set from the verdict.
    pub status: HealthStatus,
    /// One entry per failed rule, in [`HealthRule::ALL`] order.
    pub reasons: Vec<Reason>,
    /// The slots that failed to load, with the registry's reasons.
    pub model_failures: Vec<ModelFailure>,
    /// GPU memory `used / total` when read; `None` otherwise.
    pub gpu_memory_fraction: Option<f64>,
    /// Liveness, readiness and startup.
    pub probes: Probes,
    /// The `now` the evaluation was given.
    pub evaluated_at: DateTime<Utc>,
}

impl HealthReport {
    /// The reason for `rule`, if it failed.
    #[must_use]
    pub fn reason(&self, rule: HealthRule) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.rule == rule)
    }
}

impl fmt::Display for HealthReport {
    /// One line: the verdict, then each reason, `; `-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict)?;
        for (i, reason) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}

/// Collects failed rules and the worst verdict.
struct Findings {
    reasons: Vec<Reason>,
    verdict: Verdict,
}

impl Findings {
    fn fail(&mut self, rule: HealthRule, observed: Value, bound: Bound, threshold: Value) {
        let reason = Reason::new(rule, observed, bound, threshold);
        self.verdict = self.verdict.max(reason.verdict);
        self.reasons.push(reason);
    }

    fn component(&mut self, rule: HealthRule, up: bool) {
        if !up {
            self.fail(rule, Value::Up(false), Bound::Equal, Value::Up(true));
        }
    }
}

/// Saturating `u64` to `usize` for the spec's `usize` fields.
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// The first figure of the snapshot (other than the error rate, which has
/// its own rule) that no healthy recorder can produce.
fn invalid_metric(snapshot: &embeddings_types::MetricsSnapshot) -> Option<(&'static str, f64)> {
    let non_negative = [
        ("throughput", snapshot.throughput),
        ("throughput_10s", snapshot.throughput_10s),
        ("throughput_60s", snapshot.throughput_60s),
        ("mean_latency_us", snapshot.mean_latency_us),
        ("latency.mean", snapshot.latency.mean),
    ];
    for (field, value) in non_negative {
        if !(value.is_finite() && value >= 0.0) {
            return Some((field, value));
        }
    }
    let hit = snapshot.cache_hit_rate;
    if !(0.0..=1.0).contains(&hit) {
        // `contains` is false for NaN too.
        return Some(("cache_hit_rate", hit));
    }
    None
}

impl HealthPolicy {
    /// Evaluates every health rule against `observation` at `now`.
    ///
    /// A pure function: the same inputs give the same report, and nothing
    /// reads the clock. Allocates only the report's vectors (and strings for
    /// failures).
    ///
    /// ```
    /// use chrono::Utc;
    /// # use embeddings_health::doc_support::snapshot;
    /// use embeddings_health::{ComponentChecks, GpuObservation, HealthPolicy, HealthRule, Observation, RegistryState, Verdict};
    /// use embeddings_types::ModelId;
    ///
    /// let now = Utc::now();
    /// let snapshot = snapshot(now); // a MetricsSnapshot from embeddings-metrics
    /// let mut registry = RegistryState::all_loaded();
    /// registry.mark_failed(ModelId::Graph, "out of GPU memory");
    /// let gpu = GpuObservation::Reading { used_bytes: 30 << 30, total_bytes: 80 << 30 };
    /// let observation = Observation::new(&registry, &snapshot, &gpu, ComponentChecks::all_up())
    ///     .with_warmed_up(true);
    ///
    /// let report = HealthPolicy::default().evaluate(&observation, now);
    /// assert_eq!(report.verdict, Verdict::Degraded); // 11 of 12: allowed, but not all
    /// assert!(report.status.healthy);
    /// assert_eq!(report.reasons[0].rule, HealthRule::AllModelsLoaded);
    /// assert_eq!(report.probes.readiness.http_status(), 200);
    /// ```
    #[must_use]
    pub fn evaluate(&self, observation: &Observation<'_>, now: DateTime<Utc>) -> HealthReport {
        let registry = observation.registry;
        let snapshot = observation.snapshot;
        let checks = observation.components;
        let mut findings = Findings {
            reasons: Vec::new(),
            verdict: Verdict::Healthy,
        };

        // Models.
        let loaded = registry.loaded_count();
        let failed = registry.failed_count();
        let mut models_loaded = Vec::with_capacity(loaded);
        let mut models_failed = Vec::with_capacity(failed);
        let mut model_failures = Vec::with_capacity(failed);
        for (model, state) in registry.iter() {
            match state {
                SlotState::Loaded => models_loaded.push(model),
                SlotState::Failed { reason } => {
                    models_failed.push(model);
                    model_failures.push(ModelFailure {
                        model,
                        reason: reason.clone(),
                    });
                }
                SlotState::Loading => {}
            }
        }
        let min = self.min_models_loaded();
        if loaded < min {
            findings.fail(
                HealthRule::ModelsLoaded,
                Value::Models(loaded),
                Bound::AtLeast,
                Value::Models(min),
            );
        } else if loaded < ModelId::COUNT {
            findings.fail(
                HealthRule::AllModelsLoaded,
                Value::Models(loaded),
                Bound::Equal,
                Value::Models(ModelId::COUNT),
            );
        }

        // GPU.
        let max_gpu = self.max_gpu_memory_fraction();
        let (gpu_available, gpu_used, gpu_total, gpu_fraction) = match observation.gpu {
            GpuObservation::NotExpected => (false, 0, 0, None),
            GpuObservation::Unreadable { reason } => {
                findings.fail(
                    HealthRule::GpuMemory,
                    Value::Unavailable(reason.clone()),
                    Bound::Below,
                    Value::GpuFraction(max_gpu),
                );
                (false, 0, 0, None)
            }
            &GpuObservation::Reading {
                used_bytes,
                total_bytes,
            } => match observation.gpu.used_fraction() {
                None => {
                    findings.fail(
                        HealthRule::GpuMemory,
                        Value::Unavailable("the GPU reported 0 bytes of total memory".to_owned()),
                        Bound::Below,
                        Value::GpuFraction(max_gpu),
                    );
                    (false, used_bytes, total_bytes, None)
                }
                Some(fraction) => {
                    // Never NaN: both operands are finite and total > 0.
                    if fraction >= max_gpu {
                        findings.fail(
                            HealthRule::GpuMemory,
                            Value::GpuFraction(fraction),
                            Bound::Below,
                            Value::GpuFraction(max_gpu),
                        );
                    }
                    (true, used_bytes, total_bytes, Some(fraction))
                }
            },
        };

        // Error rate: NaN, infinite and negative rates fail too.
        let error_rate = snapshot.error_rate_per_minute;
        let max_errors = self.max_error_rate_per_minute();
        if !(error_rate >= 0.0 && error_rate < max_errors) {
            findings.fail(
                HealthRule::ErrorRate,
                Value::ErrorsPerMinute(error_rate),
                Bound::Below,
                Value::ErrorsPerMinute(max_errors),
            );
        }

        // Components.
        findings.component(HealthRule::ModelRegistry, checks.model_registry);
        findings.component(HealthRule::Fusemoe, checks.fusemoe);
        findings.component(HealthRule::BatchProcessor, checks.batch_processor);
        findings.component(HealthRule::CacheManager, checks.cache_manager);

        // The snapshot itself.
        if let Some((field, number)) = invalid_metric(snapshot) {
            findings.fail(
                HealthRule::MetricsInput,
                Value::Invalid {
                    field: field.to_owned(),
                    number,
                },
                Bound::Satisfies,
                Value::Requirement("finite and non-negative (cache_hit_rate at most 1)".to_owned()),
            );
        }
        let age = elapsed(snapshot.timestamp, now);
        let max_age = self.max_snapshot_age();
        if age > max_age {
            findings.fail(
                HealthRule::SnapshotFresh,
                Value::Seconds(age.as_secs_f64()),
                Bound::AtMost,
                Value::Seconds(max_age.as_secs_f64()),
            );
        }

        // The quality canary: the worst cosine, then the worst batch deviation.
        if let Some(report) = observation.canary {
            let min_cosine = self.min_canary_cosine();
            let max_deviation = self.max_canary_batch_deviation();
            let cosine = report
                .worst_cosine()
                .filter(|(_, _, c)| c.is_nan() || *c < min_cosine);
            let deviation = report
                .worst_batch_deviation()
                .filter(|(_, d)| d.is_nan() || *d > max_deviation);
            if let Some((model, figure, value)) = cosine {
                findings.fail(
                    HealthRule::Canary,
                    Value::Canary {
                        model,
                        figure,
                        value,
                    },
                    Bound::AtLeast,
                    Value::Cosine(min_cosine),
                );
            } else if let Some((model, value)) = deviation {
                findings.fail(
                    HealthRule::Canary,
                    Value::Canary {
                        model,
                        figure: CanaryFigure::BatchDeviation,
                        value,
                    },
                    Bound::AtMost,
                    Value::Deviation(max_deviation),
                );
            }
        }

        let verdict = findings.verdict;
        let status = HealthStatus {
            healthy: verdict.can_serve(),
            models_loaded,
            models_failed,
            gpu_memory_used: to_usize(gpu_used),
            gpu_memory_available: to_usize(gpu_total),
            cache_size: to_usize(snapshot.gauges.cache_entries.unwrap_or(0)),
            cache_memory_bytes: to_usize(snapshot.gauges.cache_bytes.unwrap_or(0)),
            uptime: observation.uptime,
            last_embed_time: observation.last_embed_time,
            error_rate,
            components: ComponentHealth {
                model_registry: checks.model_registry,
                batch_processor: checks.batch_processor,
                fusemoe: checks.fusemoe,
                cache_manager: checks.cache_manager,
                gpu_available,
                gpu_required: observation.gpu.expected(),
            },
            gpu_memory: gpu_fraction.map(|_| GpuMemory {
                used_bytes: gpu_used,
                total_bytes: gpu_total,
            }),
            cache: match (snapshot.gauges.cache_entries, snapshot.gauges.cache_bytes) {
                (Some(entries), Some(bytes)) => Some(CacheFigures { entries, bytes }),
                _ => None,
            },
        };
        let probes = Probes {
            liveness: probe::liveness(self, observation.last_progress, observation.uptime, now),
            readiness: probe::readiness(&status, observation.warmed_up),
            startup: probe::startup(registry),
        };
        HealthReport {
            verdict,
            status,
            reasons: findings.reasons,
            model_failures,
            gpu_memory_fraction: gpu_fraction,
            probes,
            evaluated_at: now,
        }
    }
}
