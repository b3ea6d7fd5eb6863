//! The quality canary on real vectors: quiet on the real model, batch
//! invariant, loud on a perturbed copy of it; and non-finite outputs are
//! errors, never answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a failed test

mod common;

use common::{altered_minilm, models_dir};
use embeddings_health::HealthRule;
use embeddings_pipeline::{CanaryFigure, EmbeddingPipeline, ErrorKind, ModelId, PipelineError};

/// The tensor the tests alter: the token embeddings.
const TENSOR: &str = "embeddings.word_embeddings.weight";

#[test]
fn the_canary_is_quiet_and_batch_invariant_on_the_real_model() {
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .build()
        .unwrap();
    let first = p.run_canary().unwrap();
    assert_eq!(first.probes, 32);
    assert_eq!(first.slots.len(), 12, "every loaded slot");
    for s in &first.slots {
        assert!(s.cosine_to_startup > 1.0 - 1e-12, "{s:?}");
        // The acceptance bound: batch invariance below 1e-5 on the CPU.
        assert!(s.batch_deviation < 1e-5, "{s:?}");
        println!("{:?} batch deviation {:e}", s.model, s.batch_deviation);
    }
    // The reference applies to the mean-pooled MiniLM slots, and holds.
    let semantic = first
        .slots
        .iter()
        .find(|s| s.model == ModelId::Semantic)
        .unwrap();
    let reference = semantic.cosine_to_reference.unwrap();
    assert!(reference >= 0.9999, "{reference}");
    let hdc = first
        .slots
        .iter()
        .find(|s| s.model == ModelId::Hdc)
        .unwrap();
    assert_eq!(
        hdc.cosine_to_reference, None,
        "no reference for a built-in slot"
    );
    // The second run compares with the first; nothing moved.
    let second = p.run_canary().unwrap();
    for s in &second.slots {
        assert!(s.cosine_to_startup > 1.0 - 1e-12, "{s:?}");
    }
    assert_eq!(p.canary_report(), Some(second));
    let health = p.health();
    assert!(health.reason(HealthRule::Canary).is_none(), "{health}");
    // The canary moves no user figure.
    let snap = p.metrics().snapshot();
    assert_eq!(snap.embeddings_generated, 0);
    assert_eq!(snap.cache_hits + snap.cache_misses, 0);
}

#[test]
fn a_perturbed_weight_tensor_drops_the_canary_and_the_verdict_names_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    // ±3 % on every weight of one tensor, signs from the index's bits (no
    // RNG): a plausible corruption that leaves every output finite (and
    // every answer "successful").
    altered_minilm(&dir.path().join("all-MiniLM-L6-v2"), TENSOR, |v, i| {
        let sign = if (i.wrapping_mul(2_654_435_761) >> 7) & 1 == 0 {
            1.0
        } else {
            -1.0
        };
        v * (1.0 + 0.03 * sign)
    });
    let p = EmbeddingPipeline::builder()
        .models_dir(dir.path())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    let report = p.run_canary().unwrap();
    let semantic = &report.slots[0];
    let cosine = semantic.cosine_to_reference.unwrap();
    println!("perturbed: cosine to reference {cosine}");
    assert!(cosine < 0.9999, "{cosine}");
    // Its own start-up vectors are the perturbed ones: only the reference
    // can tell, which is why it ships.
    assert!(semantic.cosine_to_startup > 1.0 - 1e-12);
    let health = p.health();
    let reason = health.reason(HealthRule::Canary).expect("a canary reason");
    let text = reason.to_string();
    assert!(text.contains("semantic"), "{text}");
    assert!(
        text.contains(CanaryFigure::CosineToReference.as_str()),
        "{text}"
    );
}

#[test]
fn a_non_finite_output_is_an_inference_error_counted_once_never_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Position 0's first value: every input's [CLS] reads it. (Word row 0
    // would not do: it is [PAD], and padding rows are never computed.)
    altered_minilm(
        &dir.path().join("all-MiniLM-L6-v2"),
        "embeddings.position_embeddings.weight",
        |v, i| if i == 0 { f32::NAN } else { v },
    );
    let p = EmbeddingPipeline::builder()
        .models_dir(dir.path())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    let err = p
        .embed_texts(&["hello world", "a second input"])
        .unwrap_err();
    assert!(matches!(err, PipelineError::Inference { .. }), "{err}");
    assert!(err.to_string().contains("non-finite"), "{err}");
    let snap = p.metrics().snapshot();
    assert_eq!(
        snap.errors_by_kind[&ErrorKind::Inference],
        1,
        "one failed pass"
    );
    assert_eq!(
        snap.models[&ModelId::Semantic].errors_by_kind[&ErrorKind::Inference],
        1
    );
    assert_eq!(snap.embeddings_generated, 0);
    // The canary fails too rather than report NaN figures.
    assert!(p.run_canary().is_err());
    assert_eq!(p.canary_report(), None);
}

