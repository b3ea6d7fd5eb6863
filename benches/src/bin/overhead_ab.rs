//! Instrumentation overhead, measured paired and interleaved: four copies
//! of the full 12-slot pipeline on the same inputs (configured as in
//! `benches/benches/pipeline.rs`: fused vector on, cache off,
//! `max_batch_size = 128`), two recording (`on_a`, `on_b`) and two with
//! `record_metrics(false)` (`off_a`, `off_b`), built after an unused pilot
//! copy in the order `on_a`, `off_a`, `off_b`, `on_b` (so where in memory a
//! copy's weights landed weighs on both sides alike) and called in rotating
//! order, one call each
//! per round, every call timed. Interleaving call by call puts all four
//! under the same machine conditions (a shared machine drifts by more than
//! the effect over seconds). `off_b` vs `off_a` and `on_b` vs `on_a` are the
//! A/A controls: what the method resolves, and how much two identical
//! copies differ.
//!
//! The headline compares, round by round, the mean of the two `on` calls
//! with the mean of the two `off` calls, relative to `off`'s mean time per
//! call, with a 95 % confidence interval (normal approximation,
//! `1.96 · sd / √rounds`), and the ratio of medians beside it; one JSON line
//! per input/batch.
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

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn run(args: &[String]) -> Result<String, String> {
    let [models, data, kind, batch, rounds] = args else {
        return Err("usage: overhead_ab MODELS_DIR SENTENCES_JSON short|long BATCH ROUNDS".into());
    };
    let parse = embeddings_benches::count_arg;
    let (batch, rounds) = (parse(batch)?.max(1), parse(rounds)?.max(2));
    let inputs: Vec<EmbedInput> = embeddings_benches::sentences(data, kind, batch)?
        .into_iter()
        .map(EmbedInput::new)
        .collect();
    // The first copy built in a process ran ≈ 5–6 % slower than later ones
    // (same code, same flags: seen with either setting in the first
    // position, see BENCHMARKS.md), so a pilot copy takes that place; it is
    // kept alive so that the others' memory stays where it landed.
    let _pilot = build(models, false)?;
    // Build order on_a, off_a, off_b, on_b; index = build position.
    let pipelines = [
        build(models, true)?,
        build(models, false)?,
        build(models, false)?,
        build(models, true)?,
    ];
    for p in &pipelines {
        for _ in 0..3 {
            p.embed(&inputs).map_err(|e| e.to_string())?;
        }
    }
    // times[k][round], seconds; the call order rotates each round.
    let mut times: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for step in 0..4 {
            let k = (round + step) % 4;
            let start = Instant::now();
            pipelines[k].embed(&inputs).map_err(|e| e.to_string())?;
            times[k].push(start.elapsed().as_secs_f64());
        }
    }
    let [on_a, off_a, off_b, on_b] = &times;
    let pair = |a: &[f64], b: &[f64]| -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect()
    };
    let (on, off) = (pair(on_a, on_b), pair(off_a, off_b));
    let base = mean(&off);
    // (mean difference %, its 95 % half-width %, ratio of medians − 1 in %)
    let rel = |a: &[f64], b: &[f64]| -> (f64, f64, f64) {
        let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y) / base).collect();
        let (m, ci) = mean_ci(&diffs);
        (100.0 * m, 100.0 * ci, 100.0 * (median(a) / median(b) - 1.0))
    };
    let (d, ci, med) = rel(&on, &off);
    let (aa_off, aa_off_ci, _) = rel(off_b, off_a);
    let (aa_on, aa_on_ci, _) = rel(on_b, on_a);
    Ok(format!(
        "{{\"input\":\"{kind}\",\"batch\":{batch},\"rounds\":{rounds},\
         \"off_ms_per_call\":{:.3},\"on_ms_per_call\":{:.3},\
         \"on_vs_off_pct\":{d:.3},\"on_vs_off_ci95_pct\":{ci:.3},\"on_vs_off_median_pct\":{med:.3},\
         \"aa_off_b_vs_off_a_pct\":{aa_off:.3},\"aa_off_ci95_pct\":{aa_off_ci:.3},\
         \"aa_on_b_vs_on_a_pct\":{aa_on:.3},\"aa_on_ci95_pct\":{aa_on_ci:.3}}}\n",
        1e3 * base,
        1e3 * mean(&on),
    ))
}

fn main() -> ExitCode {
    embeddings_benches::main_with("overhead_ab", run)
}
