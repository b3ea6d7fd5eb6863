//! [`AlertMetric`], [`Severity`], [`AlertRule`] and [`AlertConfig`].
//!
//! # Size
//! ~700 lines: the metric enum, the rule and the config with its
//! validation and the recommended rule table belong together (the table is
//! checked against the same validation); the engine is in `engine.rs`.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use embeddings_types::MetricsSnapshot;
use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::policy::seconds;

/// How bad a firing alert is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; no action needed now.
    Info,
    /// Needs attention soon, before users notice.
    #[default]
    Warning,
    /// Users are (or are about to be) affected: act now.
    Critical,
}

impl Severity {
    /// `snake_case` name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The alert fires when the value is above the threshold (a maximum).
    Above,
    /// The alert fires when the value is below the threshold (a minimum).
    Below,
}

/// A figure an alert rule watches. Each reads one number from a
/// [`MetricsSnapshot`] (or, for drift, from the evaluation's argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// p95 embedding latency, µs (`snapshot.latency.p95`). A maximum.
    /// Missing while the histogram is empty.
    LatencyP95,
    /// Embeddings per second over the last 60 s (`throughput_60s`). A
    /// minimum; an idle pipeline reads 0 and so breaches any positive minimum.
    Throughput,
    /// Errors per minute over the last 60 s. A maximum.
    ErrorRate,
    /// Cache hit rate, `0..=1`. A minimum. Missing before the first lookup.
    CacheHitRate,
    /// Process resident set size, bytes. A maximum. Missing until the gauge is set.
    ProcessMemory,
    /// GPU memory `used / total`, `0..=1`. A maximum. Missing without both
    /// gauges or with a total of 0.
    GpuMemory,
    /// Embedding-quality drift score (from a later drift monitor), passed
    /// to the evaluation. A maximum. Missing when `None`.
    EmbeddingDrift,
    /// Enabled slots that failed to load. A maximum. Not in a
    /// [`MetricsSnapshot`]: whoever knows the registry sets it (the server
    /// does, from the pipeline's); missing otherwise.
    SlotsFailed,
    /// The quality canary's worst cosine over every slot, to its start-up
    /// vectors or its reference (`CanaryReport::worst_cosine`). A minimum.
    /// Not in a [`MetricsSnapshot`]: whoever runs the canary sets it (the
    /// server does); missing before the first run.
    CanaryCosine,
}

impl AlertMetric {
    /// Every metric.
    pub const ALL: [Self; 9] = [
        Self::LatencyP95,
        Self::Throughput,
        Self::ErrorRate,
        Self::CacheHitRate,
        Self::ProcessMemory,
        Self::GpuMemory,
        Self::EmbeddingDrift,
        Self::SlotsFailed,
        Self::CanaryCosine,
    ];

    /// `snake_case` name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LatencyP95 => "latency_p95",
            Self::Throughput => "throughput",
            Self::ErrorRate => "error_rate",
            Self::CacheHitRate => "cache_hit_rate",
            Self::ProcessMemory => "process_memory",
            Self::GpuMemory => "gpu_memory",
            Self::EmbeddingDrift => "embedding_drift",
            Self::SlotsFailed => "slots_failed",
            Self::CanaryCosine => "canary_cosine",
        }
    }

    /// The unit of the metric's values and thresholds.
    #[must_use]
    pub const fn unit(self) -> &'static str {
        match self {
            Self::LatencyP95 => "us",
            Self::Throughput => "embeddings/s",
            Self::ErrorRate => "errors/min",
            Self::CacheHitRate | Self::GpuMemory => "ratio",
            Self::ProcessMemory => "bytes",
            Self::EmbeddingDrift => "score",
            Self::SlotsFailed => "slots",
            Self::CanaryCosine => "cosine",
        }
    }

    /// Whether the threshold is a maximum or a minimum.
    #[must_use]
    pub const fn direction(self) -> Direction {
        match self {
            Self::Throughput | Self::CacheHitRate | Self::CanaryCosine => Direction::Below,
            _ => Direction::Above,
        }
    }

    /// Whether the metric is a ratio in `0..=1`.
    #[must_use]
    pub const fn is_ratio(self) -> bool {
        matches!(
            self,
            Self::CacheHitRate | Self::GpuMemory | Self::CanaryCosine
        )
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AlertMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per [`AlertMetric`], each `None` when missing. Values that
/// are NaN, infinite or negative are stored as missing: they neither fire
/// nor resolve an alert (the health evaluation reports them).
///
/// ```
/// use embeddings_health::{AlertMetric, MetricValues};
/// let mut values = MetricValues::new();
/// values.set(AlertMetric::ErrorRate, 3.0);
/// values.set(AlertMetric::LatencyP95, f64::NAN);
/// assert_eq!(values.get(AlertMetric::ErrorRate), Some(3.0));
/// assert_eq!(values.get(AlertMetric::LatencyP95), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricValues {
    values: [Option<f64>; AlertMetric::ALL.len()],
}

