//! A concurrent workload recorded into [`PipelineMetrics`], then printed as the
//! JSON snapshot and the Prometheus exposition (`cargo xtask demo`).
//!
//! The work is real, and every figure comes from it: four threads turn
//! sentences into hashed bag-of-words vectors (a stand-in *model*, not a
//! stand-in *measurement*), timed with `Instant`; a shared cache really hits
//! and misses; empty inputs are really rejected and counted as validation
//! errors. Nothing is invented or randomised.
//!
//! Options: `--json-only`, `--prometheus-only`, `--openmetrics`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use embeddings_metrics::PipelineMetrics;
use embeddings_types::{ErrorKind, ModelId, Stage};

const SENTENCES: [&str; 12] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "",
    "The cat sat on the mat while the rain kept falling outside.",
    "Latency, throughput and errors are what an operator watches at 3 a.m.",
];
const DIM: usize = 384;
const CACHE_CAPACITY: usize = 6;

/// Tokenization stage: lower-cased word hashes (FNV-1a).
fn tokenize(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(|w| {
            w.bytes()
                .map(|b| b.to_ascii_lowercase())
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
        })
        .collect()
}

/// "Inference" stage for one slot: a signed hashed projection, L2-normalised.
fn embed(tokens: &[u64], slot: ModelId) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for (pos, t) in tokens.iter().enumerate() {
        let h = t
            .rotate_left(slot.index() as u32 * 5)
            .wrapping_add(pos as u64);
        for k in 0..256u64 {
            let x = h
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left((k % 64) as u32)
                ^ k;
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            v[(x >> 1) as usize % DIM] += sign;
        }
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let metrics = Arc::new(PipelineMetrics::new());
    let cache: Arc<Mutex<HashMap<String, Vec<f32>>>> = Arc::default();
    let slots = [
        ModelId::Semantic,
        ModelId::Code,
        ModelId::Entity,
        ModelId::Hdc,
    ];

    metrics.set_workers(4);
    std::thread::scope(|s| {
        for worker in 0..4usize {
            let metrics = Arc::clone(&metrics);
            let cache = Arc::clone(&cache);
            s.spawn(move || {
                for round in 0..250usize {
                    let batch: Vec<&str> = (0..8)
                        .map(|i| SENTENCES[(worker * 7 + round * 3 + i) % SENTENCES.len()])
                        .collect();
                    let batch_start = Instant::now();
                    let _in_flight = metrics.track_in_flight();
                    for text in &batch {
                        let start = Instant::now();
                        for slot in slots {
                            metrics.record_model_request(slot);
                        }
                        if text.is_empty() {
                            metrics.record_error_kind(ErrorKind::Validation, None);
                            continue;
                        }
                        let key = (*text).to_owned();
                        let hit = cache.lock().map(|c| c.contains_key(&key)).unwrap_or(false);
                        if hit {
                            metrics.record_cache_hit();
                            metrics.record_embedding(micros(start));
                            continue;
                        }
                        metrics.record_cache_miss();
                        let t = Instant::now();
                        let tokens = tokenize(text);
                        metrics.record_stage(Stage::Tokenization, micros(t));
                        let t = Instant::now();
                        let mut last = Vec::new();
                        for slot in slots {
                            let ts = Instant::now();
                            last = embed(&tokens, slot);
                            metrics.record_model_latency(slot, micros(ts));
                        }
                        metrics.record_stage(Stage::Inference, micros(t));
                        if let Ok(mut c) = cache.lock() {
                            // A small bounded cache, so the workload keeps missing and evicting.
                            if c.len() >= CACHE_CAPACITY
                                && let Some(victim) = c.keys().next().cloned()
                            {
                                c.remove(&victim);
                                metrics.record_cache_eviction(1);
                            }
                            c.insert(key, last);
                            metrics.set_cache_size((c.len() * DIM * 4) as u64, c.len() as u64);
                        }
                        metrics.record_embedding(micros(start));
                    }
                    metrics.record_batch(batch.len(), micros(batch_start));
                }
            });
        }
    });

    let want = |flag: &str| args.iter().any(|a| a == flag);
    if !want("--prometheus-only") && !want("--openmetrics") {
        match serde_json::to_string_pretty(&metrics.snapshot()) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("could not serialize the snapshot: {e}"),
        }
    }
    if !want("--json-only") {
        if want("--openmetrics") {
            print!("{}", metrics.render_openmetrics());
        } else {
            print!("{}", metrics.render_prometheus());
        }
    }
}
