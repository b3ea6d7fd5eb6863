//! Serde helpers for [`Duration`]: every duration in this workspace's JSON is a
//! floating-point number of **seconds** (the Prometheus base unit), for example
//! `"uptime": 93.25`.
//!
//! Precision: an `f64` carries 53 bits, so a round trip through JSON keeps a
//! duration to within a microsecond for anything shorter than about 280 years.
//! Negative, infinite or NaN seconds are rejected when deserializing.

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
    Duration::try_from_secs_f64(seconds).map_err(|_| crate::TypesError::InvalidDuration { seconds })
}