impl MetricValues {
    /// Every value missing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every metric from `snapshot`, with `drift` for
    /// [`AlertMetric::EmbeddingDrift`]. See each metric for when it is missing.
    #[must_use]
    pub fn from_snapshot(snapshot: &MetricsSnapshot, drift: Option<f64>) -> Self {
        let mut values = Self::new();
        let gauges = &snapshot.gauges;
        // Precision loss of u64 -> f64 above 2^53 is irrelevant to a threshold.
        let as_f64 = |n: u64| n as f64;
        if snapshot.latency.count > 0 {
            values.set(AlertMetric::LatencyP95, as_f64(snapshot.latency.p95));
        }
        values.set(AlertMetric::Throughput, snapshot.throughput_60s);
        values.set(AlertMetric::ErrorRate, snapshot.error_rate_per_minute);
        if snapshot.cache_hits.saturating_add(snapshot.cache_misses) > 0 {
            values.set(AlertMetric::CacheHitRate, snapshot.cache_hit_rate);
        }
        if let Some(rss) = gauges.process_rss_bytes {
            values.set(AlertMetric::ProcessMemory, as_f64(rss));
        }
        if let (Some(used), Some(total)) =
            (gauges.gpu_memory_used_bytes, gauges.gpu_memory_total_bytes)
            && total > 0
        {
            values.set(AlertMetric::GpuMemory, as_f64(used) / as_f64(total));
        }
        if let Some(drift) = drift {
            values.set(AlertMetric::EmbeddingDrift, drift);
        }
        values
    }

    /// Sets a value; NaN, infinite or negative values are stored as missing.
    pub fn set(&mut self, metric: AlertMetric, value: f64) {
        let valid = value.is_finite() && value >= 0.0;
        if let Some(slot) = self.values.get_mut(metric.index()) {
            *slot = valid.then_some(value);
        }
    }

    /// Marks a value missing.
    pub fn clear(&mut self, metric: AlertMetric) {
        if let Some(slot) = self.values.get_mut(metric.index()) {
            *slot = None;
        }
    }

    /// The value of `metric`, or `None` when missing.
    #[must_use]
    pub fn get(&self, metric: AlertMetric) -> Option<f64> {
        self.values.get(metric.index()).copied().flatten()
    }
}

/// The raw, unvalidated form of an [`AlertRule`], as written in a
/// configuration file. Unknown fields are rejected.
///
/// ```toml
/// name = "error_rate_high"
/// metric = "error_rate"
/// threshold = 5.0        # errors per minute
/// for_seconds = 60.0     # must hold this long before firing
/// hysteresis = 1.0       # resolve only at 4.0 or below
/// severity = "warning"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSpec {
    /// Unique, non-empty name.
    pub name: String,
    /// The metric watched.
    pub metric: AlertMetric,
    /// The threshold, in the metric's [unit](AlertMetric::unit): a maximum
    /// or a minimum according to its [direction](AlertMetric::direction).
    pub threshold: f64,
    /// How long the threshold must be breached before the alert fires (the
    /// Prometheus `for`). 0 fires on the first breach. Default 0.
    #[serde(default)]
    pub for_seconds: f64,
    /// How far back past the threshold the value must come before a firing
    /// alert resolves, in the metric's unit. 0 resolves as soon as the
    /// threshold is no longer breached. Default 0.
    #[serde(default)]
    pub hysteresis: f64,
    /// Default `warning`.
    #[serde(default)]
    pub severity: Severity,
}

