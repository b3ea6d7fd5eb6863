//! Typed errors. Every message says what went wrong *and* what to do about it.

use std::path::PathBuf;

use embeddings_types::{ErrorKind, ModelId};

/// Why one input was rejected before any model ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The text was empty (or only whitespace) and the configuration says
    /// `empty_text = "reject"`.
    #[error("the text is empty; send non-empty text or set `[input] empty_text = \"embed\"`")]
    EmptyText,
    /// The text had more tokens than the model accepts and the configuration
    /// says `truncation = "reject"`.
    #[error(
        "the text has {tokens} tokens but model `{model}` accepts at most {max} (special tokens included); \
         shorten it or set `[input] truncation = \"truncate\"`"
    )]
    TooLong {
        /// The model whose limit was exceeded.
        model: String,
        /// Tokens the text produced, special tokens included.
        tokens: usize,
        /// The model's limit (`max_seq_length`).
        max: usize,
    },
    /// A timestamp string could not be parsed.
    #[error("invalid timestamp `{input}`: {reason}; use RFC 3339, e.g. `2024-05-01T12:00:00Z`")]
    InvalidTimestamp {
        /// The string that was given.
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// A timestamp was outside the supported range (years 1..=9999).
    #[error("timestamp {timestamp} is outside the supported range (years 1 to 9999)")]
    TimestampOutOfRange {
        /// The timestamp, as RFC 3339.
        timestamp: String,
    },
}

/// Why the pipeline could not be built: configuration, model files, the
/// device, fusion weights. Kept in the model registry for each failed slot
/// ([`SlotState::Failed`](crate::SlotState::Failed)), so it is `Clone`.
/// Errors of a running pipeline are [`PipelineError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A model directory does not exist.
    #[error(
        "model directory {} for model `{model}` not found: run `cargo xtask fetch-models` or point \
         `--models-dir` (or EMBEDDINGS_MODELS_DIR) at the folder that holds it",
        path.display()
    )]
    ModelDirNotFound {
        /// The model's name in the configuration.
        model: String,
        /// The directory that was looked for.
        path: PathBuf,
    },
    /// A file the model needs is missing from its directory.
    #[error(
        "model file {} for model `{model}` not found: run `cargo xtask fetch-models` or point \
         `--models-dir` (or EMBEDDINGS_MODELS_DIR) at a complete Hugging Face model folder",
        path.display()
    )]
    ModelFileNotFound {
        /// The model's name in the configuration.
        model: String,
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A Hugging Face cache folder could not be resolved to a snapshot.
    #[error(
        "Hugging Face cache lookup for `{repo}` failed: {reason}; download it with \
         `huggingface-cli download {repo}` or set `hf_home` / HF_HOME to the right cache"
    )]
    HfCache {
        /// `ORG/NAME`.
        repo: String,
        /// What was missing.
        reason: String,
    },
    /// `config.json` (or a pooling / sentence-transformers config) is unreadable or invalid.
    #[error(
        "invalid model config {}: {reason}; the file must be a BERT-family Hugging Face config \
         (re-download the model if it was edited)",
        path.display()
    )]
    BadModelConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The weights file is not a valid safetensors file.
    #[error(
        "corrupt weights file {}: {reason}; re-download the model (`cargo xtask fetch-models`)",
        path.display()
    )]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader said.
        reason: String,
    },
    /// The weights do not fit the architecture described by `config.json`
    /// (wrong tensor shapes or missing tensors).
    #[error(
        "weights {} do not match the model's config.json: {reason}; config and weights must come \
         from the same checkpoint",
        path.display()
    )]
    WeightsMismatch {
        /// The weights file.
        path: PathBuf,
        /// The first mismatch found.
        reason: String,
    },
    /// `tokenizer.json` could not be loaded.
    #[error(
        "tokenizer {} could not be loaded: {reason}; the model folder needs a Hugging Face \
         `tokenizer.json` (fast tokenizer format)",
        path.display()
    )]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizer library's reason.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {reason}; check the path and its permissions", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The pipeline configuration is invalid.
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    /// A numeric setting is outside its documented range.
    #[error("`{key}` is {value}, outside its range {min}..={max}; set a value in that range")]
    OutOfRange {
        /// The setting, e.g. `batching.queue_capacity`.
        key: String,
        /// The value given.
        value: String,
        /// The smallest value allowed.
        min: String,
        /// The largest value allowed.
        max: String,
    },
    /// The requested device cannot be used.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// The trained fusion weights are invalid, or no slot is present to fuse.
    #[error("fusion: {0}")]
    Fusion(String),
    /// A tensor the pipeline builds for itself could not be made (out of
    /// memory, or a bug).
    #[error(
        "could not set up {what}: {reason}; check the device's free memory, and report it if it repeats"
    )]
    Setup {
        /// What was being built.
        what: String,
        /// The tensor library's reason.
        reason: String,
    },
    /// A slot failed to load and the builder was asked to be strict.
    #[error("slot `{slot}` failed to load: {reason}")]
    SlotFailed {
        /// The slot.
        slot: ModelId,
        /// Why it failed.
        reason: Box<LoadError>,
    },
    /// Loading stopped unexpectedly (a panic inside the loader: a bug).
    #[error("loading stopped unexpectedly: {0}; this is a bug, please report it with the log")]
    Internal(String),
    /// Every enabled slot failed to load (or none is enabled).
    #[error("no slot could be loaded: {0}")]
    NoSlotLoaded(String),
}

