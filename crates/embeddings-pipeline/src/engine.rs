//! The loaded engine and what its stages share: the slot plans, the
//! runtime state the probes read, the per-input working state ([`Item`]),
//! option resolution, validation and the cache. Loading is in `load.rs`,
//! the stages in `run.rs`, a request's path through them in `request.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use chrono::{DateTime, Utc};
use embeddings_health::HealthPolicy;
use embeddings_metrics::PipelineMetrics;
use embeddings_types::ModelId;

use crate::cache_manager::{EmbeddingCache, Key};
use crate::config::{EmptyTextPolicy, PipelineConfig};
use crate::error::{InputError, PipelineError};
use crate::fusion::Fusion;
use crate::input::{EmbedInput, check_range};
use crate::options::{EmbedOptions, Resolved, SlotMask, TruncationDirection};
use crate::output::{MultiEmbedding, SlotOutput};
use crate::registry::{HeadKind, ModelRegistry, SlotState};
use crate::tokenize::TextTokenizer;
use crate::transformer::{Checkpoint, PooledHead};

/// Which head a transformer slot computes (the dedup key with the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SlotHead {
    Pooled(PooledHead),
    Causal,
    PerToken,
}

impl SlotHead {
    pub(crate) fn public(self) -> HeadKind {
        match self {
            Self::Pooled(PooledHead::Cls) => HeadKind::Cls,
            Self::Pooled(_) => HeadKind::Mean,
            Self::Causal => HeadKind::Causal,
            Self::PerToken => HeadKind::PerToken,
        }
    }
}

/// One checkpoint (or a tokenizer alone, for the built-in slots).
pub(crate) struct ModelEntry {
    pub(crate) name: String,
    pub(crate) tokenizer: Option<Arc<TextTokenizer>>,
    pub(crate) checkpoint: Option<Checkpoint>,
}

/// One loaded checkpoint and the slots it serves.
pub(crate) struct Plan {
    pub(crate) model: usize,
    /// Distinct pooled heads, computed with one matmul.
    pub(crate) pooled: Vec<PooledHead>,
    pub(crate) per_token: bool,
    pub(crate) slots: Vec<(ModelId, SlotHead)>,
}

/// Liveness and progress figures, written by workers and read by `health`.
#[derive(Debug)]
pub(crate) struct RuntimeState {
    pub(crate) warmed_up: AtomicBool,
    /// µs since the Unix epoch; `i64::MIN` = never.
    last_embed_us: AtomicI64,
    last_progress_us: AtomicI64,
    pub(crate) started: Instant,
}

impl RuntimeState {
    pub(crate) fn new() -> Self {
        Self {
            warmed_up: AtomicBool::new(false),
            last_embed_us: AtomicI64::new(i64::MIN),
            last_progress_us: AtomicI64::new(i64::MIN),
            started: Instant::now(),
        }
    }

