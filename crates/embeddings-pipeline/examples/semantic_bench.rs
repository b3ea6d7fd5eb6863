//! Semantic-only throughput on benches/data/sentences.json, mirroring
//! benches/python/st_throughput.py: per (kind, batch b), the first b
//! sentences are embedded in one call (max_batch_size = 128, so one forward
//! per call), rounds repeated for at least `MIN_S` seconds after a warm-up.
//! Reports median sentences/s and CPU-seconds per sentence (user+sys of the
//! whole process, from /proc/self/stat, clock ticks of 10 ms).
//!
//! ```text
//! semantic_bench [kinds=short,long] [batches=1,32,128] [min_s=3]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use embeddings_pipeline::{EmbeddingPipeline, ModelId, PipelineConfig};

fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat (1-based) are at index 11 and 12 after the comm field.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kinds: Vec<String> = args
        .get(1)
        .map_or("short,long", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();
    let batches: Vec<usize> = args
        .get(2)
        .map_or("1,32,128", String::as_str)
        .split(',')
        .map(|b| b.parse().unwrap())
        .collect();
    let min_s: f64 = args.get(3).map_or(3.0, |s| s.parse().unwrap());
    let tag = std::env::var("BENCH_TAG").unwrap_or_else(|_| "candle".into());
    let data_path = std::env::var("BENCH_DATA")
        .unwrap_or_else(|_| "/work/main/benches/data/sentences.json".into());
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_path).unwrap()).unwrap();
    let config = PipelineConfig::from_toml_str("max_batch_size = 128\n").unwrap();
    let p = EmbeddingPipeline::builder()
        .config(config)
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    for kind in &kinds {
        let all: Vec<&str> = data[kind.as_str()]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for &b in &batches {
            let inputs = &all[..b];
            let w0 = Instant::now();
            let mut wrounds = 0;
            let mut best = f64::MAX;
            while wrounds == 0 || w0.elapsed().as_secs_f64() < 1.0 {
                let t = Instant::now();
                p.embed_texts(inputs).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                wrounds += 1;
            }
            let rounds = ((min_s / best).ceil() as usize).max(5);
            let la = loadavg();
            let c0 = cpu_seconds();
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                p.embed_texts(inputs).unwrap();
                times.push(t.elapsed().as_secs_f64());
            }
            let cpu = cpu_seconds() - c0;
            let wall: f64 = times.iter().sum();
            let mut tput: Vec<f64> = times.iter().map(|t| b as f64 / t).collect();
            tput.sort_by(f64::total_cmp);
            let median = tput[tput.len() / 2];
            println!(
                "RESULT tag={tag} kind={kind} b={b} median_sps={median:.1} mean_sps={:.1} cpu_ms_per_sent={:.3} cpu_util={:.2} rounds={rounds} wall_s={wall:.2} load=[{la}]",
                (b * rounds) as f64 / wall,
                1000.0 * cpu / (b * rounds) as f64,
                cpu / wall,
            );
        }
    }
}
