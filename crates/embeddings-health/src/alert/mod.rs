//! Alerting: [`AlertRule`]s evaluated over successive snapshots by an
//! [`AlertEngine`], which hands state changes to [`AlertHandler`]s.

mod engine;
mod handler;
mod rule;

pub use engine::{AlertEngine, AlertEvent, AlertState, Transition};
pub use handler::{AlertHandler, JsonLinesHandler, LogHandler};
pub use rule::{
    AlertConfig, AlertConfigSpec, AlertMetric, AlertRule, AlertRuleSpec, Direction, MetricValues,
    Severity,
};
