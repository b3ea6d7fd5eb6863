//! The figures, end to end: the real server runs a scripted workload (valid
//! requests, cache hits, client errors, a 429 under a one-request queue, a
//! client that disconnects while queued, a slot that fails to load), then
//! every family of `/metrics` and every `HealthStatus` field is checked
//! against the value the script implies, and the exposition against the
//! metric catalogue (`docs/metrics.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_cmp,
    reason = "tests: a failure is a failed test; the figures compared are exact integers"
)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{Server, sample};
use embeddings_pipeline::ModelId;

/// Polls `/metrics` until `series` reads `want`, for at most a minute.
fn wait_for(server: &Server, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = server.get("/metrics").text();
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never read {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The family names of a Prometheus exposition (from its `# TYPE` lines).
fn exposed_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The family names the catalogue documents: the first cell of each table
/// row in its family sections, without labels.
fn catalogued_families() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|cell| cell.split('{').next().unwrap_or(cell).to_owned())
        .filter(|name| name.starts_with("embeddings_") || name.starts_with("process_"))
        .collect()
}

#[test]
fn every_family_in_the_exposition_is_in_the_catalogue_and_back() {
    // A fake cgroup with a quota and counters, so the families that exist
    // only in a container are exposed too.
    let cgroup = tempfile::tempdir().expect("tempdir");
    std::fs::write(cgroup.path().join("cpu.max"), "100000 100000\n").expect("cpu.max");
    std::fs::write(cgroup.path().join("memory.max"), "4294967296\n").expect("memory.max");
    std::fs::write(
        cgroup.path().join("cpu.stat"),
        "nr_periods 1\nnr_throttled 0\nthrottled_usec 0\n",
    )
    .expect("cpu.stat");
    let root = cgroup.path().to_str().expect("utf-8 path");
    let server = Server::start_ready(&["--cgroup-root", root]);
    let exposed = exposed_families(&server.get("/metrics").text());
    let catalogued = catalogued_families();
    let missing: Vec<_> = exposed.difference(&catalogued).collect();
    let stale: Vec<_> = catalogued.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "families exposed but not in docs/metrics.md: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "families in docs/metrics.md but not exposed: {stale:?}"
    );
}

#[test]
fn twenty_client_errors_a_minute_leave_the_verdict_healthy() {
    let server = Server::start_ready(&[]);
    for i in 0..20 {
        let body = match i % 2 {
            0 => r#"{"inputs": ["x"], "timestamp": "0000-01-01T00:00:00Z"}"#,
            _ => r#"{"inputs": ["x"], "models": [], "fused": false}"#,
        };
        assert_eq!(server.post_json("/embed_multi", body).status, 422);
    }
    let text = server.get("/metrics").text();
    assert_eq!(
        sample(&text, "embeddings_errors_total{kind=\"validation\"}"),
        Some(20.0)
    );
    assert_eq!(sample(&text, "embeddings_errors_per_minute"), Some(0.0));
    let health = server.get("/health");
    assert_eq!(health.status, 200);
    let report = health.json();
    assert_eq!(report["verdict"], "healthy", "{report}");
    assert_eq!(report["status"]["error_rate"], 0.0);
}

