//! Quality figures in the server: the output-drift report, computed at each
//! alert evaluation (`alerts.rs`, on a blocking thread) and kept for
//! `/metrics` and `GET /quality`; and the quality canary, scheduled: once as
//! soon as the pipeline is loaded
//! (those vectors are the start-up vectors later runs compare with), then
//! every `--canary-interval-secs`, on a blocking thread, only while no user
//! work is admitted (the token budget is empty), so it never displaces a
//! request: a round that finds the pipeline busy for a whole interval is
//! skipped and counted as such.
//!
//! What a run measures is `EmbeddingPipeline::run_canary`'s report, served
//! at `GET /quality`, exported as the `embeddings_canary_*` families, judged
//! by the health rule `canary` and watched by the alert `canary_cosine_low`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use embeddings_metrics::{Counter, Encoder, Family, Labels};
use embeddings_pipeline::{CanaryReport, DriftReport, SlotDrift};
use serde::Serialize;

use crate::app::{AppState, json_response, request_id};

/// How often a waiting round checks whether the pipeline has become idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Outcomes of a scheduled round, as the `outcome` label.
const OUTCOMES: [&str; 3] = ["ok", "failed", "skipped_busy"];

/// The canary's schedule and what its rounds did, and the latest drift report.
#[derive(Debug)]
pub struct Quality {
    /// `None`: the canary is off (`--canary-interval-secs 0`).
    interval: Option<Duration>,
    /// Rounds by outcome, in [`OUTCOMES`] order.
    rounds: [Counter; 3],
    /// The latest failed run's error and when, cleared by a successful run.
    last_error: Mutex<Option<(DateTime<Utc>, String)>>,
    /// The latest drift report (computed at each alert evaluation).
    drift: Mutex<Option<DriftReport>>,
}

impl Quality {
    /// A runner with `interval` between rounds (`None`: off).
    #[must_use]
    pub fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            rounds: std::array::from_fn(|_| Counter::new()),
            last_error: Mutex::new(None),
            drift: Mutex::new(None),
        }
    }

    /// Keeps `report` as the latest drift report.
    pub(crate) fn set_drift(&self, report: DriftReport) {
        *self.drift.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
    }

    /// The latest drift report; `None` before the first evaluation.
    pub(crate) fn drift(&self) -> Option<DriftReport> {
        self.drift
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.rounds[i].inc();
        }
    }

    fn last_error(&self) -> Option<(DateTime<Utc>, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error.map(|e| (Utc::now(), e));
    }

    /// Writes the canary families: rounds by outcome always; the figures of
    /// the latest report, per slot, once there is one.
    ///
    /// # Errors
    /// Only those of the underlying writer.
    pub(crate) fn encode(
        &self,
        encoder: &mut Encoder<'_>,
        prefix: &str,
        report: Option<&CanaryReport>,
    ) -> std::fmt::Result {
        let family = |kind: fn(&str, &str) -> Result<Family, _>, name: &str, help: &str| {
            kind(&format!("{prefix}{name}"), help).map_err(|_| std::fmt::Error)
        };
        let labels = |pairs: &[(&str, &str)]| {
            Labels::new(pairs.iter().copied()).map_err(|_| std::fmt::Error)
        };
        let rounds = family(
            Family::counter,
            "canary_rounds",
            "Scheduled quality-canary rounds by outcome: ok, failed (a computation failed), skipped_busy (user work admitted for a whole interval).",
        )?;
        let mut writer = encoder.family(&rounds)?;
        for (outcome, counter) in OUTCOMES.iter().zip(&self.rounds) {
            writer.counter(&labels(&[("outcome", outcome)])?, counter.get())?;
        }
        let cosine = family(
            Family::gauge,
            "canary_cosine",
            "The latest canary run's smallest cosine per slot, against its start-up vectors or the shipped reference (sentence-transformers); no sample before the first run, or for a slot without a reference.",
        )?;
        let deviation = family(
            Family::gauge,
            "canary_batch_deviation",
            "The latest canary run's largest relative deviation per slot between a probe embedded alone and in a batch; no sample before the first run.",
        )?;
        let completed = family(
            Family::gauge,
            "canary_last_success_timestamp_seconds",
            "When the latest successful canary run finished, seconds since the Unix epoch; no sample before the first.",
        )?;
        let mut writer = encoder.family(&cosine)?;
        for slot in report.iter().flat_map(|r| &r.slots) {
            let model = slot.model.as_str();
            writer.gauge(
                &labels(&[("model", model), ("against", "startup")])?,
                slot.cosine_to_startup,
            )?;
            if let Some(c) = slot.cosine_to_reference {
                writer.gauge(&labels(&[("model", model), ("against", "reference")])?, c)?;
            }
        }
        let mut writer = encoder.family(&deviation)?;
        for slot in report.iter().flat_map(|r| &r.slots) {
            writer.gauge(
                &labels(&[("model", slot.model.as_str())])?,
                slot.batch_deviation,
            )?;
        }
        let mut writer = encoder.family(&completed)?;
        if let Some(r) = report {
            let seconds = r.completed_at.timestamp_millis() as f64 / 1e3;
            writer.gauge(&Labels::empty(), seconds)?;
        }
        self.encode_drift(encoder, prefix)
    }

    /// Writes the drift families from the latest report: a sample per slot
    /// only for the figures it has (none until both windows are full).
    fn encode_drift(&self, encoder: &mut Encoder<'_>, prefix: &str) -> std::fmt::Result {
        let drift = self.drift();
        let slots = drift.iter().flat_map(|r| &r.slots);
        type Figure = fn(&SlotDrift) -> Option<f64>;
        let figures: [(&str, &str, Figure); 5] = [
            (
                "drift_score",
                "Output drift per dense slot: max(similarity KS, 1 - centroid cosine) between the recent and the reference window; no sample until both are full.",
                |s| s.drift_score,
            ),
            (
                "drift_centroid_cosine",
                "Cosine between the mean vectors of the recent and the reference window, per dense slot.",
                |s| s.centroid_cosine,
            ),
            (
                "drift_similarity_ks",
                "Kolmogorov-Smirnov statistic between the pairwise cosines of the recent and the reference window, per dense slot.",
                |s| s.similarity_ks,
            ),
            (
                "output_mean_pairwise_cosine",
                "Mean cosine between pairs of recent outputs (anisotropy), per dense slot.",
                |s| s.mean_pairwise_cosine,
            ),
            (
                "output_mean_norm",
                "Mean length of the recent outputs before normalisation, per dense slot that reports one; no sample before the first output.",
                |s| s.mean_norm,
            ),
        ];
        for (name, help, figure) in figures {
            let family =
                Family::gauge(&format!("{prefix}{name}"), help).map_err(|_| std::fmt::Error)?;
            let mut writer = encoder.family(&family)?;
            for slot in slots.clone() {
                if let Some(v) = figure(slot) {
                    let labels = Labels::new([("model", slot.model.as_str())])
                        .map_err(|_| std::fmt::Error)?;
                    writer.gauge(&labels, v)?;
                }
            }
        }
        let family = Family::gauge(
            &format!("{prefix}fused_neighbour_overlap"),
            "Share of each sampled input's 5 nearest neighbours in the gated concatenation kept in the fused space (64 inputs); no sample until 64, with fusion off, or with a trained projection.",
        )
        .map_err(|_| std::fmt::Error)?;
        let mut writer = encoder.family(&family)?;
        if let Some(v) = drift.as_ref().and_then(|r| r.fused_neighbour_overlap) {
            writer.gauge(&Labels::empty(), v)?;
        }
        let family = Family::gauge(
            &format!("{prefix}sparse_mean_nonzeros"),
            "Mean non-zero entries per output of the sparse slot over its recent window; no sample before the first.",
        )
        .map_err(|_| std::fmt::Error)?;
        let mut writer = encoder.family(&family)?;
        if let Some(n) = drift.as_ref().and_then(|r| r.sparse_mean_nonzeros) {
            writer.gauge(&Labels::empty(), n)?;
        }
        Ok(())
    }
}

