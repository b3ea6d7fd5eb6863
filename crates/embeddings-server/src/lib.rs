//! The HTTP service of the embeddings pipeline. Three protocols, one route
//! table ([`routes`]):
//!
//! | protocol | routes | for |
//! |---|---|---|
//! | native | `POST /embed_multi` | every slot, timestamps, positions, the fused vector ([`api`]) |
//! | OpenAI | `POST /v1/embeddings` (and `POST /embeddings`), `GET /v1/models`, `GET /v1/models/{id}` | OpenAI clients ([`api::OpenAiRequest`]) |
//! | Text Embeddings Inference | `POST /embed`, `/`, `/embed_sparse`, `/embed_all`, `/tokenize`, `/decode` | TEI clients ([`tei`]) |
//!
//! Plus `GET /metrics` (Prometheus text or OpenMetrics), `GET /health`, the
//! probes `/livez`, `/readyz`, `/startupz`, `GET /info` (ours and TEI's
//! fields) and `GET /alerts` (the in-process alert engine, [`alerts`]).
//!
//! - [`cli::Args`]: flags, each with an `EMBEDDINGS_*` environment variable.
//! - [`app::router`] and [`app::AppState`]: the routes and what they share.
//! - [`run`]: binds, starts loading the pipeline in the background, serves
//!   until SIGTERM / SIGINT, then drains in-flight requests within a bound.
//!
//! **Who should depend on this:** nobody but the `embeddings-server` binary
//! and its tests; embed the pipeline directly with `embeddings-pipeline`.
//!
//! ```
//! use embeddings_server::error::ErrorKind;
//! assert_eq!(ErrorKind::Overloaded.status().as_u16(), 429);
//! assert_eq!(ErrorKind::Validation.as_str(), "validation");
//! ```
//!
//! # Feature flags
//! - `cuda`: GPU inference, forwarded to `embeddings-pipeline/cuda`; build
//!   it with `cargo xtask cuda-build` (README, "CUDA").
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
mod capacity_families;
pub mod cli;
pub mod cpu;
pub mod error;
pub mod http_metrics;
mod listen;
pub mod memory_limit;
mod openai;
mod ops;
pub mod process;
mod process_families;
pub mod quality;
pub mod redact;
pub mod request_id;
pub mod routes;
mod serve;
mod state;
mod state_families;
pub mod tei;

pub use serve::{ServeError, run};
