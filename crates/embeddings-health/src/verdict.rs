//! [`Verdict`], [`HealthRule`] and [`Reason`]: the answer and why.

use std::fmt;

use embeddings_types::{CanaryFigure, ModelId};
use serde::{Deserialize, Serialize};

/// The overall answer, ordered from best to worst; the worst failed rule
/// wins (as in Spring Boot's composite health).
///
/// `HealthStatus::healthy` is `verdict != Unhealthy`: a degraded pipeline
/// still serves.
///
/// ```
/// use embeddings_health::Verdict;
/// assert!(Verdict::Healthy < Verdict::Degraded && Verdict::Degraded < Verdict::Unhealthy);
/// assert_eq!(Verdict::Degraded.max(Verdict::Unhealthy), Verdict::Unhealthy);
/// assert!(Verdict::Degraded.can_serve());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every rule holds.
    Healthy,
    /// Serving, with something wrong that an operator should look at.
    Degraded,
    /// A rule of the spec fails: the pipeline must not be called healthy.
    Unhealthy,
}

impl Verdict {
    /// `snake_case` name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Whether this verdict means `healthy == true` (healthy or degraded).
    #[must_use]
    pub const fn can_serve(self) -> bool {
        !matches!(self, Self::Unhealthy)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One health rule. Each has a fixed verdict when it fails
/// ([`HealthRule::verdict_on_failure`]); see the crate docs for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthRule {
    /// Spec: at least `min_models_loaded` (10) of 12 slots loaded.
    ModelsLoaded,
    /// All 12 slots loaded (only checked once `models_loaded` holds).
    AllModelsLoaded,
    /// Spec: GPU memory use below `max_gpu_memory_fraction` (90%), when a
    /// GPU is expected; an unreadable GPU fails it.
    GpuMemory,
    /// Spec: errors per minute below `max_error_rate_per_minute` (10).
    ErrorRate,
    /// Spec core component: the model registry is operational.
    ModelRegistry,
    /// Spec core component: fusion (FuseMoE) is operational.
    Fusemoe,
    /// The batch processor is operational (without it nothing is served).
    BatchProcessor,
    /// The embedding cache is operational.
    CacheManager,
    /// The snapshot's other figures are valid numbers (finite,
    /// non-negative, hit rate at most 1).
    MetricsInput,
    /// The snapshot is no older than `max_snapshot_age`.
    SnapshotFresh,
    /// The quality canary's latest run: every slot's cosines at or above
    /// `min_canary_cosine`, its batch deviation at most
    /// `max_canary_batch_deviation`. Holds until a first run is reported.
    Canary,
}

impl HealthRule {
    /// Every rule, in evaluation (and report) order.
    pub const ALL: [Self; 11] = [
        Self::ModelsLoaded,
        Self::AllModelsLoaded,
        Self::GpuMemory,
        Self::ErrorRate,
        Self::ModelRegistry,
        Self::Fusemoe,
        Self::BatchProcessor,
        Self::CacheManager,
        Self::MetricsInput,
        Self::SnapshotFresh,
        Self::Canary,
    ];

    /// `snake_case` name, as in JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ModelsLoaded => "models_loaded",
            Self::AllModelsLoaded => "all_models_loaded",
            Self::GpuMemory => "gpu_memory",
            Self::ErrorRate => "error_rate",
            Self::ModelRegistry => "model_registry",
            Self::Fusemoe => "fusemoe",
            Self::BatchProcessor => "batch_processor",
            Self::CacheManager => "cache_manager",
            Self::MetricsInput => "metrics_input",
            Self::SnapshotFresh => "snapshot_fresh",
            Self::Canary => "canary",
        }
    }

    /// The verdict this rule imposes when it fails: the spec's rules and the
    /// batch processor give [`Verdict::Unhealthy`], the rest
    /// [`Verdict::Degraded`].
    #[must_use]
    pub const fn verdict_on_failure(self) -> Verdict {
        match self {
            Self::ModelsLoaded
            | Self::GpuMemory
            | Self::ErrorRate
            | Self::ModelRegistry
            | Self::Fusemoe
            | Self::BatchProcessor => Verdict::Unhealthy,
            Self::AllModelsLoaded
            | Self::CacheManager
            | Self::MetricsInput
            | Self::SnapshotFresh
            | Self::Canary => Verdict::Degraded,
        }
    }
}

