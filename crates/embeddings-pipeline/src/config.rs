//! Serde configuration types, loaded from TOML and validated.
//!
//! Every table rejects unknown keys, so a typo is an error rather than a
//! silently ignored setting. See the crate documentation for a full example.
//!
//! # Size
//! ~700 lines: one struct per TOML table with its defaults and docs, and
//! the one range check over all of them (`check_ranges`), which must see
//! every table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use embeddings_health::HealthPolicySpec;
use embeddings_types::ModelId;
use serde::{Deserialize, Serialize};

use crate::error::LoadError;

/// The name of the model every transformer slot is bound to unless configured
/// otherwise.
pub const DEFAULT_MODEL: &str = "default";
/// The folder (under the models directory) of the default model.
pub const DEFAULT_MODEL_DIR: &str = "all-MiniLM-L6-v2";

/// Default [`PipelineConfig::max_forward_tokens`].
pub const DEFAULT_MAX_FORWARD_TOKENS: usize = 1536;

/// The whole pipeline configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Base folder for relative model paths. When unset: the builder's
    /// `models_dir`, else `$EMBEDDINGS_MODELS_DIR`, else `./models`.
    pub models_dir: Option<PathBuf>,
    /// Inputs are processed in chunks of at most this many items (after
    /// sorting by length); bounds peak memory for huge batches. Default 32.
    pub max_batch_size: usize,
    /// A chunk also holds at most this many *padded* tokens (items × the
    /// chunk's longest input, special tokens included); an input longer than
    /// that is a chunk on its own. Keeping each forward pass's activations
    /// small keeps them in cache and out of fresh page-faulted memory, which
    /// is faster than one huge pass (see `BENCHMARKS.md`). Default 1536.
    pub max_forward_tokens: usize,
    /// Where tensors live.
    pub device: DeviceKind,
    /// Input policies.
    pub input: InputConfig,
    /// Named checkpoints. `default` is added (pointing at
    /// `all-MiniLM-L6-v2` under the models directory) when absent.
    pub models: BTreeMap<String, ModelSource>,
    /// Per-slot bindings. Slots not listed are enabled with their defaults.
    pub slots: BTreeMap<ModelId, SlotConfig>,
    /// The model whose `tokenizer.json` the `Sparse` and `Hdc` slots use.
    pub builtin_tokenizer: String,
    /// Temporal slots.
    pub temporal: TemporalConfig,
    /// The `Hdc` slot.
    pub hdc: HdcConfig,
    /// The `LateInteraction` slot's head.
    pub late_interaction: LateInteractionConfig,
    /// The fusion step (fusemoe).
    pub fusion: FusionConfig,
    /// The submission queue and dynamic batching of
    /// [`submit`](crate::EmbeddingPipeline::submit).
    pub batching: BatchingConfig,
    /// The embedding cache.
    pub cache: CacheConfig,
    /// Health thresholds used by [`health`](crate::EmbeddingPipeline::health)
    /// (the `embeddings-health` policy; defaults are the spec's: 10 of 12
    /// slots, GPU memory below 90 %, fewer than 10 errors a minute).
    pub health: HealthPolicySpec,
    /// The output-drift monitor.
    pub quality: QualityConfig,
    /// Run one short input through every loaded slot at build time, so the
    /// first request does not pay for lazy initialisation and
    /// [`is_warmed_up`](crate::EmbeddingPipeline::is_warmed_up) is true once
    /// `build` returns. Default `true`.
    pub warm_up: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            models_dir: None,
            max_batch_size: 32,
            max_forward_tokens: DEFAULT_MAX_FORWARD_TOKENS,
            device: DeviceKind::Cpu,
            input: InputConfig::default(),
            models: BTreeMap::new(),
            slots: BTreeMap::new(),
            builtin_tokenizer: DEFAULT_MODEL.to_owned(),
            temporal: TemporalConfig::default(),
            hdc: HdcConfig::default(),
            late_interaction: LateInteractionConfig::default(),
            fusion: FusionConfig::default(),
            batching: BatchingConfig::default(),
            cache: CacheConfig::default(),
            health: HealthPolicySpec::default(),
            quality: QualityConfig::default(),
            warm_up: true,
        }
    }
}

