//! What a caller asks of [`submit`](crate::EmbeddingPipeline::submit) and
//! what it gets back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use embeddings_types::ModelId;
use serde::{Deserialize, Serialize};

use crate::output::MultiEmbedding;

/// Which outputs a request wants.
///
/// - `slots`: `None` (default) means every loaded slot; `Some(list)` returns
///   only those slots. A listed slot that is not loaded (disabled or failed)
///   makes the request fail with
///   [`PipelineError::SlotUnavailable`](crate::PipelineError::SlotUnavailable).
/// - `fused` (default `true`): also return the fused vector, when fusion is
///   enabled in the configuration (when it is off, `fused()` is `None`).
/// - `deadline` (default none; not serialized): when the caller stops
///   waiting. A queued request past it is dropped, a computed one is
///   answered [`PipelineError::DeadlineExceeded`](crate::PipelineError::DeadlineExceeded)
///   and not cached; either is counted once as a `timeout`.
///
/// The fused vector always fuses **every** loaded slot, whatever `slots`
/// says, so a vector is comparable across requests; asking for it therefore
/// runs every slot. With `fused: false`, only the requested slots run: no
/// trunk forward pass when no transformer slot is requested, no per-token
/// head unless `late_interaction` is requested, no built-in slot unless
/// requested.
///
/// ```
/// use embeddings_pipeline::{EmbedOptions, ModelId};
/// let o = EmbedOptions::only([ModelId::Semantic]);
/// assert_eq!(o.slots, Some(vec![ModelId::Semantic]));
/// assert!(!o.fused);
/// assert!(EmbedOptions::default().fused);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedOptions {
    /// The slots to return; `None`: every loaded slot.
    pub slots: Option<Vec<ModelId>>,
    /// Return the fused vector (when fusion is enabled).
    pub fused: bool,
    /// When the caller stops waiting (see above).
    #[serde(skip)]
    pub deadline: Option<Instant>,
    /// Which end of an input longer than a model takes is cut (under
    /// `[input] truncation = "truncate"`). Default: the end.
    pub truncation_direction: TruncationDirection,
    /// The caller's id for this request (the server's `x-request-id`): kept
    /// as the OpenMetrics exemplar of the latency bucket its inputs land in,
    /// so a slow bucket leads to the request's log lines. Not part of the
    /// cache key; does not change the answer.
    #[serde(skip)]
    pub request_id: Option<Arc<str>>,
}

/// Which end of a too-long input is cut; the names are those of Hugging
/// Face's tokenizers and Text Embeddings Inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationDirection {
    /// Cut the end: keep the first tokens (what sentence-transformers does).
    #[default]
    Right,
    /// Cut the start: keep the last tokens.
    Left,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            slots: None,
            fused: true,
            deadline: None,
            truncation_direction: TruncationDirection::Right,
            request_id: None,
        }
    }
}

impl EmbedOptions {
    /// Only `slots`, without the fused vector (so only those slots run).
    #[must_use]
    pub fn only(slots: impl IntoIterator<Item = ModelId>) -> Self {
        Self {
            slots: Some(slots.into_iter().collect()),
            fused: false,
            deadline: None,
            truncation_direction: TruncationDirection::Right,
            request_id: None,
        }
    }

    /// Sets `deadline`.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets `request_id`.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets `truncation_direction`.
    #[must_use]
    pub fn with_truncation_direction(mut self, direction: TruncationDirection) -> Self {
        self.truncation_direction = direction;
        self
    }

    /// Sets `fused`.
    #[must_use]
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }
}

/// Where a request's time went. Suitable for `Server-Timing`-style headers.
///
/// The parts never overlap, so `queue_wait + tokenization + inference <=
/// total`; the rest is validation and cache lookups, and the wait for the
/// batch to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// From entering the queue until a worker took the request (zero when
    /// every item was a cache hit, and for the blocking calls).
    pub queue_wait: Duration,
    /// Tokenizing this request's cache misses.
    pub tokenization: Duration,
    /// Forward passes, heads, built-in slots and fusion of the batch the
    /// request ran in (shared with the requests batched with it).
    pub inference: Duration,
    /// From submission until the answer was ready.
    pub total: Duration,
}

/// The answer to [`submit`](crate::EmbeddingPipeline::submit): one
/// [`MultiEmbedding`] per input, in input order, holding only the requested
/// outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// One per input, in order.
    pub embeddings: Vec<MultiEmbedding>,
    /// Where the time went.
    pub timings: Timings,
}

/// A set of slots, one bit per [`ModelId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct SlotMask(u16);

impl SlotMask {
    pub(crate) const fn empty() -> Self {
        Self(0)
    }

    pub(crate) fn from_fn(mut f: impl FnMut(ModelId) -> bool) -> Self {
        let mut m = Self::empty();
        for id in ModelId::ALL {
            if f(id) {
                m.insert(id);
            }
        }
        m
    }

    pub(crate) fn insert(&mut self, id: ModelId) {
        self.0 |= 1 << id.index();
    }

    pub(crate) const fn contains(self, id: ModelId) -> bool {
        self.0 & (1 << id.index()) != 0
    }

    pub(crate) const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub(crate) const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) const fn bits(self) -> u16 {
        self.0
    }
}

/// Options resolved against the loaded slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Resolved {
    /// Slots returned to the caller.
    pub(crate) returned: SlotMask,
    /// Return the fused vector.
    pub(crate) fused: bool,
    /// Slots that must run (`returned`, or every loaded slot when fusing).
    pub(crate) run: SlotMask,
    /// Which end of a too-long input is cut.
    pub(crate) direction: TruncationDirection,
}
