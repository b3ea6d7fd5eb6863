//! The in-process side of `benches/http_load.sh`: the same request the HTTP
//! benchmark sends (the first `BATCH` short sentences of
//! `benches/data/sentences.json`, Semantic slot only, no fused vector, cache
//! off), submitted through the pipeline's queue by `CONCURRENCY` threads for
//! `SECONDS`; prints requests/s, sentences/s and the p50 / p99 latency of a
//! request (submit to answer, nearest rank) as one JSON line.
//!
//! ```text
//! inprocess_embed MODELS_DIR SENTENCES_JSON BATCH SECONDS CONCURRENCY
//! ```
//!
//! `BENCH_CONFIG` adds TOML to the pipeline's configuration (e.g.
//! `BENCH_CONFIG=$'[batching]\nmax_wait_ms = 0'`, or `device = "cuda"` in
//! a build with the `cuda` feature); `BENCH_KIND=long` sends the long
//! sentences instead of the short ones.

use std::process::ExitCode;

/// The server's allocator, so this runs like the service does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use embeddings_pipeline::{EmbedInput, EmbedOptions, EmbeddingPipeline, ModelId, PipelineConfig};

fn run(args: &[String]) -> Result<String, String> {
    let [models, data, batch, seconds, concurrency] = args else {
        return Err(
            "usage: inprocess_embed MODELS_DIR SENTENCES_JSON BATCH SECONDS CONCURRENCY".into(),
        );
    };
    let parse = embeddings_benches::count_arg;
    let (batch, seconds, concurrency) =
        (parse(batch)?, parse(seconds)?, parse(concurrency)?.max(1));
    let kind = std::env::var("BENCH_KIND").unwrap_or_else(|_| "short".to_owned());
    let texts = embeddings_benches::sentences(data, &kind, batch)?;
    // `BENCH_CONFIG`: more TOML (e.g. `[batching]` settings) to compare.
    let extra = std::env::var("BENCH_CONFIG").unwrap_or_default();
    // First, so that its top-level keys (`device`) are not read as `[cache]`'s.
    let config = PipelineConfig::from_toml_str(&format!("{extra}\n[cache]\nmax_bytes = 0\n"))
        .map_err(|e| e.to_string())?;
    let pipeline = EmbeddingPipeline::builder()
        .models_dir(models)
        .config(config)
        .build()
        .map_err(|e| e.to_string())?;
    let options = EmbedOptions::only([ModelId::Semantic]);
    let request = || {
        texts
            .iter()
            .map(|t| EmbedInput::new(t.as_str()))
            .collect::<Vec<_>>()
    };
    // Warm up.
    for _ in 0..3 {
        pipeline
            .submit(request(), options.clone())
            .map_err(|e| e.to_string())?
            .wait()
            .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let started = Instant::now();
    // Each thread keeps the latency of its answered requests.
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let ok = pipeline
                            .submit(request(), options.clone())
                            .and_then(|t| t.wait())
                            .is_ok();
                        if ok {
                            mine.push(t.elapsed());
                        }
                    }
                    mine
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let requests = latencies.len() as f64;
    // Nearest rank, in milliseconds; null when nothing was answered.
    let quantile = |q: f64| {
        let rank = ((q * requests).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map_or_else(
            || "null".to_owned(),
            |d| format!("{:.3}", d.as_secs_f64() * 1e3),
        )
    };
    Ok(format!(
        "{{\"requests_per_s\": {:.3}, \"sentences_per_s\": {:.3}, \"p50_ms\": {}, \"p99_ms\": {}, \"batch\": {batch}, \"concurrency\": {concurrency}, \"seconds\": {elapsed:.2}}}\n",
        requests / elapsed,
        requests * batch as f64 / elapsed,
        quantile(0.5),
        quantile(0.99),
    ))
}

fn main() -> ExitCode {
    embeddings_benches::main_with("inprocess_embed", run)
}