/// One row of the expected exposition: a series and its exact value.
type Row = (&'static str, f64);

#[test]
fn a_scripted_workload_gives_exact_figures_in_every_family_and_health_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workload.toml");
    std::fs::write(
        &config,
        "[batching]\nqueue_capacity = 1\nworkers = 1\nmax_response_floats = 16777216\n\
         [models.code]\npath = \"no-such-model\"\n[slots.code]\nmodel = \"code\"\n\
         [health]\nmin_models_loaded = 10\n",
    )
    .unwrap();
    let server = Server::start_ready(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;

    // 1. Two new inputs (every loaded slot and the fused vector), then the
    //    same two again from the cache, then one through the OpenAI route
    //    (semantic only, so another cache key).
    let pair = r#"{"inputs": ["alpha", "beta"]}"#;
    assert_eq!(server.post_json("/embed_multi", pair).status, 200);
    assert_eq!(server.post_json("/embed_multi", pair).status, 200);
    let openai = r#"{"input": "gamma", "model": "semantic"}"#;
    assert_eq!(server.post_json("/v1/embeddings", openai).status, 200);

    // 2. Client errors: three refused by the pipeline (a year-0 timestamp,
    //    nothing requested, the failed slot), one by the HTTP layer.
    for body in [
        r#"{"inputs": ["x"], "timestamp": "0000-01-01T00:00:00Z"}"#,
        r#"{"inputs": ["x"], "models": [], "fused": false}"#,
        r#"{"inputs": ["x"], "models": ["code"]}"#,
    ] {
        assert_eq!(server.post_json("/embed_multi", body).status, 422, "{body}");
    }
    assert_eq!(server.post_json("/embed_multi", "{oops").status, 400);

    // 3. A long request occupies the only worker; a second waits in the
    //    one-request queue; a third is refused (429); the second's client
    //    then disconnects, so its work is dropped and counted `cancelled`.
    let long_inputs: Vec<String> = (0..128)
        .map(|i| format!("\"{i} {}\"", "sentence about a long topic ".repeat(20)))
        .collect();
    let long = format!(r#"{{"inputs": [{}]}}"#, long_inputs.join(","));
    let running = common::post_json_in_background(addr, "/embed_multi", long);
    wait_for(&server, "embeddings_in_flight_requests", 1.0);
    let queued_body = r#"{"inputs": ["delta"]}"#;
    let mut queued = TcpStream::connect(addr).unwrap();
    write!(
        queued,
        "POST /embed_multi HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{queued_body}",
        queued_body.len()
    )
    .unwrap();
    wait_for(&server, "embeddings_queue_depth", 1.0);
    let refused = server.post_json("/embed_multi", r#"{"inputs": ["epsilon"]}"#);
    assert_eq!(refused.status, 429, "{}", refused.text());
    queued.shutdown(Shutdown::Both).unwrap();
    drop(queued);
    let long_answer = running.join().unwrap();
    assert_eq!(long_answer.status, 200, "{}", long_answer.text());
    let text = wait_for(&server, "embeddings_errors_total{kind=\"cancelled\"}", 1.0);

    // Exact counts. Computed: 2 + 1 + 128 = 131 inputs in 3 computations;
    // served: 131 + 2 cache hits; lookups: every valid input of every
    // request that reached the cache (alpha, beta twice; gamma; 128; delta;
    // epsilon).
    let exact: Vec<Row> = vec![
        ("embeddings_generated_total", 131.0),
        ("embeddings_inputs_served_total", 133.0),
        ("embeddings_cache_hits_total", 2.0),
        ("embeddings_cache_misses_total", 133.0),
        ("embeddings_cache_evictions_total", 0.0),
        ("embeddings_batches_total", 3.0),
        ("embeddings_batch_items_total", 131.0),
        ("embeddings_errors_total{kind=\"validation\"}", 3.0),
        ("embeddings_errors_total{kind=\"tokenization\"}", 0.0),
        ("embeddings_errors_total{kind=\"inference\"}", 0.0),
        ("embeddings_errors_total{kind=\"timeout\"}", 0.0),
        ("embeddings_errors_total{kind=\"overload\"}", 1.0),
        ("embeddings_errors_total{kind=\"internal\"}", 0.0),
        ("embeddings_errors_total{kind=\"cancelled\"}", 1.0),
        ("embeddings_errors_per_minute", 0.0),
        ("embeddings_latency_seconds_count", 131.0),
        ("embeddings_batch_latency_seconds_count", 3.0),
        ("embeddings_batch_size_count", 3.0),
        ("embeddings_batch_size_sum", 131.0),
        // alpha/beta, gamma, the long one and the dropped one were taken
        // from the queue; the cache-only request never queued.
        (
            "embeddings_stage_latency_seconds_count{stage=\"queue_wait\"}",
            4.0,
        ),
        (
            "embeddings_stage_latency_seconds_count{stage=\"tokenization\"}",
            3.0,
        ),
        ("embeddings_queue_depth", 0.0),
        ("embeddings_queue_depth_max", 1.0),
        ("embeddings_in_flight_requests", 0.0),
        ("embeddings_workers", 1.0),
        ("embeddings_cache_entries", 131.0),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"200\"}",
            3.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"422\"}",
            3.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"400\"}",
            1.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"429\"}",
            1.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"500\"}",
            0.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"504\"}",
            0.0,
        ),
        (
            "embeddings_http_requests_total{endpoint=\"openai_embeddings\",code=\"200\"}",
            1.0,
        ),
        ("embeddings_build_info{version=\"0.1.0\"}", 1.0),
    ];
    let mut wrong = Vec::new();
    for (series, want) in &exact {
        let got = sample(&text, series);
        if got != Some(*want) {
            wrong.push(format!("{series}: want {want}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{text}", wrong.join("\n"));

    // Per slot: requests and failures are exact; latency samples are one per
    // chunk the slot ran in. Every chunk ran every loaded slot, except the
    // OpenAI request's, which ran `semantic` alone.
    let inference_chunks = sample(
        &text,
        "embeddings_stage_latency_seconds_count{stage=\"inference\"}",
    )
    .unwrap();
    assert!(inference_chunks >= 3.0, "{inference_chunks}");
    assert_eq!(
        sample(
            &text,
            "embeddings_stage_latency_seconds_count{stage=\"fusion\"}"
        ),
        Some(inference_chunks - 1.0)
    );
    for model in ModelId::ALL {
        let get = |family: &str| sample(&text, &format!("{family}{{model=\"{model}\"}}"));
        let (requests, chunks) = match model {
            ModelId::Code => (0.0, 0.0),
            ModelId::Semantic => (131.0, inference_chunks),
            _ => (130.0, inference_chunks - 1.0),
        };
        assert_eq!(
            get("embeddings_model_requests_total"),
            Some(requests),
            "{model}"
        );
        assert_eq!(
            get("embeddings_model_latency_seconds_count"),
            Some(chunks),
            "{model}"
        );
        // Unknown is no sample: only slots that ran have an average.
        assert_eq!(
            get("embeddings_model_latency_ema_seconds").is_some(),
            model != ModelId::Code,
            "{model}"
        );
        for kind in [
            "validation",
            "tokenization",
            "inference",
            "timeout",
            "overload",
            "internal",
            "cancelled",
        ] {
            assert_eq!(
                sample(
                    &text,
                    &format!("embeddings_model_errors_total{{model=\"{model}\",kind=\"{kind}\"}}")
                ),
                Some(0.0),
                "{model} {kind}"
            );
        }
    }

    // Measured figures: present and plausible; the unmeasurable, absent.
    for series in [
        "embeddings_latency_ema_seconds",
        "embeddings_latency_seconds_sum",
        "embeddings_uptime_seconds",
        "embeddings_cache_memory_bytes",
        "embeddings_process_resident_memory_bytes",
        "embeddings_throughput_per_second{window=\"lifetime\"}",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v > 0.0),
            "{series} should be a positive measurement"
        );
    }
    for family in [
        "embeddings_gpu_memory_used_bytes",
        "embeddings_gpu_memory_capacity_bytes",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(family)),
            "{family}: no GPU, no sample"
        );
    }

    // Every HealthStatus field.
    let health = server.get("/health");
    assert_eq!(health.status, 200, "degraded still serves");
    let report = health.json();
    assert_eq!(report["verdict"], "degraded", "{report}");
    let reasons: Vec<&str> = report["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["all_models_loaded"], "{report}");
    let status = &report["status"];
    let slots = |names: &[ModelId]| -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|m| serde_json::json!(m.as_str()))
            .collect()
    };
    let all_but_code: Vec<ModelId> = ModelId::ALL
        .into_iter()
        .filter(|m| *m != ModelId::Code)
        .collect();
    let cache_bytes = sample(&text, "embeddings_cache_memory_bytes").unwrap();
    assert_eq!(status["healthy"], true);
    assert_eq!(
        status["models_loaded"].as_array().unwrap(),
        &slots(&all_but_code)
    );
    assert_eq!(
        status["models_failed"].as_array().unwrap(),
        &slots(&[ModelId::Code])
    );
    assert_eq!(status["gpu_memory_used"], 0);
    assert_eq!(status["gpu_memory_available"], 0);
    assert!(status["gpu_memory"].is_null(), "no GPU read: null, not 0");
    assert_eq!(status["cache_size"], 131);
    assert_eq!(status["cache_memory_bytes"].as_f64(), Some(cache_bytes));
    assert_eq!(status["cache"]["entries"], 131);
    assert_eq!(status["cache"]["bytes"].as_f64(), Some(cache_bytes));
    assert!(status["uptime"].as_f64().unwrap() > 0.0);
    assert!(status["last_embed_time"].is_string());
    assert_eq!(status["error_rate"], 0.0);
    assert_eq!(
        status["components"],
        serde_json::json!({
            "model_registry": true,
            "batch_processor": true,
            "fusemoe": true,
            "cache_manager": true,
            "gpu_available": false,
            "gpu_required": false,
        })
    );
}
