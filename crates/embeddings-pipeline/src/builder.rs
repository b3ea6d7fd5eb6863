//! [`PipelineBuilder`]: configuration in, a loaded [`EmbeddingPipeline`] out.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use embeddings_health::HealthPolicySpec;
use embeddings_metrics::PipelineMetrics;
use embeddings_types::ModelId;

use crate::api::EmbeddingPipeline;
use crate::config::{BatchingConfig, DeviceKind, ModelSource, PipelineConfig};
use crate::engine::Engine;
use crate::error::LoadError;

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
    /// - [`LoadError::Config`] / [`LoadError::Io`]: invalid configuration.
    /// - [`LoadError::DeviceUnavailable`]: the device cannot be opened.
    /// - [`LoadError::SlotFailed`]: in strict mode, the first failed slot.
    /// - [`LoadError::NoSlotLoaded`]: every enabled slot failed.
    /// - [`LoadError::Fusion`] / [`LoadError::CorruptWeights`]: bad
    ///   trained fusion weights.
    pub fn build(self) -> Result<EmbeddingPipeline, LoadError> {
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