impl fmt::Display for HealthRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An observed value or a threshold, with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
#[non_exhaustive]
pub enum Value {
    /// A number of model slots.
    Models(usize),
    /// A fraction of GPU memory, `used / total`.
    GpuFraction(f64),
    /// Errors per minute.
    ErrorsPerMinute(f64),
    /// A component's state: `true` is up.
    Up(bool),
    /// An age, in seconds.
    Seconds(f64),
    /// A snapshot field holding an impossible number.
    Invalid {
        /// The snapshot field, for example `"cache_hit_rate"`.
        field: String,
        /// Its value (NaN, infinite, negative, or a ratio above 1).
        number: f64,
    },
    /// A quality canary figure of one slot.
    Canary {
        /// The slot.
        model: ModelId,
        /// Which figure.
        figure: CanaryFigure,
        /// Its value (a cosine, or a relative deviation).
        value: f64,
    },
    /// A cosine similarity threshold.
    Cosine(f64),
    /// A relative deviation threshold.
    Deviation(f64),
    /// A figure that could not be read, and why. Never replaced by a guess.
    Unavailable(String),
    /// The valid range of a figure, in words.
    Requirement(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Models(n) => write!(f, "{n} of 12 models loaded"),
            Self::GpuFraction(x) => write!(f, "{:.2}% of GPU memory", x * 100.0),
            Self::ErrorsPerMinute(x) => write!(f, "{x} errors/min"),
            Self::Up(true) => f.write_str("up"),
            Self::Up(false) => f.write_str("down"),
            Self::Seconds(s) => write!(f, "{s:.1} s"),
            Self::Invalid { field, number } => write!(f, "{field} = {number}"),
            Self::Canary {
                model,
                figure,
                value,
            } => write!(f, "{model} {} = {value}", figure.as_str()),
            Self::Cosine(x) => write!(f, "cosine {x}"),
            Self::Deviation(x) => write!(f, "deviation {x:e}"),
            Self::Unavailable(why) => write!(f, "no reading ({why})"),
            Self::Requirement(text) => f.write_str(text),
        }
    }
}

/// How the observed value compares to the threshold for the rule to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The observed value must be at least the threshold.
    AtLeast,
    /// The observed value must be strictly below the threshold.
    Below,
    /// The observed value must be at most the threshold.
    AtMost,
    /// The observed value must equal the threshold (components: up).
    Equal,
    /// The observed value must satisfy the threshold's requirement.
    Satisfies,
}

impl Bound {
    const fn as_words(self) -> &'static str {
        match self {
            Self::AtLeast => "at least",
            Self::Below => "below",
            Self::AtMost => "at most",
            Self::Equal | Self::Satisfies => "",
        }
    }
}

/// Why the verdict is not healthy: one failed rule, what was observed and
/// the threshold it missed.
///
/// ```
/// use embeddings_health::{Bound, HealthRule, Reason, Value};
/// let reason = Reason::new(HealthRule::ModelsLoaded, Value::Models(9), Bound::AtLeast, Value::Models(10));
/// assert_eq!(
///     reason.to_string(),
///     "models_loaded (unhealthy): observed 9 of 12 models loaded, expected at least 10 of 12 models loaded"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule that failed.
    pub rule: HealthRule,
    /// The verdict this failure imposes.
    pub verdict: Verdict,
    /// What was observed.
    pub observed: Value,
    /// How `observed` should compare to `threshold`.
    pub bound: Bound,
    /// The threshold.
    pub threshold: Value,
}

impl Reason {
    /// A reason for `rule` failing, with the rule's verdict.
    #[must_use]
    pub const fn new(rule: HealthRule, observed: Value, bound: Bound, threshold: Value) -> Self {
        Self {
            rule,
            verdict: rule.verdict_on_failure(),
            observed,
            bound,
            threshold,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): observed {}, expected ",
            self.rule, self.verdict, self.observed
        )?;
        let words = self.bound.as_words();
        if !words.is_empty() {
            write!(f, "{words} ")?;
        }
        write!(f, "{}", self.threshold)
    }
}
