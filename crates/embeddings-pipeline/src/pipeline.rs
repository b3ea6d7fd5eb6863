//! The builder and the engine: loading, tokenization, inference, fusion
//! and their instrumentation. The public face is in `api.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use chrono::{DateTime, Utc};
use embeddings_health::{HealthPolicy, HealthPolicySpec};
use embeddings_metrics::PipelineMetrics;
use embeddings_types::{ErrorKind, ModelId, Stage};

use crate::api::EmbeddingPipeline;
use crate::builtin;
use crate::cache_manager::{self, EmbeddingCache, Key};
use crate::config::{
    BatchingConfig, DeviceKind, EmptyTextPolicy, ModelSource, PipelineConfig, Pooling, SlotConfig,
    TruncationPolicy, is_transformer_slot,
};
use crate::device;
use crate::error::{InputError, PipelineError};
use crate::fusion::Fusion;
use crate::input::{EmbedInput, check_range, unix_seconds};
use crate::options::{EmbedOptions, Resolved, SlotMask};
use crate::output::{CausalPair, MultiEmbedding, SlotOutput, TokenVectors};
use crate::registry::{
    Backend, FusionReport, HeadKind, ModelRegistry, ModelReport, SlotReport, SlotState,
};
use crate::rng;
use crate::source;
use crate::tokenize::{TextTokenizer, Tokens};
use crate::transformer::{self, Checkpoint, PooledHead};

/// Builds an [`EmbeddingPipeline`]. Start with [`EmbeddingPipeline::builder`].
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    config: PipelineConfig,
    config_file: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    strict: bool,
    metrics: Option<Arc<PipelineMetrics>>,
    record: bool,
    paused: bool,
    batching: Option<BatchingConfig>,
    cache_bytes: Option<u64>,
    health: Option<HealthPolicySpec>,
    warm_up: Option<bool>,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self {
            config: PipelineConfig::default(),
            config_file: None,
            models_dir: None,
            strict: false,
            metrics: None,
            record: true,
            paused: false,
            batching: None,
            cache_bytes: None,
            health: None,
            warm_up: None,
        }
    }
}

impl PipelineBuilder {
    /// Replaces the whole configuration.
    #[must_use]
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads the configuration from a TOML file at build time (replacing any
    /// earlier `config`; later builder calls still apply on top).
    #[must_use]
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// The folder relative model paths resolve against (overrides the
    /// configuration's `models_dir`).
    #[must_use]
    pub fn models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = Some(dir.into());
        self
    }

    /// CPU or CUDA.
    #[must_use]
    pub fn device(mut self, kind: DeviceKind) -> Self {
        self.config.device = kind;
        self
    }

    /// Fail `build` when any enabled slot fails to load (default: the slot is
    /// reported as failed in [`EmbeddingPipeline::describe`] and the others run).
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Adds or replaces a named checkpoint.
    #[must_use]
    pub fn model(mut self, name: impl Into<String>, source: ModelSource) -> Self {
        self.config.models.insert(name.into(), source);
        self
    }

    /// Binds a transformer slot to a named checkpoint.
    #[must_use]
    pub fn bind(mut self, slot: ModelId, model: impl Into<String>) -> Self {
        self.config.slots.entry(slot).or_default().model = Some(model.into());
        self
    }

    /// Switches a slot on or off.
    #[must_use]
    pub fn enable(mut self, slot: ModelId, enabled: bool) -> Self {
        self.config.slots.entry(slot).or_default().enabled = enabled;
        self
    }

    /// Keeps only `slots` enabled.
    #[must_use]
    pub fn only(mut self, slots: &[ModelId]) -> Self {
        for id in ModelId::ALL {
            self.config.slots.entry(id).or_default().enabled = slots.contains(&id);
        }
        self
    }

    /// Sets the reference "now" of the temporal slots.
    #[must_use]
    pub fn reference_time(mut self, now: DateTime<Utc>) -> Self {
        self.config.temporal.reference_time = Some(now);
        self
    }

    /// The recorder to write into (default: a fresh [`PipelineMetrics`]);
    /// share one with the server that exposes it.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<PipelineMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// `false` switches recording off entirely (every `record_*` call is
    /// skipped), to measure the instrumentation's overhead. Default `true`.
    #[must_use]
    pub fn record_metrics(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Overrides `[batching]` (applied after `config_file`).
    #[must_use]
    pub fn batching(mut self, batching: BatchingConfig) -> Self {
        self.batching = Some(batching);
        self
    }

    /// Overrides `[cache] max_bytes` (0 disables the cache; applied after
    /// `config_file`).
    #[must_use]
    pub fn cache_max_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = Some(bytes);
        self
    }

    /// Overrides `[health]` (applied after `config_file`).
    #[must_use]
    pub fn health_policy(mut self, spec: HealthPolicySpec) -> Self {
        self.health = Some(spec);
        self
    }

    /// Overrides `warm_up` (applied after `config_file`).
    #[must_use]
    pub fn warm_up(mut self, warm_up: bool) -> Self {
        self.warm_up = Some(warm_up);
        self
    }

