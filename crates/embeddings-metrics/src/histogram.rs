//! [`Histogram`]: a lock-free, log-linear (HDR-style) histogram of `u64`
//! values, and [`HistogramCounts`], its merged, owned read-out.
//!
//! # Bucket layout and error bound
//!
//! With `p` precision bits (default 6):
//!
//! - the value `0` has a bucket of its own;
//! - values `1 ..= 2^(p+1)` each have a bucket of their own (exact);
//! - above that, every power-of-two range `(2^k, 2^(k+1)]` is split into `2^p`
//!   equal buckets, so a bucket `(L, L + w]` always has `w <= L / 2^p`.
//!
//! Buckets are upper-inclusive, `(L, H]`, so every power of two and every
//! multiple `m · 2^s` with `2^p < m <= 2^(p+1)` is an exact edge — for `p >= 6`
//! that includes 1000·2^k, which lets exported `le` boundaries like 0.001 s,
//! 0.25 s or 1.024 s count exactly.
//!
//! A quantile is reported as the midpoint of the bucket holding the value of
//! the wanted rank, clamped to the exact `[min, max]`; its relative error
//! against that value is at most `2^-(p+1)` (0.78125 % for `p = 6`, 0.049 %
//! for `p = 10`). `count`, `sum`, `min` and `max` are exact.
//!
//! # Memory
//!
//! A histogram is a table of 8 lazily allocated stripes (128 B fixed). A
//! stripe is allocated when a thread first writes to it: a cache-padded
//! header with a table of `65 - p` lazily allocated chunks (≈ 1.5 KiB for
//! `p = 6`); a chunk holds `2^p` counters (512 B for `p = 6`) and is
//! allocated on the first value in its range. So a histogram whose values
//! span four powers of two, written by one thread, holds about
//! 0.1 + 1.5 + 4 × 0.5 ≈ 3.6 KiB; with all 8 stripes busy, about 29 KiB.
//! The full range of one stripe at `p = 6` would be 3 776 counters (30 KiB).
//!
//! # Concurrency
//!
//! Recording is wait-free apart from a one-time allocation per chunk: one
//! `fetch_add` on a bucket of the caller's stripe, one on the stripe's sum,
//! and a load (plus a rare `fetch_min`/`fetch_max`) for min and max. `count`
//! is not stored; it is the sum of the buckets, so it can never disagree with
//! them. A read-out taken while writers run is not a consistent cut across
//! buckets, but every bucket is exact, and after writers stop it is exact.
//!
//! # Size
//! This file is ~860 lines, over the workspace's ~700: one type whose bucket
//! arithmetic, lock-free stripes, read-out and unit tests (which need the
//! private layout) must change together; about 90 lines are those tests.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use embeddings_types::HistogramSnapshot;

use crate::MetricsError;
use crate::shard::{self, SHARD_MASK, SHARDS};

/// Smallest accepted precision (`2^-2` = 25 % error).
pub const MIN_PRECISION_BITS: u32 = 1;
/// Largest accepted precision (`2^-11` ≈ 0.05 % error, 8 KiB chunks).
pub const MAX_PRECISION_BITS: u32 = 10;
/// Default precision: `2^-7` = 0.78125 % relative error, within the 1 % target.
pub const DEFAULT_PRECISION_BITS: u32 = 6;

/// The index of the bucket of key `key = value - 1` (value >= 1), over the
/// non-zero buckets. Branch-free: OR-ing in `2^p` makes keys below `2^p` use
/// shift 0 (one bucket per key) without a separate case.
#[inline]
fn key_index(key: u64, bits: u32) -> usize {
    let msb = 63 - (key | (1 << bits)).leading_zeros();
    let shift = msb - bits;
    ((shift as usize) << bits) + (key >> shift) as usize
}

/// `(lowest, highest)` key of non-zero bucket `index`.
fn key_range(index: usize, bits: u32) -> (u64, u64) {
    let chunk = index >> bits;
    let offset = (index & ((1 << bits) - 1)) as u64;
    if chunk == 0 {
        (offset, offset)
    } else {
        let shift = (chunk - 1) as u32;
        let low = ((1u64 << bits) + offset) << shift;
        (low, low + ((1u64 << shift) - 1))
    }
}

