//! The in-process side of `benches/http_load.sh`: the same request the HTTP
//! benchmark sends (the first `BATCH` short sentences of
//! `benches/data/sentences.json`, Semantic slot only, no fused vector, cache
//! off), submitted through the pipeline's queue by `CONCURRENCY` threads for
//! `SECONDS`; prints requests/s and sentences/s as one JSON line.
//!
//! ```text
//! inprocess_embed MODELS_DIR SENTENCES_JSON BATCH SECONDS CONCURRENCY
//! ```

use std::process::ExitCode;

/// The server's allocator, so this runs like the service does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let short = embeddings_benches::sentences(data, "short", batch)?;
    let config =
        PipelineConfig::from_toml_str("[cache]\nmax_bytes = 0\n").map_err(|e| e.to_string())?;
    let pipeline = EmbeddingPipeline::builder()
        .models_dir(models)
        .config(config)
        .build()
        .map_err(|e| e.to_string())?;
    let options = EmbedOptions::only([ModelId::Semantic]);
    let request = || {
        short
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
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                while Instant::now() < deadline {
                    let ok = pipeline
                        .submit(request(), options.clone())
                        .and_then(|t| t.wait())
                        .is_ok();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let requests = done.load(Ordering::Relaxed) as f64;
    Ok(format!(
        "{{\"requests_per_s\": {:.3}, \"sentences_per_s\": {:.3}, \"batch\": {batch}, \"concurrency\": {concurrency}, \"seconds\": {elapsed:.2}}}\n",
        requests / elapsed,
        requests * batch as f64 / elapsed
    ))
}

fn main() -> ExitCode {
    embeddings_benches::main_with("inprocess_embed", run)
}
