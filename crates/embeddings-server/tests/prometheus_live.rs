//! The rules proven against a real Prometheus: the server and Prometheus
//! 2.42 (unpacked by `cargo xtask install-tools`) on loopback, a 1 s scrape
//! and evaluation interval, `ops/prometheus/rules.yml` loaded. Through
//! Prometheus' HTTP API: the target is up, every rule evaluates with health
//! `ok`, the recording rules and every dashboard query return data,
//! `histogram_quantile` over our buckets is within the documented error of
//! the server's own quantiles, exemplars carrying our request ids are stored
//! (exemplar storage on), and an injected fault (a slot bound to a missing
//! model) fires its alert in Prometheus and in `GET /alerts`. Every wait is
//! bounded; both processes are stopped by PID.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;

/// Stops Prometheus by PID however the test ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn api(&self, path: &str) -> serde_json::Value {
        let r = common::request(self.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let json = r.json();
        assert_eq!(json["status"], "success", "{json}");
        json["data"].clone()
    }

    fn query(&self, promql: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", encode(promql)))["result"].clone()
    }

    /// The one value of an instant query with one result, if it has one.
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        let [sample] = result.as_array()?.as_slice() else {
            return None;
        };
        sample["value"][1].as_str()?.parse().ok()
    }

    /// The request ids of the exemplars stored for `selector` in the last hour.
    fn exemplar_ids(&self, selector: &str) -> Vec<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let data = self.api(&format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            encode(selector),
            now - 3600,
            now + 60
        ));
        data.as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["request_id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A port that was free a moment ago (Prometheus takes no port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 250 ms until it returns `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_evaluates_every_rule_and_fires_on_our_figures() {
    let dir = tempfile::tempdir().unwrap();
    // The injected fault: the `code` slot bound to a model that is not there;
    // a small drift window, so the workload below fills it.
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[models.code]\npath = \"no-such-model\"\n[slots.code]\nmodel = \"code\"\n[quality]\ndrift_window = 16\n",
    )
    .unwrap();
    // A fake cgroup with quotas and counters, so the throttling and memory
    // panels have their series wherever the test runs.
    let cgroup = dir.path().join("cgroup");
    std::fs::create_dir_all(&cgroup).unwrap();
    std::fs::write(cgroup.join("cpu.max"), "200000 100000\n").unwrap();
    std::fs::write(cgroup.join("memory.max"), "8589934592\n").unwrap();
    std::fs::write(
        cgroup.join("cpu.stat"),
        "nr_periods 10\nnr_throttled 1\nthrottled_usec 5000\n",
    )
    .unwrap();
    let server = Server::start_ready(&[
        "--config",
        pipeline.to_str().unwrap(),
        "--alert-interval-secs",
        "1",
        "--cgroup-root",
        cgroup.to_str().unwrap(),
    ]);
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/prometheus/rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: embeddings\n    static_configs:\n      - targets: [\"{}\"]\n",
            ops.canonicalize().unwrap().display(),
            server.addr
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let binary = embeddings_tests::tool("prometheus", "EMBEDDINGS_PROMETHEUS", "prometheus");
    let prometheus = Prometheus {
        child: Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr,
    };
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        common::try_request(addr, "GET", "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });

    // Traffic, so the rates and the latency buckets have data; each input
    // distinct (a cache hit records no latency), each request with our id.
    for i in 0..40 {
        let body = format!(
            r#"{{"inputs": ["sentence number {i}", "{}"]}}"#,
            "word ".repeat(i)
        );
        let id = format!("live-{i}");
        let r = common::request(
            server.addr,
            "POST",
            "/embed_multi",
            &[("content-type", "application/json"), ("x-request-id", &id)],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }

    wait_for("the target is up", Duration::from_secs(60), || {
        let targets = prometheus.api("/api/v1/targets");
        targets["activeTargets"]
            .as_array()?
            .iter()
            .any(|t| t["health"] == "up")
            .then_some(())
    });
    // Every rule evaluated at least once, with health ok.
    let groups = wait_for("every rule evaluated", Duration::from_secs(60), || {
        let groups = prometheus.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<serde_json::Value> = groups
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty()
            && rules.iter().all(|r| {
                !r["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
            });
        evaluated.then_some(rules)
    });
    for rule in &groups {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // The recording rules return data over our series (after two scrapes,
    // so that rates exist).
    for record in [
        "job_endpoint_code:embeddings_http_requests:rate5m",
        "job_model:embeddings_model_latency_seconds:p50_5m",
        "instance:embeddings_token_budget_used:ratio",
    ] {
        wait_for(record, Duration::from_secs(60), || {
            let result = prometheus.query(record);
            (!result.as_array()?.is_empty()).then_some(())
        });
    }
    quantiles_agree_with_the_server(&server, &prometheus);
    // An exemplar with one of our request ids, on the pipeline's latency
    // histogram and on the HTTP layer's.
    for selector in [
        "embeddings_latency_seconds_bucket",
        "embeddings_http_request_duration_seconds_bucket{endpoint=\"embed_multi\"}",
    ] {
        wait_for(
            &format!("an exemplar with our request id on {selector}"),
            Duration::from_secs(60),
            || {
                let ids = prometheus.exemplar_ids(selector);
                ids.iter().any(|id| id.starts_with("live-")).then_some(())
            },
        );
    }
    // Every dashboard query returns data ($__rate_interval at 1 m for a 1 s
    // scrape), but for the GPU panel, whose gauges exist on CUDA builds only.
    for q in embeddings_tests::dashboard_queries() {
        if q.description.contains("CUDA builds only") {
            continue;
        }
        let promql = q.resolved("1m");
        wait_for(
            &format!("dashboard: {}: {promql}", q.panel),
            Duration::from_secs(60),
            || (!prometheus.query(&promql).as_array()?.is_empty()).then_some(()),
        );
    }
    // The fault fires the recommended in-process rule `slots_failed` and
    // its Prometheus twin at once, and the bridge alert after its `for`.
    wait_for(
        "in-process slots_failed firing",
        Duration::from_secs(60),
        || {
            let alerts = server.get("/alerts").json();
            alerts["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["name"] == "slots_failed" && a["state"] == "firing")
                .map(|a| assert_eq!(a["value"], 1.0, "{a}"))
        },
    );
    let prom = &prometheus;
    let firing = |alertname: &'static str| {
        move || {
            let alerts = prom.api("/api/v1/alerts")["alerts"].clone();
            alerts
                .as_array()?
                .iter()
                .find(|a| a["labels"]["alertname"] == alertname && a["state"] == "firing")
                .cloned()
        }
    };
    let slots = wait_for(
        "EmbeddingsSlotsFailed fires",
        Duration::from_secs(60),
        firing("EmbeddingsSlotsFailed"),
    );
    assert_eq!(slots["labels"]["severity"], "warning");
    assert!(
        slots["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("#embeddingsslotsfailed")
    );
    let bridged = wait_for(
        "EmbeddingsInProcessAlertFiring fires",
        Duration::from_secs(150),
        firing("EmbeddingsInProcessAlertFiring"),
    );
    assert_eq!(bridged["labels"]["alert"], "slots_failed");
    drop(prometheus);
}

/// `histogram_quantile` over the exported buckets is exact to the bucket: it
/// lies in the `(lo, hi]` bucket that holds the true quantile `v` (both use
/// rank `q · count`). The server's own quantile `s` is within its histogram's
/// relative error `ε` of `v`. So `|prometheus − s| ≤ (hi − lo) + ε · v`, the
/// bound `docs/metrics.md` documents. Compared once Prometheus has scraped
/// every sample the server counted (no traffic runs meanwhile).
fn quantiles_agree_with_the_server(server: &Server, prometheus: &Prometheus) {
    let snapshot = common::request(
        server.addr,
        "GET",
        "/metrics",
        &[("accept", "application/json")],
        b"",
    )
    .json();
    let latency = &snapshot["latency"];
    let count = latency["count"].as_f64().unwrap();
    assert!(count >= 40.0, "{latency}");
    wait_for(
        "Prometheus has scraped every latency sample",
        Duration::from_secs(60),
        || {
            let scraped = prometheus.scalar("sum(embeddings_latency_seconds_count)")?;
            (scraped == count).then_some(())
        },
    );
    let epsilon = latency["relative_error"].as_f64().unwrap();
    let bounds: Vec<f64> = embeddings_metrics::DEFAULT_LATENCY_BOUNDS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .collect();
    // The widest bucket the true value can lie in, given the server's value.
    let width_around = |v: f64| {
        [v / (1.0 + epsilon), v / (1.0 - epsilon)]
            .iter()
            .map(|x| {
                let i = bounds.partition_point(|b| b < x);
                let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
                bounds.get(i).map_or(f64::INFINITY, |hi| hi - lo)
            })
            .fold(0.0, f64::max)
    };
    for (q, field) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let server_value = latency[field].as_f64().unwrap() / 1e6;
        let promql =
            format!("histogram_quantile({q}, sum by (le) (embeddings_latency_seconds_bucket))");
        let prometheus_value = prometheus.scalar(&promql).unwrap();
        let allowed = width_around(server_value) + epsilon * server_value / (1.0 - epsilon);
        assert!(
            (prometheus_value - server_value).abs() <= allowed,
            "{field}: Prometheus {prometheus_value} s, server {server_value} s, allowed {allowed} s"
        );
    }
}
