//! An optional process-wide recorder, for code that cannot be handed one.

use std::sync::{Arc, PoisonError, RwLock};

use crate::PipelineMetrics;

static GLOBAL: RwLock<Option<Arc<PipelineMetrics>>> = RwLock::new(None);

/// The process-wide recorder, created with the default config on first use.
///
/// Takes a read lock (briefly) on each call: fetch it once and keep the
/// `Arc`, rather than calling this on a hot path. A recorder fetched before
/// [`set_global`] or [`reset_global`] keeps recording into the old instance.
///
/// ```
/// use std::sync::Arc;
/// use embeddings_metrics::{global, reset_global, set_global, PipelineMetrics};
/// let mine = Arc::new(PipelineMetrics::new());
/// set_global(Arc::clone(&mine));
/// global().record_cache_hit();
/// assert_eq!(mine.snapshot().cache_hits, 1);
/// reset_global();
/// assert_eq!(global().snapshot().cache_hits, 0);
/// ```
#[must_use]
pub fn global() -> Arc<PipelineMetrics> {
    if let Some(existing) = GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return Arc::clone(existing);
    }
    let mut slot = GLOBAL.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(slot.get_or_insert_with(|| Arc::new(PipelineMetrics::new())))
}

/// Installs `metrics` as the process-wide recorder; returns the previous one.
pub fn set_global(metrics: Arc<PipelineMetrics>) -> Option<Arc<PipelineMetrics>> {
    GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(metrics)
}

/// Drops the process-wide recorder; the next [`global`] creates a fresh one.
/// Returns the one dropped.
pub fn reset_global() -> Option<Arc<PipelineMetrics>> {
    GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}