/// Number of chunks for `bits` precision bits.
const fn chunk_count(bits: u32) -> usize {
    65 - bits as usize
}

/// The relative-error bound of quantiles at `bits` precision bits.
#[must_use]
pub fn relative_error(bits: u32) -> f64 {
    1.0 / f64::from(1u32 << (bits + 1))
}

/// Whether `value` is an exact bucket edge at `bits` precision bits, that is
/// whether "values `<= value`" is an exact union of buckets. Exported `le`
/// boundaries must be edges.
#[must_use]
pub fn is_edge(value: u64, bits: u32) -> bool {
    value == 0 || key_range(key_index(value - 1, bits), bits).1 == value - 1
}

/// The largest bucket edge `<= value` at `bits` precision bits.
#[must_use]
pub fn edge_at_or_below(value: u64, bits: u32) -> u64 {
    if value == 0 {
        return 0;
    }
    let (low, high) = key_range(key_index(value - 1, bits), bits);
    // `value` lies in (low, high + 1]; the edge below it is `low` unless
    // `value` is itself the upper edge.
    if high == value - 1 { value } else { low }
}

/// The smallest bucket edge `>= value` at `bits` precision bits (saturating
/// at `u64::MAX`, the top of the last bucket).
#[must_use]
pub fn edge_at_or_above(value: u64, bits: u32) -> u64 {
    if value == 0 {
        return 0;
    }
    key_range(key_index(value - 1, bits), bits)
        .1
        .saturating_add(1)
}

