//! The alert engine with synthetic time: `for`, hysteresis, resolution,
//! missing inputs, handler isolation, bounded history.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: helpers outside #[test] fns may unwrap, as tests do (clippy.toml).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{at, t0};
use embeddings_health::doc_support::snapshot;
use embeddings_health::{
    AlertConfig, AlertEngine, AlertEvent, AlertHandler, AlertMetric, AlertRuleSpec, AlertState,
    HandlerError, JsonLinesHandler, LogHandler, MetricValues, Severity, Transition,
};

fn engine(rules: Vec<AlertRuleSpec>, capacity: usize) -> AlertEngine {
    let rules = rules.into_iter().map(|r| r.build().unwrap()).collect();
    AlertEngine::new(AlertConfig::new(rules, capacity).unwrap())
}

fn errors(value: f64) -> MetricValues {
    let mut v = MetricValues::new();
    v.set(AlertMetric::ErrorRate, value);
    v
}

fn transitions(events: &[AlertEvent]) -> Vec<(String, Transition)> {
    events
        .iter()
        .map(|e| (e.rule.clone(), e.transition))
        .collect()
}

fn errors_rule() -> AlertRuleSpec {
    AlertRuleSpec::new("errors", AlertMetric::ErrorRate, 10.0)
        .with_for(Duration::from_secs(60))
        .with_hysteresis(2.0)
        .with_severity(Severity::Critical)
}

#[test]
fn for_duration_must_hold_before_firing() {
    let mut e = engine(vec![errors_rule()], 16);
    assert!(
        e.evaluate_values(&errors(10.0), at(0)).is_empty(),
        "at the threshold is not above it"
    );
    let ev = e.evaluate_values(&errors(11.0), at(0));
    assert_eq!(ev[0].transition, Transition::Pending);
    assert_eq!(
        e.state("errors"),
        Some(AlertState::Pending { since: at(0) })
    );
    assert!(
        e.evaluate_values(&errors(11.0), at(59)).is_empty(),
        "59 s < for"
    );
    let ev = e.evaluate_values(&errors(11.0), at(60));
    assert_eq!(ev.len(), 1);
    let fired = &ev[0];
    assert_eq!(fired.transition, Transition::Firing);
    assert_eq!(
        (fired.since, fired.fired_at, fired.at),
        (at(0), Some(at(60)), at(60))
    );
    assert_eq!(fired.severity, Severity::Critical);
    assert_eq!(e.firing().count(), 1);
    assert!(
        e.evaluate_values(&errors(50.0), at(120)).is_empty(),
        "firing stays firing silently"
    );
}

#[test]
fn pending_that_clears_returns_silently_and_restarts_the_clock() {
    let mut e = engine(vec![errors_rule()], 16);
    e.evaluate_values(&errors(11.0), at(0));
    assert!(e.evaluate_values(&errors(9.0), at(30)).is_empty());
    assert_eq!(e.state("errors"), Some(AlertState::Inactive));
    let ev = e.evaluate_values(&errors(11.0), at(40));
    assert_eq!(ev[0].transition, Transition::Pending);
    assert!(
        e.evaluate_values(&errors(11.0), at(90)).is_empty(),
        "only 50 s since the new breach"
    );
    assert_eq!(
        e.evaluate_values(&errors(11.0), at(100))[0].transition,
        Transition::Firing
    );
}

#[test]
fn zero_for_fires_at_once() {
    let mut e = engine(
        vec![AlertRuleSpec::new("now", AlertMetric::ErrorRate, 10.0)],
        16,
    );
    let ev = e.evaluate_values(&errors(10.5), t0());
    assert_eq!(transitions(&ev), [("now".to_owned(), Transition::Firing)]);
    assert_eq!(ev[0].fired_at, Some(t0()));
}

#[test]
fn hysteresis_on_resolve_for_a_maximum() {
    let mut e = engine(vec![errors_rule()], 16);
    e.evaluate_values(&errors(11.0), at(0));
    e.evaluate_values(&errors(11.0), at(60));
    for v in [10.0, 9.0, 8.000_001] {
        assert!(
            e.evaluate_values(&errors(v), at(70)).is_empty(),
            "{v} is inside the margin"
        );
        assert!(matches!(e.state("errors"), Some(AlertState::Firing { .. })));
    }
    let ev = e.evaluate_values(&errors(8.0), at(80));
    assert_eq!(ev[0].transition, Transition::Resolved);
    assert_eq!(
        (ev[0].since, ev[0].fired_at, ev[0].at),
        (at(0), Some(at(60)), at(80))
    );
    assert_eq!(e.state("errors"), Some(AlertState::Inactive));
    // It can fire again afterwards, from scratch.
    assert_eq!(
        e.evaluate_values(&errors(12.0), at(90))[0].transition,
        Transition::Pending
    );
    assert_eq!(
        e.evaluate_values(&errors(12.0), at(150))[0].transition,
        Transition::Firing
    );
}

