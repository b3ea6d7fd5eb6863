//! Drives the real binary over HTTP: every endpoint, every error class, the
//! probes while loading, request ids, metrics per outcome, promtool, and
//! graceful shutdown.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Server, request, sample};

#[test]
fn embed_returns_every_slot_and_the_fused_vector() {
    let server = Server::start_ready(&[]);
    let r = server.post_json("/embed_multi", r#"{"inputs": ["A man is eating food.", "A monkey is playing drums."], "timestamp": "2025-01-01T12:00:00Z"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("server-timing")
            .is_some_and(|v| v.contains("inference;dur="))
    );
    let json = r.json();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let slots = data[0]["slots"].as_object().unwrap();
    assert_eq!(slots.len(), 12, "{slots:?}");
    assert_eq!(slots["semantic"]["type"], "dense");
    assert_eq!(slots["semantic"]["dim"], 384);
    assert_eq!(slots["causal"]["type"], "causal");
    assert_eq!(slots["sparse"]["type"], "sparse");
    assert_eq!(slots["late_interaction"]["type"], "per_token");
    let fused = data[0]["fused"].as_array().unwrap();
    assert_eq!(fused.len(), 1536);
    let norm: f64 = fused
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert!(json["timings_ms"]["total"].as_f64().unwrap() >= 0.0);
}

#[test]
fn embed_a_subset_of_slots_and_a_single_string() {
    let server = Server::start_ready(&[]);
    let r = server.post_json(
        "/embed_multi",
        r#"{"inputs": "hello", "models": ["semantic", "hdc"], "fused": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json();
    let slots = json["data"][0]["slots"].as_object().unwrap();
    let mut names: Vec<_> = slots.keys().collect();
    names.sort();
    assert_eq!(names, ["hdc", "semantic"]);
    assert!(json["data"][0]["fused"].is_null());
}

#[test]
fn openai_compatible_embeddings() {
    let server = Server::start_ready(&[]);
    let r = server.post_json(
        "/v1/embeddings",
        r#"{"input": ["a", "b"], "model": "semantic"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["data"][1]["index"], 1);
    assert_eq!(json["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert!(json["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let r = server.post_json(
        "/v1/embeddings",
        r#"{"input": "a", "model": "fused", "encoding_format": "base64", "dimensions": 256}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let b64 = r.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(b64.len(), (256 * 4usize).div_ceil(3) * 4);

    // OpenAI's error shape, so OpenAI clients show the message.
    for (body, needle, param) in [
        (
            r#"{"input": "a", "model": "nope"}"#,
            "late_interaction",
            "model",
        ),
        (
            r#"{"input": "a", "model": "sparse"}"#,
            "/embed_multi",
            "model",
        ),
        (
            r#"{"input": "a", "model": "semantic", "dimensions": 385}"#,
            "dimensions",
            "dimensions",
        ),
        (
            r#"{"input": "a", "model": "semantic", "encoding_format": "hex"}"#,
            "base64",
            "encoding_format",
        ),
        (
            r#"{"input": [], "model": "semantic"}"#,
            "at least one",
            "input",
        ),
    ] {
        let r = server.post_json("/v1/embeddings", body);
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        let json = r.json();
        let error = &json["error"];
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{}",
            r.text()
        );
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], param);
        assert_eq!(error["code"], "validation");
        assert!(json["request_id"].as_str().is_some());
    }
    // Token ids (what LangChain's OpenAIEmbeddings sends by default): the
    // message says what to send instead.
    for body in [
        r#"{"input": [1, 2, 3], "model": "semantic"}"#,
        r#"{"input": [[1, 2], [3]], "model": "semantic"}"#,
    ] {
        let r = server.post_json("/v1/embeddings", body);
        assert_eq!(r.status, 422, "{}", r.text());
        let error = &r.json()["error"];
        assert!(error["message"].as_str().unwrap().contains("tiktoken"));
        assert_eq!(error["param"], "input");
    }
    // `user` is accepted and ignored.
    let r = server.post_json(
        "/v1/embeddings",
        r#"{"input": "a", "model": "semantic", "user": "someone"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // The model list: the dense slots and `fused`, with their widths.
    let list = server.get("/v1/models").json();
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let width = |id: &str| {
        data.iter()
            .find(|m| m["id"] == id)
            .map(|m| m["dimensions"].as_u64().unwrap())
    };
    assert_eq!(width("semantic"), Some(384));
    assert_eq!(width("fused"), Some(1536));
    assert_eq!(width("sparse"), None, "not a dense slot");
    assert!(
        data.iter()
            .all(|m| m["object"] == "model" && m["created"].as_i64().unwrap() > 0)
    );
    let one = server.get("/v1/models/fused");
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["dimensions"], 1536);
    let missing = server.get("/v1/models/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["param"], "model");
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("semantic")
    );
    let text = server.get("/metrics").text();
    for (endpoint, code, n) in [
        ("openai_models", 200, 1.0),
        ("openai_model", 200, 1.0),
        ("openai_model", 404, 1.0),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "embeddings_http_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}}"
                )
            ),
            Some(n),
            "{endpoint} {code}: every route has its own label"
        );
    }

    // The layers in front of the route answer in the same shape.
    let r = server.post_json("/v1/embeddings", "{oops");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "malformed_json");
    let r = server.get("/v1/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(r.json()["error"]["param"].is_null());
}

