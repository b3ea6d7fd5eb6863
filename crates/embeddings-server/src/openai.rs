//! The OpenAI surface: `POST /v1/embeddings`, `GET /v1/models` and
//! `GET /v1/models/{id}`. Errors on these routes take OpenAI's shape
//! (`error::render_errors`).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use embeddings_pipeline::{EmbedInput, EmbedOptions, EmbeddingPipeline};
use embeddings_types::{ModelId, OutputKind};
use serde::Serialize;

use crate::api::{self, OpenAiRequest};
use crate::app::{
    AppState, check_inputs, json_response, parse_json, read_body, request_id, run_pipeline,
    server_timing, timings,
};
use crate::error::{ApiError, ErrorKind};

/// The name of the fused vector's model.
pub(crate) const FUSED: &str = "fused";

/// One entry of `GET /v1/models`: OpenAI's model object, plus the width of
/// its vectors.
#[derive(Debug, Serialize)]
struct ModelJson {
    id: String,
    object: &'static str,
    /// When this process finished loading it (Unix seconds).
    created: i64,
    owned_by: &'static str,
    /// The width of its vectors (the most `dimensions` may ask for).
    dimensions: usize,
}

#[derive(Debug, Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelJson>,
}

/// What `model` may name: the loaded dense slots and, with fusion on,
/// `fused`, each with its width.
fn served(pipeline: &EmbeddingPipeline) -> Vec<(String, usize)> {
    let registry = pipeline.describe();
    let mut models: Vec<(String, usize)> = ModelId::ALL
        .into_iter()
        .filter(|m| m.output_kind() == OutputKind::Dense)
        .filter_map(|m| registry.slot(m).dim.map(|d| (m.to_string(), d)))
        .collect();
    if let Some(f) = &registry.fusion {
        models.push((FUSED.to_owned(), f.dim));
    }
    models
}

fn model_json(state: &AppState, (id, dimensions): (String, usize)) -> ModelJson {
    ModelJson {
        id,
        object: "model",
        created: state.loaded_at.get().map_or(0, chrono::DateTime::timestamp),
        owned_by: "embeddings",
        dimensions,
    }
}

/// `GET /v1/models`.
pub(crate) async fn models(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(&id));
    };
    let data = served(pipeline)
        .into_iter()
        .map(|m| model_json(&state, m))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &id,
        &ModelList {
            object: "list",
            data,
        },
    ))
}

/// `GET /v1/models/{id}`.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let Some(pipeline) = state.ready() else {
        return Err(state.unavailable(&id));
    };
    let models = served(pipeline);
    let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
    let message = format!(
        "no model {name:?} is served here; the models are {}",
        names.join(", ")
    );
    match models.iter().find(|(n, _)| *n == name) {
        Some(m) => Ok(json_response(
            StatusCode::OK,
            &id,
            &model_json(&state, m.clone()),
        )),
        None => Err(ApiError::new(ErrorKind::NotFound, &id, message).param("model")),
    }
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = request_id(request.extensions());
    let deadline = state.limits.deadline();
    let bytes = read_body(&state, &id, deadline, request).await?;
    let body: OpenAiRequest = parse_json(&id, &bytes)?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorKind::Validation,
                &id,
                format!("encoding_format {other:?} is not supported; use \"float\" or \"base64\""),
            )
            .param("encoding_format"));
        }
    };
    let slot = if body.model == "fused" {
        None
    } else {
        let model = body.model.parse::<ModelId>().map_err(|e| {
            ApiError::new(ErrorKind::Validation, &id, format!("{e}, or \"fused\"")).param("model")
        })?;
        if model.output_kind() != embeddings_types::OutputKind::Dense {
            return Err(ApiError::new(
                ErrorKind::Validation,
                &id,
                format!(
                    "slot {model} does not produce one dense vector; use POST /embed_multi for it"
                ),
            )
            .param("model"));
        }
        Some(model)
    };
    let texts = body
        .input
        .into_texts()
        .map_err(|message| ApiError::new(ErrorKind::Validation, &id, message).param("input"))?;
    check_inputs(&state, &id, &texts).map_err(|e| e.param("input"))?;
    // `dimensions` is checked against the output's width before any work.
    if let (Some(d), Some(pipeline)) = (body.dimensions, state.ready()) {
        let registry = pipeline.describe();
        let width = match slot {
            None => registry.fusion.as_ref().map(|f| f.dim),
            Some(m) => registry.slot(m).dim,
        };
        if let Some(width) = width
            && (d == 0 || d > width)
        {
            return Err(ApiError::new(
                ErrorKind::Validation,
                &id,
                format!(
                    "dimensions must be between 1 and {width} for {}",
                    body.model
                ),
            )
            .param("dimensions"));
        }
    }
    let options = EmbedOptions {
        slots: Some(slot.into_iter().collect()),
        fused: slot.is_none(),
        ..EmbedOptions::default()
    };
    let inputs = texts.into_iter().map(EmbedInput::new).collect();
    let result = run_pipeline(&state, &id, deadline, inputs, options).await?;

    let mut data = Vec::with_capacity(result.embeddings.len());
    let mut tokens = 0;
    for (index, e) in result.embeddings.iter().enumerate() {
        tokens += e.token_count();
        let vector: &[f32] = match slot {
            None => e.fused().unwrap_or_default(),
            Some(ModelId::Causal) => e.causal().map(|p| &p.cause[..]).unwrap_or_default(),
            Some(m) => e.dense(m).unwrap_or_default(),
        };
        let vector = match body.dimensions {
            None => vector.to_vec(),
            Some(d) if d == 0 || d > vector.len() => {
                return Err(ApiError::new(
                    ErrorKind::Validation,
                    &id,
                    format!(
                        "dimensions must be between 1 and {} for {}",
                        vector.len(),
                        body.model
                    ),
                )
                .param("dimensions"));
            }
            Some(d) => api::shorten(vector, d),
        };
        let embedding = if base64 {
            api::OpenAiVector::Base64(api::to_base64(&vector))
        } else {
            api::OpenAiVector::Float(vector)
        };
        data.push(api::OpenAiItem {
            object: "embedding",
            index,
            embedding,
        });
    }
    let timings = timings(&result);
    let json = api::OpenAiResponse {
        object: "list",
        data,
        model: body.model,
        usage: api::OpenAiUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    let mut response = json_response(StatusCode::OK, &id, &json);
    server_timing(&mut response, &timings);
    Ok(response)
}
