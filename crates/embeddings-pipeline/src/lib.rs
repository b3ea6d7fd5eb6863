//! A twelve-slot text-embedding pipeline on [candle](https://github.com/huggingface/candle).
//!
//! Each [`ModelId`] is a *slot*. Configuration binds every slot to a backend:
//!
//! | slot | backend (default) | output |
//! |---|---|---|
//! | `semantic`, `code`, `graph`, `multimodal` (text side), `entity` | all-MiniLM-L6-v2, pooling from `1_Pooling` (mean) | dense, unit norm |
//! | `causal` | all-MiniLM-L6-v2, cause / effect heads | two dense unit vectors |
//! | `late_interaction` | all-MiniLM-L6-v2, per-token head | one unit vector per token |
//! | `temporal_recent`, `temporal_periodic`, `temporal_positional` | built-in | dense, unit norm |
//! | `hdc` | built-in (bipolar hypervectors) | dense, unit norm |
//! | `sparse` | built-in (tokenizer vocabulary) | index/value pairs |
//!
//! **Sharing.** Slots bound to the same checkpoint share *one* forward pass per
//! chunk: the trunk runs once and only the heads differ. Slots with the same
//! checkpoint *and* head produce the same vector, computed once and shared
//! (`Arc`): by default `semantic`, `code`, `graph`, `multimodal` and `entity`
//! are one vector. [`EmbeddingPipeline::describe`] lists, per slot, which
//! slots share its trunk and its output, and which run a dedicated model.
//!
//! **Fusion** (fusemoe) gates and projects the slot outputs to one vector
//! (default 1536 dims); see the `fusion` section below.
//!
//! **Tokenization** follows sentence-transformers: pad to the chunk's longest
//! item, truncate at `max_seq_length` (from `sentence_bert_config.json`, 256
//! for MiniLM), not the shipped `tokenizer.json`'s fixed 128.
//!
//! # Example
//! Built-in slots need no model files:
//! ```
//! use embeddings_pipeline::{EmbedInput, EmbeddingPipeline, ModelId};
//!
//! let pipeline = EmbeddingPipeline::builder()
//!     .only(&[ModelId::TemporalRecent, ModelId::TemporalPeriodic, ModelId::TemporalPositional])
//!     .reference_time("2024-06-01T00:00:00Z".parse()?)
//!     .build()?;
//! let out = pipeline.embed(&[
//!     EmbedInput::new("deploy finished").with_timestamp_rfc3339("2024-05-31T18:00:00Z")?,
//!     EmbedInput::new("next step").with_position(1),
//! ])?;
//! assert_eq!(out.len(), 2);
//! assert_eq!(out[0].dense(ModelId::TemporalRecent).map(<[f32]>::len), Some(16));
//! assert_eq!(out[0].fused().map(<[f32]>::len), Some(1536));
//! assert!(out[0].get(ModelId::Semantic).is_none()); // switched off
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! With the model present (`EMBEDDINGS_MODELS_DIR` or `.models_dir(…)`):
//! ```no_run
//! # use embeddings_pipeline::{EmbeddingPipeline, ModelId};
//! let pipeline = EmbeddingPipeline::builder().models_dir("models").build()?;
//! println!("{}", pipeline.describe());
//! let out = pipeline.embed_texts(&["A man is eating food."])?;
//! let semantic = out[0].dense(ModelId::Semantic);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Configuration (TOML)
//! ```toml
//! models_dir = "/srv/models"      # relative model paths resolve here
//! max_batch_size = 32             # chunk size; bounds memory for huge batches
//! max_forward_tokens = 1536       # and padded tokens (items × longest) per chunk
//! device = "cpu"                  # or "cuda" (feature `cuda`)
//! builtin_tokenizer = "default"   # tokenizer of `sparse` and `hdc`
//!
//! [input]
//! truncation = "truncate"         # or "reject" (typed error per item)
//! empty_text = "embed"            # or "reject"
//!
//! [models.default]                # implicit when absent
//! path = "all-MiniLM-L6-v2"
//! [models.code]
//! hf_repo = "microsoft/codebert-base"   # $HF_HOME/hub/models--microsoft--codebert-base/snapshots/<rev>/
//! revision = "main"
//! max_seq_length = 512
//!
//! [slots.code]
//! model = "code"
//! pooling = "cls"                 # auto (from 1_Pooling) | mean | cls
//! [slots.graph]
//! enabled = false
//!
//! [temporal]
//! reference_time = "2025-01-01T00:00:00Z"
//! half_lives_hours = [1, 24, 168, 720]
//! periodic_harmonics = 4
//! positional_dim = 64
//!
//! [hdc]
//! dim = 1024
//! max_ngram = 3
//!
//! [late_interaction]
//! project_dim = 128
//!
//! [fusion]
//! dim = 1536
//! top_k = 8
//! weights = { semantic = 2.0, hdc = 0.5 }
//! # trained_weights = "fusion.safetensors"
//!
//! warm_up = true                  # one pass through every slot at build time
//!
//! [batching]                      # the queue behind `submit` / `embed_async`
//! queue_capacity = 256            # requests; a full queue answers `Overloaded` at once
//! # max_batch_size = 32           # items per gathered batch (default: top-level max_batch_size)
//! max_batch_tokens = 8192         # tokens per gathered batch
//! max_wait_ms = 0                 # wait for more requests after the first (0: no)
//! workers = 1                     # inference threads
//! token_budget = 262144           # tokens admitted and not yet answered (upper bounds)
//! max_response_floats = 8388608   # output floats one request may produce
//!
//! [cache]
//! max_bytes = 134217728           # 128 MiB, entries weighed by real size; 0 disables
//!
//! [health]                        # embeddings-health thresholds (the spec's defaults)
//! min_models_loaded = 10
//! max_gpu_memory_fraction = 0.9
//! max_error_rate_per_minute = 10.0
//! min_canary_cosine = 0.9999      # the quality canary's bound (rule `canary`)
//! max_canary_batch_deviation = 0.0001
//!
//! [quality]
//! drift_window = 256              # outputs in each drift window, per dense slot
//! ```
//!
//! Every numeric key has a range, checked at build time
//! ([`LoadError::OutOfRange`] names the key, the value and the range):
//! `max_batch_size` and `batching.max_batch_size` 1..=[`MAX_ITEMS`];
//! `max_forward_tokens` and `batching.max_batch_tokens` 1..=[`MAX_TOKENS`];
//! `batching.queue_capacity` 1..=[`MAX_QUEUE`]; `batching.token_budget`
//! 1..=[`MAX_TOKEN_BUDGET`]; `batching.max_response_floats`
//! 1..=[`MAX_RESPONSE_FLOATS`]; `batching.workers`
//! 1..=[`MAX_WORKERS`]; `batching.max_wait_ms` 0..=[`MAX_WAIT_MS`];
//! `cache.max_bytes` 0..=[`MAX_CACHE_BYTES`]; `hdc.dim`, `fusion.dim`,
//! `fusion.sparse_hash_dim`, `late_interaction.project_dim` 1..=[`MAX_DIM`],
//! `temporal.positional_dim` 2..=[`MAX_DIM`] (even); `hdc.max_ngram` 1..=8;
//! `temporal.periodic_harmonics` 1..=1024; up to 64 half-lives;
//! `fusion.top_k` 1..=12; `quality.drift_window` 16..=4096;
//! `models.*.max_seq_length` 1..=[`MAX_SEQ`]. A
//! model's `config.json` is held to ranges too (e.g. `num_hidden_layers`
//! 1..=256, `hidden_size` 1..=16384).
//!
//! # Serving
//! - [`EmbeddingPipeline::submit`] validates, answers cache hits, and queues
//!   the rest for the batch workers; it never waits for queue space (a full
//!   queue is [`PipelineError::Overloaded`], kind `overload`). The returned
//!   [`EmbedTicket`] is a runtime-agnostic `Future` and has a blocking
//!   `wait()`; [`EmbeddingPipeline::embed_async`] is submit + await.
//!   Per request all-or-nothing: the first bad input (by index) fails that
//!   request only, never the requests batched with it.
//! - [`EmbedOptions`] picks the returned slots and the fused vector; slots
//!   not needed are not computed (no trunk pass when no transformer slot is
//!   requested and `fused` is off). [`EmbedResponse::timings`] has queue
//!   wait, tokenization, inference and total time (the parts never
//!   overlap). [`EmbedOptions::deadline`] bounds a request: queued work past
//!   it is dropped, late work is discarded, and either counts once as a
//!   `timeout`; a dropped ticket counts as `cancelled`.
//! - **batch_processor**: a worker takes the first queued request, then
//!   gathers more until `max_batch_size` items, `max_batch_tokens` tokens or
//!   `max_wait_ms`; a request is never split across batches (a 10 000-item
//!   request is one job, run in chunks of the top-level `max_batch_size`).
//!   Dropping the pipeline or [`EmbeddingPipeline::shutdown`] finishes queued
//!   work and joins the workers.
//! - **cache_manager**: a content-addressed cache bounded in bytes (key: a
//!   128-bit hash of the configuration fingerprint, text, resolved timestamp,
//!   reference time, position, requested slots and fused flag); hits skip
//!   inference, a batch with some hits runs only the misses.
//! - **Instrumentation**: everything is recorded into the
//!   [`PipelineMetrics`] of [`EmbeddingPipeline::metrics`] (see there for
//!   what each figure means); `record_metrics(false)` switches it off.
//! - **Health**: [`EmbeddingPipeline::health`] evaluates the
//!   `embeddings-health` policy over the real registry, a metrics snapshot,
//!   the cache, the workers, fusion and the device;
//!   [`EmbeddingPipeline::is_warmed_up`] and
//!   [`EmbeddingPipeline::last_progress`] feed the probes.
//!   [`EmbeddingPipeline::limits`] and [`EmbeddingPipeline::describe`]
//!   serialize to JSON for an `/info` endpoint.
//!
//! # Inputs and bad input
//! - Empty text: embedded (`[CLS] [SEP]`, as sentence-transformers does;
//!   `sparse` is empty, `hdc` is the tie-break vector) unless
//!   `empty_text = "reject"`.
//! - Too many tokens: truncated ([`MultiEmbedding::truncated`]) unless
//!   `truncation = "reject"`.
//! - Timestamps outside years 1..=9999: [`InputError::TimestampOutOfRange`];
//!   unparsable RFC 3339: [`InputError::InvalidTimestamp`].
//! - Empty batch: `Ok(vec![])`.
//! - Huge batch: sorted by length, processed in chunks of at most
//!   `max_batch_size` items and `max_forward_tokens` padded tokens.
//! - [`EmbeddingPipeline::embed`] is all-or-nothing (first bad input, by
//!   index, before any model runs); [`EmbeddingPipeline::embed_each`] gives a
//!   result per input so a bad input fails only itself.
//!
//! # Built-in slots
#![doc = include_str!("../docs/builtin.md")]
//!
//! # Heads
#![doc = include_str!("../docs/heads.md")]
//!
//! # Fusion
#![doc = include_str!("../docs/fusion.md")]
//!
//! # Memory allocator
//! A forward pass allocates and frees activation buffers of a few MB per
//! op. With glibc's malloc, whether those come from reused memory or from
//! fresh, page-faulted `mmap`s depends on the process's allocation history;
//! in a process with one pipeline (a typical service) that cost ≈ 10 000
//! page faults per call of 32 short inputs and ≈ 30 % of the throughput
//! (`BENCHMARKS.md`, "Allocator"). Either make
//! [mimalloc](https://crates.io/crates/mimalloc) the binary's global
//! allocator, as `embeddings-server` does, or start the process with
//! `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456`.
//!
//! # Feature flags
//! - `cuda`: CUDA support (`device = "cuda"` opens device 0; the driver
//!   library is checked for first and a missing one is a typed error).
//!   `cargo xtask cuda-build` compiles it with the CUDA toolkit from PyPI,
//!   no GPU needed, into a binary that starts without the driver.
#![deny(missing_docs)]
// `unsafe` is allowed in five modules only: `matmul.rs` (the checked front
// of the `gemm` kernel), `packed.rs` (the AVX-512 and AVX2/FMA kernels for
// weights packed at load, behind a checked front), `team.rs` (a buffer the
// threads of one forward pass write in disjoint blocks), and `bert.rs` and
// `dense.rs`, which hand those blocks out.
#![deny(unsafe_code)]

