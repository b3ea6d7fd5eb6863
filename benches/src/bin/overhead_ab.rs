//! Instrumentation overhead, measured paired and interleaved: three copies
//! of the full 12-slot pipeline on the same inputs (configured as in
//! `benches/benches/pipeline.rs`: fused vector on, cache off,
//! `max_batch_size = 128`) — `on` (recording), `off` and `off2` (both with
//! `record_metrics(false)`) — called in rotating order, one call each per
//! round, every call timed. Interleaving call by call puts all three under
//! the same machine conditions (a shared machine drifts by more than the
//! effect over seconds); `off2` vs `off` is the A/A control that shows what
//! the method resolves.
//!
//! For each comparison it prints the mean of the per-round time
//! differences relative to `off`'s mean time per call, with a 95 %
//! confidence interval (normal approximation, `1.96 · sd / √rounds`) and
//! the same for the medians, as one JSON line per input/batch.
//!
//! ```text
//! overhead_ab MODELS_DIR SENTENCES_JSON short|long BATCH ROUNDS
//! ```

use std::process::ExitCode;
use std::time::Instant;

use embeddings_pipeline::{EmbedInput, EmbeddingPipeline, PipelineConfig};

fn build(models: &str, record: bool) -> Result<EmbeddingPipeline, String> {
    let config = PipelineConfig::from_toml_str("max_batch_size = 128\n[cache]\nmax_bytes = 0\n")
        .map_err(|e| e.to_string())?;
    EmbeddingPipeline::builder()
        .models_dir(models)
        .config(config)
        .strict(true)
        .record_metrics(record)
        .build()
        .map_err(|e| e.to_string())
}

/// `(mean, half-width of the 95 % interval)` of `xs`.
fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 1.96 * (var / n).sqrt())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run(args: &[String]) -> Result<String, String> {
    let [models, data, kind, batch, rounds] = args else {
        return Err("usage: overhead_ab MODELS_DIR SENTENCES_JSON short|long BATCH ROUNDS".into());
    };
    let parse = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    let (batch, rounds) = (parse(batch)?.max(1), parse(rounds)?.max(2));
    let text = std::fs::read_to_string(data).map_err(|e| format!("{data}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let inputs: Vec<EmbedInput> = json[kind.as_str()]
        .as_array()
        .ok_or(format!("no `{kind}` array"))?
        .iter()
        .filter_map(|v| v.as_str().map(EmbedInput::new))
        .take(batch)
        .collect();
    let pipelines = [
        build(models, true)?,
        build(models, false)?,
        build(models, false)?,
    ];
    for p in &pipelines {
        for _ in 0..3 {
            p.embed(&inputs).map_err(|e| e.to_string())?;
        }
    }
    // times[k][round], seconds; the order rotates each round.
    let mut times = [
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
    ];
    for round in 0..rounds {
        for step in 0..3 {
            let k = (round + step) % 3;
            let start = Instant::now();
            pipelines[k].embed(&inputs).map_err(|e| e.to_string())?;
            times[k].push(start.elapsed().as_secs_f64());
        }
    }
    let [on, off, off2] = &times;
    let base = off.iter().sum::<f64>() / off.len() as f64;
    let rel = |a: &[f64]| -> (f64, f64, f64) {
        let diffs: Vec<f64> = a.iter().zip(off).map(|(x, y)| (x - y) / base).collect();
        let (m, ci) = mean_ci(&diffs);
        (
            100.0 * m,
            100.0 * ci,
            100.0 * (median(a) / median(off) - 1.0),
        )
    };
    let (on_mean, on_ci, on_median) = rel(on);
    let (aa_mean, aa_ci, aa_median) = rel(off2);
    Ok(format!(
        "{{\"input\":\"{kind}\",\"batch\":{batch},\"rounds\":{rounds},\
         \"off_ms_per_call\":{:.3},\"on_ms_per_call\":{:.3},\
         \"on_vs_off_pct\":{on_mean:.3},\"on_vs_off_ci95_pct\":{on_ci:.3},\"on_vs_off_median_pct\":{on_median:.3},\
         \"aa_off2_vs_off_pct\":{aa_mean:.3},\"aa_ci95_pct\":{aa_ci:.3},\"aa_median_pct\":{aa_median:.3}}}",
        1e3 * base,
        1e3 * on.iter().sum::<f64>() / on.len() as f64,
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("overhead_ab: {e}");
            ExitCode::FAILURE
        }
    }
}
