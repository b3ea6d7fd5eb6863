//! model_registry: what was loaded, what failed and why, what is shared.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use embeddings_types::ModelId;
use serde::{Serialize, Serializer};

use crate::error::LoadError;

/// The head a transformer slot applies to its checkpoint's trunk output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HeadKind {
    /// Mask-aware mean pooling, L2-normalised.
    Mean,
    /// `[CLS]` pooling, L2-normalised.
    Cls,
    /// Cause and effect position-ramp poolings.
    Causal,
    /// Per-token vectors (late interaction).
    PerToken,
}

/// What computes a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Backend {
    /// A transformer checkpoint plus a head.
    Transformer {
        /// The `[models.*]` name.
        model: String,
        /// The head (resolved: `auto` pooling shows as mean or CLS).
        head: HeadKind,
    },
    /// Deterministic maths, no weights.
    BuiltIn,
}

/// Whether a slot is running. Serializes as `{"state": "loaded"}`,
/// `{"state": "disabled"}` or `{"state": "failed", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SlotState {
    /// Producing output.
    Loaded,
    /// Switched off in the configuration.
    Disabled,
    /// Enabled but could not be loaded; the others still run.
    Failed(LoadError),
}

impl Serialize for SlotState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (state, reason) = match self {
            Self::Loaded => ("loaded", None),
            Self::Disabled => ("disabled", None),
            Self::Failed(e) => ("failed", Some(e.to_string())),
        };
        let mut s = serializer.serialize_struct("SlotState", 1 + usize::from(reason.is_some()))?;
        s.serialize_field("state", state)?;
        if let Some(r) = reason {
            s.serialize_field("reason", &r)?;
        }
        s.end()
    }
}

fn error_text<S: Serializer>(e: &Option<LoadError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

/// One slot's line in the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotReport {
    /// The slot.
    pub slot: ModelId,
    /// Running, off, or failed with the reason.
    pub state: SlotState,
    /// What computes it.
    pub backend: Backend,
    /// Output width (vocabulary size for `Sparse`, token width for
    /// `LateInteraction`); `None` unless loaded.
    pub dim: Option<usize>,
    /// Bytes of weights (as f32) of the checkpoint this slot runs; a shared
    /// checkpoint is held once, see [`ModelReport::weight_bytes`].
    pub weight_bytes: u64,
    /// Other loaded slots that run the same checkpoint (one forward pass).
    pub trunk_shared_with: Vec<ModelId>,
    /// Other loaded slots whose output is identical (computed once).
    pub output_shared_with: Vec<ModelId>,
}

impl SlotReport {
    /// `true` for a loaded transformer slot that is the only user of its checkpoint.
    #[must_use]
    pub fn is_dedicated(&self) -> bool {
        matches!(self.backend, Backend::Transformer { .. })
            && self.state == SlotState::Loaded
            && self.trunk_shared_with.is_empty()
    }
}

/// One checkpoint's line in the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    /// The `[models.*]` name.
    pub name: String,
    /// The resolved folder, when it was found.
    pub dir: Option<PathBuf>,
    /// Why it could not be loaded, if so (serialized as its message).
    #[serde(serialize_with = "error_text")]
    pub error: Option<LoadError>,
    /// Hidden size, when loaded with weights.
    pub hidden: Option<usize>,
    /// Token limit (special tokens included), when loaded with weights.
    pub max_seq_length: Option<usize>,
    /// Bytes of weights held (as f32); 0 when only the tokenizer is used.
    pub weight_bytes: u64,
    /// Loaded slots using it (including `Sparse`/`Hdc` for its tokenizer).
    pub used_by: Vec<ModelId>,
}

/// The fusion step's line in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FusionReport {
    /// Concatenated input width.
    pub d_in: usize,
    /// Output width.
    pub dim: usize,
    /// Trained weights were loaded (else the seeded JL projection).
    pub trained: bool,
    /// Bytes of its tables.
    pub weight_bytes: u64,
}

/// Everything the pipeline loaded, as returned by
/// [`EmbeddingPipeline::describe`](crate::EmbeddingPipeline::describe).
/// `Display` prints a table; serializes to JSON with serde.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRegistry {
    /// All twelve slots, in slot order.
    pub slots: Vec<SlotReport>,
    /// Every checkpoint the configuration needed.
    pub models: Vec<ModelReport>,
    /// The fusion step, when enabled.
    pub fusion: Option<FusionReport>,
    /// The device, e.g. `cpu`.
    pub device: String,
    /// The pipeline's reference "now".
    pub reference_time: DateTime<Utc>,
}

impl ModelRegistry {
    /// One slot's report.
    #[must_use]
    pub fn slot(&self, id: ModelId) -> &SlotReport {
        &self.slots[id.index()]
    }

    /// Loaded slots.
    pub fn loaded(&self) -> impl Iterator<Item = ModelId> + '_ {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Loaded)
            .map(|s| s.slot)
    }

    /// Failed slots with their reasons.
    pub fn failed(&self) -> impl Iterator<Item = (ModelId, &LoadError)> + '_ {
        self.slots.iter().filter_map(|s| match &s.state {
            SlotState::Failed(e) => Some((s.slot, e)),
            _ => None,
        })
    }

    /// Bytes of all weights held (each checkpoint once, plus fusion tables).
    #[must_use]
    pub fn total_weight_bytes(&self) -> u64 {
        self.models.iter().map(|m| m.weight_bytes).sum::<u64>()
            + self.fusion.as_ref().map_or(0, |f| f.weight_bytes)
    }
}

fn list(ids: &[ModelId]) -> String {
    ids.iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "device: {}; reference time: {}",
            self.device,
            self.reference_time.to_rfc3339()
        )?;
        for s in &self.slots {
            let state = match &s.state {
                SlotState::Loaded => "loaded".to_owned(),
                SlotState::Disabled => "disabled".to_owned(),
                SlotState::Failed(e) => format!("FAILED: {e}"),
            };
            let backend = match &s.backend {
                Backend::BuiltIn => "built-in".to_owned(),
                Backend::Transformer { model, head } => {
                    let sharing = if s.state != SlotState::Loaded {
                        String::new()
                    } else if s.trunk_shared_with.is_empty() {
                        ", dedicated model".to_owned()
                    } else {
                        format!(", shares trunk with [{}]", list(&s.trunk_shared_with))
                    };
                    format!("model `{model}`, head {head:?}{sharing}")
                }
            };
            let same = if s.output_shared_with.is_empty() {
                String::new()
            } else {
                format!("; same output as [{}]", list(&s.output_shared_with))
            };
            let dim = s.dim.map_or_else(|| "-".to_owned(), |d| d.to_string());
            writeln!(
                f,
                "  {:<20} dim {dim:>6}  {backend}{same}  [{state}]",
                s.slot.as_str()
            )?;
        }
        for m in &self.models {
            let dir = m
                .dir
                .as_ref()
                .map_or_else(|| "?".to_owned(), |d| d.display().to_string());
            let status = m
                .error
                .as_ref()
                .map_or_else(|| "ok".to_owned(), |e| format!("FAILED: {e}"));
            writeln!(
                f,
                "  model `{}` at {dir}: {} bytes, used by [{}] [{status}]",
                m.name,
                m.weight_bytes,
                list(&m.used_by)
            )?;
        }
        if let Some(fu) = &self.fusion {
            writeln!(
                f,
                "  fusion: {} -> {} ({}), {} bytes",
                fu.d_in,
                fu.dim,
                if fu.trained {
                    "trained"
                } else {
                    "seeded JL projection"
                },
                fu.weight_bytes
            )?;
        }
        Ok(())
    }
}
