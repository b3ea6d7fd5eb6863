//! The public handle: [`EmbeddingPipeline`].

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use embeddings_health::{
    ComponentChecks, GpuObservation, HealthReport, Observation, RegistryState,
};
use embeddings_metrics::{MemoryGauge, PipelineMetrics};
use serde::Serialize;

use crate::batch_processor::{BatchProcessor, Job};
use crate::builder::PipelineBuilder;
use crate::canary::{Canary, ProbeSet};
use crate::config::PipelineConfig;
use crate::engine::Engine;
use crate::error::PipelineError;
use crate::input::EmbedInput;
use crate::options::{EmbedOptions, EmbedResponse};
use crate::output::MultiEmbedding;
use crate::registry::{Backend, ModelRegistry, SlotState};
use crate::request::{self, Caller, Mode, Request};
use crate::ticket::EmbedTicket;
use crate::tokenize::TokenInfo;
use embeddings_types::{CanaryReport, DriftReport, ModelId};

/// The twelve-slot embedding pipeline. `Send + Sync`; every method takes
/// `&self`.
///
/// Two ways in:
/// - **Blocking** ([`embed`](Self::embed), [`embed_each`](Self::embed_each),
///   [`embed_texts`](Self::embed_texts)): run on the calling thread, not
///   through the queue, so they never answer `Overloaded` and are not
///   batched with other callers; they use the cache and record metrics like
///   the queued path (minus queue figures).
/// - **Queued** ([`submit`](Self::submit), [`embed_async`](Self::embed_async)):
///   validated and checked against the cache on the calling thread, then
///   queued for the batch workers (see the `batch_processor` notes in the
///   crate docs). This is the server's path.
///
/// Dropping the pipeline (or [`shutdown`](Self::shutdown)) closes the queue,
/// lets the workers finish what is queued, and joins them.
///
/// See the crate documentation for an example.
pub struct EmbeddingPipeline {
    pub(crate) engine: Arc<Engine>,
    batcher: BatchProcessor,
    canary: Canary,
}

impl std::fmt::Debug for EmbeddingPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingPipeline")
            .field("registry", &self.engine.registry)
            .field("batcher", &self.batcher)
            .field("cache", &self.engine.cache)
            .finish_non_exhaustive()
    }
}

/// What the pipeline serves and its limits, for an `/info` endpoint.
/// Serializes to JSON with serde.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineLimits {
    /// The device, e.g. `cpu`.
    pub device: String,
    /// All twelve slots, in slot order.
    pub slots: Vec<SlotLimits>,
    /// Width of the fused vector; `None` when fusion is off.
    pub fusion_dim: Option<usize>,
    /// The queue and batching limits.
    pub batching: BatchingLimits,
    /// The cache bound in bytes; 0 when the cache is off.
    pub cache_max_bytes: u64,
}

/// One slot's line in [`PipelineLimits`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotLimits {
    /// The slot.
    pub slot: ModelId,
    /// Served.
    pub loaded: bool,
    /// The checkpoint name for transformer slots; `None` for built-in ones.
    pub model: Option<String>,
    /// Output width (see [`crate::SlotReport::dim`]).
    pub dim: Option<usize>,
    /// `true` when the slot shares its checkpoint's forward pass with other
    /// slots; `false` for a dedicated checkpoint or a built-in slot.
    pub shared: bool,
    /// Longest input (tokens, special tokens included) of its checkpoint.
    pub max_seq_length: Option<usize>,
}

/// The batching limits in [`PipelineLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchingLimits {
    /// Requests that may wait in the queue.
    pub queue_capacity: usize,
    /// Items gathered into one batch.
    pub max_batch_size: usize,
    /// Tokens gathered into one batch.
    pub max_batch_tokens: usize,
    /// Longest wait for more requests, ms.
    pub max_wait_ms: u64,
    /// At most this many items per forward pass (the top-level
    /// `max_batch_size`).
    pub chunk_size: usize,
    /// At most this many padded tokens (items × longest) per forward pass,
    /// unless one input alone is longer (the top-level `max_forward_tokens`).
    pub chunk_max_tokens: usize,
    /// Worker threads.
    pub workers: usize,
    /// Tokens (upper bounds) admitted and not yet answered, at most.
    pub token_budget: usize,
    /// Output floats one submitted request may produce, at most.
    pub max_response_floats: usize,
}

/// The cache's figures, from [`EmbeddingPipeline::cache_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Bytes held (sum of entry weights).
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
    /// The bound.
    pub max_bytes: u64,
    /// Entries evicted so far.
    pub evictions: u64,
}