impl AlertRuleSpec {
    /// A rule firing on the first breach, resolving without hysteresis,
    /// severity warning.
    #[must_use]
    pub fn new(name: impl Into<String>, metric: AlertMetric, threshold: f64) -> Self {
        Self {
            name: name.into(),
            metric,
            threshold,
            for_seconds: 0.0,
            hysteresis: 0.0,
            severity: Severity::Warning,
        }
    }

    /// Sets the `for` duration.
    #[must_use]
    pub fn with_for(mut self, duration: Duration) -> Self {
        self.for_seconds = duration.as_secs_f64();
        self
    }

    /// Sets the hysteresis margin.
    #[must_use]
    pub const fn with_hysteresis(mut self, margin: f64) -> Self {
        self.hysteresis = margin;
        self
    }

    /// Sets the severity.
    #[must_use]
    pub const fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Validates into an [`AlertRule`].
    ///
    /// # Errors
    /// See [`AlertRule::try_from`].
    pub fn build(self) -> Result<AlertRule, ConfigError> {
        AlertRule::try_from(self)
    }
}

/// A validated alert rule: fires when its metric stays past the threshold
/// for `for_duration`, resolves when it comes back past the threshold by the
/// hysteresis margin.
///
/// ```
/// use std::time::Duration;
/// use embeddings_health::{AlertMetric, AlertRuleSpec, ConfigError, Severity};
/// let rule = AlertRuleSpec::new("p95_high", AlertMetric::LatencyP95, 50_000.0)
///     .with_for(Duration::from_secs(60))
///     .with_hysteresis(5_000.0)
///     .with_severity(Severity::Critical)
///     .build()?;
/// assert_eq!(rule.for_duration(), Duration::from_secs(60));
///
/// let bad = AlertRuleSpec::new("hit_rate_low", AlertMetric::CacheHitRate, 1.5).build();
/// assert!(matches!(bad, Err(ConfigError::InvalidThreshold { .. })));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AlertRuleSpec", into = "AlertRuleSpec")]
pub struct AlertRule {
    spec: AlertRuleSpec,
    for_duration: Duration,
}

impl TryFrom<AlertRuleSpec> for AlertRule {
    type Error = ConfigError;

    /// # Errors
    /// [`ConfigError::EmptyRuleName`]; [`ConfigError::InvalidThreshold`] for
    /// a NaN, infinite or negative threshold, or a ratio above 1;
    /// [`ConfigError::InRule`] around an invalid `for_seconds` or
    /// `hysteresis` (negative, NaN, or so wide the alert could never resolve).
    fn try_from(spec: AlertRuleSpec) -> Result<Self, Self::Error> {
        if spec.name.trim().is_empty() {
            return Err(ConfigError::EmptyRuleName);
        }
        let metric = spec.metric;
        let t = spec.threshold;
        let invalid_threshold = |requirement| ConfigError::InvalidThreshold {
            rule: spec.name.clone(),
            metric: metric.as_str(),
            value: t,
            requirement,
        };
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid_threshold("use a finite number of at least 0"));
        }
        if metric.is_ratio() && t > 1.0 {
            return Err(invalid_threshold(
                "this metric is a ratio: use a number between 0 and 1",
            ));
        }
        let in_rule = |e| ConfigError::InRule {
            rule: spec.name.clone(),
            source: Box::new(e),
        };
        let for_duration = seconds("for_seconds", spec.for_seconds).map_err(in_rule)?;
        let h = spec.hysteresis;
        if !(h.is_finite() && h >= 0.0) {
            return Err(in_rule(ConfigError::InvalidNumber {
                field: "hysteresis",
                value: h,
                requirement: "of at least 0, in the metric's unit",
            }));
        }
        let resolvable = match metric.direction() {
            Direction::Above => h <= t,
            Direction::Below => !metric.is_ratio() || t + h <= 1.0,
        };
        if !resolvable {
            return Err(in_rule(ConfigError::InvalidNumber {
                field: "hysteresis",
                value: h,
                requirement: "small enough that the value can come back past the threshold by it \
                              (at most the threshold for a maximum; threshold + hysteresis at most 1 \
                              for a ratio minimum), or the alert could never resolve",
            }));
        }
        Ok(Self { spec, for_duration })
    }
}

impl From<AlertRule> for AlertRuleSpec {
    fn from(rule: AlertRule) -> Self {
        rule.spec
    }
}

impl AlertRule {
    /// The validated fields.
    #[must_use]
    pub const fn spec(&self) -> &AlertRuleSpec {
        &self.spec
    }

