//! [`AlertEngine`]: alert states over successive snapshots.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use embeddings_types::MetricsSnapshot;
use serde::{Deserialize, Serialize};

use super::{AlertConfig, AlertHandler, AlertMetric, AlertRule, MetricValues, Severity};
use crate::probe::elapsed;

/// The state of one alert rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AlertState {
    /// The threshold is not breached (or a firing alert resolved).
    #[default]
    Inactive,
    /// Breached since `since`, not yet for the rule's `for` duration.
    Pending {
        /// When the breach began.
        since: DateTime<Utc>,
    },
    /// Breached for at least the `for` duration.
    Firing {
        /// When the breach began.
        since: DateTime<Utc>,
        /// When the alert fired.
        fired_at: DateTime<Utc>,
    },
}

/// A change of an alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Inactive → pending: the breach began (not emitted when `for` is 0).
    Pending,
    /// Pending (or inactive, when `for` is 0) → firing.
    Firing,
    /// Firing → inactive: the value came back past the threshold by the
    /// hysteresis margin.
    Resolved,
}

impl Transition {
    /// `snake_case` name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change of one alert, as recorded in the history and given to
/// every handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// The metric watched.
    pub metric: AlertMetric,
    /// The rule's severity.
    pub severity: Severity,
    /// What changed.
    pub transition: Transition,
    /// The value that caused the change, in the metric's unit.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// When the change happened (the evaluation's `now`).
    pub at: DateTime<Utc>,
    /// When the breach began.
    pub since: DateTime<Utc>,
    /// When the alert fired (firing and resolved events).
    pub fired_at: Option<DateTime<Utc>>,
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.transition, self.metric.direction()) {
            (Transition::Resolved, super::Direction::Above) => "back under",
            (Transition::Resolved, super::Direction::Below) => "back over",
            (_, super::Direction::Above) => "above",
            (_, super::Direction::Below) => "below",
        };
        write!(
            f,
            "{} alert {} [{}] {}: {} = {} {}, {} threshold {} (since {})",
            self.at.to_rfc3339(),
            self.transition.as_str().to_uppercase(),
            self.severity,
            self.rule,
            self.metric,
            self.value,
            self.metric.unit(),
            op,
            self.threshold,
            self.since.to_rfc3339(),
        )
    }
}

struct RuleSlot {
    rule: AlertRule,
    state: AlertState,
    last_value: Option<f64>,
}

struct HandlerSlot {
    handler: Box<dyn AlertHandler>,
    failures: u64,
}

/// Evaluates alert rules over successive snapshots, keeps a bounded history
/// of state changes, and hands each change to its handlers.
///
/// Per rule and evaluation, with the value `v` of its metric:
///
/// - `v` missing (`None`, NaN, infinite, negative): nothing changes. A
///   missing input neither fires nor resolves an alert, and a pending alert
///   keeps its start time.
/// - inactive, `v` breaches: pending (or firing at once when `for` is 0).
/// - pending, `v` breaches for at least `for` since the breach began: firing.
/// - pending, `v` no longer breaches: inactive, silently (as in Prometheus).
/// - firing, `v` back past the threshold by the hysteresis margin: resolved
///   (then inactive); between the threshold and the margin it keeps firing.
///
/// Time is the `now` passed in, never the clock; a `now` earlier than the
/// breach start counts as no time elapsed.
///
/// ```
/// use std::time::Duration;
/// use chrono::{TimeZone, Utc};
/// use embeddings_health::{AlertConfig, AlertEngine, AlertMetric, AlertRuleSpec, AlertState, MetricValues, Transition};
///
/// let rule = AlertRuleSpec::new("errors", AlertMetric::ErrorRate, 10.0)
///     .with_for(Duration::from_secs(60))
///     .with_hysteresis(2.0)
///     .build()?;
/// let mut engine = AlertEngine::new(AlertConfig::new(vec![rule], 16)?);
/// let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// let mut values = MetricValues::new();
///
/// values.set(AlertMetric::ErrorRate, 12.0);
/// assert_eq!(engine.evaluate_values(&values, t0)[0].transition, Transition::Pending);
/// let fired = engine.evaluate_values(&values, t0 + chrono::Duration::seconds(60));
/// assert_eq!(fired[0].transition, Transition::Firing);
///
/// values.set(AlertMetric::ErrorRate, 9.0); // below 10 but not below 10 - 2: keeps firing
/// assert!(engine.evaluate_values(&values, t0 + chrono::Duration::seconds(70)).is_empty());
/// values.set(AlertMetric::ErrorRate, 8.0);
/// let resolved = engine.evaluate_values(&values, t0 + chrono::Duration::seconds(80));
/// assert_eq!(resolved[0].transition, Transition::Resolved);
/// assert_eq!(engine.state("errors"), Some(AlertState::Inactive));
/// assert_eq!(engine.history().count(), 3);
/// # Ok::<(), embeddings_health::ConfigError>(())
/// ```
pub struct AlertEngine {
    rules: Vec<RuleSlot>,
    history: VecDeque<AlertEvent>,
    capacity: usize,
    dropped: u64,
    handlers: Vec<HandlerSlot>,
}