/// Runs the canary rounds for as long as the server runs (returns at once
/// when the canary is off).
pub(crate) async fn run_canary(state: Arc<AppState>) {
    let Some(interval) = state.quality.interval else {
        return;
    };
    // Wait for the pipeline; a failed load never gets a canary.
    let pipeline = loop {
        match state.pipeline.get() {
            Some(crate::app::Loaded::Ready(p)) => break Arc::clone(p),
            Some(crate::app::Loaded::Failed(_)) => return,
            None => tokio::time::sleep(IDLE_POLL).await,
        }
    };
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(interval).await;
        }
        first = false;
        // Only while no user work is admitted; give up the round after a
        // whole interval of waiting.
        let waited = tokio::time::Instant::now();
        while pipeline.tokens_admitted() > 0 {
            if waited.elapsed() >= interval {
                break;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
        if pipeline.tokens_admitted() > 0 {
            state.quality.count("skipped_busy");
            continue;
        }
        let p = Arc::clone(&pipeline);
        match tokio::task::spawn_blocking(move || p.run_canary()).await {
            Ok(Ok(report)) => {
                state.quality.count("ok");
                state.quality.set_last_error(None);
                if let Some((slot, figure, cosine)) = report.worst_cosine() {
                    tracing::debug!(%slot, figure = figure.as_str(), cosine, "canary run");
                }
            }
            Ok(Err(e)) => {
                state.quality.count("failed");
                tracing::error!(error = %e, "the quality canary failed");
                state.quality.set_last_error(Some(e.to_string()));
            }
            Err(e) => {
                state.quality.count("failed");
                tracing::error!(error = %e, "the quality canary's thread stopped");
                state.quality.set_last_error(Some(e.to_string()));
            }
        }
    }
}

/// `GET /quality`'s answer.
#[derive(Debug, Serialize)]
struct QualityJson {
    /// Seconds between scheduled runs; `null` when the canary is off.
    canary_interval_seconds: Option<f64>,
    /// The latest successful run; `null` before the first.
    canary: Option<CanaryReport>,
    /// The latest failed run's error and when (cleared by a success).
    last_error: Option<ErrorJson>,
    /// The output-drift figures at the last alert evaluation; `null` before it.
    drift: Option<DriftReport>,
}

#[derive(Debug, Serialize)]
struct ErrorJson {
    at: DateTime<Utc>,
    error: String,
}

/// `GET /quality`.
pub(crate) async fn quality(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    let body = QualityJson {
        canary_interval_seconds: state.quality.interval.map(|d| d.as_secs_f64()),
        canary: state.ready().and_then(|p| p.canary_report()),
        last_error: state
            .quality
            .last_error()
            .map(|(at, error)| ErrorJson { at, error }),
        drift: state.quality.drift(),
    };
    json_response(StatusCode::OK, &id, &body)
}
