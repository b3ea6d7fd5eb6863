//! [`HealthStatus`] and [`ComponentHealth`]: the answer to "can this pipeline
//! serve right now?", as plain data.
//!
//! The rules that *fill* these types (thresholds, verdicts, reasons) live in
//! `embeddings-health`; here are only the types and the questions that can be
//! answered from the data alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ModelId;

/// Whether each pipeline component is operational.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// The model registry loaded its slots and can hand them out.
    pub model_registry: bool,
    /// The batch processor's queue and workers are running.
    pub batch_processor: bool,
    /// The fusion stage (FuseMoE) is ready.
    pub fusemoe: bool,
    /// The embedding cache is usable.
    pub cache_manager: bool,
    /// A GPU device is usable.
    pub gpu_available: bool,
    /// Whether this deployment expects a GPU. A CPU deployment
    /// (`gpu_required == false`) without a GPU is not unhealthy.
    /// Absent in JSON means `false`.
    #[serde(default)]
    pub gpu_required: bool,
}

impl ComponentHealth {
    /// The component names reported by
    /// [`HealthStatus::unhealthy_components`], in report order.
    pub const NAMES: [&'static str; 5] = [
        "model_registry",
        "batch_processor",
        "fusemoe",
        "cache_manager",
        "gpu",
    ];

    /// Every component operational; `gpu_required` as given.
    #[must_use]
    pub const fn all_up(gpu_required: bool) -> Self {
        Self {
            model_registry: true,
            batch_processor: true,
            fusemoe: true,
            cache_manager: true,
            gpu_available: gpu_required,
            gpu_required,
        }
    }

    /// Whether the GPU requirement is met: no GPU needed, or one is available.
    #[must_use]
    pub const fn gpu_ok(&self) -> bool {
        !self.gpu_required || self.gpu_available
    }
}

/// The health of the pipeline at one moment (the reference spec's contract,
/// plus nothing: every field here is from the spec).
///
/// ```
/// use embeddings_types::{ComponentHealth, HealthStatus, ModelId};
/// let mut status = HealthStatus::new();
/// assert!(!status.is_minimum_viable());
/// status.models_loaded = ModelId::ALL.to_vec();
/// status.components = ComponentHealth::all_up(false);
/// status.healthy = true;
/// assert!(status.is_minimum_viable());
/// assert!(status.is_fully_healthy());
/// status.components.cache_manager = false;
/// assert_eq!(status.unhealthy_components(), vec!["cache_manager"]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The overall verdict: `true` for a healthy or degraded pipeline that
    /// can serve, as decided by `embeddings-health`.
    pub healthy: bool,
    /// Slots whose model is loaded, in index order.
    pub models_loaded: Vec<ModelId>,
    /// Slots whose model failed to load, in index order.
    pub models_failed: Vec<ModelId>,
    /// GPU memory in use, bytes. 0 when no GPU was read: `gpu_memory` says
    /// whether this is a measurement.
    pub gpu_memory_used: usize,
    /// GPU memory available in total, bytes. 0 when no GPU was read:
    /// `gpu_memory` says whether this is a measurement.
    pub gpu_memory_available: usize,
    /// Entries in the embedding cache. 0 when the cache is off or not yet
    /// known: `cache` says whether this is a measurement.
    pub cache_size: usize,
    /// Bytes held by the embedding cache. 0 when the cache is off or not
    /// yet known: `cache` says whether this is a measurement.
    pub cache_memory_bytes: usize,
    /// Time since the pipeline started; serialized as seconds.
    #[serde(with = "crate::duration")]
    pub uptime: Duration,
    /// When the last embedding was produced successfully.
    pub last_embed_time: Option<DateTime<Utc>>,
    /// Errors per minute over the recent window. A non-finite reading is kept
    /// as it was observed (JSON has no NaN, so it serializes as `null` and
    /// `null` reads back as NaN) rather than replaced by an invented number.
    #[serde(deserialize_with = "nan_from_null")]
    pub error_rate: f64,
    /// Per-component state.
    pub components: ComponentHealth,
    /// The GPU reading behind `gpu_memory_used` / `gpu_memory_available`;
    /// `None` (JSON `null`) when no GPU was read: a CPU deployment, or a
    /// device that could not be read. Added to the spec's fields so that a 0
    /// there is never mistaken for a measurement.
    #[serde(default)]
    pub gpu_memory: Option<GpuMemory>,
    /// The cache reading behind `cache_size` / `cache_memory_bytes`; `None`
    /// (JSON `null`) when the cache is off or its figures are not known yet
    /// (for example while the pipeline loads).
    #[serde(default)]
    pub cache: Option<CacheFigures>,
}

/// A GPU memory reading, in [`HealthStatus::gpu_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in total.
    pub total_bytes: u64,
}

/// The embedding cache's figures, in [`HealthStatus::cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFigures {
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// Reads an `f64` where `null` (how serde_json writes NaN and infinities) means NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

impl Default for HealthStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthStatus {
    /// A status with nothing loaded and nothing running: not healthy, not
    /// viable. Evaluation fills it in.
    #[must_use]
    pub fn new() -> Self {
        Self {
            healthy: false,
            models_loaded: Vec::new(),
            models_failed: Vec::new(),
            gpu_memory_used: 0,
            gpu_memory_available: 0,
            cache_size: 0,
            cache_memory_bytes: 0,
            uptime: Duration::ZERO,
            last_embed_time: None,
            error_rate: 0.0,
            components: ComponentHealth::default(),
            gpu_memory: None,
            cache: None,
        }
    }

    /// Everything is up: the verdict is healthy, all twelve slots are loaded,
    /// none failed, and no component is down.
    #[must_use]
    pub fn is_fully_healthy(&self) -> bool {
        self.healthy
            && self.models_failed.is_empty()
            && ModelId::ALL.iter().all(|m| self.models_loaded.contains(m))
            && self.unhealthy_components().is_empty()
    }

    /// Names of the components that are down, from [`ComponentHealth::NAMES`],
    /// in that order. `"gpu"` is listed only when a GPU is required and missing.
    #[must_use]
    pub fn unhealthy_components(&self) -> Vec<&'static str> {
        let c = &self.components;
        let up = [
            c.model_registry,
            c.batch_processor,
            c.fusemoe,
            c.cache_manager,
            c.gpu_ok(),
        ];
        ComponentHealth::NAMES
            .iter()
            .zip(up)
            .filter(|(_, up)| !up)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether the pipeline can still produce embeddings at all: the model
    /// registry and batch processor are up, at least one slot is loaded, and
    /// a required GPU is present. The cache and fusion are not needed for
    /// per-slot embeddings.
    #[must_use]
    pub fn is_minimum_viable(&self) -> bool {
        let c = &self.components;
        c.model_registry && c.batch_processor && c.gpu_ok() && !self.models_loaded.is_empty()
    }
}
