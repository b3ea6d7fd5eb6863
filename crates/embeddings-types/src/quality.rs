//! What the canary measured: whether the models still give the answers they
//! gave at start-up and the answers an external reference gives, and whether
//! an answer depends on the inputs it was batched with.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ModelId;

/// Which canary figure, as named in health reasons and alert labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryFigure {
    /// [`SlotCanary::cosine_to_startup`].
    CosineToStartup,
    /// [`SlotCanary::cosine_to_reference`].
    CosineToReference,
    /// [`SlotCanary::batch_deviation`].
    BatchDeviation,
}

impl CanaryFigure {
    /// `snake_case` name, as in JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CosineToStartup => "cosine_to_startup",
            Self::CosineToReference => "cosine_to_reference",
            Self::BatchDeviation => "batch_deviation",
        }
    }
}

/// One slot's canary figures, each the worst over the probe sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotCanary {
    /// The slot.
    pub model: ModelId,
    /// The smallest cosine between a probe's vector now and its vector at
    /// the first canary run after start-up (1.0 on that first run). Every
    /// slot has it, so a slot with no external reference still shows change.
    pub cosine_to_startup: f64,
    /// The smallest cosine between a probe's vector and the reference vector
    /// shipped for the slot's checkpoint (computed with sentence-transformers);
    /// `None` when there is no reference for this slot's checkpoint and head.
    pub cosine_to_reference: Option<f64>,
    /// The largest relative deviation `‖alone − batched‖ / ‖alone‖` between
    /// a probe embedded alone and the same probe embedded in one batch with
    /// all the others (padded and chunked with them). 0 means the answer does
    /// not depend on its neighbours.
    pub batch_deviation: f64,
}

/// One run of the canary over every loaded slot.
///
/// ```
/// use embeddings_types::{CanaryFigure, CanaryReport, ModelId, SlotCanary};
/// let report = CanaryReport {
///     completed_at: chrono::Utc::now(),
///     duration: std::time::Duration::from_millis(120),
///     probes: 8,
///     slots: vec![SlotCanary {
///         model: ModelId::Semantic,
///         cosine_to_startup: 1.0,
///         cosine_to_reference: Some(0.93),
///         batch_deviation: 0.0,
///     }],
/// };
/// let (slot, figure, cosine) = report.worst_cosine().unwrap();
/// assert_eq!((slot, figure, cosine), (ModelId::Semantic, CanaryFigure::CosineToReference, 0.93));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// When the run finished.
    pub completed_at: DateTime<Utc>,
    /// How long it took.
    #[serde(with = "crate::duration")]
    pub duration: Duration,
    /// Probe sentences embedded (each alone and in the batch).
    pub probes: usize,
    /// One entry per loaded slot, in slot order.
    pub slots: Vec<SlotCanary>,
}

impl CanaryReport {
    /// The smallest cosine of any slot, to its start-up vectors or its
    /// reference, with the slot and which figure it is (NaN counts as the
    /// smallest); `None` without slots.
    #[must_use]
    pub fn worst_cosine(&self) -> Option<(ModelId, CanaryFigure, f64)> {
        self.slots
            .iter()
            .flat_map(|s| {
                let reference = s
                    .cosine_to_reference
                    .map(|c| (s.model, CanaryFigure::CosineToReference, c));
                [
                    Some((s.model, CanaryFigure::CosineToStartup, s.cosine_to_startup)),
                    reference,
                ]
            })
            .flatten()
            .min_by(|a, b| worst_low(a.2).total_cmp(&worst_low(b.2)))
    }

    /// The largest batch deviation of any slot, with the slot (NaN counts as
    /// the largest).
    #[must_use]
    pub fn worst_batch_deviation(&self) -> Option<(ModelId, f64)> {
        self.slots
            .iter()
            .map(|s| (s.model, s.batch_deviation))
            .max_by(|a, b| worst_high(a.1).total_cmp(&worst_high(b.1)))
    }
}

/// Orders NaN below every number: an unknown cosine is the worst.
fn worst_low(x: f64) -> f64 {
    if x.is_nan() { f64::NEG_INFINITY } else { x }
}

/// Orders NaN above every number: an unknown deviation is the worst.
fn worst_high(x: f64) -> f64 {
    if x.is_nan() { f64::INFINITY } else { x }
}

/// What the output-drift monitor sees in one dense slot: its recent outputs
/// against its reference outputs (the first ones after start). Every figure
/// is `None` until both windows are full: unknown is never a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotDrift {
    /// The slot.
    pub model: ModelId,
    /// Vectors in the reference window (the first computed after start).
    pub reference_size: usize,
    /// Vectors in the recent window (the last computed).
    pub recent_size: usize,
    /// Cosine between the two windows' mean vectors: 1 when the outputs are
    /// centred where they were.
    pub centroid_cosine: Option<f64>,
    /// Mean cosine between pairs of recent vectors (anisotropy: how much
    /// of the space the outputs use; near 1 means they all look alike).
    pub mean_pairwise_cosine: Option<f64>,
    /// The same over the reference window.
    pub reference_mean_pairwise_cosine: Option<f64>,
    /// The two-sample Kolmogorov–Smirnov statistic between the pairwise
    /// cosines of the two windows (0: the same distribution; 1: disjoint).
    pub similarity_ks: Option<f64>,
    /// `max(similarity_ks, 1 − centroid_cosine)`: the slot's drift score.
    pub drift_score: Option<f64>,
    /// Mean length of the recent vectors before normalisation (`None` for
    /// slots that report none).
    pub mean_norm: Option<f64>,
    /// The same over the reference window.
    pub reference_mean_norm: Option<f64>,
}

/// The output-drift monitor's figures for every dense slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// When the figures were computed.
    pub computed_at: DateTime<Utc>,
    /// The window size (`[quality] drift_window`).
    pub window: usize,
    /// Pairs of vectors sampled in each window for the pairwise figures.
    pub pairs: usize,
    /// The seed of that sampling (fixed: the same windows give the same figures).
    pub seed: u64,
    /// One entry per loaded dense slot, in slot order.
    pub slots: Vec<SlotDrift>,
    /// Mean non-zero entries per input of the `sparse` slot over its recent
    /// window; `None` without sparse outputs.
    pub sparse_mean_nonzeros: Option<f64>,
    /// The same over its reference window.
    pub sparse_reference_mean_nonzeros: Option<f64>,
    /// The fused vector's neighbourhood preservation: over the last 64
    /// inputs with a fused vector (every fourth sampled), the mean share of
    /// each one's 5 nearest others (cosine) in the gated concatenation that
    /// are also its 5 nearest in the fused space — what the
    /// Johnson–Lindenstrauss projection promises, measured. `None` until 64
    /// are sampled, with fusion off, or with a trained projection.
    pub fused_neighbour_overlap: Option<f64>,
}

impl DriftReport {
    /// The largest drift score of any slot, with the slot; `None` while no
    /// slot has one.
    #[must_use]
    pub fn worst(&self) -> Option<(ModelId, f64)> {
        self.slots
            .iter()
            .filter_map(|s| s.drift_score.map(|d| (s.model, d)))
            .max_by(|a, b| worst_high(a.1).total_cmp(&worst_high(b.1)))
    }
}
