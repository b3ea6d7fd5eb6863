//! cache_manager: a content-addressed embedding cache bounded in bytes.
//!
//! **Key.** A 128-bit hash of everything that determines an item's output:
//! the pipeline's configuration fingerprint (the whole configuration, the
//! resolved reference time and which slots loaded), the text, the resolved
//! timestamp, reference time and position, the returned slots and the fused
//! flag. Two std `SipHash` streams with different domain bytes give the two
//! halves; a false hit needs a 128-bit collision (about `n² / 2¹²⁹` for `n`
//! entries). The text itself is not stored, so an entry costs the same
//! whatever the text's length.
//!
//! **Weight.** Each entry weighs [`MultiEmbedding::heap_bytes`] (its inline
//! size plus the vectors it holds, shared vectors once) plus the key. The
//! cache's own bookkeeping (a few dozen bytes per entry) is not counted.
//!
//! **Eviction.** `quick_cache` (S3-FIFO, lock-striped): entries that were
//! read again survive a scan of one-off texts. Evictions are counted through
//! its lifecycle hook.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use embeddings_metrics::PipelineMetrics;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::options::Resolved;
use crate::output::MultiEmbedding;

/// A cache key (see the module docs).
pub(crate) type Key = u128;

/// Bytes a typical entry is expected to weigh, to size the shards.
const TYPICAL_ENTRY_BYTES: u64 = 16 << 10;
/// Entries per shard quick_cache wants at least.
const MIN_ITEMS_PER_SHARD: u64 = 32;

#[derive(Debug, Clone, Copy)]
struct Weigh;

impl Weighter<Key, MultiEmbedding> for Weigh {
    fn weight(&self, _key: &Key, value: &MultiEmbedding) -> u64 {
        (value.heap_bytes() + std::mem::size_of::<Key>()) as u64
    }
}

/// Counts evictions (and reports them to the recorder when recording).
#[derive(Debug, Clone)]
struct Evictions {
    count: Arc<AtomicU64>,
    metrics: Option<Arc<PipelineMetrics>>,
}

impl Lifecycle<Key, MultiEmbedding> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Key, _value: MultiEmbedding) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.record_cache_eviction(1);
        }
    }
}

/// The embedding cache.
pub(crate) struct EmbeddingCache {
    inner: Cache<Key, MultiEmbedding, Weigh, DefaultHashBuilder, Evictions>,
    evictions: Arc<AtomicU64>,
    max_bytes: u64,
    fingerprint: u64,
}

impl std::fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes())
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl EmbeddingCache {
    /// A cache of at most `max_bytes` (`None` when 0: disabled).
    pub(crate) fn new(
        max_bytes: u64,
        fingerprint: u64,
        metrics: Option<Arc<PipelineMetrics>>,
    ) -> Option<Self> {
        if max_bytes == 0 {
            return None;
        }
        let items = (max_bytes / TYPICAL_ENTRY_BYTES).max(1);
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        // A power of two, each shard holding at least MIN_ITEMS_PER_SHARD typical
        // entries (so one large entry still fits a shard).
        let mut shards = (parallelism * 4).next_power_of_two();
        while shards > 1 && items / shards < MIN_ITEMS_PER_SHARD {
            shards /= 2;
        }
        // Each shard gets exactly max_bytes / shards, so the total never exceeds max_bytes.
        let per_shard = (max_bytes / shards).max(1);
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX))
            .weight_capacity(per_shard * shards)
            .build()
            .ok()?;
        let evictions = Arc::new(AtomicU64::new(0));
        let lifecycle = Evictions {
            count: Arc::clone(&evictions),
            metrics,
        };
        Some(Self {
            inner: Cache::with_options(options, Weigh, DefaultHashBuilder::default(), lifecycle),
            evictions,
            max_bytes,
            fingerprint,
        })
    }

    /// The key of one item.
    pub(crate) fn key(
        &self,
        text: &str,
        timestamp: DateTime<Utc>,
        now: DateTime<Utc>,
        position: u64,
        options: &Resolved,
    ) -> Key {
        let mut halves = [DefaultHasher::new(), DefaultHasher::new()];
        for (domain, h) in (0xA5u8..).zip(halves.iter_mut()) {
            domain.hash(h);
            self.fingerprint.hash(h);
            text.hash(h);
            for t in [timestamp, now] {
                t.timestamp().hash(h);
                t.timestamp_subsec_nanos().hash(h);
            }
            position.hash(h);
            options.returned.bits().hash(h);
            options.fused.hash(h);
            options.direction.hash(h);
        }
        let [a, b] = halves;
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    pub(crate) fn get(&self, key: Key) -> Option<MultiEmbedding> {
        self.inner.get(&key)
    }

    pub(crate) fn insert(&self, key: Key, value: MultiEmbedding) {
        self.inner.insert(key, value);
    }

    /// Bytes held (the sum of entry weights).
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.weight()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    /// The bound, bytes.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries evicted so far (including entries too large to admit).
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// A fingerprint of everything pipeline-wide that determines outputs.
pub(crate) fn fingerprint(parts: &impl std::fmt::Debug) -> u64 {
    let mut h = DefaultHasher::new();
    format!("{parts:?}").hash(&mut h);
    h.finish()
}