/// The rank (1-based) whose value is the `q`-quantile of `n` values:
/// `ceil(q · n)` clamped to `1..=n` (0 when `n == 0`). Both the histogram and
/// any exact oracle must use this same definition to be comparable.
#[must_use]
pub fn quantile_rank(q: f64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    // `as` saturates; the clamp keeps the rank inside 1..=n.
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// One stripe of a histogram.
#[derive(Debug)]
struct Stripe {
    zeros: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Stripe {
    fn new(bits: u32) -> Self {
        Self {
            zeros: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            chunks: (0..chunk_count(bits)).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn record(&self, value: u64, bits: u32) {
        if value == 0 {
            self.zeros.fetch_add(1, Ordering::Relaxed);
        } else {
            let index = key_index(value - 1, bits);
            let chunk = self.chunks.get(index >> bits);
            debug_assert!(chunk.is_some(), "bucket index out of range");
            if let Some(chunk) = chunk {
                let counts = chunk.get_or_init(|| new_chunk(bits));
                if let Some(cell) = counts.get(index & ((1 << bits) - 1)) {
                    cell.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Wraps at 2^64 like a Prometheus counter (documented on `sum`).
        self.sum.fetch_add(value, Ordering::Relaxed);
        // Load first: after warm-up min/max rarely change, and a plain load
        // keeps the line shared instead of taking it exclusive on every record.
        if value < self.min.load(Ordering::Relaxed) {
            self.min.fetch_min(value, Ordering::Relaxed);
        }
        if value > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(value, Ordering::Relaxed);
        }
    }

    fn reset(&self) {
        self.zeros.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.min.store(u64::MAX, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for cell in chunk.iter() {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }
}

fn new_chunk(bits: u32) -> Box<[AtomicU64]> {
    (0..1usize << bits).map(|_| AtomicU64::new(0)).collect()
}

/// A lock-free histogram of `u64` values (see the [module docs](self) for
/// the bucket layout, error bound and memory).
///
/// ```
/// use embeddings_metrics::Histogram;
/// let h = Histogram::new();
/// for v in 1..=1000 {
///     h.record(v);
/// }
/// let s = h.snapshot();
/// assert_eq!((s.count, s.min, s.max, s.sum), (1000, 1, 1000, 500_500));
/// assert!((s.p99 as f64 - 990.0).abs() <= 990.0 * s.relative_error);
/// ```
#[derive(Debug)]
pub struct Histogram {
    bits: u32,
    /// Each stripe is its own cache-padded allocation, so the hot header
    /// (sum, min, max) of one stripe never shares a line with another's.
    /// The table itself is read-only after first use and needs no padding.
    stripes: [OnceLock<Box<CachePadded<Stripe>>>; SHARDS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// A histogram with the default precision (0.78125 % relative error).
    #[must_use]
    pub fn new() -> Self {
        Self::with_bits(DEFAULT_PRECISION_BITS)
    }

    /// A histogram with `bits` precision bits: quantiles within
    /// `2^-(bits+1)` relative error.
    ///
    /// # Errors
    /// [`MetricsError::InvalidPrecision`] unless
    /// `MIN_PRECISION_BITS <= bits <= MAX_PRECISION_BITS`.
    pub fn with_precision(bits: u32) -> Result<Self, MetricsError> {
        if (MIN_PRECISION_BITS..=MAX_PRECISION_BITS).contains(&bits) {
            Ok(Self::with_bits(bits))
        } else {
            Err(MetricsError::InvalidPrecision { bits })
        }
    }

    pub(crate) fn with_bits(bits: u32) -> Self {
        Self {
            bits,
            stripes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Precision bits of this histogram.
    #[must_use]
    pub fn precision_bits(&self) -> u32 {
        self.bits
    }

    /// The relative-error bound of this histogram's quantiles.
    #[must_use]
    pub fn relative_error(&self) -> f64 {
        relative_error(self.bits)
    }

    /// Records one value. Never panics; every `u64` is accepted.
    #[inline]
    pub fn record(&self, value: u64) {
        self.stripe(shard::current().spread())
            .record(value, self.bits);
    }

    #[inline]
    fn stripe(&self, index: usize) -> &Stripe {
        self.stripes[index & SHARD_MASK]
            .get_or_init(|| Box::new(CachePadded::new(Stripe::new(self.bits))))
    }

    /// Adds every value recorded in `other` to `self`, as if each had been
    /// recorded here. `other` is read like [`counts`](Self::counts) (not a
    /// consistent cut if it is being written).
    ///
    /// # Errors
    /// [`MetricsError::PrecisionMismatch`] when the precisions differ.
    pub fn merge(&self, other: &Histogram) -> Result<(), MetricsError> {
        self.merge_counts(&other.counts())
    }

    /// Adds a read-out (for example from another replica) to `self`.
    ///
    /// # Errors
    /// [`MetricsError::PrecisionMismatch`] when the precisions differ.
    pub fn merge_counts(&self, counts: &HistogramCounts) -> Result<(), MetricsError> {
        if counts.bits != self.bits {
            return Err(MetricsError::PrecisionMismatch {
                left: self.bits,
                right: counts.bits,
            });
        }
        if counts.count() == 0 {
            return Ok(());
        }
        let stripe = self.stripe(shard::current().spread());
        stripe.zeros.fetch_add(counts.zeros, Ordering::Relaxed);
        stripe.sum.fetch_add(counts.sum, Ordering::Relaxed);
        stripe.min.fetch_min(counts.min, Ordering::Relaxed);
        stripe.max.fetch_max(counts.max, Ordering::Relaxed);
        let width = 1usize << self.bits;
        for (slot, chunk_id) in counts.chunk_ids.iter().enumerate() {
            let Some(chunk) = stripe.chunks.get(usize::from(*chunk_id)) else {
                continue;
            };
            let cells = chunk.get_or_init(|| new_chunk(self.bits));
            let Some(values) = counts.counts.get(slot * width..(slot + 1) * width) else {
                continue;
            };
            for (cell, n) in cells.iter().zip(values) {
                if *n != 0 {
                    cell.fetch_add(*n, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Zeroes the histogram. Allocated chunks are kept (and zeroed) so the
    /// recording path never races a deallocation. Values recorded during the
    /// reset may survive it, entirely or in part (e.g. counted in a bucket
    /// but not in `sum`).
    pub fn reset(&self) {
        for stripe in self.stripes.iter().filter_map(|s| s.get()) {
            stripe.reset();
        }
    }

    /// `(min, max)` of the recorded values, `None` when empty; cheaper than
    /// [`counts`](Self::counts) (reads two cells per stripe).
    #[must_use]
    pub fn min_max(&self) -> Option<(u64, u64)> {
        let (min, max) =
            self.stripes
                .iter()
                .filter_map(|s| s.get())
                .fold((u64::MAX, 0), |(lo, hi), s| {
                    (
                        lo.min(s.min.load(Ordering::Relaxed)),
                        hi.max(s.max.load(Ordering::Relaxed)),
                    )
                });
        (min <= max).then_some((min, max))
    }

    /// An owned, merged copy of every stripe.
    #[must_use]
    pub fn counts(&self) -> HistogramCounts {
        let mut out = HistogramCounts::empty(self.bits);
        self.counts_into(&mut out);
        out
    }

    /// [`counts`](Self::counts) into an existing read-out, reusing its
    /// allocations (the exposition renders every series through one).
    pub fn counts_into(&self, out: &mut HistogramCounts) {
        out.bits = self.bits;
        out.zeros = 0;
        out.sum = 0;
        out.min = u64::MAX;
        out.max = 0;
        out.chunk_ids.clear();
        out.counts.clear();
        let width = 1usize << self.bits;
        let mut live: [Option<&Stripe>; SHARDS] = [None; SHARDS];
        for (slot, stripe) in live.iter_mut().zip(&self.stripes) {
            *slot = stripe.get().map(|b| &***b);
        }
        for stripe in live.iter().flatten() {
            out.zeros = out.zeros.wrapping_add(stripe.zeros.load(Ordering::Relaxed));
            out.sum = out.sum.wrapping_add(stripe.sum.load(Ordering::Relaxed));
            out.min = out.min.min(stripe.min.load(Ordering::Relaxed));
            out.max = out.max.max(stripe.max.load(Ordering::Relaxed));
        }
        for chunk_id in 0..chunk_count(self.bits) {
            let start = out.counts.len();
            let mut present = false;
            for stripe in live.iter().flatten() {
                let Some(cells) = stripe.chunks.get(chunk_id).and_then(OnceLock::get) else {
                    continue;
                };
                if !present {
                    present = true;
                    out.counts.resize(start + width, 0);
                }
                for (acc, cell) in out.counts[start..].iter_mut().zip(cells.iter()) {
                    *acc = acc.wrapping_add(cell.load(Ordering::Relaxed));
                }
            }
            // Keep only chunks holding something, so equal distributions
            // compare equal whatever chunks happen to be allocated.
            if present {
                if out.counts[start..].iter().all(|n| *n == 0) {
                    out.counts.truncate(start);
                } else {
                    // chunk_count <= 64, so the id fits in u16.
                    out.chunk_ids.push(chunk_id as u16);
                }
            }
        }
        if out.count() == 0 {
            out.min = u64::MAX;
            out.max = 0;
        }
    }

    /// Cumulative counts at each bound of `ends` (see [`bound_end`]), then
    /// the total count (`ends.len() + 1` values in `out`), read straight from
    /// the stripes without a merged copy; returns the sum of the values. The
    /// exposition's read path: one pass over the allocated buckets.
    pub(crate) fn cumulative_into(&self, ends: &[usize], out: &mut Vec<u64>) -> u64 {
        start_segments(ends, out);
        let (mut zeros, mut sum) = (0u64, 0u64);
        for stripe in self.stripes.iter().filter_map(OnceLock::get) {
            zeros = zeros.wrapping_add(stripe.zeros.load(Ordering::Relaxed));
            sum = sum.wrapping_add(stripe.sum.load(Ordering::Relaxed));
            let mut next = 0;
            for (id, chunk) in stripe.chunks.iter().enumerate() {
                if let Some(cells) = chunk.get() {
                    let read = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
                    add_chunk(cells, id << self.bits, ends, &mut next, out, read);
                }
            }
        }
        if let Some(first) = out.first_mut() {
            *first = first.wrapping_add(zeros);
        }
        segments_to_cumulative(out);
        sum
    }

    /// Count, sum, min, max, mean and quantiles p50 … p99.9.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        self.counts().snapshot()
    }
}

/// An owned, merged read-out of a [`Histogram`]: exact bucket counts, sum,
/// min and max. Merge read-outs from several sources with
/// [`merge`](Self::merge); query with [`quantile`](Self::quantile),
/// [`count_le`](Self::count_le) and [`snapshot`](Self::snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramCounts {
    bits: u32,
    zeros: u64,
    sum: u64,
    /// `u64::MAX` while empty (normalised to 0 by `min()`).
    min: u64,
    max: u64,
    /// Ids of the chunks present, ascending; `counts` holds `2^bits` counters
    /// per id, in the same order.
    chunk_ids: Vec<u16>,
    counts: Vec<u64>,
}

impl HistogramCounts {
    /// A read-out with nothing recorded, at `bits` precision.
    #[must_use]
    pub fn empty(bits: u32) -> Self {
        Self {
            bits,
            zeros: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
            chunk_ids: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Precision bits.
    #[must_use]
    pub fn precision_bits(&self) -> u32 {
        self.bits
    }

    /// Number of values (the sum of all buckets).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(self.zeros, |acc, n| acc.wrapping_add(*n))
    }

    /// Sum of the values, wrapping at `2^64` like a Prometheus counter: after
    /// a wrap the exported `_sum` drops, which `rate()` reads as a reset.
    #[must_use]
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Smallest value; 0 when empty.
    #[must_use]
    pub fn min(&self) -> u64 {
        if self.count() == 0 { 0 } else { self.min }
    }

    /// Largest value; 0 when empty.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Adds `other` into `self`.
    ///
    /// # Errors
    /// [`MetricsError::PrecisionMismatch`] when the precisions differ.
    pub fn merge(&mut self, other: &HistogramCounts) -> Result<(), MetricsError> {
        if other.bits != self.bits {
            return Err(MetricsError::PrecisionMismatch {
                left: self.bits,
                right: other.bits,
            });
        }
        let width = 1usize << self.bits;
        let mut ids = Vec::with_capacity(self.chunk_ids.len() + other.chunk_ids.len());
        let mut counts = Vec::with_capacity(self.counts.len() + other.counts.len());
        let (mut a, mut b) = (0, 0);
        while a < self.chunk_ids.len() || b < other.chunk_ids.len() {
            let ia = self.chunk_ids.get(a).copied().unwrap_or(u16::MAX);
            let ib = other.chunk_ids.get(b).copied().unwrap_or(u16::MAX);
            let id = ia.min(ib);
            let start = counts.len();
            counts.resize(start + width, 0u64);
            if ia == id {
                for (acc, n) in counts[start..].iter_mut().zip(&self.counts[a * width..]) {
                    *acc = acc.wrapping_add(*n);
                }
                a += 1;
            }
            if ib == id {
                for (acc, n) in counts[start..].iter_mut().zip(&other.counts[b * width..]) {
                    *acc = acc.wrapping_add(*n);
                }
                b += 1;
            }
            ids.push(id);
        }
        self.chunk_ids = ids;
        self.counts = counts;
        self.zeros = self.zeros.wrapping_add(other.zeros);
        self.sum = self.sum.wrapping_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// Non-empty buckets in ascending order, as `(low, high, count)` with
    /// every value `v` of the bucket in `low <= v <= high`.
    fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let width = 1usize << self.bits;
        let zero = (self.zeros != 0).then_some((0, 0, self.zeros));
        let rest = self
            .chunk_ids
            .iter()
            .enumerate()
            .flat_map(move |(slot, id)| {
                let values = self
                    .counts
                    .get(slot * width..(slot + 1) * width)
                    .unwrap_or(&[]);
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n != 0)
                    .map(move |(offset, n)| {
                        let (low, high) =
                            key_range((usize::from(*id) << self.bits) + offset, self.bits);
                        (low + 1, high.saturating_add(1), *n)
                    })
            });
        zero.into_iter().chain(rest)
    }

    /// The estimated value of rank `rank` (1-based): the midpoint of its
    /// bucket, clamped to `[min, max]`. 0 when empty.
    fn value_at_rank(&self, rank: u64) -> u64 {
        let mut seen = 0u64;
        for (low, high, n) in self.buckets() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min(), self.max.max(self.min()));
            }
        }
        self.max
    }

    /// The `q`-quantile estimate: the value of rank [`quantile_rank`]`(q, n)`,
    /// within [`relative_error`] of the exact one. 0 when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            0
        } else {
            self.value_at_rank(quantile_rank(q, n))
        }
    }

    /// Exact number of values `<= bound`, when `bound` is a bucket edge
    /// ([`is_edge`]); for other bounds, the count up to the edge below it.
    #[must_use]
    pub fn count_le(&self, bound: u64) -> u64 {
        let edge = edge_at_or_below(bound, self.bits);
        self.buckets()
            .take_while(|(_, high, _)| *high <= edge)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Cumulative counts at each bound of `ends` (see [`bound_end`]),
    /// followed by the total count: `ends.len() + 1` values in `out`.
    pub(crate) fn cumulative_into(&self, ends: &[usize], out: &mut Vec<u64>) {
        start_segments(ends, out);
        if let Some(first) = out.first_mut() {
            *first = self.zeros;
        }
        let width = 1usize << self.bits;
        let mut next = 0;
        for (slot, id) in self.chunk_ids.iter().enumerate() {
            let values = self
                .counts
                .get(slot * width..(slot + 1) * width)
                .unwrap_or(&[]);
            let base = usize::from(*id) << self.bits;
            add_chunk(values, base, ends, &mut next, out, |n| *n);
        }
        segments_to_cumulative(out);
    }

    /// Count, sum, min, max, mean and the standard quantiles.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let count = self.count();
        if count == 0 {
            return HistogramSnapshot {
                relative_error: relative_error(self.bits),
                ..HistogramSnapshot::default()
            };
        }
        // One pass over the buckets for all five ranks (they ascend).
        let ranks = [0.5, 0.9, 0.95, 0.99, 0.999].map(|q| quantile_rank(q, count));
        let mut values = [0u64; 5];
        let mut next = 0;
        let mut seen = 0u64;
        let (min, max) = (self.min(), self.max);
        for (low, high, n) in self.buckets() {
            seen = seen.saturating_add(n);
            while next < ranks.len() && seen >= ranks[next] {
                values[next] = (low + (high - low) / 2).clamp(min, max.max(min));
                next += 1;
            }
            if next == ranks.len() {
                break;
            }
        }
        for v in values.iter_mut().skip(next) {
            *v = max;
        }
        HistogramSnapshot {
            count,
            sum: self.sum,
            min,
            max,
            mean: self.sum as f64 / count as f64,
            p50: values[0],
            p90: values[1],
            p95: values[2],
            p99: values[3],
            p999: values[4],
            relative_error: relative_error(self.bits),
        }
    }
}

/// The end (exclusive), in the order of non-zero buckets, of "values
/// `<= bound`": every non-zero bucket at a position below it holds only such
/// values. Exact when `bound` is a bucket edge at `bits` ([`is_edge`]);
/// otherwise it stops at the edge below `bound`, like
/// [`HistogramCounts::count_le`]. The zero bucket lies below every end.
pub(crate) fn bound_end(bound: u64, bits: u32) -> usize {
    if bound == 0 {
        return 0;
    }
    let index = key_index(bound - 1, bits);
    if key_range(index, bits).1 == bound - 1 {
        index + 1
    } else {
        index
    }
}

/// Clears `out` to `ends.len() + 1` zeroed segments: segment `j` counts the
/// values between bound `j - 1` (exclusive) and bound `j` (inclusive); the
/// last one, the values above every bound.
fn start_segments(ends: &[usize], out: &mut Vec<u64>) {
    out.clear();
    out.resize(ends.len() + 1, 0);
}

/// Turns segment counts into cumulative counts, in place.
fn segments_to_cumulative(out: &mut [u64]) {
    let mut total = 0u64;
    for n in out.iter_mut() {
        total = total.wrapping_add(*n);
        *n = total;
    }
}

/// Adds one chunk of bucket cells (non-zero bucket positions
/// `base .. base + cells.len()`) into `segments`. `next` is the first bound
/// not yet passed; chunks must come in ascending order (restart `next` at 0
/// for another source).
#[inline]
fn add_chunk<T>(
    cells: &[T],
    base: usize,
    ends: &[usize],
    next: &mut usize,
    segments: &mut [u64],
    read: impl Fn(&T) -> u64 + Copy,
) {
    let end = base + cells.len();
    let mut pos = base;
    while ends.get(*next).is_some_and(|e| *e <= pos) {
        *next += 1;
    }
    while pos < end {
        let stop = ends.get(*next).map_or(end, |e| (*e).min(end));
        let run = cells.get(pos - base..stop - base).unwrap_or(&[]);
        if let Some(segment) = segments.get_mut(*next) {
            *segment = segment.wrapping_add(sum_cells(run, read));
        }
        pos = stop;
        while ends.get(*next).is_some_and(|e| *e <= pos) {
            *next += 1;
        }
    }
}

/// Sum of a run of cells with four independent accumulators (relaxed atomic
/// loads do not vectorise; four chains keep the loads in flight).
#[inline]
fn sum_cells<T>(cells: &[T], read: impl Fn(&T) -> u64) -> u64 {
    let mut acc = [0u64; 4];
    let mut quads = cells.chunks_exact(4);
    for quad in &mut quads {
        for (a, cell) in acc.iter_mut().zip(quad) {
            *a = a.wrapping_add(read(cell));
        }
    }
    let head = acc.iter().fold(0u64, |total, a| total.wrapping_add(*a));
    quads
        .remainder()
        .iter()
        .fold(head, |total, cell| total.wrapping_add(read(cell)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous_and_covers_u64() {
        for bits in MIN_PRECISION_BITS..=MAX_PRECISION_BITS {
            let last = key_index(u64::MAX, bits);
            assert_eq!(last, chunk_count(bits) * (1 << bits) - 1, "bits {bits}");
            let mut expected_low = 0u64;
            for index in 0..=last {
                let (low, high) = key_range(index, bits);
                assert_eq!(low, expected_low, "bits {bits} index {index}");
                assert!(high >= low);
                assert_eq!(key_index(low, bits), index);
                assert_eq!(key_index(high, bits), index);
                // Width bound behind the error bound.
                if high > low {
                    assert!((high - low + 1) << bits <= low, "bits {bits} index {index}");
                }
                expected_low = high.wrapping_add(1);
            }
            assert_eq!(expected_low, 0, "covers to u64::MAX");
        }
    }

    #[test]
    fn edges() {
        for v in [
            0, 1, 2, 64, 100, 128, 250, 500, 1000, 2000, 1024, 65_536_000,
        ] {
            assert!(is_edge(v, 6), "{v}");
        }
        assert!(!is_edge(2500, 6));
        assert_eq!(edge_at_or_below(2500, 6), 2496);
        assert!(is_edge(2496, 6));
        assert_eq!(edge_at_or_below(1000, 2), 896);
        assert_eq!(edge_at_or_above(1000, 2), 1024);
        assert!(is_edge(u64::MAX, 6) || edge_at_or_below(u64::MAX, 6) < u64::MAX);
    }

    #[test]
    fn extremes_do_not_panic() {
        let h = Histogram::new();
        h.record(0);
        h.record(u64::MAX);
        h.record(u64::MAX);
        let s = h.snapshot();
        assert_eq!((s.count, s.min, s.max), (3, 0, u64::MAX));
        assert_eq!(s.sum, u64::MAX.wrapping_mul(2));
        assert!(s.mean.is_finite());
        assert!(s.p999 > u64::MAX / 2);
    }

    #[test]
    fn cumulative_matches_count_le() {
        let h = Histogram::new();
        for v in (0..5000u64).map(|i| i * i % 70_001) {
            h.record(v);
        }
        let c = h.counts();
        let bounds = [0u64, 1, 10, 100, 250, 1000, 4000, 64_000, 128_000];
        let ends: Vec<_> = bounds.iter().map(|b| bound_end(*b, 6)).collect();
        let mut out = Vec::new();
        c.cumulative_into(&ends, &mut out);
        assert_eq!(out.pop(), Some(5000), "the total comes last");
        let mut direct = Vec::new();
        let sum = h.cumulative_into(&ends, &mut direct);
        assert_eq!(direct.pop(), Some(5000));
        assert_eq!(direct, out);
        assert_eq!(sum, c.sum());
        let exact: Vec<u64> = bounds
            .iter()
            .map(|b| {
                (0..5000u64)
                    .map(|i| i * i % 70_001)
                    .filter(|v| v <= b)
                    .count() as u64
            })
            .collect();
        assert_eq!(out, exact);
        let via_count_le: Vec<u64> = bounds.iter().map(|b| c.count_le(*b)).collect();
        assert_eq!(via_count_le, exact);
    }
}