#[test]
fn hysteresis_on_resolve_for_a_minimum() {
    let rule = AlertRuleSpec::new("slow", AlertMetric::Throughput, 5.0).with_hysteresis(1.0);
    let mut e = engine(vec![rule], 16);
    let tp = |v| {
        let mut m = MetricValues::new();
        m.set(AlertMetric::Throughput, v);
        m
    };
    assert!(e.evaluate_values(&tp(5.0), at(0)).is_empty());
    assert_eq!(
        e.evaluate_values(&tp(4.9), at(1))[0].transition,
        Transition::Firing
    );
    assert!(e.evaluate_values(&tp(5.5), at(2)).is_empty());
    assert_eq!(
        e.evaluate_values(&tp(6.0), at(3))[0].transition,
        Transition::Resolved
    );
}

#[test]
fn missing_input_neither_fires_nor_resolves() {
    let mut e = engine(vec![errors_rule()], 16);
    let missing = MetricValues::new();
    let mut nan = MetricValues::new();
    nan.set(AlertMetric::ErrorRate, f64::NAN);
    assert_eq!(nan, missing, "NaN is stored as missing");
    assert!(e.evaluate_values(&missing, at(0)).is_empty());
    e.evaluate_values(&errors(11.0), at(0));
    // Pending: a missing value does not reset it...
    assert!(e.evaluate_values(&missing, at(30)).is_empty());
    assert_eq!(
        e.state("errors"),
        Some(AlertState::Pending { since: at(0) })
    );
    // ...nor fire it, even past `for`.
    assert!(e.evaluate_values(&missing, at(90)).is_empty());
    assert_eq!(
        e.evaluate_values(&errors(11.0), at(91))[0].transition,
        Transition::Firing
    );
    // Firing: a missing value does not resolve it.
    for t in 92..100 {
        assert!(e.evaluate_values(&missing, at(t)).is_empty());
    }
    assert!(matches!(e.state("errors"), Some(AlertState::Firing { .. })));
    let (_, _, last) = e.states().next().unwrap();
    assert_eq!(last, Some(11.0));
}

#[test]
fn time_going_backwards_counts_as_no_time() {
    let mut e = engine(vec![errors_rule()], 16);
    e.evaluate_values(&errors(11.0), at(100));
    assert!(e.evaluate_values(&errors(11.0), at(0)).is_empty());
    assert!(matches!(
        e.state("errors"),
        Some(AlertState::Pending { .. })
    ));
}

#[test]
fn rules_read_the_snapshot() {
    let mut e = AlertEngine::new(AlertConfig::default());
    let mut s = snapshot(t0());
    assert!(
        e.evaluate(&s, None, t0()).is_empty(),
        "a quiet snapshot raises nothing"
    );

    s.gauges.gpu_memory_used_bytes = Some(95);
    s.gauges.gpu_memory_total_bytes = Some(100);
    s.error_rate_per_minute = 12.0;
    let ev = e.evaluate(&s, Some(0.5), at(1));
    assert_eq!(
        transitions(&ev),
        [
            ("error_rate_elevated".to_owned(), Transition::Pending),
            ("error_rate_high".to_owned(), Transition::Firing),
            ("gpu_memory_high".to_owned(), Transition::Pending),
            ("gpu_memory_critical".to_owned(), Transition::Firing),
            ("embedding_drift_high".to_owned(), Transition::Pending),
        ]
    );
    // GPU gauges gone, no drift: those alerts stay as they are.
    s.gauges.gpu_memory_total_bytes = None;
    s.error_rate_per_minute = 0.0;
    let ev = e.evaluate(&s, None, at(700));
    assert_eq!(
        transitions(&ev),
        [("error_rate_high".to_owned(), Transition::Resolved)]
    );
    assert!(matches!(
        e.state("gpu_memory_critical"),
        Some(AlertState::Firing { .. })
    ));
    assert!(matches!(
        e.state("embedding_drift_high"),
        Some(AlertState::Pending { .. })
    ));
    // Total 0 is missing too, not a division.
    s.gauges.gpu_memory_total_bytes = Some(0);
    assert!(e.evaluate(&s, None, at(701)).is_empty());

    let mut quiet = snapshot(t0());
    quiet.cache_hits = 0;
    quiet.cache_misses = 0;
    quiet.cache_hit_rate = 0.0;
    quiet.latency.count = 0;
    let values = MetricValues::from_snapshot(&quiet, None);
    assert_eq!(values.get(AlertMetric::CacheHitRate), None, "no lookup yet");
    assert_eq!(values.get(AlertMetric::LatencyP95), None, "empty histogram");
    assert_eq!(values.get(AlertMetric::EmbeddingDrift), None);
    assert_eq!(
        values.get(AlertMetric::ProcessMemory),
        Some(4.0 * 1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(values.get(AlertMetric::Throughput), Some(100.0));
}

/// Records every event it sees.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<AlertEvent>>>);

impl AlertHandler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn handle(&mut self, event: &AlertEvent) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

struct Failing;
impl AlertHandler for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn handle(&mut self, _: &AlertEvent) -> Result<(), HandlerError> {
        Err(HandlerError::Other("pager service unreachable".into()))
    }
}

struct Panicking;
impl AlertHandler for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    fn handle(&mut self, _: &AlertEvent) -> Result<(), HandlerError> {
        panic!("handler bug (expected by the test)");
    }
}

