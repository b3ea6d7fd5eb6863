//! OpenMetrics exemplars: for each exported bucket of a histogram, the most
//! recent observation that fell in it, with the id of the request that made
//! it, so a slow bucket on a dashboard leads to that request's log lines.
//!
//! An [`Exemplars`] sits beside a [`Histogram`](crate::Histogram) and is
//! written by [`FamilyWriter::histogram_with_exemplars`](crate::FamilyWriter::histogram_with_exemplars):
//!
//! ```text
//! app_latency_seconds_bucket{le="0.004"} 7 # {request_id="req-42"} 0.003125 1764601200.125
//! ```
//!
//! Exemplars are OpenMetrics-only; the Prometheus 0.0.4 text has no place
//! for them and omits them.
//!
//! **Recording never blocks.** Each bucket's exemplar is behind its own
//! mutex, taken with `try_lock`: when a reader or another writer holds it,
//! this observation is simply not kept as the exemplar (the bucket keeps the
//! previous one, or the concurrent writer's). An exemplar is a sample by
//! nature; the histogram's counts are unaffected. The id is copied into a
//! buffer the slot reuses, so recording allocates only while a slot's
//! buffer grows to the longest id seen.
//!
//! ```
//! use embeddings_metrics::{ExportBounds, Exemplars};
//! let bounds = ExportBounds::new(&[1_000, 2_000, 4_000], 6, 6)?;
//! let exemplars = Exemplars::new(&bounds);
//! assert!(exemplars.record(1_500, "req-1"));
//! let e = exemplars.get(1).expect("1 500 falls in (1 000, 2 000]");
//! assert_eq!((e.request_id.as_str(), e.value), ("req-1", 1_500));
//! // Past the last bound: the +Inf bucket.
//! assert!(exemplars.record(9_000, "req-2"));
//! assert_eq!(exemplars.get(3).map(|e| e.value), Some(9_000));
//! # Ok::<(), embeddings_metrics::MetricsError>(())
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::encode::{ExportBounds, escape_label_value, push_decimal};

/// The name of the exemplars' one label.
pub const EXEMPLAR_LABEL: &str = "request_id";

/// The most characters an exemplar's label set may hold (names and values
/// together), from the OpenMetrics specification.
pub const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;

/// The longest request id an exemplar can carry:
/// [`MAX_EXEMPLAR_LABEL_CHARS`] less the label's name.
pub const MAX_EXEMPLAR_ID_CHARS: usize = MAX_EXEMPLAR_LABEL_CHARS - EXEMPLAR_LABEL.len();

/// One bucket's exemplar, as read by [`Exemplars::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemplar {
    /// The request that made the observation.
    pub request_id: String,
    /// The observed value, in the histogram's unit.
    pub value: u64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub unix_millis: u64,
}

#[derive(Debug, Default)]
struct Slot {
    /// Reused between records; meaningful only when `set`.
    request_id: String,
    value: u64,
    unix_millis: u64,
    set: bool,
}

/// The latest exemplar of each bucket of one histogram series (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Exemplars {
    /// The exported bounds, in the histogram's unit.
    bounds: Box<[u64]>,
    /// One per bound, then `+Inf`.
    slots: Box<[Mutex<Slot>]>,
}

impl Exemplars {
    /// Empty exemplars for a histogram exported with `bounds`.
    #[must_use]
    pub fn new(bounds: &ExportBounds) -> Self {
        Self {
            bounds: bounds.bounds().into(),
            slots: (0..=bounds.bounds().len())
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
        }
    }

