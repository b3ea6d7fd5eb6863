//! Sentences per second at batch 32 of short (12-word) inputs, Semantic-only
//! and all twelve slots. Not a benchmark harness: a quick measurement.
//!
//! ```text
//! EMBEDDINGS_MODELS_DIR=/path/to/models cargo run --release --example throughput [batches]
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use embeddings_pipeline::{EmbedInput, EmbeddingPipeline, ModelId, PipelineError};

const WORDS: [&str; 24] = [
    "the",
    "service",
    "latency",
    "spiked",
    "after",
    "deploy",
    "while",
    "cache",
    "hit",
    "rate",
    "dropped",
    "sharply",
    "during",
    "peak",
    "traffic",
    "engineers",
    "rolled",
    "back",
    "release",
    "quickly",
    "metrics",
    "showed",
    "memory",
    "pressure",
];

fn sentence(i: usize) -> String {
    (0..12)
        .map(|k| WORDS[(i * 7 + k * 5 + k * k) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn measure(name: &str, p: &EmbeddingPipeline, batches: usize) -> Result<(), PipelineError> {
    let inputs: Vec<EmbedInput> = (0..32 * batches)
        .map(|i| EmbedInput::new(sentence(i)).with_position(i as u64))
        .collect();
    p.embed(&inputs[..32])?; // warm-up
    let start = Instant::now();
    for chunk in inputs.chunks(32) {
        p.embed(chunk)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<12} {:>7.1} sentences/s  ({} sentences, {:.2} s, batch 32)",
        inputs.len() as f64 / secs,
        inputs.len(),
        secs
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batches = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let semantic = EmbeddingPipeline::builder()
        .only(&[ModelId::Semantic])
        .build()?;
    let full = EmbeddingPipeline::builder().build()?;
    println!("threads: {}", candle_core::utils::get_num_threads());
    for _ in 0..2 {
        measure("semantic", &semantic, batches)?;
        measure("all 12", &full, batches)?;
    }
    Ok(())
}