impl fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertEngine")
            .field(
                "rules",
                &self
                    .rules
                    .iter()
                    .map(|s| (s.rule.name(), s.state))
                    .collect::<Vec<_>>(),
            )
            .field("history_len", &self.history.len())
            .field("history_capacity", &self.capacity)
            .field("dropped_events", &self.dropped)
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|h| (h.handler.name(), h.failures))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AlertEngine {
    /// An engine with every rule inactive, no handler and an empty history.
    #[must_use]
    pub fn new(config: AlertConfig) -> Self {
        let capacity = config.history_capacity();
        let rules = config
            .rules()
            .iter()
            .map(|rule| RuleSlot {
                rule: rule.clone(),
                state: AlertState::Inactive,
                last_value: None,
            })
            .collect();
        Self {
            rules,
            history: VecDeque::new(),
            capacity,
            dropped: 0,
            handlers: Vec::new(),
        }
    }

    /// Adds a handler; every later event is given to it.
    pub fn add_handler(&mut self, handler: impl AlertHandler + 'static) {
        self.handlers.push(HandlerSlot {
            handler: Box::new(handler),
            failures: 0,
        });
    }

    /// Adds a handler, builder style.
    #[must_use]
    pub fn with_handler(mut self, handler: impl AlertHandler + 'static) -> Self {
        self.add_handler(handler);
        self
    }

    /// Evaluates every rule against `snapshot` (and `drift`, the
    /// embedding-quality drift score when one is known) at `now`. Returns
    /// this evaluation's state changes, which are also recorded in the
    /// history and handed to every handler.
    pub fn evaluate(
        &mut self,
        snapshot: &MetricsSnapshot,
        drift: Option<f64>,
        now: DateTime<Utc>,
    ) -> Vec<AlertEvent> {
        self.evaluate_values(&MetricValues::from_snapshot(snapshot, drift), now)
    }

    /// Evaluates every rule against already-extracted values at `now`.
    /// See [`AlertEngine::evaluate`].
    pub fn evaluate_values(
        &mut self,
        values: &MetricValues,
        now: DateTime<Utc>,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for slot in &mut self.rules {
            let Some(value) = values.get(slot.rule.metric()) else {
                continue;
            };
            slot.last_value = Some(value);
            let rule = &slot.rule;
            let event = |transition, since, fired_at| AlertEvent {
                rule: rule.name().to_owned(),
                metric: rule.metric(),
                severity: rule.severity(),
                transition,
                value,
                threshold: rule.threshold(),
                at: now,
                since,
                fired_at,
            };
            let (next, emitted) = match slot.state {
                AlertState::Inactive if rule.breached_by(value) => {
                    if rule.for_duration().is_zero() {
                        let next = AlertState::Firing {
                            since: now,
                            fired_at: now,
                        };
                        (next, Some(event(Transition::Firing, now, Some(now))))
                    } else {
                        (
                            AlertState::Pending { since: now },
                            Some(event(Transition::Pending, now, None)),
                        )
                    }
                }
                AlertState::Inactive => (AlertState::Inactive, None),
                AlertState::Pending { since } if rule.breached_by(value) => {
                    if elapsed(since, now) >= rule.for_duration() {
                        let next = AlertState::Firing {
                            since,
                            fired_at: now,
                        };
                        (next, Some(event(Transition::Firing, since, Some(now))))
                    } else {
                        (slot.state, None)
                    }
                }
                AlertState::Pending { .. } => (AlertState::Inactive, None),
                AlertState::Firing { since, fired_at } if rule.cleared_by(value) => (
                    AlertState::Inactive,
                    Some(event(Transition::Resolved, since, Some(fired_at))),
                ),
                AlertState::Firing { .. } => (slot.state, None),
            };
            slot.state = next;
            events.extend(emitted);
        }
        for event in &events {
            self.dispatch(event);
            self.record(event.clone());
        }
        events
    }

    /// Gives `event` to every handler; an error or a panic is counted and
    /// stops neither the others nor the evaluation.
    fn dispatch(&mut self, event: &AlertEvent) {
        for slot in &mut self.handlers {
            let handler = &mut slot.handler;
            let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(event)));
            if !matches!(outcome, Ok(Ok(()))) {
                slot.failures = slot.failures.saturating_add(1);
            }
        }
    }

    fn record(&mut self, event: AlertEvent) {
        while self.history.len() >= self.capacity {
            self.history.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        self.history.push_back(event);
    }

    /// The state of the rule named `name`, or `None` for an unknown name.
    #[must_use]
    pub fn state(&self, name: &str) -> Option<AlertState> {
        self.rules
            .iter()
            .find(|s| s.rule.name() == name)
            .map(|s| s.state)
    }

    /// Every rule with its state and last valid value, in configuration order.
    pub fn states(&self) -> impl Iterator<Item = (&AlertRule, AlertState, Option<f64>)> {
        self.rules.iter().map(|s| (&s.rule, s.state, s.last_value))
    }

    /// The rules now firing.
    pub fn firing(&self) -> impl Iterator<Item = &AlertRule> {
        self.rules
            .iter()
            .filter(|s| matches!(s.state, AlertState::Firing { .. }))
            .map(|s| &s.rule)
    }

    /// The recorded events, oldest first; at most the configured capacity.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &AlertEvent> + ExactSizeIterator {
        self.history.iter()
    }

    /// Events dropped from the history because it was full.
    #[must_use]
    pub const fn dropped_events(&self) -> u64 {
        self.dropped
    }

    /// Handler failures (errors returned and panics caught), all handlers.
    #[must_use]
    pub fn handler_failures(&self) -> u64 {
        self.handlers
            .iter()
            .map(|h| h.failures)
            .fold(0, u64::saturating_add)
    }

    /// Each handler's name and failure count, in the order added.
    pub fn handler_stats(&self) -> impl Iterator<Item = (&str, u64)> {
        self.handlers.iter().map(|h| (h.handler.name(), h.failures))
    }
}