#[test]
fn input_telemetry_counts_a_scripted_workload_exactly() {
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    // MiniLM takes 256 tokens. "word " × n is n content tokens + [CLS]/[SEP].
    let long = |n: usize| "word ".repeat(n);
    let (a, b, c) = (long(300), long(254), long(400));
    // 302 tokens (46 cut), 256 (fits exactly), 402 (146 cut); two foxes the
    // vocabulary cannot spell; one whitespace-only input.
    let inputs = [
        a.as_str(),
        b.as_str(),
        c.as_str(),
        "🦊 and 🦊",
        "   ",
        "short",
    ];
    p.embed_texts(&inputs).unwrap();
    let snap = p.metrics().snapshot();
    let semantic = &snap.models[&ModelId::Semantic];
    assert_eq!(semantic.truncated_inputs, 2);
    assert_eq!(semantic.truncated_tokens, 46 + 146);
    assert_eq!(semantic.unknown_tokens, 2);
    assert_eq!(semantic.input_tokens.count, 6);
    assert_eq!(semantic.input_tokens.max, 402);
    assert_eq!(snap.empty_inputs, 1);
    // Only the slots that ran.
    assert_eq!(snap.models[&ModelId::Code].input_tokens.count, 0);
    // The same inputs again come from the cache: not tokenized, not counted.
    p.embed_texts(&inputs).unwrap();
    let again = p.metrics().snapshot();
    assert_eq!(again.models[&ModelId::Semantic].truncated_inputs, 2);
    assert_eq!(again.models[&ModelId::Semantic].input_tokens.count, 6);
    // ... but an empty input is counted each time it is sent.
    assert_eq!(again.empty_inputs, 2);
}

/// The bench inputs, `{"short": [...], "long": [...]}`.
fn bench_sentences() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/data/sentences.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `n` strings of random printable characters (a fixed LCG: the same every run).
fn gibberish(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as usize
    };
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzXQZ0123456789#$%&*+/<=>@^_|~"
        .chars()
        .collect();
    (0..n)
        .map(|_| {
            let len = 20 + next() % 40;
            (0..len)
                .map(|i| {
                    if i % 7 == 6 {
                        ' '
                    } else {
                        alphabet[next() % alphabet.len()]
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_drift_score_rises_on_a_shifted_workload_and_falls_back_after() {
    let data = bench_sentences();
    // Stable English: the bench sentences, short and long alternately.
    let english: Vec<String> = data["short"]
        .as_array()
        .unwrap()
        .iter()
        .zip(data["long"].as_array().unwrap())
        .flat_map(|(s, l)| {
            [
                s.as_str().unwrap().to_owned(),
                l.as_str().unwrap().to_owned(),
            ]
        })
        .collect();
    let mut config = embeddings_pipeline::PipelineConfig::default();
    config.quality.drift_window = 64;
    let p = EmbeddingPipeline::builder()
        .config(config)
        .models_dir(models_dir())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    let score = |p: &EmbeddingPipeline| {
        let r = p.drift_report();
        let s = r
            .slots
            .iter()
            .find(|s| s.model == ModelId::Semantic)
            .unwrap()
            .clone();
        println!("{s:?}");
        s.drift_score
    };
    let embed = |texts: &[String]| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        p.embed_texts(&refs).unwrap();
    };
    embed(&english[..32]);
    assert_eq!(score(&p), None, "unknown until both windows are full");
    embed(&english[32..64]);
    embed(&english[64..128]);
    let stable = score(&p).unwrap();
    embed(&gibberish(64));
    let shifted = score(&p).unwrap();
    embed(&english[128..192]);
    let back = score(&p).unwrap();
    println!("stable {stable} shifted {shifted} back {back}");
    assert!(stable < 0.2, "{stable}");
    assert!(shifted > 0.2, "{shifted}");
    assert!(back < 0.2, "{back}");
}

#[test]
fn the_fused_projection_keeps_neighbourhoods_and_says_how_well() {
    let data = bench_sentences();
    let short: Vec<&str> = data["short"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .build()
        .unwrap();
    assert_eq!(
        p.drift_report().fused_neighbour_overlap,
        None,
        "unknown before 64 samples"
    );
    // Every fourth computed input is sampled: 256 inputs fill the 64.
    for round in 0..2 {
        let texts: Vec<String> = short.iter().map(|s| format!("{s} ({round})")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        p.embed_texts(&refs).unwrap();
    }
    let overlap = p.drift_report().fused_neighbour_overlap.unwrap();
    println!("fused neighbour overlap {overlap}");
    assert!((0.0..=1.0).contains(&overlap));
    assert!(overlap > 0.5, "{overlap}");
}