mod admission;
mod api;
mod batch_processor;
#[allow(unsafe_code)]
mod bert;
mod bert_kernels;
mod builder;
mod builtin;
mod cache_manager;
mod canary;
mod config;
#[allow(unsafe_code)]
mod dense;
mod device;
mod drift;
mod engine;
mod error;
mod fusion;
mod input;
mod load;
#[allow(unsafe_code)]
mod matmul;
mod options;
mod output;
#[allow(unsafe_code)]
mod packed;
mod registry;
mod request;
mod rng;
mod run;
mod source;
#[allow(unsafe_code)]
mod team;
mod ticket;
mod tokenize;
mod transformer;

pub use api::{BatchingLimits, CacheStats, EmbeddingPipeline, PipelineLimits, SlotLimits};
pub use builder::PipelineBuilder;
pub use config::{
    BatchingConfig, CacheConfig, DEFAULT_CACHE_BYTES, DEFAULT_MAX_FORWARD_TOKENS,
    DEFAULT_MAX_RESPONSE_FLOATS, DEFAULT_MODEL, DEFAULT_MODEL_DIR, DEFAULT_TOKEN_BUDGET,
    DeviceKind, EmptyTextPolicy, FusionConfig, HdcConfig, InputConfig, LateInteractionConfig,
    MAX_CACHE_BYTES, MAX_DIM, MAX_ITEMS, MAX_QUEUE, MAX_RESPONSE_FLOATS, MAX_SEQ, MAX_TOKEN_BUDGET,
    MAX_TOKENS, MAX_WAIT_MS, MAX_WORKERS, ModelSource, PipelineConfig, Pooling, QualityConfig,
    SlotConfig, TemporalConfig, TruncationPolicy, is_transformer_slot,
};
pub use device::cuda_driver_present;
pub use embeddings_health::{HealthPolicySpec, HealthReport};
pub use embeddings_metrics::PipelineMetrics;
pub use embeddings_types::{
    CanaryFigure, CanaryReport, DriftReport, ErrorKind, ModelId, OutputKind, SlotCanary, SlotDrift,
};
pub use error::{InputError, LoadError, PipelineError, panic_message};
pub use input::EmbedInput;
pub use options::{EmbedOptions, EmbedResponse, Timings, TruncationDirection};
pub use output::{CausalPair, MultiEmbedding, SlotOutput, SparseVector, TokenVectors, cosine};
pub use registry::{
    Backend, FusionReport, HeadKind, ModelRegistry, ModelReport, SlotReport, SlotState,
};
pub use ticket::EmbedTicket;
pub use tokenize::TokenInfo;

#[cfg(test)]
mod tests {
    #[test]
    fn pipeline_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::EmbeddingPipeline>();
        check::<crate::MultiEmbedding>();
        check::<crate::PipelineError>();
        check::<crate::LoadError>();
        check::<crate::EmbedTicket>();
        check::<crate::EmbedResponse>();
    }
}
