//! The in-process alert engine runs in the server: rules evaluated on a
//! fixed interval from the metrics `/health` reads, state at `GET /alerts`
//! and in `embeddings_alert_state`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, sample};

const RULES: &str = r#"
[[rules]]
name = "memory_above_one_byte"
metric = "process_memory"
threshold = 1.0
for_seconds = 0.0
hysteresis = 0.0
severity = "critical"

[[rules]]
name = "errors_above_a_thousand"
metric = "error_rate"
threshold = 1000.0
for_seconds = 0.0
hysteresis = 0.0
severity = "warning"
"#;

#[test]
fn a_breached_rule_fires_in_alerts_and_in_metrics_and_a_quiet_one_stays_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let server = Server::start_ready(&[
        "--alert-rules",
        rules.to_str().unwrap(),
        "--alert-interval-secs",
        "1",
    ]);
    // The resident memory is sampled every second and is always above one
    // byte: the rule fires at the first evaluation after the sample.
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let alerts = server.get("/alerts").json();
        let firing = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "memory_above_one_byte" && a["state"] == "firing");
        if firing {
            break alerts;
        }
        assert!(Instant::now() < deadline, "never fired: {alerts}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rule = |name: &str| {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap()
    };
    let memory = rule("memory_above_one_byte");
    assert_eq!(memory["severity"], "critical");
    assert_eq!(memory["threshold"], 1.0);
    assert!(memory["value"].as_f64().unwrap() > 1.0);
    assert!(memory["since"].is_string() && memory["fired_at"].is_string());
    let quiet = rule("errors_above_a_thousand");
    assert_eq!(quiet["state"], "inactive");
    assert_eq!(quiet["value"], 0.0);
    assert!(alerts["evaluated_at"].is_string());
    assert!(
        alerts["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["rule"] == "memory_above_one_byte" && e["transition"] == "firing")
    );
    let text = server.get("/metrics").text();
    assert_eq!(
        sample(
            &text,
            "embeddings_alert_state{alert=\"memory_above_one_byte\",severity=\"critical\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "embeddings_alert_state{alert=\"errors_above_a_thousand\",severity=\"warning\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn the_recommended_rules_run_by_default_and_a_bad_rules_file_stops_the_start() {
    let server = Server::start_ready(&[]);
    let alerts = server.get("/alerts").json();
    let names: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"error_rate_high"), "{names:?}");
    assert!(names.contains(&"latency_p95_high"), "{names:?}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nname = \"x\"\nmetric = \"nope\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_embeddings-server"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--alert-rules",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alert rules"), "{stderr}");
}