    /// Builds with the batch workers not yet started: submissions queue up
    /// (and a full queue still refuses them) until
    /// [`EmbeddingPipeline::start_workers`]. Useful to warm caches or to
    /// test the queue deterministically. The blocking `embed` calls are not
    /// affected. Default `false`.
    #[must_use]
    pub fn start_paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Loads every enabled slot.
    ///
    /// # Errors
    /// - [`PipelineError::Config`] / [`PipelineError::Io`]: invalid configuration.
    /// - [`PipelineError::DeviceUnavailable`]: the device cannot be opened.
    /// - [`PipelineError::SlotFailed`]: in strict mode, the first failed slot.
    /// - [`PipelineError::NoSlotLoaded`]: every enabled slot failed.
    /// - [`PipelineError::Fusion`] / [`PipelineError::CorruptWeights`]: bad
    ///   trained fusion weights.
    pub fn build(self) -> Result<EmbeddingPipeline, PipelineError> {
        let mut config = self.config;
        if let Some(path) = &self.config_file {
            let file = PipelineConfig::from_file(path)?;
            config = file;
        }
        if let Some(dir) = self.models_dir {
            config.models_dir = Some(dir);
        }
        if let Some(b) = self.batching {
            config.batching = b;
        }
        if let Some(bytes) = self.cache_bytes {
            config.cache.max_bytes = bytes;
        }
        if let Some(h) = self.health {
            config.health = h;
        }
        if let Some(w) = self.warm_up {
            config.warm_up = w;
        }
        config.validate()?;
        let metrics = self
            .metrics
            .unwrap_or_else(|| Arc::new(PipelineMetrics::new()));
        let engine = Engine::load(config, self.strict, metrics, self.record)?;
        if engine.config.warm_up {
            // A failed warm-up is not fatal: `is_warmed_up` stays false, so
            // readiness reports it, and the first request shows the error.
            let _ = engine.warm_up();
        }
        Ok(EmbeddingPipeline::start(Arc::new(engine), self.paused))
    }
}

/// Which head a transformer slot computes (the dedup key with the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SlotHead {
    Pooled(PooledHead),
    Causal,
    PerToken,
}

impl SlotHead {
    fn public(self) -> HeadKind {
        match self {
            Self::Pooled(PooledHead::Cls) => HeadKind::Cls,
            Self::Pooled(_) => HeadKind::Mean,
            Self::Causal => HeadKind::Causal,
            Self::PerToken => HeadKind::PerToken,
        }
    }
}

pub(crate) struct ModelEntry {
    name: String,
    tokenizer: Option<Arc<TextTokenizer>>,
    checkpoint: Option<Checkpoint>,
}