#[test]
fn every_error_class_is_json_with_kind_and_request_id_and_the_server_keeps_serving() {
    let server = Server::start_ready(&[
        "--max-inputs",
        "8",
        "--max-input-chars",
        "100",
        "--max-body-bytes",
        "65536",
    ]);
    let big = format!(r#"{{"inputs": "{}"}}"#, "x".repeat(70_000));
    let many = format!(r#"{{"inputs": [{}]}}"#, vec!["\"a\""; 100_000].join(","));
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/embed_multi",
            b"{not json".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/embed_multi",
            vec![0xff, 0xfe, 0x00, 0x80, 0x7b],
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/embed_multi",
            b"{\"inputs\": \"\xff\xfe\"}".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/embed_multi",
            nested.into_bytes(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": 5}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": "a", "extra": 1}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": []}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": "a", "models": ["nope"]}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": "a", "timestamp": "yesterday"}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            format!(r#"{{"inputs": "{}"}}"#, "y".repeat(101)).into_bytes(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            many.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/embed_multi",
            br#"{"inputs": ["a","a","a","a","a","a","a","a","a"]}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "POST",
            "/embed_multi",
            big.into_bytes(),
            413,
            "payload_too_large",
        ),
        ("GET", "/embed_multi", Vec::new(), 405, "method_not_allowed"),
        ("GET", "/nope", Vec::new(), 404, "not_found"),
    ];
    for (method, path, body, status, kind) in cases {
        let r = request(
            server.addr,
            method,
            path,
            &[("x-request-id", "req-42")],
            &body,
        );
        assert_eq!(
            r.status,
            status,
            "{method} {path} {}: {}",
            String::from_utf8_lossy(&body[..body.len().min(60)]),
            r.text()
        );
        let json = r.json();
        assert_eq!(json["kind"], kind, "{}", r.text());
        assert_eq!(json["request_id"], "req-42");
        assert!(!json["error"].as_str().unwrap().is_empty());
        assert_eq!(r.header("x-request-id"), Some("req-42"));
    }
    let unknown = server.post_json("/embed_multi", r#"{"inputs": "a", "models": ["nope"]}"#);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("temporal_recent"),
        "lists the valid names"
    );
    assert_eq!(
        server
            .post_json("/embed_multi", r#"{"inputs": "still fine"}"#)
            .status,
        200
    );
}

#[test]
fn request_ids_are_generated_when_missing_or_unusable() {
    let server = Server::start_ready(&[]);
    let a = server.get("/livez");
    let b = server.get("/livez");
    let (a, b) = (
        a.header("x-request-id").unwrap().to_owned(),
        b.header("x-request-id").unwrap().to_owned(),
    );
    assert_ne!(a, b);
    let r = request(
        server.addr,
        "GET",
        "/livez",
        &[("x-request-id", &"z".repeat(500))],
        b"",
    );
    assert_ne!(r.header("x-request-id").unwrap(), "z".repeat(500));
}

#[test]
fn trickled_body_times_out_with_408_and_others_are_served_meanwhile() {
    let server = Server::start_ready(&["--request-timeout-secs", "1"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"POST /embed_multi HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1000\r\n\r\n{\"inp").unwrap();
    assert_eq!(
        server.get("/health").status,
        200,
        "served while a client trickles"
    );
    let r = common::read_response(&mut slow).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json()["kind"], "request_timeout");
}