    pub(crate) fn embedded_now(&self) {
        self.last_embed_us
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    pub(crate) fn progress_now(&self) {
        self.last_progress_us
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    fn read(cell: &AtomicI64) -> Option<DateTime<Utc>> {
        match cell.load(Ordering::Relaxed) {
            i64::MIN => None,
            us => DateTime::from_timestamp_micros(us),
        }
    }

    pub(crate) fn last_embed(&self) -> Option<DateTime<Utc>> {
        Self::read(&self.last_embed_us)
    }

    pub(crate) fn last_progress(&self) -> Option<DateTime<Utc>> {
        Self::read(&self.last_progress_us)
    }
}

/// Everything loaded, shared (`Arc`) by the public handle and the workers.
pub(crate) struct Engine {
    pub(crate) config: PipelineConfig,
    pub(crate) device: Device,
    pub(crate) models: Vec<ModelEntry>,
    pub(crate) plans: Vec<Plan>,
    pub(crate) builtin_tokenizer: Option<usize>,
    pub(crate) builtins: [bool; ModelId::COUNT],
    pub(crate) li_projection: Option<Tensor>,
    pub(crate) fusion: Option<Fusion>,
    pub(crate) registry: ModelRegistry,
    pub(crate) reference_time: DateTime<Utc>,
    pub(crate) half_lives_s: Vec<f64>,
    /// Slots loaded.
    pub(crate) loaded: SlotMask,
    pub(crate) metrics: Arc<PipelineMetrics>,
    pub(crate) record: bool,
    pub(crate) cache: Option<EmbeddingCache>,
    pub(crate) health_policy: HealthPolicy,
    /// The output-drift monitor, fed by each request's computed outputs.
    pub(crate) drift: crate::drift::DriftMonitor,
    pub(crate) state: RuntimeState,
    /// Test builds only: makes every forward pass fail, to test how a real
    /// inference failure is counted.
    #[cfg(test)]
    pub(crate) fail_forward: AtomicBool,
}

pub(crate) fn default_models_dir() -> PathBuf {
    std::env::var_os("EMBEDDINGS_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// One input on its way through the stages: what it is (text, times,
/// position, cache key), what was made of it (token ids, outputs), and when
/// it was done. It carries everything its later stages need, so no stage
/// keeps arrays parallel to the items.
pub(crate) struct Item {
    /// Position of the input in the caller's request.
    pub(crate) index: usize,
    pub(crate) text: String,
    /// Its cache key (`None`: cache off, or the item is invalid).
    pub(crate) key: Option<Key>,
    pub(crate) error: Option<PipelineError>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) position: u64,
    /// Model input ids per plan (empty for plans that do not run).
    pub(crate) ids: Vec<Vec<u32>>,
    pub(crate) truncated: bool,
    /// Content ids for the built-in tokenizer.
    pub(crate) builtin_ids: Vec<u32>,
    pub(crate) out: [Option<SlotOutput>; ModelId::COUNT],
    /// Per pooled slot: its vector's length before normalisation.
    pub(crate) norms: [Option<f32>; ModelId::COUNT],
    pub(crate) fused: Option<Vec<f32>>,
    /// When the chunk that computed it ended.
    pub(crate) done_at: Option<Instant>,
}

impl Item {
    /// Tokens of the first transformer that ran (0 when none did).
    pub(crate) fn primary_len(&self) -> usize {
        self.ids.iter().find(|v| !v.is_empty()).map_or(0, Vec::len)
    }
}

impl Engine {
    /// The recorder, when recording is on.
    pub(crate) fn rec(&self) -> Option<&PipelineMetrics> {
        self.record.then_some(&*self.metrics)
    }

    /// Resolves caller options against the loaded slots.
    pub(crate) fn resolve(&self, options: &EmbedOptions) -> Result<Resolved, PipelineError> {
        let returned = match &options.slots {
            None => self.loaded,
            Some(list) => {
                let mut mask = SlotMask::empty();
                for &id in list {
                    if !self.loaded.contains(id) {
                        let reason = match &self.registry.slot(id).state {
                            SlotState::Failed(e) => format!("it failed to load: {e}"),
                            _ => format!("it is disabled in the configuration (`[slots.{id}]`)"),
                        };
                        return Err(PipelineError::SlotUnavailable { slot: id, reason });
                    }
                    mask.insert(id);
                }
                mask
            }
        };
        let fused = options.fused && self.fusion.is_some();
        if returned.is_empty() && !fused {
            return Err(PipelineError::NothingRequested);
        }
        let run = if fused { self.loaded } else { returned };
        Ok(Resolved {
            returned,
            fused,
            run,
            direction: options.truncation_direction,
        })
    }

    /// The options `embed` uses: every loaded slot, fused when fusion is on.
    pub(crate) fn resolve_all(&self) -> Resolved {
        let fused = self.fusion.is_some();
        Resolved {
            returned: self.loaded,
            fused,
            run: self.loaded,
            direction: TruncationDirection::Right,
        }
    }

    /// Validates one input (no tokenization yet); a valid one gets its
    /// cache key for `r`.
    pub(crate) fn prepare(&self, index: usize, input: EmbedInput, r: &Resolved) -> Item {
        let now = input.reference_time.unwrap_or(self.reference_time);
        let mut item = Item {
            index,
            text: String::new(),
            key: None,
            error: None,
            now,
            timestamp: input.timestamp.unwrap_or(now),
            position: input.position.unwrap_or(0),
            ids: Vec::new(),
            truncated: false,
            builtin_ids: Vec::new(),
            out: Default::default(),
            norms: [None; ModelId::COUNT],
            fused: None,
            done_at: None,
        };
        let reject = |reason| PipelineError::InvalidInput { index, reason };
        if let Err(e) = check_range(item.now).and(check_range(item.timestamp)) {
            item.error = Some(reject(e));
        } else if self.config.input.empty_text == EmptyTextPolicy::Reject
            && input.text.trim().is_empty()
        {
            item.error = Some(reject(InputError::EmptyText));
        }
        if item.error.is_none()
            && let Some(cache) = &self.cache
        {
            item.key = Some(cache.key(&input.text, item.timestamp, item.now, item.position, r));
        }
        item.text = input.text;
        item
    }

    /// Looks `key` up, counting the hit or miss (the one place cache lookups
    /// are counted).
    pub(crate) fn cache_get(&self, key: Option<Key>) -> Option<MultiEmbedding> {
        let (cache, key) = (self.cache.as_ref()?, key?);
        let hit = cache.get(key);
        if let Some(m) = self.rec() {
            if hit.is_some() {
                m.record_cache_hit();
            } else {
                m.record_cache_miss();
            }
        }
        hit
    }

    /// Stores computed outputs and updates the size gauges.
    pub(crate) fn cache_put(&self, entries: impl IntoIterator<Item = (Key, MultiEmbedding)>) {
        let Some(cache) = &self.cache else {
            return;
        };
        for (key, value) in entries {
            cache.insert(key, value);
        }
        if let Some(m) = self.rec() {
            m.set_cache_size(cache.bytes(), cache.len() as u64);
        }
    }

    /// The tokenizer `slot` reads its input with, and the longest input (in
    /// tokens, special tokens included) its checkpoint takes (`None` for the
    /// built-in slots, which take any length); `None` when the slot is not
    /// loaded or reads no tokens (the temporal slots).
    pub(crate) fn tokenizer_of(&self, slot: ModelId) -> Option<(&TextTokenizer, Option<usize>)> {
        if !self.loaded.contains(slot) {
            return None;
        }
        if let Some(plan) = self
            .plans
            .iter()
            .find(|p| p.slots.iter().any(|(id, _)| *id == slot))
        {
            let entry = self.models.get(plan.model)?;
            let max_len = entry.checkpoint.as_ref().map(|c| c.max_len);
            return entry.tokenizer.as_deref().map(|t| (t, max_len));
        }
        if matches!(slot, ModelId::Sparse | ModelId::Hdc) {
            let entry = self.models.get(self.builtin_tokenizer?)?;
            return entry.tokenizer.as_deref().map(|t| (t, None));
        }
        None
    }

    /// Whether a plan serves any slot in `run`.
    pub(crate) fn plan_runs(plan: &Plan, run: SlotMask) -> bool {
        plan.slots.iter().any(|(id, _)| run.contains(*id))
    }

    /// Counts a refused request or input once, by its kind, and hands the
    /// error back: the one place a failure decided outside the computation
    /// is recorded (a failed computation is counted where it fails).
    pub(crate) fn reject(&self, e: PipelineError) -> PipelineError {
        if let Some(m) = self.rec() {
            m.record_failure(e.kind(), &[]);
        }
        e
    }

    /// One warm-up pass through every loaded slot, not recorded or cached.
    pub(crate) fn warm_up(&self) -> Result<(), PipelineError> {
        let r = self.resolve_all();
        let mut items = vec![self.prepare(0, EmbedInput::new("warm-up"), &r)];
        self.tokenize(&mut items, r.run, r.direction, None);
        if let Some(e) = items.iter().find_map(|it| it.error.clone()) {
            return Err(e);
        }
        self.compute(&mut items, r.run, r.fused, None)
    }
}
