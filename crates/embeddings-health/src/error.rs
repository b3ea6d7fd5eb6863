//! The errors of this crate: a configuration that cannot be right, and an
//! alert handler that could not deliver.

/// Why a [`HealthPolicy`](crate::HealthPolicy), an
/// [`AlertRule`](crate::AlertRule) or an [`AlertConfig`](crate::AlertConfig)
/// was rejected. Every message names the field, the value given and what a
/// valid value looks like.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A model count outside `1..=12`.
    #[error(
        "{field} = {value} is impossible: there are {max} model slots, so use a count between 1 and {max}"
    )]
    ModelCountOutOfRange {
        /// The field, for example `"min_models_loaded"`.
        field: &'static str,
        /// The value that was given.
        value: usize,
        /// The largest valid count (12).
        max: usize,
    },
    /// A fraction outside its valid range, or NaN.
    #[error(
        "{field} = {value} is not a valid fraction: use a number greater than {min_exclusive} and at most 1 (for example 0.9 for 90%)"
    )]
    InvalidFraction {
        /// The field, for example `"max_gpu_memory_fraction"`.
        field: &'static str,
        /// The value that was given.
        value: f64,
        /// The exclusive lower bound.
        min_exclusive: f64,
    },
    /// A number that must be finite and non-negative (or positive) was not.
    #[error("{field} = {value} is invalid: use a finite number {requirement}")]
    InvalidNumber {
        /// The field, for example `"max_error_rate_per_minute"`.
        field: &'static str,
        /// The value that was given.
        value: f64,
        /// What the number must be, for example `"greater than 0"`.
        requirement: &'static str,
    },
    /// A duration in seconds that is negative, infinite or NaN.
    #[error(
        "{field} = {seconds} s is not a valid duration: use a finite, non-negative number of seconds"
    )]
    InvalidDuration {
        /// The field, for example `"for_seconds"`.
        field: &'static str,
        /// The value that was given, in seconds.
        seconds: f64,
    },
    /// An alert rule without a name.
    #[error("an alert rule has an empty name: give every rule a unique, non-empty name")]
    EmptyRuleName,
    /// Two alert rules share a name.
    #[error("alert rule name `{name}` is used twice: rule names must be unique")]
    DuplicateRuleName {
        /// The repeated name.
        name: String,
    },
    /// A threshold outside the range its metric can take.
    #[error(
        "alert rule `{rule}`: threshold {value} is impossible for metric `{metric}`: {requirement}"
    )]
    InvalidThreshold {
        /// The rule's name.
        rule: String,
        /// The metric's name.
        metric: &'static str,
        /// The threshold that was given.
        value: f64,
        /// What the threshold must be.
        requirement: &'static str,
    },
    /// An alert rule's field was invalid; `source` says which and why.
    #[error("alert rule `{rule}`: {source}")]
    InRule {
        /// The rule's name.
        rule: String,
        /// The underlying problem.
        source: Box<ConfigError>,
    },
    /// An alert history that can hold nothing.
    #[error("history_capacity = 0 is invalid: keep at least one alert event (for example 256)")]
    ZeroHistoryCapacity,
    /// The text was not valid TOML for this configuration (syntax error,
    /// unknown field, wrong type).
    #[error("invalid TOML configuration: {message}")]
    Toml {
        /// The parser's message, with line and column.
        message: String,
    },
}

/// Why an [`AlertHandler`](crate::AlertHandler) could not deliver an event.
/// Returning it never stops the evaluation or the other handlers; the
/// [`AlertEngine`](crate::AlertEngine) counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Writing the event failed (disk full, closed pipe, ...).
    #[error("alert handler could not write the event: {0}")]
    Io(#[from] std::io::Error),
    /// The event could not be encoded as JSON.
    #[error("alert handler could not encode the event as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Any other failure, described by the handler.
    #[error("alert handler failed: {0}")]
    Other(String),
}