    /// The rule's unique name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The metric watched.
    #[must_use]
    pub const fn metric(&self) -> AlertMetric {
        self.spec.metric
    }

    /// The threshold, in the metric's unit.
    #[must_use]
    pub const fn threshold(&self) -> f64 {
        self.spec.threshold
    }

    /// How long the breach must last before firing.
    #[must_use]
    pub const fn for_duration(&self) -> Duration {
        self.for_duration
    }

    /// The resolve margin, in the metric's unit.
    #[must_use]
    pub const fn hysteresis(&self) -> f64 {
        self.spec.hysteresis
    }

    /// The severity when firing.
    #[must_use]
    pub const fn severity(&self) -> Severity {
        self.spec.severity
    }

    /// Whether `value` breaches the threshold (strictly past it).
    #[must_use]
    pub fn breached_by(&self, value: f64) -> bool {
        match self.metric().direction() {
            Direction::Above => value > self.threshold(),
            Direction::Below => value < self.threshold(),
        }
    }

    /// Whether `value` is back past the threshold by the hysteresis margin,
    /// so a firing alert resolves.
    #[must_use]
    pub fn cleared_by(&self, value: f64) -> bool {
        match self.metric().direction() {
            Direction::Above => value <= self.threshold() - self.hysteresis(),
            Direction::Below => value >= self.threshold() + self.hysteresis(),
        }
    }
}

/// The raw form of an [`AlertConfig`]. A missing `rules` key means the
/// [recommended rules](AlertConfig::recommended_rules); `rules = []` means none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfigSpec {
    /// The rules.
    #[serde(default = "recommended_specs")]
    pub rules: Vec<AlertRuleSpec>,
    /// Alert events kept in the history; the oldest is dropped beyond.
    /// Default 256. Valid: at least 1.
    #[serde(default = "default_capacity")]
    pub history_capacity: usize,
}

const fn default_capacity() -> usize {
    256
}

fn recommended_specs() -> Vec<AlertRuleSpec> {
    AlertConfig::recommended_rules()
        .into_iter()
        .map(AlertRuleSpec::from)
        .collect()
}

impl Default for AlertConfigSpec {
    fn default() -> Self {
        Self {
            rules: recommended_specs(),
            history_capacity: default_capacity(),
        }
    }
}

/// Validated alert rules and the history capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AlertConfigSpec", into = "AlertConfigSpec")]
pub struct AlertConfig {
    rules: Vec<AlertRule>,
    history_capacity: usize,
}

impl Default for AlertConfig {
    /// The [recommended rules](Self::recommended_rules), history of 256.
    fn default() -> Self {
        Self {
            rules: Self::recommended_rules(),
            history_capacity: default_capacity(),
        }
    }
}

impl TryFrom<AlertConfigSpec> for AlertConfig {
    type Error = ConfigError;

    fn try_from(spec: AlertConfigSpec) -> Result<Self, Self::Error> {
        let rules = spec
            .rules
            .into_iter()
            .map(AlertRule::try_from)
            .collect::<Result<_, _>>()?;
        Self::new(rules, spec.history_capacity)
    }
}

impl From<AlertConfig> for AlertConfigSpec {
    fn from(config: AlertConfig) -> Self {
        Self {
            rules: config.rules.into_iter().map(AlertRuleSpec::from).collect(),
            history_capacity: config.history_capacity,
        }
    }
}

impl AlertConfig {
    /// Validated rules with a history capacity.
    ///
    /// # Errors
    /// [`ConfigError::DuplicateRuleName`], [`ConfigError::ZeroHistoryCapacity`].
    pub fn new(rules: Vec<AlertRule>, history_capacity: usize) -> Result<Self, ConfigError> {
        if history_capacity == 0 {
            return Err(ConfigError::ZeroHistoryCapacity);
        }
        let mut names = HashSet::with_capacity(rules.len());
        for rule in &rules {
            if !names.insert(rule.name()) {
                return Err(ConfigError::DuplicateRuleName {
                    name: rule.name().to_owned(),
                });
            }
        }
        Ok(Self {
            rules,
            history_capacity,
        })
    }