#[test]
fn health_info_and_probes_when_ready() {
    let server = Server::start_ready(&[]);
    let health = server.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    let json = health.json();
    assert_eq!(json["verdict"], "healthy", "{json}");
    assert_eq!(json["status"]["healthy"], true);
    assert_eq!(
        json["status"]["models_loaded"].as_array().unwrap().len(),
        12
    );
    assert_eq!(json["status"]["components"]["gpu_available"], false);
    for probe in ["/livez", "/readyz", "/startupz"] {
        assert_eq!(server.get(probe).status, 200, "{probe}");
    }
    let info = server.get("/info").json();
    assert_eq!(info["state"], "ready");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["pipeline"].is_object(), "{info}");
    assert_eq!(info["limits"]["max_inputs"], 256);
}

#[test]
fn probes_while_loading_then_ready() {
    // The config file is a FIFO: loading blocks on reading it until the test writes.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let server = Server::start(&["--config", fifo.to_str().unwrap()]);
    assert_eq!(server.get("/startupz").status, 503);
    assert_eq!(server.get("/readyz").status, 503);
    assert_eq!(server.get("/livez").status, 200);
    let health = server.get("/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["verdict"], "unhealthy");
    let embed = server.post_json("/embed_multi", r#"{"inputs": "too early"}"#);
    assert_eq!(embed.status, 503);
    assert_eq!(embed.json()["kind"], "unavailable");
    assert!(embed.header("retry-after").is_some());
    assert_eq!(server.get("/info").json()["state"], "loading");
    assert_eq!(server.get("/metrics").status, 200);

    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"[batching]\nqueue_capacity = 64\n")
        .unwrap();
    server.wait_ready();
    assert_eq!(server.get("/startupz").status, 200);
    assert_eq!(
        server
            .post_json("/embed_multi", r#"{"inputs": "now"}"#)
            .status,
        200
    );
}

#[test]
fn a_missing_model_fails_its_slots_with_a_clear_reason_and_the_rest_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--models-dir", dir.path().to_str().unwrap()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.get("/info").json()["state"] == "loading" {
        assert!(std::time::Instant::now() < deadline, "loading never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The transformer slots (and sparse/hdc, which need its tokenizer) fail;
    // the temporal slots load, so the verdict is unhealthy (< 10 of 12) but
    // the pipeline can still serve what it has.
    let health = server.get("/health");
    assert_eq!(health.status, 503, "{}", health.text());
    let json = health.json();
    assert_eq!(json["verdict"], "unhealthy");
    let failed = json["status"]["models_failed"].as_array().unwrap();
    assert!(failed.contains(&serde_json::json!("semantic")), "{json}");
    assert_eq!(
        json["status"]["models_loaded"].as_array().unwrap().len(),
        3,
        "{json}"
    );
    assert!(
        health.text().contains("fetch-models"),
        "the reason says what to do: {}",
        health.text()
    );

    let r = server.post_json("/embed_multi", r#"{"inputs": "x", "models": ["semantic"]}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("fetch-models"),
        "{}",
        r.text()
    );
    let r = server.post_json(
        "/embed_multi",
        r#"{"inputs": "x", "models": ["temporal_recent"], "fused": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("/livez").status, 200);
}

#[test]
fn metrics_count_every_request_once_per_outcome_and_promtool_accepts_both_formats() {
    let server = Server::start_ready(&[]);
    let ok = 3;
    let bad = 2;
    for _ in 0..ok {
        assert_eq!(
            server
                .post_json("/embed_multi", r#"{"inputs": ["one", "two"]}"#)
                .status,
            200
        );
    }
    for _ in 0..bad {
        assert_eq!(server.post_json("/embed_multi", "{oops").status, 400);
    }
    assert_eq!(
        server.post_json("/embed_multi", r#"{"inputs": 1}"#).status,
        422
    );
    let text = server.get("/metrics").text();
    let count = |code: &str| {
        sample(
            &text,
            &format!("embeddings_http_requests_total{{endpoint=\"embed_multi\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(count("200"), Some(f64::from(ok)), "{text}");
    assert_eq!(count("400"), Some(f64::from(bad)));
    assert_eq!(count("422"), Some(1.0));
    assert_eq!(count("429"), Some(0.0));
    // The same two inputs each time: computed once, then served from the cache.
    assert_eq!(sample(&text, "embeddings_generated_total"), Some(2.0));
    assert_eq!(
        sample(&text, "embeddings_inputs_served_total"),
        Some(f64::from(ok * 2))
    );
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "embeddings_build_info",
    ] {
        assert!(text.contains(&format!("\n{family}")), "{family} missing");
    }

    let om = request(
        server.addr,
        "GET",
        "/metrics",
        &[("accept", "application/openmetrics-text;version=1.0.0")],
        b"",
    );
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().ends_with("# EOF\n"));
    // The JSON snapshot: the same counts as the text.
    let json = request(
        server.addr,
        "GET",
        "/metrics",
        &[("accept", "application/json")],
        b"",
    );
    assert!(
        json.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let snapshot = json.json();
    assert_eq!(snapshot["embeddings_generated"], 2);
    assert_eq!(snapshot["latency"]["count"], 2);
    assert_eq!(snapshot["inputs_served"], ok * 2);
    let prom = server.get("/metrics");
    assert!(
        prom.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );

    // The real parser on the Prometheus scrape; the strict OpenMetrics check
    // on the OpenMetrics scrape, then promtool on its mechanical translation.
    embeddings_tests::promtool_check_text("server-prometheus", &prom.text());
    embeddings_tests::check_openmetrics(&om.text());
    embeddings_tests::promtool_check_text(
        "server-openmetrics",
        &embeddings_tests::openmetrics_to_prometheus(&om.text()),
    );
}

#[test]
fn overload_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny-queue.toml");
    std::fs::write(
        &config,
        "[batching]\nqueue_capacity = 1\nmax_batch_size = 1\nworkers = 1\n[cache]\nmax_bytes = 0\n",
    )
    .unwrap();
    let server = Server::start_ready(&["--config", config.to_str().unwrap()]);
    let long = "word ".repeat(200);
    let body = format!(
        r#"{{"inputs": [{}]}}"#,
        vec![format!("\"{long}\""); 16].join(",")
    );
    let addr = server.addr;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| {
                    request(
                        addr,
                        "POST",
                        "/embed_multi",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let r = h.join().unwrap();
                if r.status == 429 {
                    assert_eq!(r.header("retry-after"), Some("1"));
                    assert_eq!(r.json()["kind"], "overloaded");
                }
                r.status
            })
            .collect()
    });
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let text = server.get("/metrics").text();
    let rejected = sample(
        &text,
        "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"429\"}",
    )
    .unwrap();
    assert_eq!(
        rejected as usize,
        statuses.iter().filter(|s| **s == 429).count(),
        "each rejection counted once"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    // A grace period far beyond the request's time, so the test checks
    // draining, not the machine's speed.
    let server = Server::start_ready(&["--shutdown-grace-secs", "600"]);
    let addr = server.addr;
    let long = "sentence ".repeat(150);
    let body = format!(
        r#"{{"inputs": [{}]}}"#,
        vec![format!("\"{long}\""); 64].join(",")
    );
    let in_flight =
        std::thread::spawn(move || request(addr, "POST", "/embed_multi", &[], body.as_bytes()));
    // Wait until the request is inside the server (in-flight gauge moves), then signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = common::try_request(addr, "GET", "/metrics", &[], b"")
            .map(|r| r.text())
            .unwrap_or_default();
        if sample(&text, "embeddings_in_flight_requests").is_some_and(|v| v >= 1.0)
            || std::time::Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let r = in_flight.join().unwrap();
    assert_eq!(
        r.status,
        200,
        "the in-flight request finished: {}",
        r.text()
    );
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn an_embedding_slower_than_the_request_timeout_is_504_and_the_server_keeps_serving() {
    // 256 long inputs take seconds on a CPU; the limit is 1 s. One dense
    // slot, so the answer stays within the default `max_response_floats`.
    let server = Server::start_ready(&["--request-timeout-secs", "1"]);
    let long =
        "the quick brown fox jumps over the lazy dog while the rain keeps falling ".repeat(12);
    let body = format!(
        r#"{{"inputs": [{}], "models": ["semantic"], "fused": false}}"#,
        vec![format!("\"{long}\""); 256].join(",")
    );
    let r = server.post_json("/embed_multi", &body);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["kind"], "timeout");
    assert_eq!(server.get("/health").status, 200);
    let text = server.get("/metrics").text();
    assert_eq!(
        sample(
            &text,
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"504\"}"
        ),
        Some(1.0)
    );
    // The pipeline counts the timeout itself, once, when the batch it was
    // in ends; the late result is neither cached nor counted as served.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = server.get("/metrics").text();
        // The batch's in-flight gauge drops just after the count is made.
        if sample(&text, "embeddings_errors_total{kind=\"timeout\"}") == Some(1.0)
            && sample(&text, "embeddings_in_flight_requests") == Some(0.0)
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for series in [
        "embeddings_generated_total",
        "embeddings_inputs_served_total",
        "embeddings_cache_entries",
        "embeddings_latency_seconds_count",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}");
    }
    assert_eq!(sample(&text, "embeddings_errors_per_minute"), Some(1.0));
}
