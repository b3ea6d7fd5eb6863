//! Serde helpers for [`Duration`]: every duration in this workspace's JSON is a
//! floating-point number of **seconds** (the Prometheus base unit), for example
//! `"uptime": 93.25`.
//!
//! Precision: **microseconds**. Deserializing rounds to the nearest
//! microsecond, so a duration with whole microseconds survives a JSON round
//! trip exactly for spans up to decades (an `f64` holds 53 bits); finer parts
//! are rounded. Negative, infinite or NaN seconds are rejected.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes a [`Duration`] as `f64` seconds.
///
/// # Errors
/// Only those of the underlying serializer.
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

/// Deserializes a [`Duration`] from `f64` seconds.
///
/// # Errors
/// A negative, infinite or NaN number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let seconds = f64::deserialize(deserializer)?;
    from_secs(seconds).map_err(serde::de::Error::custom)
}

/// Converts seconds to a [`Duration`], rejecting what cannot be one.
///
/// # Errors
/// [`TypesError::InvalidDuration`](crate::TypesError::InvalidDuration) for a
/// negative, infinite, NaN or too-large number of seconds.
pub fn from_secs(seconds: f64) -> Result<Duration, crate::TypesError> {
    let exact = Duration::try_from_secs_f64(seconds)
        .map_err(|_| crate::TypesError::InvalidDuration { seconds })?;
    // Round to whole microseconds: the documented precision of the JSON form.
    let micros = (exact.as_nanos() + 500) / 1_000;
    let micros =
        u64::try_from(micros).map_err(|_| crate::TypesError::InvalidDuration { seconds })?;
    Ok(Duration::from_micros(micros))
}
