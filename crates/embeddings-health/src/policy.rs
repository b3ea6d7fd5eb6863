//! [`HealthPolicy`]: the thresholds of the health rules, validated.

use std::time::Duration;

use embeddings_types::ModelId;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The raw, unvalidated form of a [`HealthPolicy`]: what a configuration
/// file holds. Durations are seconds (`f64`), as everywhere in this
/// workspace. Missing fields take the spec's defaults; unknown fields are
/// rejected, so a typo cannot silently fall back to a default.
///
/// Turn it into a policy with [`HealthPolicy::try_from`] (or
/// [`HealthPolicySpec::build`]), which validates every field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthPolicySpec {
    /// Fewest loaded model slots for the pipeline to be healthy. Spec: 10.
    /// Valid: `1..=12`.
    pub min_models_loaded: usize,
    /// GPU memory use (`used / total`) must stay *below* this. Spec: 0.90.
    /// Valid: `(0, 1]`.
    pub max_gpu_memory_fraction: f64,
    /// Errors per minute (last 60 s) must stay *below* this. Spec: 10.
    /// Valid: finite and `> 0`.
    pub max_error_rate_per_minute: f64,
    /// A metrics snapshot older than this is stale (rule `snapshot_fresh`,
    /// degraded). Default: 60 s. Valid: finite and `>= 0`.
    pub max_snapshot_age_seconds: f64,
    /// The liveness probe fails when the process has recorded no progress
    /// for longer than this. Default: 30 s. Valid: finite and `>= 0`.
    pub liveness_timeout_seconds: f64,
    /// The quality canary's cosines (to the start-up vectors and to the
    /// reference) must stay at or above this (rule `canary`, degraded).
    /// Default: 0.9999, the project's bound for "the same vector" (the
    /// reference tests use it; the CPU build measures 1 − 2e-12 against
    /// sentence-transformers, and ±2 % on one weight tensor of MiniLM gives
    /// 0.99985–0.99999). Valid: `(0, 1]`.
    pub min_canary_cosine: f64,
    /// The canary's batch deviation (`‖alone − batched‖ / ‖alone‖`) must stay
    /// at or below this (rule `canary`, degraded). Default: 1e-4 (the CPU
    /// build measures below 1e-6; see `docs/metrics.md`). Valid: finite and `>= 0`.
    pub max_canary_batch_deviation: f64,
}

impl Default for HealthPolicySpec {
    fn default() -> Self {
        Self {
            min_models_loaded: 10,
            max_gpu_memory_fraction: 0.90,
            max_error_rate_per_minute: 10.0,
            max_snapshot_age_seconds: 60.0,
            liveness_timeout_seconds: 30.0,
            min_canary_cosine: 0.9999,
            max_canary_batch_deviation: 1e-4,
        }
    }
}

impl HealthPolicySpec {
    /// Validates the spec into a [`HealthPolicy`].
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<HealthPolicy, ConfigError> {
        HealthPolicy::try_from(self)
    }
}

/// The thresholds of the health rules, checked to be possible.
///
/// Build one from a [`HealthPolicySpec`] (validated), take the spec's
/// defaults with [`HealthPolicy::default`], or deserialize one: serde goes
/// through the same validation, so an invalid policy cannot be loaded.
///
/// ```
/// use embeddings_health::{HealthPolicy, HealthPolicySpec, ConfigError};
/// let policy = HealthPolicy::default();
/// assert_eq!(policy.min_models_loaded(), 10);
///
/// let strict = HealthPolicySpec { min_models_loaded: 12, ..Default::default() }.build()?;
/// assert_eq!(strict.min_models_loaded(), 12);
///
/// let err = HealthPolicySpec { min_models_loaded: 13, ..Default::default() }.build();
/// assert!(matches!(err, Err(ConfigError::ModelCountOutOfRange { value: 13, .. })));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HealthPolicySpec", into = "HealthPolicySpec")]
pub struct HealthPolicy {
    spec: HealthPolicySpec,
    max_snapshot_age: Duration,
    liveness_timeout: Duration,
}

impl Default for HealthPolicy {
    /// The spec's thresholds: 10 of 12 models, GPU memory below 90%, fewer
    /// than 10 errors per minute; snapshots fresh within 60 s; liveness
    /// timeout 30 s.
    fn default() -> Self {
        let spec = HealthPolicySpec::default();
        Self {
            spec,
            max_snapshot_age: Duration::from_secs(60),
            liveness_timeout: Duration::from_secs(30),
        }
    }
}

