//! Running in a container: the compute pool follows the cgroup CPU quota
//! (a fake cgroup root stands in for `/sys/fs/cgroup`), and the quota and
//! throttling counters are exported as read.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

mod common;

use common::{Server, sample};

#[test]
fn the_compute_pool_is_sized_to_the_cgroup_quota() {
    let root = tempfile::tempdir().unwrap();
    // 1.5 cores: one thread, never throttled.
    std::fs::write(root.path().join("cpu.max"), "150000 100000\n").unwrap();
    std::fs::write(
        root.path().join("cpu.stat"),
        "usage_usec 1\nnr_periods 40\nnr_throttled 7\nthrottled_usec 1250000\n",
    )
    .unwrap();
    std::fs::write(root.path().join("memory.max"), "3221225472\n").unwrap();
    let server = Server::start_ready(&["--cgroup-root", root.path().to_str().unwrap()]);
    let text = server.get("/metrics").text();
    assert_eq!(sample(&text, "embeddings_compute_threads"), Some(1.0));
    assert_eq!(
        sample(&text, "embeddings_memory_limit_bytes"),
        Some(3_221_225_472.0)
    );
    assert_eq!(sample(&text, "embeddings_cpu_quota_cores"), Some(1.5));
    assert_eq!(sample(&text, "embeddings_cpu_periods_total"), Some(40.0));
    assert_eq!(
        sample(&text, "embeddings_cpu_throttled_periods_total"),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, "embeddings_cpu_throttled_seconds_total"),
        Some(1.25)
    );
    let info = server.get("/info").json();
    assert_eq!(info["cpu"]["threads"], 1);
    assert_eq!(info["cpu"]["quota_cores"], 1.5);
    // It still embeds, on one thread.
    let r = server.post_json("/embed_multi", r#"{"inputs": ["hello"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn the_threads_flag_wins_and_no_quota_means_no_quota_series() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cpu.max"), "max 100000\n").unwrap();
    let server = Server::start_ready(&[
        "--cgroup-root",
        root.path().to_str().unwrap(),
        "--threads",
        "3",
    ]);
    let text = server.get("/metrics").text();
    assert_eq!(sample(&text, "embeddings_compute_threads"), Some(3.0));
    assert_eq!(
        sample(&text, "embeddings_cpu_quota_cores"),
        None,
        "no quota: no figure"
    );
    assert_eq!(
        sample(&text, "embeddings_cpu_throttled_periods_total"),
        None,
        "no cpu.stat: no figure"
    );
    assert_eq!(
        sample(&text, "embeddings_memory_limit_bytes"),
        None,
        "no memory.max: no figure"
    );
    assert_eq!(server.get("/info").json()["cpu"]["source"], "flag");
}