/// One loaded checkpoint and the slots it serves.
pub(crate) struct Plan {
    model: usize,
    /// Distinct pooled heads, computed with one matmul.
    pooled: Vec<PooledHead>,
    per_token: bool,
    slots: Vec<(ModelId, SlotHead)>,
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
    fn new() -> Self {
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
    models: Vec<ModelEntry>,
    plans: Vec<Plan>,
    builtin_tokenizer: Option<usize>,
    builtins: [bool; ModelId::COUNT],
    li_projection: Option<Tensor>,
    pub(crate) fusion: Option<Fusion>,
    pub(crate) registry: ModelRegistry,
    pub(crate) reference_time: DateTime<Utc>,
    half_lives_s: Vec<f64>,
    /// Slots loaded.
    pub(crate) loaded: SlotMask,
    pub(crate) metrics: Arc<PipelineMetrics>,
    record: bool,
    pub(crate) cache: Option<EmbeddingCache>,
    pub(crate) health_policy: HealthPolicy,
    pub(crate) state: RuntimeState,
}

fn default_models_dir() -> PathBuf {
    std::env::var_os("EMBEDDINGS_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// Per-item working state.
pub(crate) struct Item {
    /// Position of the input in the caller's request.
    pub(crate) index: usize,
    pub(crate) error: Option<PipelineError>,
    now: DateTime<Utc>,
    timestamp: DateTime<Utc>,
    position: u64,
    /// Model input ids per plan (empty for plans that do not run).
    ids: Vec<Vec<u32>>,
    truncated: bool,
    /// Content ids for the built-in tokenizer.
    builtin_ids: Vec<u32>,
    out: [Option<SlotOutput>; ModelId::COUNT],
    fused: Option<Vec<f32>>,
}

impl Item {
    /// Tokens of the first transformer that ran (0 when none did).
    fn primary_len(&self) -> usize {
        self.ids.iter().find(|v| !v.is_empty()).map_or(0, Vec::len)
    }
}

impl Engine {
    fn load(
        config: PipelineConfig,
        strict: bool,
        metrics: Arc<PipelineMetrics>,
        record: bool,
    ) -> Result<Self, PipelineError> {
        let device = device::open(config.device)?;
        let models_dir = config.models_dir.clone().unwrap_or_else(default_models_dir);
        let sources = config.models_with_default();
        let slot_cfg: Vec<SlotConfig> = ModelId::ALL.iter().map(|id| config.slot(*id)).collect();
        let enabled = |id: ModelId| slot_cfg[id.index()].enabled;
        let needs_tokenizer = enabled(ModelId::Sparse) || enabled(ModelId::Hdc);

        // Which models are needed, and whether for weights or only the tokenizer.
        let mut needed: BTreeMap<String, bool> = BTreeMap::new();
        for id in ModelId::ALL {
            if is_transformer_slot(id) && enabled(id) {
                needed.insert(config.slot_model(id), true);
            }
        }
        if needs_tokenizer {
            needed
                .entry(config.builtin_tokenizer.clone())
                .or_insert(false);
        }

        let mut models = Vec::new();
        let mut model_errors: BTreeMap<String, PipelineError> = BTreeMap::new();
        let mut model_reports = Vec::new();
        for (name, with_weights) in &needed {
            let Some(src) = sources.get(name) else {
                continue; // unreachable after validate()
            };
            let dir = source::resolve(name, src, &models_dir);
            let loaded = dir.clone().and_then(|dir| {
                let tok = TextTokenizer::load(&transformer::tokenizer_path(name, &dir)?)?;
                let ckpt = if *with_weights {
                    let ckpt = Checkpoint::load(name, &dir, src, &device)?;
                    if tok.vocab_size() > ckpt.vocab_size {
                        return Err(PipelineError::BadModelConfig {
                            path: dir.join("config.json"),
                            reason: format!(
                                "the tokenizer has {} tokens but vocab_size is {}",
                                tok.vocab_size(),
                                ckpt.vocab_size
                            ),
                        });
                    }
                    Some(ckpt)
                } else {
                    None
                };
                Ok((tok, ckpt))
            });
            let mut report = ModelReport {
                name: name.clone(),
                dir: dir.ok(),
                error: None,
                hidden: None,
                max_seq_length: None,
                weight_bytes: 0,
                used_by: Vec::new(),
            };
            match loaded {
                Ok((tok, ckpt)) => {
                    report.hidden = ckpt.as_ref().map(|c| c.hidden);
                    report.max_seq_length = ckpt.as_ref().map(|c| c.max_len);
                    report.weight_bytes = ckpt.as_ref().map_or(0, |c| c.weight_bytes);
                    models.push(ModelEntry {
                        name: name.clone(),
                        tokenizer: Some(Arc::new(tok)),
                        checkpoint: ckpt,
                    });
                }
                Err(e) => {
                    report.error = Some(e.clone());
                    model_errors.insert(name.clone(), e);
                }
            }
            model_reports.push(report);
        }
        let model_index = |name: &str| models.iter().position(|m| m.name == name);

        // Plans: one per loaded checkpoint.
        let mut plans: Vec<Plan> = Vec::new();
        let mut slot_reports = Vec::with_capacity(ModelId::COUNT);
        let mut slot_keys: Vec<Option<(usize, SlotHead)>> = vec![None; ModelId::COUNT];
        let builtin_tokenizer = if needs_tokenizer {
            model_index(&config.builtin_tokenizer)
        } else {
            None
        };
        let mut builtins = [false; ModelId::COUNT];
        let li_dim_cfg = config.late_interaction.project_dim;
        for id in ModelId::ALL {
            let cfg = &slot_cfg[id.index()];
            let mut report = SlotReport {
                slot: id,
                state: SlotState::Disabled,
                backend: Backend::BuiltIn,
                dim: None,
                weight_bytes: 0,
                trunk_shared_with: Vec::new(),
                output_shared_with: Vec::new(),
            };
            if is_transformer_slot(id) {
                let name = config.slot_model(id);
                let idx = model_index(&name);
                let ckpt = idx.and_then(|i| models[i].checkpoint.as_ref());
                let head = match id {
                    ModelId::Causal => SlotHead::Causal,
                    ModelId::LateInteraction => SlotHead::PerToken,
                    _ => SlotHead::Pooled(match (cfg.pooling, ckpt.map(|c| c.pooling)) {
                        (Pooling::Cls, _) | (Pooling::Auto, Some(Pooling::Cls)) => PooledHead::Cls,
                        _ => PooledHead::Mean,
                    }),
                };
                report.backend = Backend::Transformer {
                    model: name.clone(),
                    head: head.public(),
                };
                if cfg.enabled {
                    match (idx, ckpt) {
                        (Some(i), Some(c)) => {
                            report.state = SlotState::Loaded;
                            report.weight_bytes = c.weight_bytes;
                            report.dim = Some(match head {
                                SlotHead::PerToken => li_dim_cfg.unwrap_or(c.hidden),
                                _ => c.hidden,
                            });
                            slot_keys[id.index()] = Some((i, head));
                            let plan = match plans.iter().position(|p| p.model == i) {
                                Some(p) => &mut plans[p],
                                None => {
                                    plans.push(Plan {
                                        model: i,
                                        pooled: Vec::new(),
                                        per_token: false,
                                        slots: Vec::new(),
                                    });
                                    let last = plans.len() - 1;
                                    &mut plans[last]
                                }
                            };
                            plan.slots.push((id, head));
                            let wanted = match head {
                                SlotHead::Pooled(h) => vec![h],
                                SlotHead::Causal => vec![PooledHead::Cause, PooledHead::Effect],
                                SlotHead::PerToken => Vec::new(),
                            };
                            for h in wanted {
                                if !plan.pooled.contains(&h) {
                                    plan.pooled.push(h);
                                }
                            }
                            plan.per_token |= head == SlotHead::PerToken;
                        }
                        _ => {
                            let err = model_errors.get(&name).cloned().unwrap_or_else(|| {
                                PipelineError::NoSlotLoaded(format!(
                                    "model `{name}` was not loaded"
                                ))
                            });
                            report.state = SlotState::Failed(err);
                        }
                    }
                }
            } else if cfg.enabled {
                let t = &config.temporal;
                let dim = match id {
                    ModelId::TemporalRecent => Some(2 * t.half_lives_hours.len()),
                    ModelId::TemporalPeriodic => Some(6 * t.periodic_harmonics),
                    ModelId::TemporalPositional => Some(t.positional_dim),
                    ModelId::Hdc => builtin_tokenizer.map(|_| config.hdc.dim),
                    _ => builtin_tokenizer
                        .and_then(|i| models[i].tokenizer.as_ref())
                        .map(|t| t.vocab_size()),
                };
                if let Some(d) = dim {
                    report.state = SlotState::Loaded;
                    report.dim = Some(d);
                    builtins[id.index()] = true;
                } else {
                    let err = model_errors
                        .get(&config.builtin_tokenizer)
                        .cloned()
                        .unwrap_or_else(|| {
                            PipelineError::Config("built-in tokenizer missing".into())
                        });
                    report.state = SlotState::Failed(err);
                }
            }
            slot_reports.push(report);
        }

        // Sharing: same checkpoint => one trunk; same checkpoint and head => one output.
        for a in 0..ModelId::COUNT {
            let Some((ma, ha)) = slot_keys[a] else {
                continue;
            };
            for (b, key) in slot_keys.iter().enumerate() {
                if a == b {
                    continue;
                }
                if let Some((mb, hb)) = key
                    && *mb == ma
                {
                    slot_reports[a].trunk_shared_with.push(ModelId::ALL[b]);
                    if *hb == ha {
                        slot_reports[a].output_shared_with.push(ModelId::ALL[b]);
                    }
                }
            }
        }
        for r in &mut model_reports {
            r.used_by = slot_reports
                .iter()
                .filter(|s| s.state == SlotState::Loaded)
                .filter(|s| match &s.backend {
                    Backend::Transformer { model, .. } => *model == r.name,
                    Backend::BuiltIn => {
                        matches!(s.slot, ModelId::Sparse | ModelId::Hdc)
                            && r.name == config.builtin_tokenizer
                    }
                })
                .map(|s| s.slot)
                .collect();
        }

        if strict
            && let Some((slot, e)) = slot_reports.iter().find_map(|s| match &s.state {
                SlotState::Failed(e) => Some((s.slot, e)),
                _ => None,
            })
        {
            return Err(PipelineError::SlotFailed {
                slot,
                reason: Box::new(e.clone()),
            });
        }
        if !slot_reports.iter().any(|s| s.state == SlotState::Loaded) {
            let reasons: Vec<String> = slot_reports
                .iter()
                .filter_map(|s| match &s.state {
                    SlotState::Failed(e) => Some(format!("{}: {e}", s.slot)),
                    _ => None,
                })
                .collect();
            return Err(PipelineError::NoSlotLoaded(if reasons.is_empty() {
                "every slot is disabled; enable at least one".into()
            } else {
                reasons.join("; ")
            }));
        }

        let li_projection = match (li_dim_cfg, slot_keys[ModelId::LateInteraction.index()]) {
            (Some(p), Some((m, _))) => {
                let hidden = models[m].checkpoint.as_ref().map_or(0, |c| c.hidden);
                let data = rng::rademacher(
                    config.late_interaction.seed,
                    hidden * p,
                    1.0 / (p as f32).sqrt(),
                );
                Some(
                    Tensor::from_vec(data, (hidden, p), &device)
                        .map_err(|e| PipelineError::inference("late_interaction projection", e))?,
                )
            }
            _ => None,
        };

        let fusion = if config.fusion.enabled {
            let widths: Vec<(ModelId, usize)> = slot_reports
                .iter()
                .filter(|s| s.state == SlotState::Loaded)
                .filter_map(|s| {
                    let d = s.dim?;
                    Some((
                        s.slot,
                        match s.slot {
                            ModelId::Causal => 2 * d,
                            ModelId::Sparse => config.fusion.sparse_hash_dim,
                            _ => d,
                        },
                    ))
                })
                .collect();
            let trained = config.fusion.trained_weights.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    models_dir.join(p)
                }
            });
            Some(Fusion::new(
                &config.fusion,
                &widths,
                trained.as_deref(),
                &device,
            )?)
        } else {
            None
        };

        let reference_time = config.temporal.reference_time.unwrap_or_else(Utc::now);
        let registry = ModelRegistry {
            slots: slot_reports,
            models: model_reports,
            fusion: fusion.as_ref().map(|f| FusionReport {
                d_in: f.d_in(),
                dim: f.dim(),
                trained: config.fusion.trained_weights.is_some(),
                weight_bytes: f.weight_bytes(),
            }),
            device: format!("{device:?}").to_lowercase(),
            reference_time,
        };
        let half_lives_s = config
            .temporal
            .half_lives_hours
            .iter()
            .map(|h| h * 3600.0)
            .collect();
        let loaded = SlotMask::from_fn(|id| registry.slot(id).state == SlotState::Loaded);
        let fingerprint = cache_manager::fingerprint(&(&config, reference_time, loaded.bits()));
        let cache = EmbeddingCache::new(
            config.cache.max_bytes,
            fingerprint,
            record.then(|| Arc::clone(&metrics)),
        );
        let health_policy = config
            .health
            .build()
            .map_err(|e| PipelineError::Config(format!("[health]: {e}")))?;
        Ok(Self {
            config,
            device,
            models,
            plans,
            builtin_tokenizer,
            builtins,
            li_projection,
            fusion,
            registry,
            reference_time,
            half_lives_s,
            loaded,
            metrics,
            record,
            cache,
            health_policy,
            state: RuntimeState::new(),
        })
    }

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
        })
    }

    /// The options `embed` uses: every loaded slot, fused when fusion is on.
    pub(crate) fn resolve_all(&self) -> Resolved {
        let fused = self.fusion.is_some();
        Resolved {
            returned: self.loaded,
            fused,
            run: self.loaded,
        }
    }

    /// Validates one input (no tokenization yet).
    pub(crate) fn prepare(&self, index: usize, input: &EmbedInput) -> Item {
        let now = input.reference_time.unwrap_or(self.reference_time);
        let mut item = Item {
            index,
            error: None,
            now,
            timestamp: input.timestamp.unwrap_or(now),
            position: input.position.unwrap_or(0),
            ids: Vec::new(),
            truncated: false,
            builtin_ids: Vec::new(),
            out: Default::default(),
            fused: None,
        };
        let reject = |reason| PipelineError::InvalidInput { index, reason };
        if let Err(e) = check_range(item.now).and(check_range(item.timestamp)) {
            item.error = Some(reject(e));
        } else if self.config.input.empty_text == EmptyTextPolicy::Reject
            && input.text.trim().is_empty()
        {
            item.error = Some(reject(InputError::EmptyText));
        }
        item
    }

    /// The cache key of a prepared, valid item.
    pub(crate) fn cache_key(&self, item: &Item, text: &str, r: &Resolved) -> Option<Key> {
        let cache = self.cache.as_ref()?;
        Some(cache.key(text, item.timestamp, item.now, item.position, r))
    }

    /// Looks `key` up, counting the hit or miss.
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

    /// Whether a plan serves any slot in `run`.
    fn plan_runs(plan: &Plan, run: SlotMask) -> bool {
        plan.slots.iter().any(|(id, _)| run.contains(*id))
    }

    /// Tokenizes `items` (`texts[i]` is the text of `items[i]`) for the plans
    /// and built-in slots in `run`. Items that fail get their error; the
    /// others are unaffected. Returns the tokens the transformers will see.
    pub(crate) fn tokenize(
        &self,
        items: &mut [Item],
        texts: &[&str],
        run: SlotMask,
        rec: Option<&PipelineMetrics>,
    ) -> usize {
        let start = Instant::now();
        let texts: Vec<&str> = texts
            .iter()
            .zip(items.iter())
            .map(|(t, it)| if it.error.is_none() { *t } else { "" })
            .collect();
        let wants_builtin_ids = run.contains(ModelId::Sparse) || run.contains(ModelId::Hdc);
        let builtin_tokenizer = self.builtin_tokenizer.filter(|_| wants_builtin_ids);
        // Tokenize once per tokenizer that is used.
        let mut used: Vec<usize> = self
            .plans
            .iter()
            .filter(|p| Self::plan_runs(p, run))
            .map(|p| p.model)
            .collect();
        used.extend(builtin_tokenizer);
        used.sort_unstable();
        used.dedup();
        let mut encodings: BTreeMap<usize, Vec<Result<Tokens, String>>> = BTreeMap::new();
        for &m in &used {
            if let Some(tok) = &self.models[m].tokenizer {
                encodings.insert(m, tok.encode_all(&texts));
            }
        }
        let mut tokens = 0;
        for (pos, item) in items.iter_mut().enumerate() {
            if item.error.is_some() {
                continue;
            }
            let index = item.index;
            item.ids = vec![Vec::new(); self.plans.len()];
            for (p, plan) in self.plans.iter().enumerate() {
                if !Self::plan_runs(plan, run) {
                    continue;
                }
                let entry = &self.models[plan.model];
                let (Some(tok), Some(ckpt), Some(enc)) = (
                    &entry.tokenizer,
                    &entry.checkpoint,
                    encodings.get(&plan.model),
                ) else {
                    item.error = Some(PipelineError::inference(
                        format!("model `{}`", entry.name),
                        "model or tokenizer not loaded (internal error)",
                    ));
                    break;
                };
                let ids = match enc.get(pos) {
                    Some(Ok(t)) => {
                        let full = tok.full_len(t);
                        if full > ckpt.max_len {
                            if self.config.input.truncation == TruncationPolicy::Reject {
                                item.error = Some(PipelineError::InvalidInput {
                                    index,
                                    reason: InputError::TooLong {
                                        model: entry.name.clone(),
                                        tokens: full,
                                        max: ckpt.max_len,
                                    },
                                });
                                break;
                            }
                            item.truncated = true;
                        }
                        tok.model_ids(t, ckpt.max_len)
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("tokenizer returned too few encodings (internal error)".into()),
                };
                match ids {
                    Ok(ids) => item.ids[p] = ids,
                    Err(reason) => {
                        item.error = Some(PipelineError::Tokenization { index, reason });
                        break;
                    }
                }
            }
            if item.error.is_none()
                && let Some(enc) = builtin_tokenizer.and_then(|m| encodings.get(&m))
            {
                match enc.get(pos) {
                    Some(Ok(t)) => item.builtin_ids = t.content.get_ids().to_vec(),
                    Some(Err(reason)) => {
                        item.error = Some(PipelineError::Tokenization {
                            index,
                            reason: reason.clone(),
                        });
                    }
                    None => {
                        item.error = Some(PipelineError::Tokenization {
                            index,
                            reason: "tokenizer returned too few encodings (internal error)".into(),
                        });
                    }
                }
            }
            if item.error.is_none() {
                tokens += item.primary_len().max(1);
            }
        }
        if let Some(m) = rec {
            m.record_stage(Stage::Tokenization, micros(start.elapsed()));
        }
        tokens
    }

    /// Runs every slot in `run` (and fusion when `fuse`) over the valid
    /// items, sorted by length, in chunks of at most `max_batch_size` items
    /// and `max_forward_tokens` padded tokens.
    pub(crate) fn compute(
        &self,
        items: &mut [Item],
        run: SlotMask,
        fuse: bool,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        // Sort valid items by length so each chunk pads little.
        let mut order: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].error.is_none())
            .collect();
        order.sort_by_key(|&i| items[i].primary_len());
        let lens: Vec<usize> = order.iter().map(|&i| items[i].primary_len()).collect();
        let mut start = 0;
        for len in chunk_lengths(
            &lens,
            self.config.max_batch_size,
            self.config.max_forward_tokens,
        ) {
            let chunk = &order[start..start + len];
            start += len;
            self.run_chunk(items, chunk, run, fuse, rec)?;
        }
        if !order.is_empty() {
            self.state.warmed_up.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Turns a computed item into its output, keeping only `r`'s outputs.
    pub(crate) fn finish(item: Item, r: &Resolved) -> Result<MultiEmbedding, PipelineError> {
        if let Some(e) = item.error {
            return Err(e);
        }
        let tokens = item.primary_len();
        let mut out = item.out;
        for id in ModelId::ALL {
            if !r.returned.contains(id) {
                out[id.index()] = None;
            }
        }
        Ok(MultiEmbedding {
            tokens,
            truncated: item.truncated,
            slots: out,
            fused: if r.fused { item.fused } else { None },
        })
    }

    /// Embeds on the calling thread (the blocking API): validation, cache,
    /// tokenization, inference, fusion, metrics. With `fail_fast`, the first
    /// bad input (by index) fails the call before any model runs.
    pub(crate) fn run_inline(
        &self,
        inputs: &[EmbedInput],
        r: &Resolved,
        fail_fast: bool,
    ) -> Result<Vec<Result<MultiEmbedding, PipelineError>>, PipelineError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let start = Instant::now();
        let rec = self.rec();
        let _in_flight = rec.map(PipelineMetrics::track_in_flight);
        let prepared: Vec<Item> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| self.prepare(i, x))
            .collect();
        // Invalid items go on as misses without a cache key; `tokenize`
        // skips them, so the check after it reports the first bad input by
        // index, whether validation or tokenization rejected it.
        let mut results: Vec<Option<Result<MultiEmbedding, PipelineError>>> =
            (0..inputs.len()).map(|_| None).collect();
        let mut misses: Vec<Item> = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        let mut keys: Vec<Option<Key>> = Vec::new();
        for item in prepared {
            let text = inputs[item.index].text.as_str();
            let key = item
                .error
                .is_none()
                .then(|| self.cache_key(&item, text, r))
                .flatten();
            match self.cache_get(key) {
                Some(hit) => results[item.index] = Some(Ok(hit)),
                None => {
                    misses.push(item);
                    texts.push(text);
                    keys.push(key);
                }
            }
        }
        if !misses.is_empty() {
            self.tokenize(&mut misses, &texts, r.run, rec);
            if fail_fast && let Some(e) = misses.iter().find_map(|it| it.error.clone()) {
                self.record_failure(&e, rec);
                return Err(e);
            }
            let batch_start = Instant::now();
            // A failed computation is already counted (per slot, or as a
            // fusion error) where it happened.
            self.compute(&mut misses, r.run, r.fused, rec)?;
            let valid = misses.iter().filter(|it| it.error.is_none()).count();
            if let Some(m) = rec
                && valid > 0
            {
                m.record_batch(valid, micros(batch_start.elapsed()));
            }
            let mut fresh = Vec::new();
            for (item, key) in misses.into_iter().zip(keys) {
                let index = item.index;
                let out = Self::finish(item, r);
                if let (Ok(v), Some(k)) = (&out, key) {
                    fresh.push((k, v.clone()));
                }
                results[index] = Some(out);
            }
            self.cache_put(fresh);
        }
        let latency = micros(start.elapsed());
        let mut any_ok = false;
        let out: Vec<Result<MultiEmbedding, PipelineError>> = results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or(Err(PipelineError::WorkerLost));
                match &r {
                    Ok(_) => {
                        any_ok = true;
                        if let Some(m) = rec {
                            m.record_embedding(latency);
                        }
                    }
                    Err(e) => self.record_failure(e, rec),
                }
                r
            })
            .collect();
        if any_ok {
            self.state.embedded_now();
        }
        Ok(out)
    }

    /// Counts one failed input (or request).
    pub(crate) fn record_failure(&self, e: &PipelineError, rec: Option<&PipelineMetrics>) {
        if let Some(m) = rec {
            m.record_error_kind(e.kind(), None);
        }
    }

    /// One warm-up pass through every loaded slot, not recorded or cached.
    pub(crate) fn warm_up(&self) -> Result<(), PipelineError> {
        let r = self.resolve_all();
        let input = EmbedInput::new("warm-up");
        let mut items = vec![self.prepare(0, &input)];
        self.tokenize(&mut items, &[input.text.as_str()], r.run, None);
        if let Some(e) = items.iter().find_map(|it| it.error.clone()) {
            return Err(e);
        }
        self.compute(&mut items, r.run, r.fused, None)
    }

    fn run_chunk(
        &self,
        items: &mut [Item],
        chunk: &[usize],
        run: SlotMask,
        fuse: bool,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        let inference_start = Instant::now();
        for (p, plan) in self.plans.iter().enumerate() {
            if !Self::plan_runs(plan, run) {
                continue;
            }
            let entry = &self.models[plan.model];
            let Some(ckpt) = &entry.checkpoint else {
                continue;
            };
            let slots: Vec<(ModelId, SlotHead)> = plan
                .slots
                .iter()
                .copied()
                .filter(|(id, _)| run.contains(*id))
                .collect();
            let fail = |e: candle_core::Error| {
                if let Some(m) = rec {
                    for (id, _) in &slots {
                        m.record_model_failure(*id, ErrorKind::Inference);
                    }
                }
                PipelineError::inference(format!("model `{}`", entry.name), e)
            };
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| items[i].ids.get(p).cloned().unwrap_or_default())
                .collect();
            let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
            let t0 = Instant::now();
            let hidden = ckpt.forward(&ids).map_err(fail)?;
            // Only the pooled heads a running slot needs.
            let pooled_heads: Vec<PooledHead> = plan
                .pooled
                .iter()
                .copied()
                .filter(|h| {
                    slots.iter().any(|(_, head)| match head {
                        SlotHead::Pooled(x) => x == h,
                        SlotHead::Causal => matches!(h, PooledHead::Cause | PooledHead::Effect),
                        SlotHead::PerToken => false,
                    })
                })
                .collect();
            let trunk = t0.elapsed();
            let t1 = Instant::now();
            let mut pooled = if pooled_heads.is_empty() {
                Vec::new()
            } else {
                transformer::pooled(&hidden, &lens, &pooled_heads).map_err(fail)?
            };
            let pooled_time = t1.elapsed();
            let t2 = Instant::now();
            let wants_tokens = slots.iter().any(|(_, h)| *h == SlotHead::PerToken);
            let mut tokens = if plan.per_token && wants_tokens {
                Some(
                    transformer::per_token(&hidden, &lens, self.li_projection.as_ref())
                        .map_err(fail)?,
                )
            } else {
                None
            };
            let per_token_time = t2.elapsed();
            let head_of = |h: PooledHead| pooled_heads.iter().position(|x| *x == h);
            for (row, &i) in chunk.iter().enumerate() {
                let mut shared: BTreeMap<PooledHead, Arc<[f32]>> = BTreeMap::new();
                let mut arc = |h: PooledHead| -> Option<Arc<[f32]>> {
                    let k = head_of(h)?;
                    let v = pooled.get_mut(k)?.get_mut(row)?;
                    Some(
                        shared
                            .entry(h)
                            .or_insert_with(|| Arc::from(std::mem::take(v)))
                            .clone(),
                    )
                };
                for &(slot, head) in &slots {
                    let out = match head {
                        SlotHead::Pooled(h) => arc(h).map(SlotOutput::Dense),
                        SlotHead::Causal => match (arc(PooledHead::Cause), arc(PooledHead::Effect))
                        {
                            (Some(cause), Some(effect)) => {
                                Some(SlotOutput::Causal(CausalPair { cause, effect }))
                            }
                            _ => None,
                        },
                        SlotHead::PerToken => tokens.as_mut().and_then(|(dim, rows)| {
                            rows.get_mut(row).map(|r| {
                                SlotOutput::PerToken(TokenVectors::new(*dim, std::mem::take(r)))
                            })
                        }),
                    };
                    items[i].out[slot.index()] = out;
                }
            }
            if let Some(m) = rec {
                for &(slot, head) in &slots {
                    let head_time = match head {
                        SlotHead::PerToken => per_token_time,
                        _ => pooled_time,
                    };
                    m.record_model_latency(slot, micros(trunk + head_time));
                    for _ in chunk {
                        m.record_model_request(slot);
                    }
                }
            }
        }
        self.run_builtins(items, chunk, run, rec)?;
        if let Some(m) = rec {
            m.record_stage(Stage::Inference, micros(inference_start.elapsed()));
        }
        if fuse && let Some(fusion) = &self.fusion {
            let t = Instant::now();
            let rows: Vec<&[Option<SlotOutput>; ModelId::COUNT]> =
                chunk.iter().map(|&i| &items[i].out).collect();
            let fused = fusion.fuse(&rows).inspect_err(|e| {
                if let Some(m) = rec {
                    m.record_error_kind(e.kind(), None);
                }
            })?;
            for (&i, v) in chunk.iter().zip(fused) {
                items[i].fused = Some(v);
            }
            if let Some(m) = rec {
                m.record_stage(Stage::Fusion, micros(t.elapsed()));
            }
        }
        Ok(())
    }

    fn run_builtins(
        &self,
        items: &mut [Item],
        chunk: &[usize],
        run: SlotMask,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        let on = |id: ModelId| self.builtins[id.index()] && run.contains(id);
        let dev = &self.device;
        let t = &self.config.temporal;
        let done = |id: ModelId, start: Instant| {
            if let Some(m) = rec {
                m.record_model_latency(id, micros(start.elapsed()));
                for _ in chunk {
                    m.record_model_request(id);
                }
            }
        };
        let fail = |id: ModelId, e: candle_core::Error| {
            if let Some(m) = rec {
                m.record_model_failure(id, ErrorKind::Inference);
            }
            PipelineError::inference(id.as_str(), e)
        };
        if on(ModelId::TemporalRecent) {
            let start = Instant::now();
            let ages: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].now) - unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_recent(&ages, &self.half_lives_s, dev)
                .map_err(|e| fail(ModelId::TemporalRecent, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalRecent.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalRecent, start);
        }
        if on(ModelId::TemporalPeriodic) {
            let start = Instant::now();
            let times: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_periodic(&times, t.periodic_harmonics, dev)
                .map_err(|e| fail(ModelId::TemporalPeriodic, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPeriodic.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalPeriodic, start);
        }
        if on(ModelId::TemporalPositional) {
            let start = Instant::now();
            let pos: Vec<u64> = chunk.iter().map(|&i| items[i].position).collect();
            let rows = builtin::temporal_positional(&pos, t.positional_dim, t.positional_base, dev)
                .map_err(|e| fail(ModelId::TemporalPositional, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPositional.index()] =
                    Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalPositional, start);
        }
        let vocab = self
            .builtin_tokenizer
            .and_then(|m| self.models[m].tokenizer.as_ref())
            .map_or(0, |t| t.vocab_size());
        if on(ModelId::Hdc) {
            let start = Instant::now();
            let h = &self.config.hdc;
            for &i in chunk {
                let v = builtin::hdc(&items[i].builtin_ids, h.dim, h.seed, h.max_ngram);
                items[i].out[ModelId::Hdc.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::Hdc, start);
        }
        if on(ModelId::Sparse) {
            let start = Instant::now();
            for &i in chunk {
                let s = builtin::sparse(&items[i].builtin_ids, vocab, dev)
                    .map_err(|e| fail(ModelId::Sparse, e))?;
                items[i].out[ModelId::Sparse.index()] = Some(SlotOutput::Sparse(s));
            }
            done(ModelId::Sparse, start);
        }
        Ok(())
    }
}

/// Microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Splits items sorted by ascending length into consecutive chunks of at
/// most `max_items` items whose padded size (items × the last, longest
/// length, at least 1) stays within `max_tokens`; an item longer than
/// `max_tokens` is a chunk alone. Returns the chunk sizes, in order.
pub(crate) fn chunk_lengths(
    sorted_lens: &[usize],
    max_items: usize,
    max_tokens: usize,
) -> Vec<usize> {
    let max_items = max_items.max(1);
    let mut sizes = Vec::new();
    let mut count = 0usize;
    for &len in sorted_lens {
        let padded = (count + 1).saturating_mul(len.max(1));
        if count > 0 && (count == max_items || padded > max_tokens) {
            sizes.push(count);
            count = 0;
        }
        count += 1;
    }
    if count > 0 {
        sizes.push(count);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::chunk_lengths;

    #[test]
    fn chunks_respect_items_and_padded_tokens() {
        assert!(chunk_lengths(&[], 32, 4096).is_empty());
        assert_eq!(chunk_lengths(&[10; 100], 32, 4096), [32, 32, 32, 4]);
        // 4 × 100 = 400 fits 450; the fifth would pad to 5 × 100 = 500.
        assert_eq!(chunk_lengths(&[100; 9], 32, 450), [4, 4, 1]);
        // The padded size counts the chunk's longest (last) item.
        assert_eq!(chunk_lengths(&[10, 10, 10, 200], 32, 300), [3, 1]);
        // Longer than the budget: alone, never dropped; zero lengths count as 1.
        assert_eq!(chunk_lengths(&[0, 0, 5000, 6000], 8, 4096), [2, 1, 1]);
        assert_eq!(chunk_lengths(&[7; 3], 0, 0), [1, 1, 1]);
        for n in 0..200 {
            let lens: Vec<usize> = (0..n).map(|i| i * 3 % 257).collect::<Vec<_>>();
            let mut sorted = lens.clone();
            sorted.sort_unstable();
            let sizes = chunk_lengths(&sorted, 16, 1024);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            let mut start = 0;
            for &size in &sizes {
                let chunk = &sorted[start..start + size];
                start += size;
                assert!(size <= 16);
                assert!(size == 1 || size * chunk[size - 1].max(1) <= 1024);
            }
        }
    }
}