impl TryFrom<HealthPolicySpec> for HealthPolicy {
    type Error = ConfigError;

    fn try_from(spec: HealthPolicySpec) -> Result<Self, Self::Error> {
        if spec.min_models_loaded == 0 || spec.min_models_loaded > ModelId::COUNT {
            return Err(ConfigError::ModelCountOutOfRange {
                field: "min_models_loaded",
                value: spec.min_models_loaded,
                max: ModelId::COUNT,
            });
        }
        let gpu = spec.max_gpu_memory_fraction;
        if !(gpu > 0.0 && gpu <= 1.0) {
            return Err(ConfigError::InvalidFraction {
                field: "max_gpu_memory_fraction",
                value: gpu,
                min_exclusive: 0.0,
            });
        }
        let errors = spec.max_error_rate_per_minute;
        if !(errors.is_finite() && errors > 0.0) {
            return Err(ConfigError::InvalidNumber {
                field: "max_error_rate_per_minute",
                value: errors,
                requirement: "greater than 0 (errors per minute)",
            });
        }
        let cosine = spec.min_canary_cosine;
        if !(cosine > 0.0 && cosine <= 1.0) {
            return Err(ConfigError::InvalidFraction {
                field: "min_canary_cosine",
                value: cosine,
                min_exclusive: 0.0,
            });
        }
        let deviation = spec.max_canary_batch_deviation;
        if !(deviation.is_finite() && deviation >= 0.0) {
            return Err(ConfigError::InvalidNumber {
                field: "max_canary_batch_deviation",
                value: deviation,
                requirement: "finite and at least 0",
            });
        }
        let max_snapshot_age = seconds("max_snapshot_age_seconds", spec.max_snapshot_age_seconds)?;
        let liveness_timeout = seconds("liveness_timeout_seconds", spec.liveness_timeout_seconds)?;
        Ok(Self {
            spec,
            max_snapshot_age,
            liveness_timeout,
        })
    }
}

impl From<HealthPolicy> for HealthPolicySpec {
    fn from(policy: HealthPolicy) -> Self {
        policy.spec
    }
}

/// Converts seconds from a configuration into a [`Duration`], naming the
/// field when it cannot be one.
pub(crate) fn seconds(field: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| ConfigError::InvalidDuration {
        field,
        seconds: value,
    })
}

impl HealthPolicy {
    /// Loads and validates a policy from TOML. Missing keys take the
    /// defaults; unknown keys are rejected.
    ///
    /// ```
    /// use embeddings_health::HealthPolicy;
    /// let policy = HealthPolicy::from_toml_str("min_models_loaded = 11\n")?;
    /// assert_eq!(policy.min_models_loaded(), 11);
    /// assert_eq!(policy.max_gpu_memory_fraction(), 0.9);
    /// # Ok::<(), embeddings_health::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Toml`] for text that is not a policy (syntax, unknown
    /// key, wrong type); the typed validation error of
    /// [`HealthPolicy::try_from`] for impossible thresholds.
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let spec: HealthPolicySpec = toml::from_str(text).map_err(|e| ConfigError::Toml {
            message: e.to_string(),
        })?;
        Self::try_from(spec)
    }

    /// The validated fields, as configured.
    #[must_use]
    pub const fn spec(&self) -> &HealthPolicySpec {
        &self.spec
    }

    /// Fewest loaded model slots for a healthy pipeline.
    #[must_use]
    pub const fn min_models_loaded(&self) -> usize {
        self.spec.min_models_loaded
    }

    /// GPU memory use must stay below this fraction of the total.
    #[must_use]
    pub const fn max_gpu_memory_fraction(&self) -> f64 {
        self.spec.max_gpu_memory_fraction
    }

    /// The canary's cosines must stay at or above this.
    #[must_use]
    pub const fn min_canary_cosine(&self) -> f64 {
        self.spec.min_canary_cosine
    }

    /// The canary's batch deviation must stay at or below this.
    #[must_use]
    pub const fn max_canary_batch_deviation(&self) -> f64 {
        self.spec.max_canary_batch_deviation
    }

    /// Errors per minute must stay below this.
    pub const fn max_error_rate_per_minute(&self) -> f64 {
        self.spec.max_error_rate_per_minute
    }

    /// A snapshot older than this is stale.
    #[must_use]
    pub const fn max_snapshot_age(&self) -> Duration {
        self.max_snapshot_age
    }

    /// Longest time without recorded progress before liveness fails.
    #[must_use]
    pub const fn liveness_timeout(&self) -> Duration {
        self.liveness_timeout
    }
}
