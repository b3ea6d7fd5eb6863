//! The Text Embeddings Inference surface: the request and response shapes
//! of Hugging Face TEI's API, so its clients (`huggingface_hub`'s
//! `InferenceClient`, LangChain, LlamaIndex, Haystack) work unchanged.
//!
//! | route | answers | slot |
//! |---|---|---|
//! | `POST /embed`, `POST /` | `[[f32]]` | `--tei-slot` (default `semantic`) |
//! | `POST /embed_sparse` | `[[{index, value}]]` | `sparse` |
//! | `POST /embed_all` | `[[[f32]]]`, one vector per token | `late_interaction` |
//! | `POST /tokenize` | `[[{id, text, special, start, stop}]]` | `--tei-slot`'s tokenizer |
//! | `POST /decode` | `[str]` | `--tei-slot`'s tokenizer |
//!
//! Errors on these routes are TEI's `{error, error_type}`
//! (`error::tei_type`). `normalize: false` returns the raw pooling (the unit
//! vector times the length it had, [`MultiEmbedding::pre_norm`]);
//! `truncation_direction: "Left"` keeps the end of a too-long input;
//! `truncate: false` refuses one (checked with the slot's tokenizer before
//! any work). `prompt_name` is refused with a message: no model here has a
//! prompt configuration.
//!
//! [`MultiEmbedding::pre_norm`]: embeddings_pipeline::MultiEmbedding::pre_norm

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use embeddings_pipeline::{
    EmbedInput, EmbedOptions, EmbedResponse, ModelId, TruncationDirection, TruncationPolicy,
};
use serde::{Deserialize, Serialize};

use crate::api;
use crate::app::{
    AppState, json_response, parse_json, read_body, request_id, run_pipeline, server_timing,
    timings,
};
use crate::error::{ApiError, ErrorKind};
use crate::request_id::RequestId;

/// One text or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TeiInputs {
    /// One text.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl TeiInputs {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Which end of a too-long input is cut (TEI spells it either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Direction {
    /// Cut the start: keep the end.
    #[serde(alias = "left")]
    Left,
    /// Cut the end: keep the start.
    #[default]
    #[serde(alias = "right")]
    Right,
}

impl From<Direction> for TruncationDirection {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Left => Self::Left,
            Direction::Right => Self::Right,
        }
    }
}

fn yes() -> bool {
    true
}

/// Body of `POST /embed`, `/embed_sparse`, `/embed_all` and `/`.
#[derive(Debug, Clone, Deserialize)]
pub struct TeiEmbedRequest {
    /// The texts.
    pub inputs: TeiInputs,
    /// Unit-length vectors (default); `false`: the raw pooling.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Cut inputs longer than the model takes; absent: the pipeline's
    /// `[input] truncation` (TEI's `auto_truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end to cut.
    #[serde(default)]
    pub truncation_direction: Direction,
    /// A prompt from the model's prompt configuration.
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Keep this many leading components, re-normalised.
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// Body of `POST /tokenize`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    /// The texts.
    pub inputs: TeiInputs,
    /// Add `[CLS]`/`[SEP]` (default true).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// A prompt from the model's prompt configuration.
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// Token ids: one sequence or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Ids {
    /// One sequence.
    One(Vec<u32>),
    /// Several.
    Many(Vec<Vec<u32>>),
}

/// Body of `POST /decode`.
#[derive(Debug, Clone, Deserialize)]
pub struct DecodeRequest {
    /// The ids.
    pub ids: Ids,
    /// Leave `[CLS]`/`[SEP]` out (default true).
    #[serde(default = "yes")]
    pub skip_special_tokens: bool,
}

#[derive(Debug, Serialize)]
struct SparseValue {
    index: u32,
    value: f32,
}

/// What a TEI embedding route returns for one input.
#[derive(Debug, Clone, Copy)]
enum Output {
    Pooled,
    Sparse,
    PerToken,
}

fn validation(id: &RequestId, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Validation, id, message)
}

fn no_prompts(id: &RequestId, name: &str) -> ApiError {
    validation(
        id,
        format!(
            "`prompt_name` is {name:?} but no prompts were found in the model's Sentence Transformers configuration; send the prompt text in `inputs` instead"
        ),
    )
}

/// Checks a TEI request against what is served before any work; returns
/// the texts.
fn check(
    state: &AppState,
    id: &RequestId,
    slot: ModelId,
    req: TeiEmbedRequest,
) -> Result<Vec<String>, ApiError> {
    let texts = req.inputs.into_vec();
    if texts.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Empty,
            id,
            "`inputs` cannot be empty",
        ));
    }
    let max = state.limits.max_inputs;
    if texts.len() > max {
        return Err(validation(
            id,
            format!(
                "batch size {} > maximum allowed batch size {max}",
                texts.len()
            ),
        ));
    }
    crate::app::check_inputs(state, id, &texts)?;
    if let Some(name) = &req.prompt_name {
        return Err(no_prompts(id, name));
    }
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(id));
    };
    let auto_truncate = pipeline.config().input.truncation == TruncationPolicy::Truncate;
    let truncate = req.truncate.unwrap_or(auto_truncate);
    if !truncate && let Some(limit) = pipeline.max_input_tokens(slot) {
        for text in &texts {
            let given = pipeline
                .tokenize(slot, text, true)
                .map_err(|e| ApiError::new(ErrorKind::Validation, id, e.to_string()))?
                .len();
            if given > limit {
                return Err(validation(
                    id,
                    format!("`inputs` must have less than {limit} tokens. Given: {given}"),
                ));
            }
        }
    }
    if req.dimensions == Some(0) {
        return Err(validation(id, "`dimensions` must be at least 1"));
    }
    Ok(texts)
}

