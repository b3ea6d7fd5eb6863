//! [`Counter`]: a striped, cache-padded monotonic counter for custom metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::shard::{self, STRIPES};

/// A lock-free monotonic counter, striped like the recorder's own counters:
/// one cache-padded cell per owned thread slot (see [`SHARDS`](crate::SHARDS))
/// plus one shared cell, reads summing them. A thread that owns a slot adds
/// with a plain load and store into a cell no other thread writes, so two
/// threads incrementing the same counter never fight over a cache line and
/// never pay for a locked instruction.
///
/// [`reset`](Self::reset) does not write the cells (that could race with an
/// owner's load and store); it records the current total as a baseline that
/// reads subtract.
///
/// Expose it with [`FamilyWriter::counter`](crate::FamilyWriter::counter).
/// Like a Prometheus counter it wraps at `2^64` (read as a reset by `rate()`).
///
/// ```
/// use embeddings_metrics::Counter;
/// static REQUESTS: Counter = Counter::new();
/// REQUESTS.inc();
/// REQUESTS.add(2);
/// assert_eq!(REQUESTS.get(), 3);
/// ```
#[derive(Debug)]
pub struct Counter {
    stripes: [CachePadded<AtomicU64>; STRIPES],
    /// The total at the last reset; reads subtract it (wrapping).
    baseline: AtomicU64,
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Counter {
    /// A counter at zero; `const`, so it can be a `static`.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            stripes: [const { CachePadded::new(AtomicU64::new(0)) }; STRIPES],
            baseline: AtomicU64::new(0),
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping at `2^64`).
    #[inline]
    pub fn add(&self, n: u64) {
        let shard = shard::current();
        // `Shard::stripe` is at most `STRIPES - 1`: always in range.
        shard.add(&self.stripes[shard.stripe()], n);
    }

    /// The total over all stripes. Exact once writers stop; while they run,
    /// each stripe is read once (no consistent cut across stripes).
    #[must_use]
    pub fn get(&self) -> u64 {
        // Acquire pairs with `reset`'s Release: the cells read below are at
        // least as new as the ones the baseline was summed from.
        let baseline = self.baseline.load(Ordering::Acquire);
        self.raw_total().wrapping_sub(baseline)
    }

    /// Sets the counter back to zero: reads from now on count from the total
    /// seen at this moment. An add racing with the reset may or may not be
    /// included in that baseline (it then survives the reset or not); none is
    /// lost or counted twice afterwards. Resets must not overlap each other
    /// (a `const` counter holds no lock to serialise them): two racing
    /// resets may store their baselines out of order, and counts already
    /// reset would then reappear. [`PipelineMetrics`](crate::PipelineMetrics)
    /// serialises its own resets.
    pub fn reset(&self) {
        self.baseline.store(self.raw_total(), Ordering::Release);
    }

    fn raw_total(&self) -> u64 {
        self.stripes.iter().fold(0u64, |acc, cell| {
            acc.wrapping_add(cell.load(Ordering::Relaxed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_adds_are_exact() {
        let counter = Counter::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        counter.inc();
                    }
                });
            }
        });
        assert_eq!(counter.get(), 40_000);
        counter.add(u64::MAX);
        assert_eq!(counter.get(), 39_999, "wraps like a Prometheus counter");
        counter.reset();
        assert_eq!(counter.get(), 0);
        counter.add(5);
        assert_eq!(counter.get(), 5, "counts resume from the baseline");
    }

    #[test]
    fn exact_with_more_threads_than_slots_and_resets_racing() {
        use std::sync::Barrier;
        let counter = Counter::new();
        let threads = 3 * crate::SHARDS;
        let barrier = Barrier::new(threads + 1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..20_000 {
                        counter.inc();
                    }
                });
            }
            barrier.wait();
            // Resets racing with the owners' load-and-store never make the
            // counter go backwards past zero (it would wrap to ~2^64).
            for _ in 0..100 {
                counter.reset();
                assert!(counter.get() <= (threads * 20_000) as u64);
            }
        });
        let after_races = counter.get();
        counter.reset();
        assert_eq!(counter.get(), 0);
        assert!(after_races <= (threads * 20_000) as u64);
        // With no reset in the way, the total is exact.
        let fresh = Counter::new();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        fresh.inc();
                    }
                });
            }
        });
        assert_eq!(fresh.get(), (threads * 20_000) as u64);
    }
}
