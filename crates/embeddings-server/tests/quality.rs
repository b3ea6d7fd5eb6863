//! The quality canary through the server: on a copy of the model with one
//! weight tensor perturbed by 3 %, `GET /quality` shows the drop, the
//! health verdict names the slot and the figure, and the in-process alert
//! `canary_cosine_low` fires; on the real model all of it stays quiet.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, models_dir};

/// Polls `check` every 200 ms for at most 60 s.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn canary_alert(server: &Server) -> serde_json::Value {
    let alerts = server.get("/alerts").json();
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "canary_cosine_low")
        .cloned()
        .expect("the recommended rule canary_cosine_low")
}

#[test]
fn a_perturbed_model_fires_the_canary_and_the_real_one_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    embeddings_tests::altered_model(
        &models_dir().join("all-MiniLM-L6-v2"),
        &dir.path().join("all-MiniLM-L6-v2"),
        "embeddings.word_embeddings.weight",
        |v, i| {
            let sign = if (i.wrapping_mul(2_654_435_761) >> 7) & 1 == 0 {
                1.0
            } else {
                -1.0
            };
            v * (1.0 + 0.03 * sign)
        },
    );
    let flags = ["--alert-interval-secs", "1", "--canary-interval-secs", "2"];
    let bad = Server::start_ready(
        &[
            &["--models-dir", dir.path().to_str().unwrap()][..],
            &flags[..],
        ]
        .concat(),
    );
    let good = Server::start_ready(&flags);

    // The first run follows the load at once.
    let report = |server: &Server| {
        wait_for("a canary report", || {
            let q = server.get("/quality").json();
            (!q["canary"].is_null()).then_some(q)
        })
    };
    let quality = report(&bad);
    assert_eq!(quality["canary_interval_seconds"], 2.0);
    let semantic = quality["canary"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["model"] == "semantic")
        .cloned()
        .unwrap();
    let cosine = semantic["cosine_to_reference"].as_f64().unwrap();
    assert!(cosine < 0.9999, "{semantic}");

    // The verdict names the slot and the figure.
    let health = bad.get("/health").json();
    let reason = health["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "canary")
        .cloned()
        .unwrap_or_else(|| panic!("no canary reason: {health}"));
    assert_eq!(reason["verdict"], "degraded");
    assert_eq!(
        reason["observed"]["value"]["figure"], "cosine_to_reference",
        "{reason}"
    );
    assert!(
        ["semantic", "code", "graph", "multimodal", "entity"]
            .contains(&reason["observed"]["value"]["model"].as_str().unwrap()),
        "a mean-pooled MiniLM slot: {reason}"
    );
    assert_eq!(health["verdict"], "degraded");

    // The in-process alert fires; the figures are on /metrics.
    let alert = wait_for("canary_cosine_low firing", || {
        let a = canary_alert(&bad);
        (a["state"] == "firing").then_some(a)
    });
    assert!(alert["value"].as_f64().unwrap() < 0.9999, "{alert}");
    let metrics = bad.get("/metrics").text();
    assert!(
        metrics.contains("embeddings_canary_cosine{model=\"semantic\",against=\"reference\"} 0.99"),
        "{metrics}"
    );

    // The real model: every figure fine, no reason, the alert quiet after
    // an evaluation that saw the report.
    let quality = report(&good);
    for slot in quality["canary"]["slots"].as_array().unwrap() {
        assert!(
            slot["cosine_to_startup"].as_f64().unwrap() > 0.999_999,
            "{slot}"
        );
        if let Some(c) = slot["cosine_to_reference"].as_f64() {
            assert!(c > 0.999_99, "{slot}");
        }
        assert!(slot["batch_deviation"].as_f64().unwrap() < 1e-5, "{slot}");
    }
    let health = good.get("/health").json();
    assert!(
        health["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["rule"] != "canary"),
        "{health}"
    );
    let alert = wait_for("canary_cosine_low evaluated", || {
        let a = canary_alert(&good);
        a["value"].as_f64().map(|_| a)
    });
    assert_eq!(alert["state"], "inactive", "{alert}");
    // The drift report is there from the first alert evaluation, with its
    // window and sampling; no figure until the windows fill.
    let drift = wait_for("a drift report", || {
        let q = good.get("/quality").json();
        (!q["drift"].is_null()).then_some(q["drift"].clone())
    });
    assert_eq!(drift["window"], 256, "{drift}");
    assert_eq!(drift["pairs"], 2048, "{drift}");
    // A second round ran (every 2 s) and counted as ok.
    wait_for("a second canary round", || {
        let text = good.get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with("embeddings_canary_rounds_total{outcome=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 2.0)
    });
}
