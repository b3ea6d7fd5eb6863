//! Point-in-time gauges: queue depth, in-flight requests, workers, memory.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use embeddings_types::GaugeSnapshot;

/// A memory (or size) figure that callers set; the recorder never measures
/// or invents one. Each is `None` in the snapshot, and absent from the
/// exposition, until set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryGauge {
    /// Resident set size of the process, bytes.
    ProcessRss,
    /// GPU memory in use, bytes.
    GpuUsed,
    /// GPU memory in total, bytes.
    GpuTotal,
    /// Memory held by the embedding cache, bytes.
    CacheBytes,
    /// Entries in the embedding cache.
    CacheEntries,
}

impl MemoryGauge {
    /// Every memory gauge, in storage order.
    pub const ALL: [Self; 5] = [
        Self::ProcessRss,
        Self::GpuUsed,
        Self::GpuTotal,
        Self::CacheBytes,
        Self::CacheEntries,
    ];

    const fn index(self) -> usize {
        self as usize
    }
}

/// Stored value meaning "never set". A caller setting `u64::MAX` is stored as
/// `u64::MAX - 1` (documented on the setters): 18 EB is not a real figure.
const UNSET: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Gauges {
    /// Signed so that an unmatched `dec` before its `inc` (possible when
    /// threads race) nets out instead of wrapping; read clamped at 0.
    queue_depth: CachePadded<(AtomicI64, AtomicU64)>,
    in_flight: CachePadded<AtomicI64>,
    workers: AtomicU64,
    memory: [AtomicU64; 5],
}

fn clamp_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Gauges {
    pub(crate) fn new() -> Self {
        Self {
            queue_depth: CachePadded::new((AtomicI64::new(0), AtomicU64::new(0))),
            in_flight: CachePadded::new(AtomicI64::new(0)),
            workers: AtomicU64::new(0),
            memory: std::array::from_fn(|_| AtomicU64::new(UNSET)),
        }
    }

    pub(crate) fn queue_add(&self, delta: i64) {
        let now = self
            .queue_depth
            .0
            .fetch_add(delta, Ordering::Relaxed)
            .wrapping_add(delta);
        self.note_queue_max(now);
    }

    pub(crate) fn queue_set(&self, depth: u64) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        // SeqCst: a publisher re-reads its source after this store (see the
        // pipeline's queue), which needs the store ordered before that read.
        self.queue_depth.0.store(depth, Ordering::SeqCst);
        self.note_queue_max(depth);
    }

    fn note_queue_max(&self, depth: i64) {
        let depth = clamp_u64(depth);
        // Load first: the max rarely moves, and a load keeps the line shared.
        if depth > self.queue_depth.1.load(Ordering::Relaxed) {
            self.queue_depth.1.fetch_max(depth, Ordering::Relaxed);
        }
    }

    pub(crate) fn queue_depth(&self) -> u64 {
        clamp_u64(self.queue_depth.0.load(Ordering::Relaxed))
    }

    pub(crate) fn in_flight_add(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn set_workers(&self, workers: u64) {
        self.workers.store(workers, Ordering::Relaxed);
    }

    pub(crate) fn set_memory(&self, gauge: MemoryGauge, value: Option<u64>) {
        let stored = value.map_or(UNSET, |v| v.min(UNSET - 1));
        if let Some(cell) = self.memory.get(gauge.index()) {
            cell.store(stored, Ordering::Relaxed);
        }
    }

    pub(crate) fn memory(&self, gauge: MemoryGauge) -> Option<u64> {
        let v = self.memory.get(gauge.index())?.load(Ordering::Relaxed);
        (v != UNSET).then_some(v)
    }

    /// The max restarts from the current depth: "largest since the reset".
    pub(crate) fn reset_max(&self) {
        self.queue_depth
            .1
            .store(self.queue_depth(), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> GaugeSnapshot {
        GaugeSnapshot {
            queue_depth: self.queue_depth(),
            queue_depth_max: self.queue_depth.1.load(Ordering::Relaxed),
            in_flight: clamp_u64(self.in_flight.load(Ordering::Relaxed)),
            workers: self.workers.load(Ordering::Relaxed),
            process_rss_bytes: self.memory(MemoryGauge::ProcessRss),
            gpu_memory_used_bytes: self.memory(MemoryGauge::GpuUsed),
            gpu_memory_total_bytes: self.memory(MemoryGauge::GpuTotal),
            cache_bytes: self.memory(MemoryGauge::CacheBytes),
            cache_entries: self.memory(MemoryGauge::CacheEntries),
        }
    }
}

/// Counts one in-flight request for as long as it lives; see
/// [`PipelineMetrics::track_in_flight`](crate::PipelineMetrics::track_in_flight).
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when the guard is dropped"]
pub struct InFlightGuard<'a> {
    gauges: &'a Gauges,
}

impl<'a> InFlightGuard<'a> {
    pub(crate) fn new(gauges: &'a Gauges) -> Self {
        gauges.in_flight_add(1);
        Self { gauges }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.gauges.in_flight_add(-1);
    }
}