/// TEI's timing headers, in milliseconds, beside our `Server-Timing`.
fn tei_headers(response: &mut Response, result: &EmbedResponse, chars: usize, started: Instant) {
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let tokens: usize = result
        .embeddings
        .iter()
        .map(embeddings_pipeline::MultiEmbedding::token_count)
        .sum();
    let t = &result.timings;
    let compute = t.tokenization + t.queue_wait + t.inference;
    for (name, value) in [
        ("x-compute-type", "cpu".to_owned()),
        ("x-compute-time", ms(compute)),
        ("x-compute-characters", chars.to_string()),
        ("x-compute-tokens", tokens.to_string()),
        ("x-total-time", ms(started.elapsed())),
        ("x-tokenization-time", ms(t.tokenization)),
        ("x-queue-time", ms(t.queue_wait)),
        ("x-inference-time", ms(t.inference)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
}

async fn embed_as(
    state: Arc<AppState>,
    request: Request,
    slot: ModelId,
    output: Output,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let id = request_id(request.extensions());
    let deadline = state.limits.deadline();
    let bytes = read_body(&state, &id, deadline, request).await?;
    let req: TeiEmbedRequest = parse_json(&id, &bytes)?;
    let (dimensions, normalize) = (req.dimensions, req.normalize);
    let direction = req.truncation_direction.into();
    let texts = check(&state, &id, slot, req)?;
    let chars = texts.iter().map(|t| t.chars().count()).sum();
    let inputs = texts.into_iter().map(EmbedInput::new).collect();
    let options = EmbedOptions::only([slot]).with_truncation_direction(direction);
    let result = run_pipeline(&state, &id, deadline, inputs, options).await?;
    let missing = || {
        ApiError::new(
            ErrorKind::Internal,
            &id,
            format!("the pipeline returned no `{slot}` output (internal error)"),
        )
    };
    let mut response = match output {
        Output::Pooled => {
            let mut all = Vec::with_capacity(result.embeddings.len());
            for e in &result.embeddings {
                let v = e.dense(slot).ok_or_else(missing)?;
                all.push(match (normalize, e.pre_norm(slot)) {
                    (true, _) => match dimensions {
                        Some(d) if d < v.len() => api::shorten(v, d),
                        _ => v.to_vec(),
                    },
                    // The raw pooling, its first `dimensions` components.
                    (false, norm) => {
                        let scale = norm.unwrap_or(1.0);
                        let keep = dimensions.unwrap_or(v.len()).min(v.len());
                        v.iter().take(keep).map(|x| x * scale).collect()
                    }
                });
            }
            json_response(StatusCode::OK, &id, &all)
        }
        Output::Sparse => {
            let mut all = Vec::with_capacity(result.embeddings.len());
            for e in &result.embeddings {
                let s = e.sparse().ok_or_else(missing)?;
                all.push(
                    s.indices
                        .iter()
                        .zip(&s.values)
                        .map(|(&index, &value)| SparseValue { index, value })
                        .collect::<Vec<_>>(),
                );
            }
            json_response(StatusCode::OK, &id, &all)
        }
        Output::PerToken => {
            let mut all = Vec::with_capacity(result.embeddings.len());
            for e in &result.embeddings {
                let t = e.per_token().ok_or_else(missing)?;
                all.push(t.iter().map(<[f32]>::to_vec).collect::<Vec<_>>());
            }
            json_response(StatusCode::OK, &id, &all)
        }
    };
    server_timing(&mut response, &timings(&result));
    tei_headers(&mut response, &result, chars, started);
    Ok(response)
}

/// `POST /embed` and `POST /`: one pooled vector per input.
pub(crate) async fn embed(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let slot = state.tei_slot;
    embed_as(state, request, slot, Output::Pooled).await
}

/// `POST /embed_sparse`: the `sparse` slot's weights.
pub(crate) async fn embed_sparse(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    embed_as(state, request, ModelId::Sparse, Output::Sparse).await
}

/// `POST /embed_all`: the `late_interaction` slot's per-token vectors.
pub(crate) async fn embed_all(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    embed_as(state, request, ModelId::LateInteraction, Output::PerToken).await
}

/// `POST /tokenize`.
pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let bytes = read_body(&state, &id, state.limits.deadline(), request).await?;
    let req: TokenizeRequest = parse_json(&id, &bytes)?;
    if let Some(name) = &req.prompt_name {
        return Err(no_prompts(&id, name));
    }
    let texts = req.inputs.into_vec();
    if texts.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Empty,
            &id,
            "`inputs` cannot be empty",
        ));
    }
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(&id));
    };
    let slot = state.tei_slot;
    let tokens = texts
        .iter()
        .map(|t| pipeline.tokenize(slot, t, req.add_special_tokens))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(ErrorKind::Validation, &id, e.to_string()))?;
    Ok(json_response(StatusCode::OK, &id, &tokens))
}

/// `POST /decode`.
pub(crate) async fn decode(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let bytes = read_body(&state, &id, state.limits.deadline(), request).await?;
    let req: DecodeRequest = parse_json(&id, &bytes)?;
    let sequences = match req.ids {
        Ids::One(ids) => vec![ids],
        Ids::Many(all) => all,
    };
    if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
        return Err(ApiError::new(
            ErrorKind::Empty,
            &id,
            "`ids` cannot be empty",
        ));
    }
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(&id));
    };
    let slot = state.tei_slot;
    let texts = sequences
        .iter()
        .map(|ids| pipeline.decode(slot, ids, req.skip_special_tokens))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(ErrorKind::Validation, &id, e.to_string()))?;
    Ok(json_response(StatusCode::OK, &id, &texts))
}
