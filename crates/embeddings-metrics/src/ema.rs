//! A lock-free exponential moving average over `u64` samples.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bit pattern meaning "no sample yet". It is a NaN, which no update ever
/// produces (inputs are finite and the update is clamped), so it cannot clash
/// with a real average.
const EMPTY: u64 = u64::MAX;

/// An exponential moving average whose state is one `f64` stored as bits in
/// an [`AtomicU64`], updated with a compare-and-swap loop so that concurrent
/// updates are never lost (each is applied to the value the previous one
/// left).
#[derive(Debug)]
pub(crate) struct Ema {
    bits: AtomicU64,
}

impl Ema {
    pub(crate) const fn new() -> Self {
        Self {
            bits: AtomicU64::new(EMPTY),
        }
    }

    /// Folds `sample` in with weight `alpha` (in `(0, 1]`, validated by the
    /// config). The first sample sets the average outright, so the average
    /// does not start biased towards zero.
    #[inline]
    pub(crate) fn record(&self, sample: u64, alpha: f64) {
        // u64 -> f64 rounds above 2^53, so the average can land a rounding
        // step outside the recorded [min, max]; readers clamp it back with
        // the exact min/max of the matching histogram (see `get_within`).
        let x = sample as f64;
        let mut current = self.bits.load(Ordering::Relaxed);
        loop {
            let next = if current == EMPTY {
                x
            } else {
                let old = f64::from_bits(current);
                // Convex combination, clamped so float rounding can never
                // leave the interval between the old average and the sample.
                (old + alpha * (x - old)).clamp(old.min(x), old.max(x))
            };
            match self.bits.compare_exchange_weak(
                current,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The average rounded to the nearest integer; 0 before any sample.
    pub(crate) fn get(&self) -> u64 {
        let bits = self.bits.load(Ordering::Relaxed);
        if bits == EMPTY {
            0
        } else {
            // `as` saturates and the value is finite and >= 0.
            f64::from_bits(bits).round() as u64
        }
    }

    /// [`get`](Self::get), clamped to the exact `(min, max)` of the same
    /// samples: in exact arithmetic the average lies there; the clamp only
    /// undoes `f64` rounding of samples above 2^53.
    pub(crate) fn get_within(&self, bounds: Option<(u64, u64)>) -> u64 {
        let average = self.get();
        bounds.map_or(average, |(lo, hi)| average.clamp(lo, hi.max(lo)))
    }

    pub(crate) fn reset(&self) {
        self.bits.store(EMPTY, Ordering::Relaxed);
    }
}