/// `[batching]`: the bounded submission queue and the dynamic batching of
/// its workers.
///
/// A worker takes the first queued request, then keeps taking requests
/// until the batch holds `max_batch_size` items or `max_batch_tokens`
/// tokens, or `max_wait_ms` has passed since it took the first one; then it
/// runs the batch (in chunks of the top-level `max_batch_size`). A single
/// request larger than the limits is one batch on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Requests (not items) that may wait in the queue; a submission to a
    /// full queue fails at once with `PipelineError::Overloaded`. Default 256.
    pub queue_capacity: usize,
    /// Items a worker gathers into one batch. Default: the top-level
    /// `max_batch_size` (32).
    pub max_batch_size: Option<usize>,
    /// Tokens (the transformer's, special tokens included, before padding) a
    /// worker gathers into one batch. Default 8192 (32 × 256).
    pub max_batch_tokens: usize,
    /// How long a worker waits for more requests after taking the first
    /// one, in milliseconds. 0 (the default): take only what is already
    /// queued — requests that arrive while a batch computes form the next
    /// one, so batches still grow under load, and a lone request never
    /// waits. A 5 ms window measured 11.1 ms p50 for one short sentence at
    /// concurrency 1 against 6.1 ms with 0, and 184 against 284 requests/s
    /// at concurrency 4 (`BENCHMARKS.md`, "CPU against ONNX Runtime").
    pub max_wait_ms: u64,
    /// Worker threads running inference. Default 1: candle already spreads
    /// one forward pass over every core, so more workers mostly add
    /// contention on a CPU; on a GPU, 2 can overlap tokenization with
    /// inference.
    pub workers: usize,
    /// Admission by work: the most tokens admitted and not yet answered
    /// (queued and computing together). Each input to compute costs an upper
    /// bound of its tokens, known before tokenizing: its UTF-8 bytes + 2,
    /// at most the longest `max_seq_length` of the checkpoints it runs
    /// through. A request that would overflow the budget is refused at once
    /// with [`PipelineError::OverBudget`](crate::PipelineError::OverBudget)
    /// (a retry delay from the measured drain rate); one that costs more
    /// than the whole budget with
    /// [`PipelineError::RequestTooLarge`](crate::PipelineError::RequestTooLarge).
    /// Default 262 144 (32 full batches of the default `max_batch_tokens`).
    pub token_budget: usize,
    /// The most output floats one submitted request may produce (inputs ×
    /// the floats each returns, an upper bound known before any work:
    /// per-token and sparse outputs counted at their longest for the
    /// input's length); more is
    /// [`PipelineError::ResponseTooLarge`](crate::PipelineError::ResponseTooLarge).
    /// Default 8 388 608 (32 MiB of `f32`, about 90 MB as JSON: 64 long
    /// inputs through every slot, per-token vectors included, fit; 256 do
    /// not).
    pub max_response_floats: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            max_batch_size: None,
            max_batch_tokens: 8192,
            max_wait_ms: 0,
            workers: 1,
            token_budget: DEFAULT_TOKEN_BUDGET,
            max_response_floats: DEFAULT_MAX_RESPONSE_FLOATS,
        }
    }
}

/// The default `[batching] token_budget`.
pub const DEFAULT_TOKEN_BUDGET: usize = 1 << 18;
/// The default `[batching] max_response_floats`.
pub const DEFAULT_MAX_RESPONSE_FLOATS: usize = 1 << 23;
/// Upper bound of `batching.token_budget`.
pub const MAX_TOKEN_BUDGET: usize = 1 << 30;
/// Upper bound of `batching.max_response_floats`.
pub const MAX_RESPONSE_FLOATS: usize = 1 << 30;