    /// The bounds these exemplars were made for.
    #[must_use]
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }

    /// The index of the bucket `value` is counted in: the first bound
    /// `>= value`, or `bounds().len()` for `+Inf`.
    #[must_use]
    pub fn bucket_of(&self, value: u64) -> usize {
        self.bounds.partition_point(|b| *b < value)
    }

    /// Keeps `value`, observed now by request `request_id`, as its bucket's
    /// exemplar. Returns whether it was kept: not when the id is empty or
    /// longer than [`MAX_EXEMPLAR_ID_CHARS`] characters, nor when the
    /// bucket's slot is busy (see the [module docs](self)). Never blocks.
    pub fn record(&self, value: u64, request_id: &str) -> bool {
        if request_id.is_empty() || request_id.chars().count() > MAX_EXEMPLAR_ID_CHARS {
            return false;
        }
        let Some(slot) = self.slots.get(self.bucket_of(value)) else {
            return false;
        };
        let Ok(mut slot) = slot.try_lock() else {
            return false;
        };
        let unix_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        slot.request_id.clear();
        slot.request_id.push_str(request_id);
        slot.value = value;
        slot.unix_millis = unix_millis;
        slot.set = true;
        true
    }

    /// The exemplar of bucket `bucket` (an index as from
    /// [`bucket_of`](Self::bucket_of)), if one was kept.
    #[must_use]
    pub fn get(&self, bucket: usize) -> Option<Exemplar> {
        let slot = self.slots.get(bucket)?;
        let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.set.then(|| Exemplar {
            request_id: slot.request_id.clone(),
            value: slot.value,
            unix_millis: slot.unix_millis,
        })
    }

    /// Forgets every exemplar.
    pub fn reset(&self) {
        for slot in &self.slots {
            slot.lock().unwrap_or_else(PoisonError::into_inner).set = false;
        }
    }

    /// Appends ` # {request_id="…"} <value> <timestamp>` for bucket `bucket`
    /// when it has an exemplar; the value is divided by `10^decimals` like the
    /// bucket bounds.
    pub(crate) fn push_suffix(&self, bucket: usize, decimals: u8, out: &mut String) {
        let Some(slot) = self.slots.get(bucket) else {
            return;
        };
        let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.set {
            return;
        }
        out.push_str(" # {");
        out.push_str(EXEMPLAR_LABEL);
        out.push_str("=\"");
        escape_label_value(&slot.request_id, out);
        out.push_str("\"} ");
        push_decimal(out, slot.value, decimals, false);
        out.push(' ');
        push_decimal(out, slot.unix_millis, 3, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn bounds() -> ExportBounds {
        ExportBounds::new(&[1_000, 2_000, 4_000], 6, 6).unwrap()
    }

    #[test]
    fn each_value_lands_in_the_bucket_that_counts_it() {
        let e = Exemplars::new(&bounds());
        // `le` is inclusive: a value equal to a bound is counted under it.
        assert_eq!(e.bucket_of(0), 0);
        assert_eq!(e.bucket_of(1_000), 0);
        assert_eq!(e.bucket_of(1_001), 1);
        assert_eq!(e.bucket_of(4_000), 2);
        assert_eq!(e.bucket_of(4_001), 3);
        assert_eq!(e.bucket_of(u64::MAX), 3);
    }

    #[test]
    fn the_latest_observation_wins_and_reset_forgets() {
        let e = Exemplars::new(&bounds());
        assert!(e.record(1_500, "a"));
        assert!(e.record(1_900, "b"));
        let got = e.get(1).unwrap();
        assert_eq!((got.request_id.as_str(), got.value), ("b", 1_900));
        assert!(got.unix_millis > 1_600_000_000_000, "a wall-clock time");
        assert_eq!(e.get(0), None);
        e.reset();
        assert_eq!(e.get(1), None);
        assert_eq!(e.get(99), None);
    }

    #[test]
    fn ids_that_do_not_fit_the_label_limit_are_not_kept() {
        let e = Exemplars::new(&bounds());
        assert!(!e.record(10, ""));
        let longest = "x".repeat(MAX_EXEMPLAR_ID_CHARS);
        assert!(e.record(10, &longest));
        assert!(!e.record(10, &format!("{longest}y")));
        assert_eq!(e.get(0).unwrap().request_id, longest);
        // Characters, not bytes.
        assert!(e.record(10, &"é".repeat(MAX_EXEMPLAR_ID_CHARS)));
    }

    #[test]
    fn the_suffix_is_openmetrics_exemplar_syntax_with_escaping() {
        let e = Exemplars::new(&bounds());
        let mut out = String::new();
        e.push_suffix(0, 6, &mut out);
        assert_eq!(out, "", "no exemplar, no suffix");
        assert!(e.record(999, r#"a"b\c"#));
        e.push_suffix(0, 6, &mut out);
        let (head, ts) = out.rsplit_once(' ').unwrap();
        assert_eq!(head, r#" # {request_id="a\"b\\c"} 0.000999"#);
        let ts: f64 = ts.parse().unwrap();
        let millis = e.get(0).unwrap().unix_millis;
        assert!((ts * 1000.0 - millis as f64).abs() < 1.0);
    }

    #[test]
    fn a_busy_slot_skips_the_record_without_blocking() {
        let e = Arc::new(Exemplars::new(&bounds()));
        assert!(e.record(10, "first"));
        let held = e.slots[0].lock().unwrap();
        let other = Arc::clone(&e);
        let kept = std::thread::spawn(move || other.record(10, "second"))
            .join()
            .unwrap();
        drop(held);
        assert!(!kept);
        assert_eq!(e.get(0).unwrap().request_id, "first");
    }
}
