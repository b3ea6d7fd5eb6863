//! A deployment configured for CUDA where no GPU can be opened starts, stays
//! live, and says why the GPU is unavailable: `gpu_required` true,
//! `gpu_available` false, a `gpu_memory` reason naming the cause, and no GPU
//! memory samples (unknown is not 0).
//!
//! The first test runs the ordinary (CPU-only) build. The `#[ignore]`d ones
//! run the CUDA build, which `cargo xtask ci` makes with the toolkit from
//! PyPI and passes in as `EMBEDDINGS_CUDA_SERVER`; they need a machine
//! without the NVIDIA driver (CI's), which they check first.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "integration tests: a failure is a failed test"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;

fn cpu_server() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_embeddings-server"))
}

/// What the loader does when the device cannot be opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Fails with a typed error and no panic anywhere.
    Clean,
    /// Panics inside the CUDA library, which is caught and reported.
    CaughtPanic,
}

/// Starts `binary` with `device = "cuda"` (and `LD_LIBRARY_PATH` set to
/// `library_path` when given) and checks what it reports once loading has
/// ended; `cause` is a phrase the GPU reason must contain.
fn reports_the_gpu_unavailable(
    binary: &Path,
    library_path: Option<&Path>,
    cause: &str,
    opening: Opening,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cuda.toml");
    std::fs::write(&config, "device = \"cuda\"\n").unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let server = Server::start_binary(binary, &["--config", config.to_str().unwrap()], |c| {
        c.stderr(stderr);
        if let Some(path) = library_path {
            c.env("LD_LIBRARY_PATH", path);
        }
    });

    // Loading ends quickly (the device is opened first); wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = server.get("/health").json();
        if report["status"]["models_failed"].as_array().map(Vec::len) == Some(12) {
            break report;
        }
        assert!(Instant::now() < deadline, "loading never ended: {report}");
        std::thread::sleep(Duration::from_millis(50));
    };

    let components = &report["status"]["components"];
    assert_eq!(components["gpu_required"], true, "{report}");
    assert_eq!(components["gpu_available"], false, "{report}");
    assert!(report["status"]["gpu_memory"].is_null(), "{report}");
    assert!(report["gpu_memory_fraction"].is_null(), "{report}");
    let gpu_reason = report["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "gpu_memory")
        .unwrap_or_else(|| panic!("no gpu_memory reason: {report}"));
    let said = gpu_reason.to_string();
    assert!(said.contains(cause), "{cause:?} not in {said}");

    // No GPU sample: unknown is not 0.
    let metrics = server.get("/metrics").text();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("embeddings_gpu_memory_")),
        "{metrics}"
    );
    assert_eq!(server.get("/livez").status, 200, "the process is alive");
    assert_eq!(server.get("/readyz").status, 503, "but not ready");

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(
        log.contains("panicked"),
        opening == Opening::CaughtPanic,
        "{log}"
    );
}

#[test]
fn cpu_build_reports_a_cuda_configuration_as_gpu_unavailable() {
    reports_the_gpu_unavailable(
        cpu_server(),
        None,
        "this build has no CUDA support",
        Opening::Clean,
    );
}

#[test]
#[ignore = "needs the CUDA build: `cargo xtask ci` runs it with EMBEDDINGS_CUDA_SERVER"]
fn cuda_build_without_the_driver_reports_the_gpu_unavailable() {
    assert!(
        !embeddings_pipeline::cuda_driver_present(),
        "this test is for a machine without the NVIDIA driver"
    );
    reports_the_gpu_unavailable(&common::cuda_server(), None, "libcuda.so.1", Opening::Clean);
}

#[test]
#[ignore = "needs the CUDA build: `cargo xtask ci` runs it with EMBEDDINGS_CUDA_SERVER"]
fn cuda_build_with_a_broken_driver_library_reports_the_gpu_unavailable() {
    // A `libcuda.so.1` that is not a library: found, so the driver looks
    // present, but the CUDA library's loader panics on it.
    let fake = tempfile::tempdir().unwrap();
    std::fs::write(fake.path().join("libcuda.so.1"), "not a library").unwrap();
    reports_the_gpu_unavailable(
        &common::cuda_server(),
        Some(fake.path()),
        "the CUDA runtime panicked while opening device 0",
        Opening::CaughtPanic,
    );
}

#[test]
#[ignore = "needs the CUDA build: `cargo xtask ci` runs it with EMBEDDINGS_CUDA_SERVER"]
fn cuda_build_serves_on_the_cpu_as_the_cpu_build_does() {
    let cuda = Server::start_binary(&common::cuda_server(), &[], |_| {});
    cuda.wait_ready();
    let sentence = serde_json::json!("The cat sat on the mat.");
    let from_cuda_build = common::embed(&cuda, sentence.clone()).remove(0);
    drop(cuda);
    let cpu = Server::start_ready(&[]);
    let from_cpu_build = common::embed(&cpu, sentence).remove(0);
    assert_eq!(from_cuda_build.len(), from_cpu_build.len());
    let cosine = common::cosine(&from_cuda_build, &from_cpu_build);
    assert!(cosine >= 0.9999, "cosine {cosine}");
}

/// The libraries the dynamic loader must find before `main` runs.
fn needed_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", "-W"])
        .arg(binary)
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_owned()))
        .collect()
}

#[test]
#[ignore = "needs the CUDA build: `cargo xtask ci` runs it with EMBEDDINGS_CUDA_SERVER"]
fn cuda_build_needs_no_cuda_library_to_start() {
    let needed = needed_libraries(&common::cuda_server());
    assert!(
        needed.iter().any(|l| l.starts_with("libc.so")),
        "{needed:?}"
    );
    for lib in &needed {
        for cuda in ["libcuda", "libcudart", "libcublas", "libcurand", "libnvrtc"] {
            assert!(
                !lib.starts_with(cuda),
                "{lib} is needed at start: {needed:?}"
            );
        }
    }
}