/// Everything that can go wrong with a request to a built pipeline. Each
/// maps onto an [`ErrorKind`] through [`PipelineError::kind`], the label it
/// is counted under. Errors of building the pipeline are [`LoadError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// One input was rejected; `index` is its position in the slice passed to `embed`.
    #[error("input {index} rejected: {reason}")]
    InvalidInput {
        /// Position of the input in the batch.
        index: usize,
        /// Why.
        reason: InputError,
    },
    /// The tokenizer failed on one input.
    #[error("tokenization of input {index} failed: {reason}")]
    Tokenization {
        /// Position of the input in the batch.
        index: usize,
        /// The tokenizer's reason.
        reason: String,
    },
    /// A forward pass, head or built-in computation failed.
    #[error("inference failed in {what}: {reason}")]
    Inference {
        /// Which model or slot.
        what: String,
        /// The tensor library's reason.
        reason: String,
    },
    /// The fusion step failed.
    #[error("fusion: {0}")]
    Fusion(String),
    /// The submission queue is full; nothing was queued.
    #[error(
        "the pipeline is overloaded: its queue already holds {capacity} requests; retry later (with backoff), or raise `[batching] queue_capacity` / `workers`"
    )]
    Overloaded {
        /// The queue's capacity, in requests.
        capacity: usize,
    },
    /// Admission by work: the tokens already admitted plus this request's
    /// would exceed `[batching] token_budget`; nothing was queued.
    #[error(
        "the pipeline is busy: {in_use} of its {budget}-token budget are admitted and this request needs up to {tokens}; {}",
        retry_hint(*retry_after)
    )]
    OverBudget {
        /// This request's cost (an upper bound of its tokens).
        tokens: usize,
        /// Tokens admitted and not yet answered when it was refused.
        in_use: usize,
        /// `[batching] token_budget`.
        budget: usize,
        /// When the admitted work should have drained enough, from the
        /// rate it drained at over the last seconds; `None` when no work
        /// has drained lately (no measurement to go by).
        retry_after: Option<std::time::Duration>,
    },
    /// The request alone costs more than the whole token budget: it can
    /// never be admitted as it is.
    #[error(
        "the request needs up to {tokens} tokens, more than the pipeline's whole budget of {budget} (`[batching] token_budget`); split it into smaller requests, or send shorter inputs"
    )]
    RequestTooLarge {
        /// This request's cost (an upper bound of its tokens).
        tokens: usize,
        /// `[batching] token_budget`.
        budget: usize,
    },
    /// The answer would hold more output floats than allowed.
    #[error(
        "the answer would hold up to {floats} floats ({inputs} inputs), more than the limit of {max} (`[batching] max_response_floats`); send fewer inputs per request, or ask for fewer slots"
    )]
    ResponseTooLarge {
        /// Inputs in the request.
        inputs: usize,
        /// Output floats the answer could hold (an upper bound).
        floats: usize,
        /// `[batching] max_response_floats`.
        max: usize,
    },
    /// The pipeline was shut down; it takes no more work.
    #[error("the pipeline has been shut down and takes no more requests; build a new one")]
    ShutDown,
    /// The worker processing the request stopped without answering (a bug:
    /// a panic inside a worker). The request may be retried.
    #[error(
        "the worker processing this request stopped without answering (internal error); retry the request, and report it if it repeats"
    )]
    WorkerLost,
    /// A requested slot is not served by this pipeline.
    #[error(
        "slot `{slot}` was requested but is not available: {reason}; request only loaded slots (see `describe()` or `GET /info`)"
    )]
    SlotUnavailable {
        /// The slot.
        slot: ModelId,
        /// Why (disabled in the configuration, or failed to load and why).
        reason: String,
    },
    /// The options asked for no output at all (no slot and no fused vector).
    #[error("nothing was requested: name at least one slot or set `fused`")]
    NothingRequested,
    /// The request's deadline ([`EmbedOptions::deadline`](crate::EmbedOptions::deadline))
    /// passed before its answer was ready; queued work was dropped, finished
    /// work was discarded (not cached).
    #[error(
        "the request did not finish within its deadline ({after:?} after submission); retry with fewer or shorter inputs, or allow more time"
    )]
    DeadlineExceeded {
        /// The time the request was given.
        after: std::time::Duration,
    },
    /// The caller dropped its ticket before the answer was ready (for
    /// example, an HTTP client disconnected). Nobody reads this error; it is
    /// what the pipeline counts, as kind `cancelled`.
    #[error("the caller cancelled the request before its answer was ready")]
    Cancelled,
    /// The quality canary could not run (its shipped probe set is unreadable,
    /// or a computation gave no output): a bug, never a user's doing.
    #[error("the quality canary could not run: {0}; this is a bug, please report it")]
    Canary(String),
}

/// The advice of [`PipelineError::OverBudget`]'s message.
fn retry_hint(after: Option<std::time::Duration>) -> String {
    match after {
        Some(d) => format!("retry in {} s", d.as_secs().max(1)),
        None => "retry later (with backoff)".to_owned(),
    }
}

impl PipelineError {
    /// The metric label for this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput { .. } => ErrorKind::Validation,
            Self::Tokenization { .. } => ErrorKind::Tokenization,
            Self::Inference { .. } | Self::Fusion(_) => ErrorKind::Inference,
            Self::Overloaded { .. } | Self::OverBudget { .. } => ErrorKind::Overload,
            Self::RequestTooLarge { .. } | Self::ResponseTooLarge { .. } => ErrorKind::Validation,
            Self::SlotUnavailable { .. } | Self::NothingRequested => ErrorKind::Validation,
            Self::DeadlineExceeded { .. } => ErrorKind::Timeout,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::ShutDown | Self::WorkerLost | Self::Canary(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn inference(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::Inference {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

/// The message a caught panic carried (`panic!` with a literal or with a
/// formatted string), or `"a panic without a message"`; for turning a panic
/// caught at a boundary into a typed error.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
/// assert_eq!(embeddings_pipeline::panic_message(payload.as_ref()), "boom 1");
/// ```
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
