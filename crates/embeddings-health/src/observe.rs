//! What the evaluator is shown: [`Observation`] and its parts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use embeddings_types::{CanaryReport, GaugeSnapshot, MetricsSnapshot, ModelId};
use serde::{Deserialize, Serialize};

/// The state of one model slot in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SlotState {
    /// Not loaded yet and not failed: loading is still under way (or has not
    /// begun). A slot the deployment does not use should be reported as
    /// [`Failed`](Self::Failed) with a reason such as "disabled by configuration".
    #[default]
    Loading,
    /// Loaded and ready to embed.
    Loaded,
    /// Loading failed; the reason is reported to the operator.
    Failed {
        /// Why, in words an operator can act on (missing file, out of memory, ...).
        reason: String,
    },
}

/// Which of the twelve slots are loaded, loading or failed.
///
/// ```
/// use embeddings_health::{RegistryState, SlotState};
/// use embeddings_types::ModelId;
/// let mut registry = RegistryState::all_loaded();
/// registry.mark_failed(ModelId::Code, "checkpoint not found: /models/code");
/// assert_eq!(registry.loaded_count(), 11);
/// assert_eq!(registry.failed_count(), 1);
/// assert!(matches!(registry.get(ModelId::Code), SlotState::Failed { .. }));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryState {
    slots: [SlotState; ModelId::COUNT],
}

impl RegistryState {
    /// Every slot still loading: the state at startup.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every slot loaded.
    #[must_use]
    pub fn all_loaded() -> Self {
        Self {
            slots: std::array::from_fn(|_| SlotState::Loaded),
        }
    }

    /// Sets one slot's state.
    pub fn set(&mut self, model: ModelId, state: SlotState) {
        // `index()` is `0..COUNT` by construction; `get_mut` keeps this panic-free.
        if let Some(slot) = self.slots.get_mut(model.index()) {
            *slot = state;
        }
    }

    /// Marks a slot loaded.
    pub fn mark_loaded(&mut self, model: ModelId) {
        self.set(model, SlotState::Loaded);
    }

    /// Marks a slot as still loading.
    pub fn mark_loading(&mut self, model: ModelId) {
        self.set(model, SlotState::Loading);
    }

    /// Marks a slot failed, with the reason.
    pub fn mark_failed(&mut self, model: ModelId, reason: impl Into<String>) {
        self.set(
            model,
            SlotState::Failed {
                reason: reason.into(),
            },
        );
    }

    /// One slot's state.
    #[must_use]
    pub fn get(&self, model: ModelId) -> &SlotState {
        // Every `ModelId` indexes a slot; the fallback is never taken.
        static LOADING: SlotState = SlotState::Loading;
        self.slots.get(model.index()).unwrap_or(&LOADING)
    }

    /// Every slot with its state, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (ModelId, &SlotState)> {
        ModelId::ALL.into_iter().zip(self.slots.iter())
    }

    /// Slots loaded.
    #[must_use]
    pub fn loaded_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, SlotState::Loaded))
            .count()
    }

    /// Slots failed.
    #[must_use]
    pub fn failed_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, SlotState::Failed { .. }))
            .count()
    }

    /// Slots still loading.
    #[must_use]
    pub fn loading_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, SlotState::Loading))
            .count()
    }
}

/// What is known about the GPU.
///
/// A CPU deployment reports [`NotExpected`](Self::NotExpected) and is not
/// penalised. A deployment that expects a GPU reports either a
/// [`Reading`](Self::Reading) or, when it could not read one,
/// [`Unreadable`](Self::Unreadable), which fails the `gpu_memory` rule: a
/// figure is never invented. A reading with `total_bytes == 0` is a failed
/// reading, not a division by zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "gpu")]
pub enum GpuObservation {
    /// This deployment runs on the CPU and expects no GPU.
    NotExpected,
    /// A GPU is expected but its memory could not be read.
    Unreadable {
        /// Why (driver error, device lost, gauge never set, ...).
        reason: String,
    },
    /// A GPU is expected and its memory was read.
    Reading {
        /// Bytes in use.
        used_bytes: u64,
        /// Bytes in total.
        total_bytes: u64,
    },
}

impl GpuObservation {
    /// Builds the observation from the recorder's gauges: `NotExpected` when
    /// `gpu_expected` is false, a `Reading` when both GPU gauges are set, and
    /// `Unreadable` otherwise.
    #[must_use]
    pub fn from_gauges(gpu_expected: bool, gauges: &GaugeSnapshot) -> Self {
        if !gpu_expected {
            return Self::NotExpected;
        }
        match (gauges.gpu_memory_used_bytes, gauges.gpu_memory_total_bytes) {
            (Some(used_bytes), Some(total_bytes)) => Self::Reading {
                used_bytes,
                total_bytes,
            },
            _ => Self::Unreadable {
                reason: "the GPU memory gauges (used and total) have not been set".to_owned(),
            },
        }
    }