impl EmbeddingPipeline {
    /// A builder with the default configuration: every slot on, every
    /// transformer slot bound to `all-MiniLM-L6-v2` under the models directory.
    #[must_use]
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    pub(crate) fn start(engine: Arc<Engine>, paused: bool) -> Self {
        if let (Some(m), Some(c)) = (engine.rec(), &engine.cache) {
            m.set_cache_size(c.bytes(), c.len() as u64);
        }
        let batcher = BatchProcessor::new(Arc::clone(&engine));
        if !paused {
            batcher.start();
        }
        Self {
            engine,
            batcher,
            canary: Canary::default(),
        }
    }

    /// What was loaded: per slot its state (failed ones with the reason), its
    /// backend, dimension, bytes of weights and which slots share its trunk or
    /// its output; per checkpoint its folder and size. `Display` prints a
    /// table; it serializes to JSON with serde.
    #[must_use]
    pub fn describe(&self) -> &ModelRegistry {
        &self.engine.registry
    }

    /// The configuration in effect.
    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.engine.config
    }

    /// The reference "now" of the temporal slots.
    #[must_use]
    pub fn reference_time(&self) -> DateTime<Utc> {
        self.engine.reference_time
    }

    /// The recorder this pipeline writes into (shared with whoever passed it
    /// to [`PipelineBuilder::metrics`]). Nothing is written when built with
    /// `record_metrics(false)`.
    ///
    /// What each figure counts, exactly once per what, and what it shows
    /// when unknown is the metric catalogue (`docs/metrics.md` at the
    /// repository root). In short:
    /// - `embeddings_generated` counts inputs the models computed for a
    ///   caller that still waited, with one latency sample each (submission
    ///   to the end of the chunk that computed it); `inputs_served` counts
    ///   inputs answered, cache hits included;
    /// - a failure is counted once per failed unit (a refused request or
    ///   input, one failed computation), by kind; a failed computation is
    ///   also attributed to each slot it served; a caller that gave up is
    ///   one `timeout` or `cancelled`, and its work is neither cached nor
    ///   counted as served;
    /// - per slot: one request per input it computed, one latency sample per
    ///   chunk (a transformer slot's sample includes its shared trunk, so
    ///   per-slot latencies do not add up to wall time);
    /// - stages: `queue_wait` (per request taken from the queue),
    ///   `tokenization` (per tokenizer call), `inference` and `fusion` (per
    ///   chunk); they never overlap.
    #[must_use]
    pub fn metrics(&self) -> &Arc<PipelineMetrics> {
        &self.engine.metrics
    }

    /// Embeds a batch on the calling thread. All-or-nothing: every input is
    /// validated and tokenized first, and the first invalid one fails the
    /// call (no model runs).
    ///
    /// An empty batch returns `Ok(vec![])`. Large batches are sorted by length
    /// and processed in chunks of `max_batch_size`; results are in input order.
    /// Cached items skip inference.
    ///
    /// # Errors
    /// [`PipelineError::InvalidInput`] / [`PipelineError::Tokenization`] for
    /// the first bad input (with its index); [`PipelineError::Inference`] /
    /// [`PipelineError::Fusion`] when a computation fails.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Vec<MultiEmbedding>, PipelineError> {
        let r = self.engine.resolve_all();
        self.engine
            .run_inline(inputs.to_vec(), r, Mode::AllOrNothing)?
            .into_iter()
            .collect()
    }

    /// Embeds a batch on the calling thread where a bad input fails only
    /// itself: each element is that input's result. The outer error is for
    /// failures of the computation itself.
    ///
    /// # Errors
    /// [`PipelineError::Inference`] / [`PipelineError::Fusion`].
    pub fn embed_each(
        &self,
        inputs: &[EmbedInput],
    ) -> Result<Vec<Result<MultiEmbedding, PipelineError>>, PipelineError> {
        let r = self.engine.resolve_all();
        self.engine.run_inline(inputs.to_vec(), r, Mode::Each)
    }

    /// Embeds plain texts (no timestamp, position 0) on the calling thread.
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

    /// Validates `inputs`, answers cache hits, and queues the rest for the
    /// batch workers; never waits for queue space.
    ///
    /// **All-or-nothing per request**, which is what an HTTP server needs (a
    /// 422 naming the bad input): the first bad input by index fails the
    /// whole request, either here (range and empty-text checks:
    /// [`PipelineError::InvalidInput`]) or through the ticket (too long
    /// under `truncation = "reject"`, tokenizer failure). A bad request never
    /// affects the requests batched with it. An empty `inputs` is answered
    /// at once with no embeddings.
    ///
    /// # Errors
    /// - [`PipelineError::ResponseTooLarge`]: the answer could hold more than
    ///   `[batching] max_response_floats` floats (checked first, before any
    ///   cache lookup).
    /// - [`PipelineError::RequestTooLarge`] / [`PipelineError::OverBudget`]:
    ///   its cache misses cost more than the whole `[batching] token_budget`
    ///   / more than is left of it now; nothing was queued.
    /// - [`PipelineError::Overloaded`]: the queue is full; nothing was queued.
    /// - [`PipelineError::InvalidInput`]: the first bad input, by index.
    /// - [`PipelineError::SlotUnavailable`] / [`PipelineError::NothingRequested`]:
    ///   bad options.
    /// - [`PipelineError::ShutDown`]: after [`shutdown`](Self::shutdown).
    pub fn submit(
        &self,
        inputs: Vec<EmbedInput>,
        options: EmbedOptions,
    ) -> Result<EmbedTicket, PipelineError> {
        let submitted = Instant::now();
        let engine = &*self.engine;
        if !self.batcher.accepting() {
            return Err(engine.reject(PipelineError::ShutDown));
        }
        let r = engine.resolve(&options).map_err(|e| engine.reject(e))?;
        let bounds = engine.bounds(&r);
        engine.check_response(inputs.iter().map(|i| i.text.as_str()), &bounds)?;
        let request = Request::prepare(
            engine,
            inputs,
            r,
            Mode::AllOrNothing,
            submitted,
            options.deadline,
        )?
        .with_request_id(options.request_id);
        if request.pending() == 0 {
            // Every input was a cache hit (or there were none).
            let answer = request::response(request.finish(engine, Ok(()), Caller::Waiting));
            return Ok(EmbedTicket::ready(answer));
        }
        let (reply, ticket) = EmbedTicket::channel();
        let tokens = request.tokens_bound(&bounds);
        self.batcher
            .enqueue(Job::new(request, reply), tokens)
            .map_err(|e| engine.reject(e))?;
        Ok(ticket)
    }

    /// [`submit`](Self::submit), then await the answer. Runtime-agnostic:
    /// the future is woken from the worker thread.
    ///
    /// # Errors
    /// As [`submit`](Self::submit), plus the errors of inference.
    pub async fn embed_async(
        &self,
        inputs: Vec<EmbedInput>,
        options: EmbedOptions,
    ) -> Result<EmbedResponse, PipelineError> {
        self.submit(inputs, options)?.await
    }

    /// `true` once a forward pass (the build-time warm-up or any request)
    /// has succeeded.
    #[must_use]
    pub fn is_warmed_up(&self) -> bool {
        self.engine
            .state
            .warmed_up
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The workers' heartbeat: ticked on every queue poll (at least once a
    /// second while idle) and after every batch. `None` before any worker ran.
    #[must_use]
    pub fn last_progress(&self) -> Option<DateTime<Utc>> {
        self.engine.state.last_progress()
    }

    /// When an embedding was last produced.
    #[must_use]
    pub fn last_embed_time(&self) -> Option<DateTime<Utc>> {
        self.engine.state.last_embed()
    }

    /// Starts the batch workers of a pipeline built with
    /// [`PipelineBuilder::start_paused`]; does nothing when they run.
    pub fn start_workers(&self) {
        self.batcher.start();
    }

    /// Closes the queue (later submissions fail with
    /// [`PipelineError::ShutDown`]), lets the workers finish everything
    /// queued, and joins them. Idempotent; dropping the pipeline does it.
    /// The blocking calls keep working.
    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }

    /// Tokens admitted to the queue and not yet answered (each input
    /// counted at the upper bound it was admitted with; see
    /// `[batching] token_budget`).
    #[must_use]
    pub fn tokens_admitted(&self) -> usize {
        self.batcher.tokens_admitted()
    }

    /// Every token of `text` as `slot`'s tokenizer reads it (special tokens
    /// added when asked; not truncated), with the text each covers.
    ///
    /// # Errors
    /// [`PipelineError::SlotUnavailable`] when `slot` is not loaded or reads
    /// no tokens; [`PipelineError::Tokenization`] when the tokenizer fails.
    pub fn tokenize(
        &self,
        slot: ModelId,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenInfo>, PipelineError> {
        let (tokenizer, _) = self.tokenizer_of(slot)?;
        tokenizer
            .describe(text, add_special_tokens)
            .map_err(|reason| PipelineError::Tokenization { index: 0, reason })
    }

    /// The text of token `ids` under `slot`'s tokenizer.
    ///
    /// # Errors
    /// As [`tokenize`](Self::tokenize).
    pub fn decode(
        &self,
        slot: ModelId,
        ids: &[u32],
        skip_special_tokens: bool,
    ) -> Result<String, PipelineError> {
        let (tokenizer, _) = self.tokenizer_of(slot)?;
        tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|reason| PipelineError::Tokenization { index: 0, reason })
    }

    /// The longest input `slot`'s checkpoint takes, in tokens (special
    /// tokens included); `None` for a slot that takes any length or is not
    /// loaded.
    #[must_use]
    pub fn max_input_tokens(&self, slot: ModelId) -> Option<usize> {
        self.engine.tokenizer_of(slot).and_then(|(_, max)| max)
    }

    fn tokenizer_of(
        &self,
        slot: ModelId,
    ) -> Result<(&crate::tokenize::TextTokenizer, Option<usize>), PipelineError> {
        self.engine
            .tokenizer_of(slot)
            .ok_or_else(|| PipelineError::SlotUnavailable {
                slot,
                reason: "it is not loaded or reads no tokens".to_owned(),
            })
    }

    /// Batch worker threads running now.
    #[must_use]
    pub fn workers_alive(&self) -> usize {
        self.batcher.alive()
    }

    /// The cache's figures; `None` when the cache is off.
    #[must_use]
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.engine.cache.as_ref().map(|c| CacheStats {
            bytes: c.bytes(),
            entries: c.len() as u64,
            max_bytes: c.max_bytes(),
            evictions: c.evictions(),
        })
    }

    /// What the pipeline serves and its limits (serializable, for `/info`).
    #[must_use]
    pub fn limits(&self) -> PipelineLimits {
        let e = &*self.engine;
        let reg = &e.registry;
        let slots = reg
            .slots
            .iter()
            .map(|s| {
                let model = match &s.backend {
                    Backend::Transformer { model, .. } => Some(model.clone()),
                    _ => None,
                };
                let max_seq_length = model.as_ref().and_then(|name| {
                    reg.models
                        .iter()
                        .find(|m| m.name == *name)
                        .and_then(|m| m.max_seq_length)
                });
                SlotLimits {
                    slot: s.slot,
                    loaded: s.state == SlotState::Loaded,
                    model,
                    dim: s.dim,
                    shared: !s.trunk_shared_with.is_empty(),
                    max_seq_length,
                }
            })
            .collect();
        let b = e.config.batching;
        PipelineLimits {
            device: reg.device.clone(),
            slots,
            fusion_dim: reg.fusion.as_ref().map(|f| f.dim),
            batching: BatchingLimits {
                queue_capacity: b.queue_capacity,
                max_batch_size: e.config.gather_limit(),
                max_batch_tokens: b.max_batch_tokens,
                max_wait_ms: b.max_wait_ms,
                chunk_size: e.config.max_batch_size,
                chunk_max_tokens: e.config.max_forward_tokens,
                workers: self.batcher.workers(),
                token_budget: b.token_budget,
                max_response_floats: b.max_response_floats,
            },
            cache_max_bytes: e.cache.as_ref().map_or(0, |c| c.max_bytes()),
        }
    }

    /// Reads the device's memory and the cache's size into the recorder's
    /// gauges now: GPU used and total on CUDA (both cleared when the device
    /// cannot be read, so no stale figure survives), cache bytes and
    /// entries. [`health`](Self::health) does it; a server calls it before
    /// rendering `/metrics`.
    pub fn refresh_gauges(&self) {
        let _ = self.read_gauges();
    }

    fn read_gauges(&self) -> GpuObservation {
        let e = &*self.engine;
        let gpu = crate::device::gpu_observation(&e.device);
        if let Some(m) = e.rec() {
            match &gpu {
                GpuObservation::Reading {
                    used_bytes,
                    total_bytes,
                } => m.set_gpu_memory_bytes(*used_bytes, *total_bytes),
                GpuObservation::Unreadable { .. } => {
                    m.set_memory_gauge(MemoryGauge::GpuUsed, None);
                    m.set_memory_gauge(MemoryGauge::GpuTotal, None);
                }
                GpuObservation::NotExpected => {}
            }
            if let Some(c) = &e.cache {
                m.set_cache_size(c.bytes(), c.len() as u64);
            }
        }
        gpu
    }

    /// [`health_at`](Self::health_at) the current time.
    #[must_use]
    pub fn health(&self) -> HealthReport {
        self.health_at(Utc::now())
    }

    /// Runs the quality canary now, on the calling thread (a few hundred
    /// milliseconds of compute for the full pipeline on two cores): the
    /// shipped probe sentences through every loaded slot, batched and one
    /// by one, compared with the first run's vectors, the shipped reference
    /// vectors where they apply, and each other. See [`CanaryReport`] for
    /// the figures. It records no user figure and bypasses the cache.
    ///
    /// The first run sets the start-up vectors; call it once the pipeline is
    /// built (the server does, then every `--canary-interval-secs` when no
    /// request is waiting). The latest report feeds [`health`](Self::health).
    ///
    /// # Errors
    /// [`PipelineError::Inference`] when a computation fails (the report is
    /// then not replaced); [`PipelineError::Canary`] if the shipped probe
    /// set could not be read.
    pub fn run_canary(&self) -> Result<CanaryReport, PipelineError> {
        let probes = ProbeSet::shipped().map_err(PipelineError::Canary)?;
        self.canary.run(&self.engine, &probes)
    }

    /// The output-drift figures now: for each loaded dense slot, its recent
    /// outputs against its first ones (`[quality] drift_window` of each; see
    /// [`DriftReport`] and `docs/metrics.md`, "Output drift"). Computed on
    /// the calling thread from copies of the windows (a few milliseconds);
    /// recording never waits for it.
    #[must_use]
    pub fn drift_report(&self) -> DriftReport {
        let e = &*self.engine;
        e.drift
            .report(ModelId::ALL.into_iter().filter(|id| e.loaded.contains(*id)))
    }

    /// The latest canary report; `None` before the first run completes.
    #[must_use]
    pub fn canary_report(&self) -> Option<CanaryReport> {
        self.canary.last()
    }

    /// The health verdict at `now`, evaluated by `embeddings-health` (with the
    /// `[health]` policy) from:
    /// - the registry: loaded slots; failed slots with their load error;
    ///   disabled slots as failed with the reason "disabled in the
    ///   configuration" (as `embeddings-health` asks, so a deployment running
    ///   fewer slots lowers `[health] min_models_loaded` deliberately);
    /// - a fresh metrics snapshot (error rate, cache figures);
    /// - the device: [`GpuObservation::NotExpected`] on the CPU; on CUDA,
    ///   used and total memory read from the device (also written to the GPU
    ///   gauges), or `Unreadable` with the driver's reason;
    /// - components: `model_registry` (a slot is loaded), `batch_processor`
    ///   (accepting, every worker alive), `fusemoe` (loaded when enabled),
    ///   `cache_manager` (within its bound, or off);
    /// - warm-up, the workers' heartbeat, the last embedding time, and the
    ///   pipeline's uptime.
    ///
    /// The error-rate rule sees only failures of the service (inference,
    /// timeout, internal): client errors never change the verdict. The
    /// snapshot is taken here, so the `snapshot_fresh` rule holds by
    /// construction; it guards callers that evaluate a stored snapshot.
    #[must_use]
    pub fn health_at(&self, now: DateTime<Utc>) -> HealthReport {
        let e = &*self.engine;
        let mut registry = RegistryState::new();
        for s in &e.registry.slots {
            match &s.state {
                SlotState::Loaded => registry.mark_loaded(s.slot),
                SlotState::Failed(err) => registry.mark_failed(s.slot, err.to_string()),
                _ => registry.mark_failed(
                    s.slot,
                    format!("disabled in the configuration (`[slots.{}]`)", s.slot),
                ),
            }
        }
        let gpu = self.read_gauges();
        let cache_ok = e.cache.as_ref().is_none_or(|c| c.bytes() <= c.max_bytes());
        let snapshot = e.metrics.snapshot();
        let components = ComponentChecks {
            model_registry: !e.loaded.is_empty(),
            batch_processor: self.batcher.healthy(),
            fusemoe: !e.config.fusion.enabled || e.fusion.is_some(),
            cache_manager: cache_ok,
        };
        let canary = self.canary.last();
        let observation = Observation::new(&registry, &snapshot, &gpu, components)
            .with_warmed_up(self.is_warmed_up())
            .with_last_progress(e.state.last_progress())
            .with_last_embed_time(e.state.last_embed())
            .with_uptime(e.state.started.elapsed())
            .with_canary(canary.as_ref());
        e.health_policy.evaluate(&observation, now)
    }
}

impl Drop for EmbeddingPipeline {
    fn drop(&mut self) {
        self.batcher.shutdown();
    }
}
