//! The builder and the pipeline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use chrono::{DateTime, Utc};
use embeddings_types::ModelId;

use crate::builtin;
use crate::config::{
    DeviceKind, EmptyTextPolicy, ModelSource, PipelineConfig, Pooling, SlotConfig,
    TruncationPolicy, is_transformer_slot,
};
use crate::device;
use crate::error::{InputError, PipelineError};
use crate::fusion::Fusion;
use crate::input::{EmbedInput, check_range, unix_seconds};
use crate::output::{CausalPair, MultiEmbedding, SlotOutput, TokenVectors};
use crate::registry::{
    Backend, FusionReport, HeadKind, ModelRegistry, ModelReport, SlotReport, SlotState,
};
use crate::rng;
use crate::source;
use crate::tokenize::{TextTokenizer, Tokens};
use crate::transformer::{self, Checkpoint, PooledHead};

/// Builds an [`EmbeddingPipeline`]. Start with [`EmbeddingPipeline::builder`].
#[derive(Debug, Clone, Default)]
pub struct PipelineBuilder {
    config: PipelineConfig,
    config_file: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    strict: bool,
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
        config.validate()?;
        EmbeddingPipeline::load(config, self.strict)
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

struct ModelEntry {
    name: String,
    tokenizer: Option<Arc<TextTokenizer>>,
    checkpoint: Option<Checkpoint>,
}

/// One loaded checkpoint and the slots it serves.
struct Plan {
    model: usize,
    /// Distinct pooled heads, computed with one matmul.
    pooled: Vec<PooledHead>,
    per_token: bool,
    slots: Vec<(ModelId, SlotHead)>,
}

/// The twelve-slot embedding pipeline. `Send + Sync`; `embed` takes `&self`.
///
/// See the crate documentation for an example.
pub struct EmbeddingPipeline {
    config: PipelineConfig,
    device: Device,
    models: Vec<ModelEntry>,
    plans: Vec<Plan>,
    builtin_tokenizer: Option<usize>,
    builtins: [bool; ModelId::COUNT],
    li_projection: Option<Tensor>,
    fusion: Option<Fusion>,
    registry: ModelRegistry,
    reference_time: DateTime<Utc>,
    half_lives_s: Vec<f64>,
}

impl std::fmt::Debug for EmbeddingPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingPipeline")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

fn default_models_dir() -> PathBuf {
    std::env::var_os("EMBEDDINGS_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// Per-item working state during `embed`.
struct Item {
    error: Option<PipelineError>,
    now: DateTime<Utc>,
    timestamp: DateTime<Utc>,
    position: u64,
    /// Model input ids per plan.
    ids: Vec<Vec<u32>>,
    truncated: bool,
    /// Content ids for the built-in tokenizer.
    builtin_ids: Vec<u32>,
    out: [Option<SlotOutput>; ModelId::COUNT],
    fused: Option<Vec<f32>>,
}

impl EmbeddingPipeline {
    /// A builder with the default configuration: every slot on, every
    /// transformer slot bound to `all-MiniLM-L6-v2` under the models directory.
    #[must_use]
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    fn load(config: PipelineConfig, strict: bool) -> Result<Self, PipelineError> {
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
        })
    }

    /// What was loaded: per slot its state (failed ones with the reason), its
    /// backend, dimension, bytes of weights and which slots share its trunk or
    /// its output; per checkpoint its folder and size. `Display` prints a table.
    #[must_use]
    pub fn describe(&self) -> &ModelRegistry {
        &self.registry
    }

    /// The configuration in effect.
    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The reference "now" of the temporal slots.
    #[must_use]
    pub fn reference_time(&self) -> DateTime<Utc> {
        self.reference_time
    }

    /// Embeds a batch. All-or-nothing: every input is validated and tokenized
    /// first, and the first invalid one fails the call (no model runs).
    ///
    /// An empty batch returns `Ok(vec![])`. Large batches are sorted by length
    /// and processed in chunks of `max_batch_size`; results are in input order.
    ///
    /// # Errors
    /// [`PipelineError::InvalidInput`] / [`PipelineError::Tokenization`] for
    /// the first bad input (with its index); [`PipelineError::Inference`] /
    /// [`PipelineError::Fusion`] when a computation fails.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Vec<MultiEmbedding>, PipelineError> {
        self.run(inputs, true)?.into_iter().collect()
    }