#[test]
fn failing_and_panicking_handlers_are_isolated_and_counted() {
    let recorder = Recorder::default();
    let mut e = engine(vec![errors_rule()], 16)
        .with_handler(Failing)
        .with_handler(Panicking)
        .with_handler(recorder.clone());
    let ev1 = e.evaluate_values(&errors(11.0), at(0));
    let ev2 = e.evaluate_values(&errors(11.0), at(60));
    let ev3 = e.evaluate_values(&errors(0.0), at(120));
    assert_eq!(ev1.len() + ev2.len() + ev3.len(), 3, "evaluation went on");
    let seen = recorder.0.lock().unwrap();
    let seen: Vec<_> = seen.iter().map(|e| e.transition).collect();
    assert_eq!(
        seen,
        [
            Transition::Pending,
            Transition::Firing,
            Transition::Resolved
        ]
    );
    assert_eq!(e.handler_failures(), 6);
    let stats: Vec<_> = e.handler_stats().collect();
    assert_eq!(stats, [("failing", 3), ("panicking", 3), ("recorder", 0)]);
    assert_eq!(e.history().count(), 3);
    assert!(format!("{e:?}").contains("panicking"));
}

#[test]
fn history_is_bounded_and_drops_the_oldest() {
    let rule = AlertRuleSpec::new("flappy", AlertMetric::ErrorRate, 10.0);
    let mut e = engine(vec![rule], 3);
    for i in 0..5_i64 {
        // fire at even seconds, resolve at odd: five events
        e.evaluate_values(&errors(if i % 2 == 0 { 20.0 } else { 0.0 }), at(i));
    }
    let kept: Vec<_> = e.history().map(|ev| (ev.transition, ev.at)).collect();
    assert_eq!(
        kept,
        [
            (Transition::Firing, at(2)),
            (Transition::Resolved, at(3)),
            (Transition::Firing, at(4))
        ]
    );
    assert_eq!(e.dropped_events(), 2);
    assert_eq!(e.history().next_back().map(|ev| ev.at), Some(at(4)));
}

#[test]
fn log_handler_writes_one_line_per_event() {
    let mut handler = LogHandler::new(Vec::new());
    let mut e = engine(vec![errors_rule()], 4);
    for ev in e.evaluate_values(&errors(11.0), at(0)) {
        handler.handle(&ev).unwrap();
    }
    for ev in e.evaluate_values(&errors(11.0), at(60)) {
        handler.handle(&ev).unwrap();
    }
    let text = String::from_utf8(handler.into_inner()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[1],
        "2025-06-01T12:01:00+00:00 alert FIRING [critical] errors: error_rate = 11 errors/min, \
         above threshold 10 (since 2025-06-01T12:00:00+00:00)"
    );
    let _ = LogHandler::stderr();
}

#[test]
fn json_lines_handler_appends_parseable_events() {
    let path = std::env::temp_dir().join(format!(
        "embeddings-health-alerts-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut e = engine(vec![errors_rule()], 16)
        .with_handler(JsonLinesHandler::append_to_file(&path).unwrap());
    e.evaluate_values(&errors(11.0), at(0));
    e.evaluate_values(&errors(11.0), at(60));
    drop(e);
    let mut e = engine(vec![errors_rule()], 16)
        .with_handler(JsonLinesHandler::append_to_file(&path).unwrap());
    e.evaluate_values(&errors(11.0), at(0));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let events: Vec<AlertEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e.transition).collect();
    assert_eq!(
        kinds,
        [Transition::Pending, Transition::Firing, Transition::Pending],
        "appended"
    );
    assert_eq!(events[1].fired_at, Some(at(60)));

    let mut handler = JsonLinesHandler::new(Vec::new());
    handler.handle(&events[0]).unwrap();
    let line = String::from_utf8(handler.into_inner()).unwrap();
    assert!(
        line.ends_with('\n') && line.contains(r#""transition":"pending""#),
        "{line}"
    );
}

#[test]
fn a_writer_that_fails_is_counted() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut e = engine(
        vec![AlertRuleSpec::new("now", AlertMetric::ErrorRate, 1.0)],
        4,
    )
    .with_handler(LogHandler::new(Broken))
    .with_handler(JsonLinesHandler::new(Broken));
    assert_eq!(e.evaluate_values(&errors(5.0), t0()).len(), 1);
    assert_eq!(e.handler_failures(), 2);
}

#[test]
fn severities_are_ordered() {
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    assert_eq!(
        serde_json::to_string(&Severity::Critical).unwrap(),
        r#""critical""#
    );
}
