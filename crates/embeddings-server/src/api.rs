//! The JSON bodies of the embedding endpoints: what clients send and get back.
//!
//! `POST /embed_multi` (the native schema):
//! ```json
//! {"inputs": "text" | ["text", ...],
//!  "models": ["semantic", "sparse", ...],      // optional: a subset of slots (default: every enabled slot)
//!  "timestamp": "2025-01-01T12:00:00Z",        // optional, RFC 3339: the time of every input (temporal slots)
//!  "position": 0,                              // optional: sequence position of the first input; input i gets position + i
//!  "fused": true}                              // optional: include the fused vector (default true)
//! ```
//! answers
//! ```json
//! {"data": [{"index": 0, "tokens": 8, "truncated": false,
//!            "slots": {"semantic": {"type": "dense", "dim": 384, "values": [...]},
//!                      "causal": {"type": "causal", "dim": 384, "cause": [...], "effect": [...]},
//!                      "sparse": {"type": "sparse", "dim": 30522, "indices": [...], "values": [...]},
//!                      "late_interaction": {"type": "per_token", "dim": 384, "vectors": [[...], ...]}},
//!            "fused": [...]}],
//!  "timings_ms": {"queue": 0.4, "inference": 21.3, "total": 22.0}}
//! ```
//!
//! `POST /v1/embeddings` follows OpenAI's schema: `input` (string or array
//! of strings; token ids are refused with a message saying to send text),
//! `model` (a dense slot name or `fused`, as `GET /v1/models` lists them),
//! `encoding_format` (`float` or `base64`: little-endian `f32` bytes),
//! `dimensions` (keep the first N components, then re-normalise to unit
//! length; checked before any work), `user` (accepted and ignored). Its
//! errors take OpenAI's shape.

use std::collections::BTreeMap;

use base64::Engine as _;
use embeddings_pipeline::{MultiEmbedding, SlotOutput};
use embeddings_types::ModelId;
use serde::{Deserialize, Serialize};

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    /// A single input.
    One(String),
    /// Several inputs.
    Many(Vec<String>),
}

impl Inputs {
    /// The inputs as a list.
    #[must_use]
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

fn yes() -> bool {
    true
}

/// Body of `POST /embed_multi`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The texts.
    pub inputs: Inputs,
    /// Slot names to compute; all enabled slots when absent.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// RFC 3339 time of the inputs.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Sequence position of the first input.
    #[serde(default)]
    pub position: Option<u64>,
    /// Whether to return the fused vector.
    #[serde(default = "yes")]
    pub fused: bool,
}

/// OpenAI's `input`: text, or token ids (which we refuse with the fix).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OpenAiInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// One input as token ids.
    Tokens(Vec<i64>),
    /// Several inputs as token ids.
    TokenLists(Vec<Vec<i64>>),
}

impl OpenAiInput {
    /// The texts, or why token ids cannot be served (and what to send).
    ///
    /// # Errors
    /// The message for a client that sent token ids.
    pub fn into_texts(self) -> Result<Vec<String>, String> {
        match self {
            Self::One(s) => Ok(vec![s]),
            Self::Many(v) => Ok(v),
            Self::Tokens(_) | Self::TokenLists(_) => Err(
                "`input` holds token ids; this server tokenizes text itself, with its models' own tokenizers (not tiktoken), so ids from another tokenizer would embed the wrong text: send the text as a string or a list of strings (LangChain's OpenAIEmbeddings: set check_embedding_ctx_length=False)".to_owned(),
            ),
        }
    }
}

/// Body of `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAiRequest {
    /// The texts.
    pub input: OpenAiInput,
    /// A dense slot name, or `fused`.
    pub model: String,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Keep this many leading components, re-normalised.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Ignored; accepted for compatibility.
    #[serde(default)]
    pub user: Option<String>,
}

/// One slot's output in the native response.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SlotJson<'a> {
    /// One dense vector.
    Dense {
        /// Its length.
        dim: usize,
        /// The components.
        values: &'a [f32],
    },
    /// The cause and effect vectors of the causal slot.
    Causal {
        /// Their length.
        dim: usize,
        /// The cause vector.
        cause: &'a [f32],
        /// The effect vector.
        effect: &'a [f32],
    },
    /// Index/value pairs.
    Sparse {
        /// The vocabulary size.
        dim: usize,
        /// Ascending indices.
        indices: &'a [u32],
        /// Their weights.
        values: &'a [f32],
    },
    /// One vector per token.
    PerToken {
        /// Each vector's length.
        dim: usize,
        /// The vectors.
        vectors: Vec<&'a [f32]>,
    },
}