/// `[quality]`: the output-drift monitor (see `EmbeddingPipeline::drift_report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Vectors in each window, per dense slot: the reference window is the
    /// first `drift_window` computed outputs after start, the recent window
    /// the last `drift_window`. The memory bound is two windows of shared
    /// vector handles per slot (each distinct vector stored once: at the
    /// default, 512 MiniLM vectors are 0.75 MiB). Default 256; 16..=4096.
    pub drift_window: usize,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self { drift_window: 256 }
    }
}

/// `[cache]`: the content-addressed embedding cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound of the cache's memory, in bytes (each entry weighed by
    /// its real heap size). 0 disables the cache. Default 128 MiB.
    pub max_bytes: u64,
}

/// The default `[cache] max_bytes`: 128 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Which device runs the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The CPU (default).
    #[default]
    Cpu,
    /// CUDA device 0; needs the `cuda` feature and a CUDA driver.
    Cuda,
}

/// What to do with inputs the models cannot take as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Texts longer than a model's `max_seq_length`.
    pub truncation: TruncationPolicy,
    /// Empty or whitespace-only texts.
    pub empty_text: EmptyTextPolicy,
}

/// Texts longer than a model's `max_seq_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationPolicy {
    /// Keep the first `max_seq_length` tokens (special tokens included), as
    /// sentence-transformers does. `MultiEmbedding::truncated` says it happened.
    #[default]
    Truncate,
    /// Reject the item with [`InputError::TooLong`](crate::InputError::TooLong).
    Reject,
}

/// Empty or whitespace-only texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyTextPolicy {
    /// Embed it like sentence-transformers does (`[CLS] [SEP]` only).
    #[default]
    Embed,
    /// Reject the item with [`InputError::EmptyText`](crate::InputError::EmptyText).
    Reject,
}

/// Where a checkpoint lives: exactly one of `path` and `hf_repo`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSource {
    /// A Hugging Face-layout folder; relative paths are resolved against the
    /// models directory.
    pub path: Option<PathBuf>,
    /// `ORG/NAME` in a Hugging Face cache
    /// (`$HF_HOME/hub/models--ORG--NAME/snapshots/<rev>/`).
    pub hf_repo: Option<String>,
    /// A branch/tag name under `refs/` or a snapshot commit hash. Default:
    /// `refs/main`, else the only snapshot.
    pub revision: Option<String>,
    /// The cache root; default `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`,
    /// else `~/.cache/huggingface`.
    pub hf_home: Option<PathBuf>,
    /// Overrides `sentence_bert_config.json`'s `max_seq_length`.
    pub max_seq_length: Option<usize>,
}

impl ModelSource {
    /// A plain local folder.
    #[must_use]
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// A repository in a Hugging Face cache.
    #[must_use]
    pub fn hf(repo: impl Into<String>, hf_home: Option<PathBuf>) -> Self {
        Self {
            hf_repo: Some(repo.into()),
            hf_home,
            ..Self::default()
        }
    }
}

/// How a dense transformer slot pools token vectors.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Follow the checkpoint's `1_Pooling/config.json` (mean when absent).
    #[default]
    Auto,
    /// Mask-aware mean of the token vectors.
    Mean,
    /// The first (`[CLS]`) token's vector.
    Cls,
}

/// One slot's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlotConfig {
    /// `false` switches the slot off: no output, no fusion input.
    pub enabled: bool,
    /// For transformer slots: the name of a `[models.*]` entry (default
    /// `default`). Built-in slots take no model.
    pub model: Option<String>,
    /// For pooled transformer slots (`semantic`, `code`, `graph`,
    /// `multimodal`, `entity`): the pooling.
    pub pooling: Pooling,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: None,
            pooling: Pooling::Auto,
        }
    }
}

