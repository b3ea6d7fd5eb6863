//! [`Counter`]: a striped, cache-padded monotonic counter for custom metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::shard::{self, SHARD_MASK, SHARDS};

/// A lock-free monotonic counter, striped like the recorder's own counters:
/// [`SHARDS`] cache-padded cells, each thread adding to its own, reads
/// summing them. Two threads incrementing the same counter therefore never
/// fight over a cache line.
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
    stripes: [CachePadded<AtomicU64>; SHARDS],
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
            stripes: [const { CachePadded::new(AtomicU64::new(0)) }; SHARDS],
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
        self.stripes[shard::current() & SHARD_MASK].fetch_add(n, Ordering::Relaxed);
    }

    /// The total over all stripes. Exact once writers stop; while they run,
    /// each stripe is read once (no consistent cut across stripes).
    #[must_use]
    pub fn get(&self) -> u64 {
        self.stripes.iter().fold(0u64, |acc, cell| {
            acc.wrapping_add(cell.load(Ordering::Relaxed))
        })
    }

    /// Sets the counter back to zero (each stripe atomically, the whole not:
    /// an add racing with the reset may survive it).
    pub fn reset(&self) {
        for cell in &self.stripes {
            cell.store(0, Ordering::Relaxed);
        }
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
    }
}
