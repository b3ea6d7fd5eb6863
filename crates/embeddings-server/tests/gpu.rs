//! The CUDA build on a machine with an NVIDIA GPU (`benches/gpu.sh` runs
//! it): every test here is `#[ignore]`d, since CI has no GPU.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "integration tests: a failure is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, cosine, cuda_server, embed};

/// `nvidia-smi`'s used and total memory of GPU 0, bytes.
fn nvidia_smi_memory() -> (f64, f64) {
    let out = Command::new("nvidia-smi")
        .args([
            "--id=0",
            "--query-gpu=memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .expect("run nvidia-smi");
    assert!(out.status.success(), "nvidia-smi failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mib: Vec<f64> = text
        .trim()
        .split(',')
        .map(|v| v.trim().parse::<f64>().unwrap())
        .collect();
    (mib[0] * 1024.0 * 1024.0, mib[1] * 1024.0 * 1024.0)
}

/// The reference vectors of `embeddings-pipeline`'s model test: from
/// `EMBEDDINGS_REFERENCE_JSON` when set (a test binary carried to a GPU
/// machine without the source tree), else from the source tree.
fn reference_items() -> Vec<(String, Vec<f64>)> {
    let path = std::env::var_os("EMBEDDINGS_REFERENCE_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../embeddings-pipeline/tests/data/minilm.json")
        });
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    reference["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let vector = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (item["text"].as_str().unwrap().to_owned(), vector)
        })
        .collect()
}

/// On a machine with an NVIDIA GPU (the driver, `nvidia-smi`, and cuBLAS,
/// cuRAND and NVRTC on `LD_LIBRARY_PATH`: `cargo xtask cuda-toolkit
/// --runtime` installs them): the device opens, the reference sentences
/// round-trip through it to sentence-transformers' vectors (cosine ≥
/// 0.9999, in one batch and one at a time), and the GPU memory the server
/// reports is what `nvidia-smi` reads (within 1 % of the total).
#[test]
#[ignore = "needs an NVIDIA GPU and the CUDA build in EMBEDDINGS_CUDA_SERVER: benches/gpu.sh"]
fn cuda_build_on_a_gpu_matches_the_reference_and_reads_gpu_memory() {
    assert!(
        embeddings_pipeline::cuda_driver_present(),
        "this test needs the NVIDIA driver"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cuda.toml");
    std::fs::write(&config, "device = \"cuda\"\n").unwrap();
    let server = Server::start_binary(
        &cuda_server(),
        &["--config", config.to_str().unwrap()],
        |_| {},
    );
    server.wait_ready();

    let items = reference_items();
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    let batch = embed(&server, serde_json::json!(texts));
    assert_eq!(batch.len(), items.len());
    for ((text, expected), batched) in items.iter().zip(&batch) {
        let cos = cosine(batched, expected);
        assert!(cos >= 0.9999, "batched {text:?}: cosine {cos}");
        let alone = embed(&server, serde_json::json!(text)).remove(0);
        let cos = cosine(&alone, expected);
        assert!(cos >= 0.9999, "alone {text:?}: cosine {cos}");
    }

    let report = server.get("/health").json();
    let components = &report["status"]["components"];
    assert_eq!(components["gpu_required"], true, "{report}");
    assert_eq!(components["gpu_available"], true, "{report}");
    let reported = &report["status"]["gpu_memory"];
    let used = reported["used_bytes"].as_f64().unwrap();
    let total = reported["total_bytes"].as_f64().unwrap();
    let (smi_used, smi_total) = nvidia_smi_memory();
    assert!(
        (total - smi_total).abs() <= 0.01 * smi_total,
        "total {total} vs nvidia-smi {smi_total}"
    );
    assert!(
        (used - smi_used).abs() <= 0.01 * smi_total,
        "used {used} vs nvidia-smi {smi_used} (of {smi_total})"
    );
    let metrics = server.get("/metrics").text();
    let sample =
        common::sample(&metrics, "embeddings_gpu_memory_used_bytes").expect("a GPU memory sample");
    assert!(sample > 0.0, "{sample}");
}
