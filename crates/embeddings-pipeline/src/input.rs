//! What goes into the pipeline.

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// One item to embed: text plus optional time and sequence position.
///
/// Defaults when a field is absent:
/// - `timestamp`: the reference time (so `TemporalRecent` sees age 0 and
///   `TemporalPeriodic` encodes the reference time);
/// - `position`: 0;
/// - `reference_time`: the pipeline's (`[temporal] reference_time`, else the
///   wall clock when the pipeline was built).
///
/// ```
/// use embeddings_pipeline::EmbedInput;
/// let input = EmbedInput::new("the cache hit rate dropped")
///     .with_timestamp_rfc3339("2024-05-01T12:00:00Z")?
///     .with_position(3);
/// assert_eq!(input.position, Some(3));
/// assert!(EmbedInput::new("x").with_timestamp_rfc3339("yesterday").is_err());
/// # Ok::<(), embeddings_pipeline::InputError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedInput {
    /// The text.
    pub text: String,
    /// When the text was written or observed.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Position of the text in its sequence (conversation turn, chunk index…).
    #[serde(default)]
    pub position: Option<u64>,
    /// Overrides the pipeline's "now" for this item.
    #[serde(default)]
    pub reference_time: Option<DateTime<Utc>>,
}

impl EmbedInput {
    /// Text only.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the timestamp from RFC 3339 text.
    ///
    /// # Errors
    /// [`InputError::InvalidTimestamp`] when it does not parse,
    /// [`InputError::TimestampOutOfRange`] outside years 1..=9999.
    pub fn with_timestamp_rfc3339(self, text: &str) -> Result<Self, InputError> {
        let ts = DateTime::parse_from_rfc3339(text)
            .map_err(|e| InputError::InvalidTimestamp {
                input: text.to_owned(),
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        check_range(ts)?;
        Ok(self.with_timestamp(ts))
    }

    /// Sets the sequence position.
    #[must_use]
    pub fn with_position(mut self, position: u64) -> Self {
        self.position = Some(position);
        self
    }

    /// Sets this item's reference "now".
    #[must_use]
    pub fn with_reference_time(mut self, now: DateTime<Utc>) -> Self {
        self.reference_time = Some(now);
        self
    }
}

impl From<&str> for EmbedInput {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for EmbedInput {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

pub(crate) fn check_range(ts: DateTime<Utc>) -> Result<(), InputError> {
    if (1..=9999).contains(&ts.year()) {
        Ok(())
    } else {
        Err(InputError::TimestampOutOfRange {
            timestamp: ts.to_rfc3339(),
        })
    }
}

/// Unix time in seconds, with sub-second precision.
pub(crate) fn unix_seconds(ts: DateTime<Utc>) -> f64 {
    ts.timestamp() as f64 + f64::from(ts.timestamp_subsec_nanos()) * 1e-9
}
