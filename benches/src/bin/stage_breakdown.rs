//! Where the time of one `embed` call goes: runs the first `BATCH` inputs of
//! one kind from `benches/data/sentences.json` through the pipeline
//! configured as in `benches/benches/pipeline.rs` (every slot or `Semantic`
//! only, fused vector on, cache off, `max_batch_size = 128`) `ITERS` times
//! after a warm-up, then prints the pipeline's own recorded means: per stage
//! (tokenization, inference, fusion) and per slot, in µs per call.
//!
//! ```text
//! stage_breakdown MODELS_DIR SENTENCES_JSON short|long BATCH ITERS [semantic]
//! ```
//! A diagnostic, not a benchmark: criterion's `pipeline` bench gives the
//! throughput figures of `BENCHMARKS.md`.
//!
//! `STAGE_CONFIG` adds TOML to that configuration (e.g.
//! `STAGE_CONFIG=$'[batching]\nmax_wait_ms = 0'`), to compare one setting
//! with its default.
//!
//! It runs with the server's global allocator (mimalloc). With
//! `STAGE_PILOT=1` it first builds a throwaway pipeline (kept alive), the
//! comparison behind `BENCHMARKS.md`'s "Allocator" table, whose glibc rows
//! were measured with the `#[global_allocator]` item below removed.

use std::process::ExitCode;

/// The server's allocator, so this runs like the service does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use embeddings_pipeline::{EmbedInput, EmbeddingPipeline, ModelId, PipelineConfig};

fn run(args: &[String]) -> Result<String, String> {
    let (models, data, kind, batch, iters, semantic) = match args {
        [m, d, k, b, i] => (m, d, k, b, i, false),
        [m, d, k, b, i, s] if s == "semantic" => (m, d, k, b, i, true),
        _ => {
            return Err(
                "usage: stage_breakdown MODELS_DIR SENTENCES_JSON short|long BATCH ITERS [semantic]"
                    .into(),
            );
        }
    };
    let parse = embeddings_benches::count_arg;
    let (batch, iters) = (parse(batch)?.max(1), parse(iters)?.max(1));
    let inputs: Vec<EmbedInput> = embeddings_benches::sentences(data, kind, batch)?
        .into_iter()
        .map(EmbedInput::new)
        .collect();
    // `STAGE_CONFIG`: more TOML for the pipeline (e.g. `[batching]
    // max_wait_ms = 0`), to compare one setting with its default. It goes
    // before `[cache]`, so its top-level keys stay top-level.
    let extra = std::env::var("STAGE_CONFIG").unwrap_or_default();
    let config = PipelineConfig::from_toml_str(&format!(
        "max_batch_size = 128\n{extra}\n[cache]\nmax_bytes = 0\n"
    ))
    .map_err(|e| e.to_string())?;
    let mut builder = EmbeddingPipeline::builder()
        .models_dir(models)
        .config(config)
        .strict(true);
    if semantic {
        builder = builder.only(&[ModelId::Semantic]);
    }
    let _pilot = if std::env::var_os("STAGE_PILOT").is_some() {
        Some(builder.clone().build().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let pipeline = builder.build().map_err(|e| e.to_string())?;
    for _ in 0..3 {
        pipeline.embed(&inputs).map_err(|e| e.to_string())?;
    }
    pipeline.metrics().reset();
    let start = Instant::now();
    for _ in 0..iters {
        pipeline.embed(&inputs).map_err(|e| e.to_string())?;
    }
    let wall = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let s = pipeline.metrics().snapshot();
    let per_call = |sum: u64| sum as f64 / iters as f64;
    let mut out = format!(
        "{kind} batch {batch}, {iters} calls: {wall:.0} µs per call ({:.1} sentences/s)\n",
        batch as f64 * 1e6 / wall
    );
    for (stage, h) in &s.stages {
        out.push_str(&format!(
            "  stage {stage:<14} {:>10.0} µs/call\n",
            per_call(h.sum)
        ));
    }
    for (id, m) in &s.models {
        if m.latency.count > 0 {
            out.push_str(&format!(
                "  slot  {id:<20} {:>10.0} µs/call\n",
                per_call(m.latency.sum)
            ));
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    embeddings_benches::main_with("stage_breakdown", run)
}