    /// Whether this deployment expects a GPU.
    #[must_use]
    pub const fn expected(&self) -> bool {
        !matches!(self, Self::NotExpected)
    }

    /// `used / total`, or `None` when there is no valid reading (no GPU
    /// expected, unreadable, or a total of zero).
    #[must_use]
    pub fn used_fraction(&self) -> Option<f64> {
        match *self {
            Self::Reading {
                used_bytes,
                total_bytes,
            } if total_bytes > 0 => {
                // Precision loss above 2^53 bytes is irrelevant to a ratio.
                Some(used_bytes as f64 / total_bytes as f64)
            }
            _ => None,
        }
    }
}

/// Whether each pipeline component reports itself operational. The GPU is
/// not here: it is a [`GpuObservation`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentChecks {
    /// The model registry can hand out its slots.
    pub model_registry: bool,
    /// The batch processor's queue and workers are running.
    pub batch_processor: bool,
    /// The fusion stage (FuseMoE) is ready.
    pub fusemoe: bool,
    /// The embedding cache is usable.
    pub cache_manager: bool,
}

impl ComponentChecks {
    /// Every component operational.
    #[must_use]
    pub const fn all_up() -> Self {
        Self {
            model_registry: true,
            batch_processor: true,
            fusemoe: true,
            cache_manager: true,
        }
    }
}

/// Everything the health evaluation looks at, borrowed from the caller so
/// that evaluating copies nothing it does not return.
///
/// Build it with [`Observation::new`], then set the fields the pipeline
/// knows (`warmed_up`, `last_progress`, ...). Cache figures come from the
/// snapshot's gauges.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Observation<'a> {
    /// Which slots are loaded, loading or failed.
    pub registry: &'a RegistryState,
    /// The latest metrics.
    pub snapshot: &'a MetricsSnapshot,
    /// The GPU, if one is expected.
    pub gpu: &'a GpuObservation,
    /// Component self-checks.
    pub components: ComponentChecks,
    /// Whether warm-up (a first inference on every loaded slot) is done.
    /// Readiness needs it. Default: `false`.
    pub warmed_up: bool,
    /// The last heartbeat of the process's work loop. Liveness needs it;
    /// `None` means "none recorded since start", judged against `uptime`.
    ///
    /// It must tick while idle too (for example on every receive timeout of
    /// the worker loop, or from a watchdog task that checks the loop), never
    /// only when a request completes: an idle pipeline is alive.
    pub last_progress: Option<DateTime<Utc>>,
    /// When the last embedding was produced successfully.
    pub last_embed_time: Option<DateTime<Utc>>,
    /// Time since the pipeline started. Default: the snapshot's uptime.
    pub uptime: Duration,
    /// The quality canary's latest report; `None` before its first run
    /// (the `canary` rule then holds: no run, no finding).
    pub canary: Option<&'a CanaryReport>,
}

impl<'a> Observation<'a> {
    /// An observation of `registry`, `snapshot`, `gpu` and `components`,
    /// not yet warmed up, with no progress recorded and the snapshot's uptime.
    #[must_use]
    pub fn new(
        registry: &'a RegistryState,
        snapshot: &'a MetricsSnapshot,
        gpu: &'a GpuObservation,
        components: ComponentChecks,
    ) -> Self {
        Self {
            registry,
            snapshot,
            gpu,
            components,
            warmed_up: false,
            last_progress: None,
            last_embed_time: None,
            uptime: snapshot.uptime,
            canary: None,
        }
    }

    /// Sets `canary`.
    #[must_use]
    pub const fn with_canary(mut self, report: Option<&'a CanaryReport>) -> Self {
        self.canary = report;
        self
    }

    /// Sets `warmed_up`.
    #[must_use]
    pub const fn with_warmed_up(mut self, warmed_up: bool) -> Self {
        self.warmed_up = warmed_up;
        self
    }

    /// Sets `last_progress`.
    #[must_use]
    pub const fn with_last_progress(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.last_progress = at;
        self
    }

    /// Sets `last_embed_time`.
    #[must_use]
    pub const fn with_last_embed_time(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.last_embed_time = at;
        self
    }

    /// Sets `uptime`.
    #[must_use]
    pub const fn with_uptime(mut self, uptime: Duration) -> Self {
        self.uptime = uptime;
        self
    }
}