    /// Embeds a batch where a bad input fails only itself: each element is that
    /// input's result. The outer error is for failures of the computation itself.
    ///
    /// # Errors
    /// [`PipelineError::Inference`] / [`PipelineError::Fusion`].
    pub fn embed_each(
        &self,
        inputs: &[EmbedInput],
    ) -> Result<Vec<Result<MultiEmbedding, PipelineError>>, PipelineError> {
        self.run(inputs, false)
    }

    /// Embeds plain texts (no timestamp, position 0).
    ///
    /// # Errors
    /// As [`EmbeddingPipeline::embed`].
    pub fn embed_texts<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<MultiEmbedding>, PipelineError> {
        let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::new(t.as_ref())).collect();
        self.embed(&inputs)
    }

    fn prepare(&self, index: usize, input: &EmbedInput) -> Item {
        let now = input.reference_time.unwrap_or(self.reference_time);
        let mut item = Item {
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

    fn run(
        &self,
        inputs: &[EmbedInput],
        fail_fast: bool,
    ) -> Result<Vec<Result<MultiEmbedding, PipelineError>>, PipelineError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let mut items: Vec<Item> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| self.prepare(i, x))
            .collect();
        let texts: Vec<&str> = inputs
            .iter()
            .zip(&items)
            .map(|(x, it)| {
                if it.error.is_none() {
                    x.text.as_str()
                } else {
                    ""
                }
            })
            .collect();

        // Tokenize once per tokenizer that is used.
        let mut used: Vec<usize> = self.plans.iter().map(|p| p.model).collect();
        used.extend(self.builtin_tokenizer);
        used.sort_unstable();
        used.dedup();
        let mut encodings: BTreeMap<usize, Vec<Result<Tokens, String>>> = BTreeMap::new();
        for &m in &used {
            if let Some(tok) = &self.models[m].tokenizer {
                encodings.insert(m, tok.encode_all(&texts));
            }
        }
        for (index, item) in items.iter_mut().enumerate() {
            if item.error.is_some() {
                continue;
            }
            for plan in &self.plans {
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
                let ids = match &enc[index] {
                    Ok(t) => {
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
                    Err(e) => Err(e.clone()),
                };
                match ids {
                    Ok(ids) => item.ids.push(ids),
                    Err(reason) => {
                        item.error = Some(PipelineError::Tokenization { index, reason });
                        break;
                    }
                }
            }
            if item.error.is_none()
                && let Some(enc) = self.builtin_tokenizer.and_then(|m| encodings.get(&m))
            {
                match &enc[index] {
                    Ok(t) => item.builtin_ids = t.content.get_ids().to_vec(),
                    Err(reason) => {
                        item.error = Some(PipelineError::Tokenization {
                            index,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
        drop(encodings);
        if fail_fast && let Some(e) = items.iter().find_map(|it| it.error.clone()) {
            return Err(e);
        }

        // Sort valid items by length so each chunk pads little.
        let mut order: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].error.is_none())
            .collect();
        order.sort_by_key(|&i| items[i].ids.first().map_or(0, Vec::len));
        for chunk in order.chunks(self.config.max_batch_size) {
            self.run_chunk(&mut items, chunk)?;
        }
        Ok(items
            .into_iter()
            .map(|it| match it.error {
                Some(e) => Err(e),
                None => Ok(MultiEmbedding {
                    tokens: it.ids.first().map_or(0, Vec::len),
                    truncated: it.truncated,
                    slots: it.out,
                    fused: it.fused,
                }),
            })
            .collect())
    }

    fn run_chunk(&self, items: &mut [Item], chunk: &[usize]) -> Result<(), PipelineError> {
        for (p, plan) in self.plans.iter().enumerate() {
            let entry = &self.models[plan.model];
            let Some(ckpt) = &entry.checkpoint else {
                continue;
            };
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| items[i].ids.get(p).cloned().unwrap_or_default())
                .collect();
            let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
            let err = |e: candle_core::Error| {
                PipelineError::inference(format!("model `{}`", entry.name), e)
            };
            let hidden = ckpt.forward(&ids).map_err(err)?;
            let mut pooled = if plan.pooled.is_empty() {
                Vec::new()
            } else {
                transformer::pooled(&hidden, &lens, &plan.pooled).map_err(err)?
            };
            let tokens = if plan.per_token {
                Some(
                    transformer::per_token(&hidden, &lens, self.li_projection.as_ref())
                        .map_err(err)?,
                )
            } else {
                None
            };
            let head_of = |h: PooledHead| plan.pooled.iter().position(|x| *x == h);
            let mut tokens = tokens;
            for (row, &i) in chunk.iter().enumerate() {
                let mut shared: BTreeMap<PooledHead, Arc<[f32]>> = BTreeMap::new();
                let mut arc = |h: PooledHead| -> Option<Arc<[f32]>> {
                    let k = head_of(h)?;
                    Some(
                        shared
                            .entry(h)
                            .or_insert_with(|| Arc::from(std::mem::take(&mut pooled[k][row])))
                            .clone(),
                    )
                };
                for &(slot, head) in &plan.slots {
                    let out = match head {
                        SlotHead::Pooled(h) => arc(h).map(SlotOutput::Dense),
                        SlotHead::Causal => match (arc(PooledHead::Cause), arc(PooledHead::Effect))
                        {
                            (Some(cause), Some(effect)) => {
                                Some(SlotOutput::Causal(CausalPair { cause, effect }))
                            }
                            _ => None,
                        },
                        SlotHead::PerToken => tokens.as_mut().map(|(dim, rows)| {
                            SlotOutput::PerToken(TokenVectors::new(
                                *dim,
                                std::mem::take(&mut rows[row]),
                            ))
                        }),
                    };
                    items[i].out[slot.index()] = out;
                }
            }
        }
        self.run_builtins(items, chunk)?;
        if let Some(fusion) = &self.fusion {
            let rows: Vec<&[Option<SlotOutput>; ModelId::COUNT]> =
                chunk.iter().map(|&i| &items[i].out).collect();
            let fused = fusion.fuse(&rows)?;
            for (&i, v) in chunk.iter().zip(fused) {
                items[i].fused = Some(v);
            }
        }
        Ok(())
    }

    fn run_builtins(&self, items: &mut [Item], chunk: &[usize]) -> Result<(), PipelineError> {
        let on = |id: ModelId| self.builtins[id.index()];
        let dev = &self.device;
        let t = &self.config.temporal;
        if on(ModelId::TemporalRecent) {
            let ages: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].now) - unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_recent(&ages, &self.half_lives_s, dev)
                .map_err(|e| PipelineError::inference("temporal_recent", e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalRecent.index()] = Some(SlotOutput::Dense(v.into()));
            }
        }
        if on(ModelId::TemporalPeriodic) {
            let times: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_periodic(&times, t.periodic_harmonics, dev)
                .map_err(|e| PipelineError::inference("temporal_periodic", e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPeriodic.index()] = Some(SlotOutput::Dense(v.into()));
            }
        }
        if on(ModelId::TemporalPositional) {
            let pos: Vec<u64> = chunk.iter().map(|&i| items[i].position).collect();
            let rows = builtin::temporal_positional(&pos, t.positional_dim, t.positional_base, dev)
                .map_err(|e| PipelineError::inference("temporal_positional", e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPositional.index()] =
                    Some(SlotOutput::Dense(v.into()));
            }
        }
        let vocab = self
            .builtin_tokenizer
            .and_then(|m| self.models[m].tokenizer.as_ref())
            .map_or(0, |t| t.vocab_size());
        for &i in chunk {
            if on(ModelId::Hdc) {
                let h = &self.config.hdc;
                let v = builtin::hdc(&items[i].builtin_ids, h.dim, h.seed, h.max_ngram, dev)
                    .map_err(|e| PipelineError::inference("hdc", e))?;
                items[i].out[ModelId::Hdc.index()] = Some(SlotOutput::Dense(v.into()));
            }
            if on(ModelId::Sparse) {
                let s = builtin::sparse(&items[i].builtin_ids, vocab, dev)
                    .map_err(|e| PipelineError::inference("sparse", e))?;
                items[i].out[ModelId::Sparse.index()] = Some(SlotOutput::Sparse(s));
            }
        }
        Ok(())
    }
}