    /// Loads and validates alert rules from TOML (see [`AlertConfigSpec`]).
    ///
    /// ```
    /// use embeddings_health::{AlertConfig, AlertMetric};
    /// let config = AlertConfig::from_toml_str(r#"
    ///     history_capacity = 100
    ///     [[rules]]
    ///     name = "errors"
    ///     metric = "error_rate"
    ///     threshold = 5.0
    ///     for_seconds = 60
    ///     severity = "critical"
    /// "#)?;
    /// assert_eq!(config.rules().len(), 1);
    /// assert_eq!(config.rules()[0].metric(), AlertMetric::ErrorRate);
    /// # Ok::<(), embeddings_health::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Toml`] for text that is not an alert configuration;
    /// the typed validation errors for impossible rules.
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let spec: AlertConfigSpec = toml::from_str(text).map_err(|e| ConfigError::Toml {
            message: e.to_string(),
        })?;
        Self::try_from(spec)
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Alert events kept in the history.
    #[must_use]
    pub const fn history_capacity(&self) -> usize {
        self.history_capacity
    }

    /// The recommended rules, tuned to warn before the health rules fail:
    ///
    /// | name | metric | fires when | for | hysteresis | severity |
    /// |---|---|---|---|---|---|
    /// | `latency_p95_high` | latency_p95 | > 100 000 µs | 60 s | 10 000 µs | warning |
    /// | `throughput_low` | throughput | < 1 /s | 300 s | 0.5 /s | info |
    /// | `error_rate_elevated` | error_rate | > 5 /min | 60 s | 1 /min | warning |
    /// | `error_rate_high` | error_rate | > 10 /min | 0 s | 2 /min | critical |
    /// | `cache_hit_rate_low` | cache_hit_rate | < 0.5 | 300 s | 0.05 | info |
    /// | `process_memory_high` | process_memory | > 16 GiB | 120 s | 1 GiB | warning |
    /// | `gpu_memory_high` | gpu_memory | > 0.85 | 60 s | 0.05 | warning |
    /// | `gpu_memory_critical` | gpu_memory | > 0.90 | 0 s | 0.05 | critical |
    /// | `embedding_drift_high` | embedding_drift | > 0.2 | 600 s | 0.05 | warning |
    /// | `slots_failed` | slots_failed | > 0 | 0 s | 0 | warning |
    /// | `canary_cosine_low` | canary_cosine | < 0.9999 | 0 s | 0.00005 | critical |
    #[must_use]
    pub fn recommended_rules() -> Vec<AlertRule> {
        use AlertMetric as M;
        use Severity as S;
        let rule = |name: &str, metric, threshold, for_secs: u64, hysteresis, severity| AlertRule {
            spec: AlertRuleSpec {
                name: name.to_owned(),
                metric,
                threshold,
                for_seconds: Duration::from_secs(for_secs).as_secs_f64(),
                hysteresis,
                severity,
            },
            for_duration: Duration::from_secs(for_secs),
        };
        let gib = f64::from(1u32 << 30);
        vec![
            rule(
                "latency_p95_high",
                M::LatencyP95,
                100_000.0,
                60,
                10_000.0,
                S::Warning,
            ),
            rule("throughput_low", M::Throughput, 1.0, 300, 0.5, S::Info),
            rule(
                "error_rate_elevated",
                M::ErrorRate,
                5.0,
                60,
                1.0,
                S::Warning,
            ),
            rule("error_rate_high", M::ErrorRate, 10.0, 0, 2.0, S::Critical),
            rule(
                "cache_hit_rate_low",
                M::CacheHitRate,
                0.5,
                300,
                0.05,
                S::Info,
            ),
            rule(
                "process_memory_high",
                M::ProcessMemory,
                16.0 * gib,
                120,
                gib,
                S::Warning,
            ),
            rule("gpu_memory_high", M::GpuMemory, 0.85, 60, 0.05, S::Warning),
            rule(
                "gpu_memory_critical",
                M::GpuMemory,
                0.90,
                0,
                0.05,
                S::Critical,
            ),
            rule(
                "embedding_drift_high",
                M::EmbeddingDrift,
                0.2,
                600,
                0.05,
                S::Warning,
            ),
            rule("slots_failed", M::SlotsFailed, 0.0, 0, 0.0, S::Warning),
            rule(
                "canary_cosine_low",
                M::CanaryCosine,
                0.9999,
                0,
                0.00005,
                S::Critical,
            ),
        ]
    }
}
