//! Plain data shared by every layer of the `embeddings` workspace.
//!
//! - [`ModelId`]: the twelve embedding slots, with [`OutputKind`].
//! - [`MetricsSnapshot`] (with [`HistogramSnapshot`], [`ModelSnapshot`],
//!   [`GaugeSnapshot`]): what `embeddings-metrics` records, copied out.
//! - [`HealthStatus`] and [`ComponentHealth`]: what `embeddings-health` decides.
//! - [`Stage`] and [`ErrorKind`]: label sets for latency stages and error causes.
//! - [`CanaryReport`] (with [`SlotCanary`], [`CanaryFigure`]): what the
//!   quality canary measured.
//! - [`TypesError`]: the one error of this crate.
//!
//! **Who depends on this:** every other crate of the workspace, and clients
//! that only want to read the JSON. **What it must never know:** atomics, I/O,
//! HTTP, tensors or devices. Its only dependencies are serde, chrono and
//! thiserror.
//!
//! Everything serializes with serde; names are stable `snake_case`, and
//! durations are seconds (see [`duration`]).
//!
//! ```
//! use embeddings_types::{ModelId, OutputKind};
//! let kinds: Vec<_> = ModelId::ALL.iter().map(|m| m.output_kind()).collect();
//! assert_eq!(kinds.iter().filter(|k| **k == OutputKind::Dense).count(), 10);
//! let json = serde_json::to_string(&ModelId::Hdc).unwrap();
//! assert_eq!(json, "\"hdc\"");
//! ```
//!
//! # Feature flags
//! None.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod duration;
mod error;
mod health;
mod labels;
mod model;
mod quality;
mod snapshot;

pub use error::TypesError;
pub use health::{CacheFigures, ComponentHealth, GpuMemory, HealthStatus};
pub use labels::{ErrorKind, Stage};
pub use model::{ModelId, OutputKind};
pub use quality::{CanaryFigure, CanaryReport, DriftReport, SlotCanary, SlotDrift};
pub use snapshot::{GaugeSnapshot, HistogramSnapshot, MetricsSnapshot, ModelSnapshot};
