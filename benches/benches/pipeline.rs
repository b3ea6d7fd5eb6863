//! Pipeline throughput on the CPU: sentences/s of the full twelve-slot
//! pipeline and of the `Semantic` slot alone (one all-MiniLM-L6-v2 forward
//! pass + mean pooling), at batch 1, 32 and 128, for the `short` (~12 words)
//! and `long` (~100 words) inputs of `benches/data/sentences.json`, the same
//! inputs `benches/python/st_throughput.py` gives sentence-transformers.
//! (The instrumentation overhead is measured by `benches/overhead.sh`:
//! sequential criterion runs of metrics on and off cannot resolve 1 % on a
//! shared machine.)
//!
//! Every iteration is one `EmbeddingPipeline::embed` call on the first `b`
//! inputs (criterion reports elements/s through `Throughput::Elements(b)`).
//! The cache is disabled (`cache_max_bytes(0)`), so every iteration runs the
//! model; `max_batch_size = 128`, so the `b` inputs of a call are one batch
//! as `encode(batch_size = b)`'s are on the PyTorch side — which our
//! pipeline, like any call, runs sorted by length in forward passes of at
//! most `max_forward_tokens` padded tokens (default 1536; the environment
//! variable `BENCH_MAX_FORWARD_TOKENS` overrides it, to tune it). The
//! reference time and every input's timestamp and position are fixed, so
//! the work is the same in every run.
//!
//! Skipped, with a message, when the model folder is missing
//! (`cargo xtask fetch-models`). `EMBEDDINGS_MODELS_DIR` overrides the
//! default `<repo>/models`.
//!
//! ```text
//! cargo bench -p embeddings-benches --bench pipeline            # ≈ 4–6 min
//! cargo bench -p embeddings-benches --bench pipeline -- short   # a subset
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use embeddings_pipeline::{DEFAULT_MODEL_DIR, EmbedInput, EmbeddingPipeline, ModelId};

const BATCHES: [usize; 3] = [1, 32, 128];
const KINDS: [&str; 2] = ["short", "long"];
/// The pipelines' fixed "now"; input `i` is stamped `i` hours before it.
const REFERENCE_TIME: &str = "2025-01-01T00:00:00Z";

type BoxError = Box<dyn std::error::Error>;

fn models_dir() -> PathBuf {
    std::env::var_os("EMBEDDINGS_MODELS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"),
        PathBuf::from,
    )
}

/// `{"short": [...], "long": [...]}` as `EmbedInput`s with fixed timestamps
/// and positions (the temporal slots do real work; the semantic slot ignores
/// both).
fn load_inputs(reference: DateTime<Utc>) -> Result<Vec<(&'static str, Vec<EmbedInput>)>, BoxError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sentences.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let data: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for kind in KINDS {
        let texts = data[kind]
            .as_array()
            .ok_or_else(|| format!("{}: no array {kind:?}", path.display()))?;
        let inputs = texts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let text = v.as_str().ok_or("non-string input")?;
                let hours = i64::try_from(i)?;
                Ok(EmbedInput::new(text)
                    .with_timestamp(reference - TimeDelta::hours(hours))
                    .with_position(u64::try_from(i)?))
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        let need = BATCHES[BATCHES.len() - 1];
        if inputs.len() < need {
            return Err(format!(
                "{}: {kind:?} has {} inputs, need {need}",
                path.display(),
                inputs.len()
            )
            .into());
        }
        out.push((kind, inputs));
    }
    Ok(out)
}

/// `slots = None`: every slot (the default configuration).
fn build(
    dir: &Path,
    reference: DateTime<Utc>,
    slots: Option<&[ModelId]>,
) -> Result<EmbeddingPipeline, BoxError> {
    let mut toml = String::from("max_batch_size = 128\n");
    if let Ok(t) = std::env::var("BENCH_MAX_FORWARD_TOKENS") {
        toml.push_str(&format!("max_forward_tokens = {t}\n"));
    }
    let config = embeddings_pipeline::PipelineConfig::from_toml_str(&toml)?;
    let mut builder = EmbeddingPipeline::builder()
        .config(config)
        .models_dir(dir)
        .strict(true)
        .reference_time(reference)
        .cache_max_bytes(0);
    if let Some(slots) = slots {
        builder = builder.only(slots);
    }
    let pipeline = builder.build()?;
    let loaded = pipeline.describe().loaded().count();
    let want = slots.map_or(ModelId::ALL.len(), <[ModelId]>::len);
    if loaded != want {
        return Err(format!("{loaded} slots loaded, expected {want}").into());
    }
    Ok(pipeline)
}

/// One call outside the timing: fails early (instead of timing errors) and
/// checks that the call really produced the slots.
fn check(
    pipeline: &EmbeddingPipeline,
    inputs: &[EmbedInput],
    slots: usize,
) -> Result<(), BoxError> {
    let out = pipeline.embed(inputs)?;
    let first = out.first().ok_or("no output")?;
    if out.len() != inputs.len()
        || first.dense(ModelId::Semantic).is_none()
        || first.iter().count() != slots
    {
        return Err(format!(
            "unexpected output: {} items, {} slots in the first",
            out.len(),
            first.iter().count()
        )
        .into());
    }
    Ok(())
}

struct Setup {
    inputs: Vec<(&'static str, Vec<EmbedInput>)>,
    semantic: EmbeddingPipeline,
    full: EmbeddingPipeline,
}

fn setup() -> Result<Option<Setup>, BoxError> {
    let dir = models_dir();
    let model = dir.join(DEFAULT_MODEL_DIR);
    if !model.join("model.safetensors").is_file() {
        eprintln!(
            "pipeline bench SKIPPED: model not found at {} (run `cargo xtask fetch-models`, \
             or set EMBEDDINGS_MODELS_DIR)",
            model.display()
        );
        return Ok(None);
    }
    let reference: DateTime<Utc> = REFERENCE_TIME.parse()?;
    let inputs = load_inputs(reference)?;
    let setup = Setup {
        semantic: build(&dir, reference, Some(&[ModelId::Semantic]))?,
        full: build(&dir, reference, None)?,
        inputs,
    };
    for (_, inputs) in &setup.inputs {
        check(&setup.semantic, &inputs[..2], 1)?;
        check(&setup.full, &inputs[..2], ModelId::ALL.len())?;
    }
    Ok(Some(setup))
}

fn bench_embed(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    pipeline: &EmbeddingPipeline,
    inputs: &[EmbedInput],
) {
    group.bench_with_input(id, inputs, |b, inputs| {
        b.iter(|| black_box(pipeline.embed(black_box(inputs))));
    });
}

fn pipeline(c: &mut Criterion) {
    let setup = match setup() {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            eprintln!("pipeline bench SKIPPED: setup failed: {e}");
            return;
        }
    };

    // Throughput: semantic-only and the full pipeline, side by side per size.
    for (kind, inputs) in &setup.inputs {
        let mut group = c.benchmark_group(format!("pipeline/{kind}"));
        // Flat sampling: the same iteration count in every sample, so a
        // ~3 s iteration (long, 128) costs 10 iterations, not 55.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for b in BATCHES {
            group.throughput(Throughput::Elements(b as u64));
            bench_embed(
                &mut group,
                BenchmarkId::new("semantic", b),
                &setup.semantic,
                &inputs[..b],
            );
            bench_embed(
                &mut group,
                BenchmarkId::new("full", b),
                &setup.full,
                &inputs[..b],
            );
        }
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
