//! [`MetricsError`]: the one error type of this crate. Recording never
//! fails; only configuration and merging can.

/// Why a configuration was rejected or two histograms could not be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The EMA weight must be a number in `(0, 1]`.
    #[error("invalid EMA alpha {alpha}: it must be a number in (0, 1]")]
    InvalidAlpha {
        /// The value given.
        alpha: f64,
    },
    /// Histogram precision out of range.
    #[error(
        "invalid histogram precision {bits} bits: it must be in {}..={}",
        crate::histogram::MIN_PRECISION_BITS,
        crate::histogram::MAX_PRECISION_BITS
    )]
    InvalidPrecision {
        /// The value given.
        bits: u32,
    },
    /// An exported bucket bound is not an internal bucket edge, so its count
    /// could not be exact.
    #[error(
        "{family} bucket bound {bound} is not a bucket edge at {bits} precision bits \
         (nearest edges: {below} and {above}); use one of them or MetricsConfig::snap_bounds"
    )]
    BoundNotAnEdge {
        /// Which bound list (`"latency"` or `"batch_size"` of a config,
        /// `"export"` for [`ExportBounds::new`](crate::ExportBounds::new)).
        family: &'static str,
        /// The offending bound.
        bound: u64,
        /// The precision in force.
        bits: u32,
        /// The nearest edge at or below `bound`.
        below: u64,
        /// The nearest edge above `bound`.
        above: u64,
    },
    /// Bucket bounds must be strictly increasing, and at most
    /// [`MAX_EXPORTED_BOUNDS`](crate::MAX_EXPORTED_BOUNDS) of them.
    #[error("{family} bucket bounds must be strictly increasing and at most {max} long")]
    InvalidBounds {
        /// Which bound list.
        family: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The metric-name prefix must match `[a-zA-Z_][a-zA-Z0-9_]*` (or be empty).
    #[error(
        "invalid metric name prefix `{prefix}`: use letters, digits and `_`, not starting with a digit"
    )]
    InvalidPrefix {
        /// The value given.
        prefix: String,
    },
    /// A constant label name is invalid or reserved.
    #[error(
        "invalid constant label name `{name}`: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with `__`, \
         and not one of le, model, stage, kind, window"
    )]
    InvalidLabelName {
        /// The value given.
        name: String,
    },
    /// A metric family name is invalid: it must match
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, and a counter's must not end in `_total`
    /// (the encoder appends it).
    #[error(
        "invalid metric name `{name}`: use [a-zA-Z_][a-zA-Z0-9_]*, and name a counter without `_total`"
    )]
    InvalidMetricName {
        /// The value given.
        name: String,
    },
    /// A series label name is invalid, reserved or repeated.
    #[error(
        "invalid label name `{name}`: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with `__`, \
         not `le`, and each name once"
    )]
    InvalidLabel {
        /// The value given.
        name: String,
    },
    /// Two histograms (or read-outs) of different precision cannot be merged.
    #[error("cannot merge histograms of {left} and {right} precision bits")]
    PrecisionMismatch {
        /// Precision of the destination.
        left: u32,
        /// Precision of the source.
        right: u32,
    },
}
