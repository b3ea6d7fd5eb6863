//! The one error type of this crate: turning outside input into its types.

/// Why a value from outside (a name, an index, a JSON field) could not become
/// one of this crate's types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TypesError {
    /// A name did not match any variant. The message lists every valid name,
    /// so the fix is to pick one of them.
    #[error("unknown {what} `{input}`; valid names are: {valid}")]
    UnknownName {
        /// What was being parsed, for example `"model"`.
        what: &'static str,
        /// The text that was given.
        input: String,
        /// The valid names, comma-separated, in index order.
        valid: &'static str,
    },
    /// A numeric index was past the last variant.
    #[error("{what} index {index} is out of range; valid indices are 0..={max}")]
    IndexOutOfRange {
        /// What was being converted, for example `"model"`.
        what: &'static str,
        /// The index that was given.
        index: usize,
        /// The largest valid index.
        max: usize,
    },
    /// A duration in seconds was negative, infinite or NaN.
    #[error(
        "invalid duration {seconds} s: a duration must be a finite, non-negative number of seconds"
    )]
    InvalidDuration {
        /// The value that was given.
        seconds: f64,
    },
}
