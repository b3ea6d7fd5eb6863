//! The in-process alert engine, running: evaluated every
//! `--alert-interval-secs` from the same metrics snapshot `/health` reads
//! (plus the canary's worst cosine and the output-drift score, computed
//! here),
//! its state served at `GET /alerts` and exported as
//! `embeddings_alert_state{alert,severity}`, each state change logged.
//! The rules are `embeddings-health`'s recommended set unless
//! `--alert-rules FILE` (TOML, `AlertConfig`) says otherwise.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use embeddings_health::{
    AlertConfig, AlertEngine, AlertEvent, AlertHandler, AlertMetric, AlertState, HandlerError,
    MetricValues,
};
use embeddings_metrics::{Encoder, Family, Labels};
use serde::Serialize;

use crate::app::{AppState, json_response, request_id};

/// Writes each alert state change to the log.
struct TracingHandler;

impl AlertHandler for TracingHandler {
    fn name(&self) -> &str {
        "log"
    }

    fn handle(&mut self, event: &AlertEvent) -> Result<(), HandlerError> {
        tracing::warn!(
            alert = %event.rule,
            severity = %event.severity,
            transition = %event.transition,
            value = event.value,
            threshold = event.threshold,
            "{event}"
        );
        Ok(())
    }
}

/// The engine and when it last ran.
pub struct Alerts {
    engine: Mutex<(AlertEngine, Option<DateTime<Utc>>)>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

/// One rule's line in `GET /alerts`.
#[derive(Debug, Serialize)]
struct AlertJson {
    name: String,
    metric: &'static str,
    unit: &'static str,
    severity: String,
    threshold: f64,
    for_seconds: f64,
    /// `inactive`, `pending` or `firing`, with `since` / `fired_at`.
    #[serde(flatten)]
    state: AlertState,
    /// The value at the last evaluation; `null` when the metric was
    /// missing every time so far.
    value: Option<f64>,
}

#[derive(Debug, Serialize)]
struct AlertsJson {
    /// When the rules were last evaluated; `null` before the first time.
    evaluated_at: Option<DateTime<Utc>>,
    alerts: Vec<AlertJson>,
    /// The latest state changes, oldest first.
    history: Vec<AlertEvent>,
}

/// The exported number of a state.
const fn state_value(state: AlertState) -> u64 {
    match state {
        AlertState::Inactive => 0,
        AlertState::Pending { .. } => 1,
        AlertState::Firing { .. } => 2,
    }
}

impl Alerts {
    /// An engine over `config`, logging every change.
    #[must_use]
    pub fn new(config: AlertConfig) -> Self {
        Self {
            engine: Mutex::new((AlertEngine::new(config).with_handler(TracingHandler), None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (AlertEngine, Option<DateTime<Utc>>)> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Evaluates every rule against `state`'s metrics now, and the number
    /// of slots that failed to load (unknown while loading).
    pub fn evaluate(&self, state: &AppState) {
        let snapshot = state.metrics.snapshot();
        // The drift report is computed here, on this schedule, and kept for
        // /metrics and /quality (scrapes never pay for it).
        let drift = state.ready().map(|p| p.drift_report());
        let worst = drift.as_ref().and_then(|r| r.worst()).map(|(_, d)| d);
        if let Some(report) = drift {
            state.quality.set_drift(report);
        }
        let mut values = MetricValues::from_snapshot(&snapshot, worst);
        let slots = state.slot_states();
        if slots.iter().all(|(_, s)| *s != "loading") {
            let failed = slots.iter().filter(|(_, s)| *s == "failed").count();
            values.set(AlertMetric::SlotsFailed, failed as f64);
        }
        if let Some((_, _, cosine)) = state
            .ready()
            .and_then(|p| p.canary_report())
            .and_then(|r| r.worst_cosine())
        {
            values.set(AlertMetric::CanaryCosine, cosine);
        }
        let now = Utc::now();
        let mut guard = self.lock();
        guard.0.evaluate_values(&values, now);
        guard.1 = Some(now);
    }

    fn json(&self) -> AlertsJson {
        let guard = self.lock();
        let (engine, evaluated_at) = &*guard;
        AlertsJson {
            evaluated_at: *evaluated_at,
            alerts: engine
                .states()
                .map(|(rule, state, value)| AlertJson {
                    name: rule.name().to_owned(),
                    metric: rule.metric().as_str(),
                    unit: rule.metric().unit(),
                    severity: rule.severity().to_string(),
                    threshold: rule.threshold(),
                    for_seconds: rule.for_duration().as_secs_f64(),
                    state,
                    value,
                })
                .collect(),
            history: engine.history().cloned().collect(),
        }
    }

    /// Writes `<prefix>alert_state{alert,severity}`: 0 inactive, 1 pending,
    /// 2 firing.
    ///
    /// # Errors
    /// Only those of the underlying writer.
    pub(crate) fn encode(&self, encoder: &mut Encoder<'_>, prefix: &str) -> std::fmt::Result {
        let family = Family::gauge(
            &format!("{prefix}alert_state"),
            "State of each in-process alert rule: 0 inactive, 1 pending, 2 firing.",
        )
        .map_err(|_| std::fmt::Error)?;
        let guard = self.lock();
        let mut writer = encoder.family(&family)?;
        for (rule, state, _) in guard.0.states() {
            let severity = rule.severity().to_string();
            let labels = Labels::new([("alert", rule.name()), ("severity", severity.as_str())])
                .map_err(|_| std::fmt::Error)?;
            writer.gauge(&labels, state_value(state))?;
        }
        Ok(())
    }
}

/// Evaluates the rules every `interval` for as long as the server runs.
pub(crate) async fn run(state: Arc<AppState>, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Off the async workers: the drift figures take milliseconds.
        let s = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || s.alerts.evaluate(&s)).await;
    }
}

/// `GET /alerts`.
pub(crate) async fn alerts(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = request_id(request.extensions());
    json_response(StatusCode::OK, &id, &state.alerts.json())
}