/// Settings of the three temporal slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemporalConfig {
    /// The "now" that `TemporalRecent` measures ages against. When unset the
    /// pipeline takes the wall clock once, at build time (see
    /// `EmbeddingPipeline::reference_time`); set it for reproducible vectors.
    /// An input's own `reference_time` overrides it.
    pub reference_time: Option<DateTime<Utc>>,
    /// Half-lives of the `TemporalRecent` decay features, in hours.
    pub half_lives_hours: Vec<f64>,
    /// Harmonics per period (day, week, year) of `TemporalPeriodic`.
    pub periodic_harmonics: usize,
    /// Dimension of `TemporalPositional` (even).
    pub positional_dim: usize,
    /// Wavelength base of `TemporalPositional` (10 000 as in Vaswani et al.).
    pub positional_base: f64,
}

impl Default for TemporalConfig {
    fn default() -> Self {
        Self {
            reference_time: None,
            half_lives_hours: vec![1.0, 6.0, 24.0, 72.0, 168.0, 720.0, 2160.0, 8760.0],
            periodic_harmonics: 4,
            positional_dim: 64,
            positional_base: 10_000.0,
        }
    }
}

/// Settings of the hyperdimensional slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HdcConfig {
    /// Hypervector dimension (also the output dimension).
    pub dim: usize,
    /// Seed of the token hypervectors.
    pub seed: u64,
    /// Longest n-gram bound into the bundle (1 = bag of tokens).
    pub max_ngram: usize,
}

impl Default for HdcConfig {
    fn default() -> Self {
        Self {
            dim: 1024,
            seed: 0x4844_435F_5345_4544,
            max_ngram: 3,
        }
    }
}

/// Settings of the late-interaction head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LateInteractionConfig {
    /// Project each token vector to this many dimensions with a seeded
    /// Rademacher projection (ColBERT uses 128). `None` keeps the model's
    /// hidden size.
    pub project_dim: Option<usize>,
    /// Seed of the projection.
    pub seed: u64,
}

impl Default for LateInteractionConfig {
    fn default() -> Self {
        Self {
            project_dim: None,
            seed: 0x0043_4F4C_4245_5254,
        }
    }
}

/// Settings of the fusion step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionConfig {
    /// `false`: no fused vector is computed.
    pub enabled: bool,
    /// Output dimension.
    pub dim: usize,
    /// Seed of the Johnson–Lindenstrauss projection.
    pub seed: u64,
    /// How many slots the gate keeps per input (1..=12).
    pub top_k: usize,
    /// Static gate weights per slot (default 1.0 each), used without trained
    /// weights.
    pub weights: BTreeMap<ModelId, f32>,
    /// Width of the hashed dense view of the sparse slot fed to fusion.
    pub sparse_hash_dim: usize,
    /// Trained gate and projection in safetensors (`gate.weight` `[12, D_in]`,
    /// optional `gate.bias` `[12]`, `proj.weight` `[dim, D_in]`, optional
    /// `proj.bias` `[dim]`). Relative paths resolve against the models directory.
    pub trained_weights: Option<PathBuf>,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dim: 1536,
            seed: 0x0046_5553_454D_4F45,
            top_k: ModelId::COUNT,
            weights: BTreeMap::new(),
            sparse_hash_dim: 256,
            trained_weights: None,
        }
    }
}

/// The most worker threads `[batching] workers` accepts.
pub const MAX_WORKERS: usize = 64;
/// The longest `[batching] max_wait_ms` accepted (one second).
pub const MAX_WAIT_MS: u64 = 1000;
/// Upper bound of `max_batch_size` and `batching.max_batch_size` (items).
pub const MAX_ITEMS: usize = 4096;
/// Upper bound of `max_forward_tokens` and `batching.max_batch_tokens`.
pub const MAX_TOKENS: usize = 1 << 22;
/// Upper bound of `batching.queue_capacity` (requests).
pub const MAX_QUEUE: usize = 1 << 16;
/// Upper bound of `cache.max_bytes` (1 TiB).
pub const MAX_CACHE_BYTES: u64 = 1 << 40;
/// Upper bound of every configured vector width (`hdc.dim`, `fusion.dim`,
/// `fusion.sparse_hash_dim`, `late_interaction.project_dim`,
/// `temporal.positional_dim`).
pub const MAX_DIM: usize = 1 << 16;
/// Upper bound of a model's `max_seq_length` (tokens).
pub const MAX_SEQ: usize = 1 << 16;