impl<'a> SlotJson<'a> {
    fn from_output(output: &'a SlotOutput) -> Option<Self> {
        Some(match output {
            SlotOutput::Dense(v) => Self::Dense {
                dim: v.len(),
                values: v,
            },
            SlotOutput::Causal(p) => Self::Causal {
                dim: p.cause.len(),
                cause: &p.cause,
                effect: &p.effect,
            },
            SlotOutput::Sparse(s) => Self::Sparse {
                dim: s.dim,
                indices: &s.indices,
                values: &s.values,
            },
            SlotOutput::PerToken(t) => Self::PerToken {
                dim: t.dim(),
                vectors: t.iter().collect(),
            },
            #[allow(unreachable_patterns, reason = "SlotOutput is non_exhaustive")]
            _ => return None,
        })
    }
}

/// One input's result in the native response.
#[derive(Debug, Serialize)]
pub struct ItemJson<'a> {
    /// The input's index in the request.
    pub index: usize,
    /// Tokens the transformer slots saw (after truncation).
    pub tokens: usize,
    /// Whether the input was truncated.
    pub truncated: bool,
    /// Per-slot outputs, by slot name.
    pub slots: BTreeMap<ModelId, SlotJson<'a>>,
    /// The fused vector, when asked for.
    pub fused: Option<&'a [f32]>,
}

/// Stage timings in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimingsJson {
    /// Time waiting in the pipeline queue.
    pub queue: f64,
    /// Time tokenizing this request's inputs.
    pub tokenization: f64,
    /// Time in inference (all slots and fusion).
    pub inference: f64,
    /// Total time in the pipeline.
    pub total: f64,
}

/// The native response.
#[derive(Debug, Serialize)]
pub struct EmbedResponseJson<'a> {
    /// One item per input, in request order.
    pub data: Vec<ItemJson<'a>>,
    /// Stage timings.
    pub timings_ms: TimingsJson,
}

/// Builds the native response items.
#[must_use]
pub fn items(embeddings: &[MultiEmbedding]) -> Vec<ItemJson<'_>> {
    embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| ItemJson {
            index,
            tokens: e.token_count(),
            truncated: e.truncated(),
            slots: e
                .iter()
                .filter_map(|(id, out)| SlotJson::from_output(out).map(|j| (id, j)))
                .collect(),
            fused: e.fused(),
        })
        .collect()
}

/// An OpenAI-style vector: floats, or base64 of little-endian `f32` bytes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OpenAiVector {
    /// `encoding_format = "float"`.
    Float(Vec<f32>),
    /// `encoding_format = "base64"`.
    Base64(String),
}

/// One OpenAI-style embedding.
#[derive(Debug, Serialize)]
pub struct OpenAiItem {
    /// Always `"embedding"`.
    pub object: &'static str,
    /// The input's index.
    pub index: usize,
    /// The vector.
    pub embedding: OpenAiVector,
}

/// Token usage, as OpenAI reports it.
#[derive(Debug, Serialize)]
pub struct OpenAiUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: usize,
    /// The same (embeddings have no completion).
    pub total_tokens: usize,
}

/// The OpenAI-style response.
#[derive(Debug, Serialize)]
pub struct OpenAiResponse {
    /// Always `"list"`.
    pub object: &'static str,
    /// One per input.
    pub data: Vec<OpenAiItem>,
    /// The model (slot name or `fused`) as requested.
    pub model: String,
    /// Token usage.
    pub usage: OpenAiUsage,
}

/// Keeps the first `dims` components and re-normalises to unit length.
#[must_use]
pub fn shorten(vector: &[f32], dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = vector.iter().take(dims).copied().collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Encodes a vector as base64 of its little-endian `f32` bytes.
#[must_use]
pub fn to_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_renormalises() {
        let v = shorten(&[3.0, 4.0, 12.0], 2);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(shorten(&[0.0, 0.0], 1), vec![0.0]);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(to_base64(&[1.0]), "AACAPw==");
    }

    #[test]
    fn inputs_accept_one_or_many() {
        let one: Inputs = serde_json::from_str("\"a\"").unwrap();
        assert_eq!(one.into_vec(), vec!["a"]);
        let many: Inputs = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert_eq!(many.into_vec(), vec!["a", "b"]);
        assert!(serde_json::from_str::<Inputs>("[1]").is_err());
    }
}
