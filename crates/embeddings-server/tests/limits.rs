//! Limits that protect the service from careless or hostile input: declared
//! oversize bodies, out-of-range configuration and flags, a failed load.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, sample};

#[test]
fn a_declared_oversize_body_is_refused_before_it_is_sent() {
    let server = Server::start_ready(&["--max-body-bytes", "1024"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Declares 64 MiB and sends 10 bytes: the answer must not wait for the rest.
    write!(
        stream,
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 67108864\r\n\r\n{{\"input\":"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    drop(stream);
    let text = server.get("/metrics").text();
    assert_eq!(
        sample(
            &text,
            "embeddings_http_requests_total{endpoint=\"openai_embeddings\",code=\"413\"}"
        ),
        Some(1.0),
        "counted once"
    );
}

#[test]
fn openai_dimensions_are_checked_before_any_work() {
    let server = Server::start_ready(&[]);
    let r = server.post_json(
        "/v1/embeddings",
        r#"{"input": "hello", "model": "semantic", "dimensions": 100000}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("between 1 and 384"), "{}", r.text());
    let text = server.get("/metrics").text();
    assert_eq!(sample(&text, "embeddings_cache_misses_total"), Some(0.0));
    assert_eq!(sample(&text, "embeddings_generated_total"), Some(0.0));
}

#[test]
fn out_of_range_flags_are_refused_by_name() {
    for (flag, value) in [
        ("--request-timeout-secs", "18446744073709551615"),
        ("--request-timeout-secs", "0"),
        ("--shutdown-grace-secs", "999999"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_embeddings-server"))
            .args(["--bind", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[test]
fn a_failed_load_is_reported_and_can_stop_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("huge.toml");
    std::fs::write(
        &config,
        "[batching]\nqueue_capacity = 9000000000000000000\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // Without the flag: the server stays up, not ready, and says why.
    let server = Server::start(&["--config", config]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = server.get("/info").json();
        if info["state"] == "failed" {
            break info;
        }
        assert!(Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let reason = info["load_error"].as_str().unwrap();
    assert!(
        reason.contains("batching.queue_capacity") && reason.contains("65536"),
        "{reason}"
    );
    for probe in ["/readyz", "/startupz"] {
        let r = server.get(probe);
        assert_eq!(r.status, 503, "{probe}");
        assert!(r.text().contains("queue_capacity"), "{probe}: {}", r.text());
    }
    assert_eq!(
        server.get("/startupz").json()["failure"]["failure"],
        "load_failed"
    );
    assert_eq!(
        server.get("/livez").status,
        200,
        "alive: restarting would not fix the configuration"
    );
    let health = server.get("/health");
    assert_eq!(health.status, 503);
    assert!(
        health.text().contains("queue_capacity"),
        "{}",
        health.text()
    );
    let embed = server.post_json("/embed_multi", r#"{"inputs": ["x"]}"#);
    assert_eq!(embed.status, 503);
    assert!(embed.text().contains("queue_capacity"), "{}", embed.text());

    // With it: the process exits non-zero with the reason.
    let mut child = Command::new(env!("CARGO_BIN_EXE_embeddings-server"))
        .args(["--bind", "127.0.0.1:0", "--exit-on-load-failure"])
        .args(["--config", config])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit after its load failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("queue_capacity"), "{stderr}");
}

#[test]
fn work_beyond_the_budget_and_oversize_answers_are_refused_before_inference() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("budget.toml");
    std::fs::write(
        &config,
        "[batching]\ntoken_budget = 8\nmax_response_floats = 1000\n",
    )
    .unwrap();
    let server = Server::start_ready(&["--config", config.to_str().unwrap()]);
    let embed = |inputs: &str| {
        server.post_json(
            "/embed_multi",
            &format!(r#"{{"inputs": {inputs}, "models": ["semantic"], "fused": false}}"#),
        )
    };
    // "hi": 2 bytes + 2 special tokens; 384 floats.
    assert_eq!(embed(r#"["hi"]"#).status, 200);
    // 11 bytes + 2 = 13 tokens, more than the whole budget of 8.
    let r = embed(r#"["hello world"]"#);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["kind"], "payload_too_large");
    assert!(r.text().contains("token_budget"), "{}", r.text());
    // 3 × 384 floats, more than 1000.
    let r = embed(r#"["a", "b", "c"]"#);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max_response_floats"), "{}", r.text());

    let text = server.get("/metrics").text();
    assert_eq!(
        sample(
            &text,
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"413\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "embeddings_errors_total{kind=\"validation\"}"),
        Some(2.0),
        "each refusal counted once, as the client's error"
    );
    assert_eq!(
        sample(&text, "embeddings_cache_misses_total"),
        Some(2.0),
        "the answer's size is checked before any cache lookup; the budget after"
    );
    assert_eq!(sample(&text, "embeddings_generated_total"), Some(1.0));
    assert_eq!(server.get("/health").json()["verdict"], "healthy");
}

#[test]
fn absolute_paths_stay_out_of_answers_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("deep").join("models").join("absent");
    let config = dir.path().join("paths.toml");
    std::fs::write(
        &config,
        format!("[models.default]\npath = {:?}\n", missing.to_str().unwrap()),
    )
    .unwrap();
    let secret = dir.path().to_str().unwrap().to_owned();
    for (flags, shown) in [(&[][..], false), (&["--show-paths"][..], true)] {
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(flags);
        // Only the temporal slots load (they need no model files).
        let server = Server::start_ready(&args);
        let health = server.get("/health").text();
        let refused = server.post_json(
            "/embed_multi",
            r#"{"inputs": ["x"], "models": ["semantic"]}"#,
        );
        assert_eq!(refused.status, 422, "{}", refused.text());
        for (what, text) in [("health", &health), ("error", &refused.text())] {
            assert_eq!(text.contains(&secret), shown, "{what}: {text}");
            assert!(
                text.contains("models/absent"),
                "{what} still says which: {text}"
            );
        }
    }
}

#[test]
fn api_keys_guard_the_embedding_routes_and_probes_stay_open() {
    let key = "test-key-0123456789abcdef";
    let server = Server::start_ready(&["--api-key", key, "--protect-observability"]);
    let body = br#"{"inputs": ["hello"]}"#;
    let embed = |auth: Option<&str>| {
        let mut headers = vec![("content-type", "application/json")];
        let value;
        if let Some(a) = auth {
            value = a.to_owned();
            headers.push(("authorization", &value));
        }
        common::request(server.addr, "POST", "/embed_multi", &headers, body)
    };
    for auth in [None, Some("Bearer wrong-key-0123456789"), Some(key)] {
        let r = embed(auth);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["kind"], "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let ok = embed(Some(&format!("Bearer {key}")));
    assert_eq!(ok.status, 200, "{}", ok.text());
    // On the OpenAI route, in OpenAI's error shape.
    let openai = common::request(
        server.addr,
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json")],
        br#"{"input": "hello", "model": "semantic"}"#,
    );
    assert_eq!(openai.status, 401);
    assert_eq!(openai.json()["error"]["type"], "authentication_error");
    assert_eq!(openai.json()["error"]["code"], "unauthorized");
    for probe in ["/livez", "/readyz", "/startupz"] {
        assert_eq!(server.get(probe).status, 200, "{probe} stays open");
    }
    assert_eq!(server.get("/metrics").status, 401, "protected by the flag");
    let metrics = common::request(
        server.addr,
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {key}"))],
        b"",
    );
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let code = |c: &str| {
        sample(
            &text,
            &format!("embeddings_http_requests_total{{endpoint=\"embed_multi\",code=\"{c}\"}}"),
        )
    };
    assert_eq!(code("401"), Some(3.0), "each refusal counted once");
    assert_eq!(code("200"), Some(1.0));
    assert_eq!(sample(&text, "embeddings_inputs_served_total"), Some(1.0));
    assert_eq!(
        sample(&text, "embeddings_cache_misses_total"),
        Some(1.0),
        "a refused key never reaches the pipeline"
    );
}

#[test]
fn a_short_api_key_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_embeddings-server"))
        .args(["--bind", "127.0.0.1:0", "--api-key", "short"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
}

#[test]
fn trickled_headers_and_idle_connections_are_closed_by_the_header_timeout() {
    let server = Server::start_ready(&["--header-read-timeout-secs", "1"]);
    let mut trickle = TcpStream::connect(server.addr).unwrap();
    write!(trickle, "POST /embed_multi HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut one_byte = TcpStream::connect(server.addr).unwrap();
    write!(one_byte, "P").unwrap();
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Meanwhile the server answers others.
    assert_eq!(server.get("/livez").status, 200);
    assert!(
        common::closed_by_server(&mut trickle, Duration::from_secs(60)),
        "a request whose headers never complete is closed"
    );
    assert!(common::closed_by_server(
        &mut one_byte,
        Duration::from_secs(60)
    ));
    for mut stream in idle {
        assert!(common::closed_by_server(
            &mut stream,
            Duration::from_secs(60)
        ));
    }
    // A keep-alive connection left idle after a request is closed too.
    let mut kept = TcpStream::connect(server.addr).unwrap();
    write!(kept, "GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(common::closed_by_server(&mut kept, Duration::from_secs(60)));
    // The server decrements the gauge just after closing: poll.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(
        &server.get("/metrics").text(),
        "embeddings_http_connections_open",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "connections still counted open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_trickled_body_gets_its_own_shorter_deadline() {
    let server = Server::start_ready(&["--body-timeout-secs", "1"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(
        b"POST /embed_multi HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1000\r\n\r\n{\"inp",
    )
    .unwrap();
    let r = common::read_response(&mut slow).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.text().contains("within 1 s"), "{}", r.text());
}

#[test]
fn requests_beyond_the_concurrency_limit_are_shed_with_429() {
    let server = Server::start_ready(&["--max-concurrent-requests", "1"]);
    let addr = server.addr;
    let long = format!(
        r#"{{"inputs": [{}], "models": ["semantic"], "fused": false}}"#,
        vec![format!("\"{}\"", "a long sentence to embed ".repeat(20)); 96].join(",")
    );
    let running = common::post_json_in_background(addr, "/embed_multi", long);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(
        &server.get("/metrics").text(),
        "embeddings_in_flight_requests",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "the long request never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let shed = server.post_json("/embed_multi", r#"{"inputs": ["x"]}"#);
    assert_eq!(shed.status, 429, "{}", shed.text());
    assert_eq!(shed.json()["kind"], "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(running.join().unwrap().status, 200);
    let text = server.get("/metrics").text();
    assert_eq!(
        sample(
            &text,
            "embeddings_http_requests_total{endpoint=\"embed_multi\",code=\"429\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "embeddings_errors_total{kind=\"overload\"}"),
        Some(0.0),
        "shed before the pipeline: not a queue refusal"
    );
}