/// Checks that setting `key` (`value`) lies in `range`: the one place a
/// numeric setting's range is checked, so every refusal names the key, the
/// value and the range.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), LoadError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(LoadError::OutOfRange {
            key: key.to_owned(),
            value: value.to_string(),
            min: range.start().to_string(),
            max: range.end().to_string(),
        })
    }
}

impl PipelineConfig {
    /// Items a worker gathers into one batch (`[batching] max_batch_size`,
    /// else the top-level `max_batch_size`).
    #[must_use]
    pub fn gather_limit(&self) -> usize {
        self.batching.max_batch_size.unwrap_or(self.max_batch_size)
    }
}

/// Whether a slot runs a transformer checkpoint or a built-in computation.
#[must_use]
pub const fn is_transformer_slot(id: ModelId) -> bool {
    !matches!(
        id,
        ModelId::TemporalRecent
            | ModelId::TemporalPeriodic
            | ModelId::TemporalPositional
            | ModelId::Hdc
            | ModelId::Sparse
    )
}

impl PipelineConfig {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// [`LoadError::Config`] with the parser's or validator's message.
    pub fn from_toml_str(text: &str) -> Result<Self, LoadError> {
        let config: Self = toml::from_str(text).map_err(|e| LoadError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    /// [`LoadError::Io`] when unreadable, [`LoadError::Config`] when invalid.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            LoadError::Config(m) => LoadError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The binding of `id` (the default binding when not listed).
    #[must_use]
    pub fn slot(&self, id: ModelId) -> SlotConfig {
        self.slots.get(&id).cloned().unwrap_or_default()
    }

    /// The model a transformer slot is bound to.
    #[must_use]
    pub fn slot_model(&self, id: ModelId) -> String {
        self.slot(id)
            .model
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned())
    }

    /// The model table with the implicit `default` entry added.
    #[must_use]
    pub fn models_with_default(&self) -> BTreeMap<String, ModelSource> {
        let mut models = self.models.clone();
        models
            .entry(DEFAULT_MODEL.to_owned())
            .or_insert_with(|| ModelSource::path(DEFAULT_MODEL_DIR));
        models
    }

    /// Every numeric setting against its documented range (the ranges are
    /// listed in the crate docs): wide enough for any real deployment,
    /// narrow enough that no product of them overflows or asks for an
    /// allocation that cannot succeed.
    fn check_ranges(&self) -> Result<(), LoadError> {
        let (t, b, f) = (&self.temporal, &self.batching, &self.fusion);
        in_range("max_batch_size", self.max_batch_size, 1..=MAX_ITEMS)?;
        in_range(
            "max_forward_tokens",
            self.max_forward_tokens,
            1..=MAX_TOKENS,
        )?;
        in_range("batching.queue_capacity", b.queue_capacity, 1..=MAX_QUEUE)?;
        if let Some(n) = b.max_batch_size {
            in_range("batching.max_batch_size", n, 1..=MAX_ITEMS)?;
        }
        in_range(
            "batching.max_batch_tokens",
            b.max_batch_tokens,
            1..=MAX_TOKENS,
        )?;
        in_range("batching.workers", b.workers, 1..=MAX_WORKERS)?;
        in_range("batching.max_wait_ms", b.max_wait_ms, 0..=MAX_WAIT_MS)?;
        in_range(
            "batching.token_budget",
            b.token_budget,
            1..=MAX_TOKEN_BUDGET,
        )?;
        in_range(
            "batching.max_response_floats",
            b.max_response_floats,
            1..=MAX_RESPONSE_FLOATS,
        )?;
        in_range("cache.max_bytes", self.cache.max_bytes, 0..=MAX_CACHE_BYTES)?;
        in_range("quality.drift_window", self.quality.drift_window, 16..=4096)?;
        in_range(
            "temporal.half_lives_hours (entries)",
            t.half_lives_hours.len(),
            1..=64,
        )?;
        in_range(
            "temporal.periodic_harmonics",
            t.periodic_harmonics,
            1..=1024,
        )?;
        in_range("temporal.positional_dim", t.positional_dim, 2..=MAX_DIM)?;
        in_range("hdc.dim", self.hdc.dim, 1..=MAX_DIM)?;
        in_range("hdc.max_ngram", self.hdc.max_ngram, 1..=8)?;
        if let Some(d) = self.late_interaction.project_dim {
            in_range("late_interaction.project_dim", d, 1..=MAX_DIM)?;
        }
        in_range("fusion.dim", f.dim, 1..=MAX_DIM)?;
        in_range("fusion.sparse_hash_dim", f.sparse_hash_dim, 1..=MAX_DIM)?;
        in_range("fusion.top_k", f.top_k, 1..=ModelId::COUNT)?;
        for (name, src) in self.models_with_default() {
            if let Some(n) = src.max_seq_length {
                in_range(&format!("models.{name}.max_seq_length"), n, 1..=MAX_SEQ)?;
            }
        }
        Ok(())
    }

    /// Checks every cross-field rule.
    ///
    /// # Errors
    /// [`LoadError::Config`] naming the first broken rule and its fix.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        self.check_ranges()?;
        let models = self.models_with_default();
        for (name, src) in &models {
            match (&src.path, &src.hf_repo) {
                (Some(_), Some(_)) | (None, None) => {
                    return bad(format!(
                        "model `{name}` needs exactly one of `path` and `hf_repo`"
                    ));
                }
                (None, Some(repo)) if repo.split('/').count() != 2 || repo.contains("..") => {
                    return bad(format!(
                        "model `{name}`: `hf_repo` must look like `ORG/NAME`, got `{repo}`"
                    ));
                }
                _ => {}
            }
        }
        for (id, slot) in &self.slots {
            if is_transformer_slot(*id) {
                if let Some(model) = &slot.model
                    && !models.contains_key(model)
                {
                    return bad(format!(
                        "slot `{id}` is bound to model `{model}`, which has no `[models.{model}]` table"
                    ));
                }
                if slot.pooling != Pooling::Auto
                    && matches!(id, ModelId::Causal | ModelId::LateInteraction)
                {
                    return bad(format!(
                        "slot `{id}` has a fixed head; remove its `pooling` setting"
                    ));
                }
            } else if slot.model.is_some() || slot.pooling != Pooling::Auto {
                return bad(format!(
                    "slot `{id}` is built-in: it takes no `model` or `pooling`, only `enabled`"
                ));
            }
        }
        let tokenizer_needed = [ModelId::Sparse, ModelId::Hdc]
            .iter()
            .any(|id| self.slot(*id).enabled);
        if tokenizer_needed && !models.contains_key(&self.builtin_tokenizer) {
            return bad(format!(
                "`builtin_tokenizer` names model `{}`, which has no `[models.*]` table",
                self.builtin_tokenizer
            ));
        }
        let t = &self.temporal;
        if t.half_lives_hours.is_empty()
            || t.half_lives_hours
                .iter()
                .any(|h| !h.is_finite() || *h <= 0.0)
        {
            return bad(
                "`temporal.half_lives_hours` must be a non-empty list of positive numbers".into(),
            );
        }
        if t.positional_dim == 0 || !t.positional_dim.is_multiple_of(2) {
            return bad("`temporal.positional_dim` must be a positive even number".into());
        }
        if !t.positional_base.is_finite() || t.positional_base <= 1.0 {
            return bad("`temporal.positional_base` must be a finite number above 1".into());
        }
        let f = &self.fusion;
        if let Some((id, w)) = f.weights.iter().find(|(_, w)| !w.is_finite() || **w < 0.0) {
            return bad(format!(
                "`fusion.weights.{id}` is {w}; weights must be finite and non-negative"
            ));
        }
        self.health
            .build()
            .map_err(|e| LoadError::Config(format!("[health]: {e}")))?;
        Ok(())
    }
}
