//! Failure handling, built-in maths, fusion and configuration. Uses tiny
//! random checkpoints written to temp folders (only the MiniLM tokenizer is
//! borrowed), so these run fast.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use chrono::{DateTime, Duration, Utc};
use common::{TEMPORAL, dot, norm, t0, write_tiny_bert};
use embeddings_pipeline::{
    DeviceKind, EmbedInput, EmbeddingPipeline, InputError, LoadError, ModelId, ModelSource,
    PipelineConfig, PipelineError, SlotState, cosine,
};

fn temporal_pipeline() -> EmbeddingPipeline {
    EmbeddingPipeline::builder()
        .only(&TEMPORAL)
        .reference_time(t0())
        .build()
        .unwrap()
}

fn tiny_pipeline(dir: &Path, slots: &[ModelId]) -> EmbeddingPipeline {
    EmbeddingPipeline::builder()
        .model("default", ModelSource::path(dir))
        .only(slots)
        .reference_time(t0())
        .build()
        .unwrap()
}

fn failure_of(dir: &Path) -> LoadError {
    let p = EmbeddingPipeline::builder()
        .model("default", ModelSource::path(dir))
        .only(&[ModelId::Semantic, ModelId::TemporalRecent])
        .build()
        .unwrap();
    let reg = p.describe();
    assert_eq!(
        reg.slot(ModelId::TemporalRecent).state,
        SlotState::Loaded,
        "others still load"
    );
    match &reg.slot(ModelId::Semantic).state {
        SlotState::Failed(e) => e.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn corrupt_weights_bad_config_and_shape_mismatch_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_tiny_bert(&dir, 8);
    let good = std::fs::read(dir.join("model.safetensors")).unwrap();

    std::fs::write(
        dir.join("model.safetensors"),
        b"this is not a safetensors file",
    )
    .unwrap();
    let e = failure_of(&dir);
    assert!(matches!(e, LoadError::CorruptWeights { .. }), "{e}");
    assert!(e.to_string().contains("re-download"), "{e}");

    std::fs::write(dir.join("model.safetensors"), &good[..good.len() / 2]).unwrap();
    assert!(matches!(failure_of(&dir), LoadError::CorruptWeights { .. }));
    std::fs::write(dir.join("model.safetensors"), &good).unwrap();

    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert!(matches!(failure_of(&dir), LoadError::BadModelConfig { .. }));
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"hidden_size\":8", "\"hidden_size\":7"),
    )
    .unwrap();
    assert!(matches!(failure_of(&dir), LoadError::BadModelConfig { .. }));
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"hidden_size\":8", "\"hidden_size\":16"),
    )
    .unwrap();
    let e = failure_of(&dir);
    assert!(matches!(e, LoadError::WeightsMismatch { .. }), "{e}");
    std::fs::write(dir.join("config.json"), &config).unwrap();

    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    assert!(matches!(failure_of(&dir), LoadError::BadModelConfig { .. }));
    std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();

    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = failure_of(&dir);
    assert!(matches!(e, LoadError::ModelFileNotFound { .. }), "{e}");
    assert!(e.to_string().contains("cargo xtask fetch-models"));
}

#[test]
fn ten_thousand_items_are_chunked_and_returned_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let config = PipelineConfig::from_toml_str("max_batch_size = 64\n[fusion]\ndim = 64").unwrap();
    let p = EmbeddingPipeline::builder()
        .config(config)
        .model("default", ModelSource::path(tmp.path()))
        .reference_time(t0())
        .build()
        .unwrap();
    let inputs: Vec<EmbedInput> = (0..10_000u64)
        .map(|i| {
            EmbedInput::new("log line ".repeat((i % 17) as usize + 1) + &i.to_string())
                .with_position(i)
        })
        .collect();
    let out = p.embed(&inputs).unwrap();
    assert_eq!(out.len(), 10_000);
    for i in [0usize, 1, 16, 4_999, 9_999] {
        let single = p.embed(&inputs[i..=i]).unwrap();
        // Equal up to float rounding (padding changes the summation order).
        let (a, b) = (&single[0], &out[i]);
        assert_eq!(a.token_count(), b.token_count(), "item {i}");
        for id in [ModelId::Semantic, ModelId::TemporalPositional, ModelId::Hdc] {
            let c = cosine(a.dense(id).unwrap(), b.dense(id).unwrap());
            assert!(c > 0.99999, "item {i} slot {id}: {c}");
        }
        assert_eq!(a.sparse(), b.sparse(), "item {i}");
        assert!(
            cosine(a.fused().unwrap(), b.fused().unwrap()) > 0.99999,
            "item {i}"
        );
    }
}

#[test]
fn bad_items_fail_alone_in_embed_each() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let config = PipelineConfig::from_toml_str("[input]\nempty_text = \"reject\"").unwrap();
    let p = EmbeddingPipeline::builder()
        .config(config)
        .model("default", ModelSource::path(tmp.path()))
        .build()
        .unwrap();
    let inputs = vec![
        EmbedInput::new("ok"),
        EmbedInput::new("  "),
        EmbedInput::new("far future").with_timestamp(DateTime::<Utc>::MAX_UTC),
        EmbedInput::new("ok too"),
    ];
    let each = p.embed_each(&inputs).unwrap();
    assert!(each[0].is_ok() && each[3].is_ok());
    assert!(matches!(
        each[1],
        Err(PipelineError::InvalidInput {
            index: 1,
            reason: InputError::EmptyText
        })
    ));
    assert!(matches!(
        each[2],
        Err(PipelineError::InvalidInput {
            index: 2,
            reason: InputError::TimestampOutOfRange { .. }
        })
    ));
    let err = p.embed(&inputs).unwrap_err();
    assert!(
        matches!(err, PipelineError::InvalidInput { index: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        EmbedInput::new("x").with_timestamp_rfc3339("2024-13-01T00:00:00Z"),
        Err(InputError::InvalidTimestamp { .. })
    ));
}

#[test]
fn temporal_recent_decays_monotonically() {
    let p = temporal_pipeline();
    let ages_h = [0i64, 1, 6, 24, 24 * 30, 24 * 365, 24 * 3650];
    let inputs: Vec<EmbedInput> = ages_h
        .iter()
        .map(|h| EmbedInput::new("").with_timestamp(t0() - Duration::hours(*h)))
        .collect();
    let out = p.embed(&inputs).unwrap();
    let v: Vec<&[f32]> = out
        .iter()
        .map(|o| o.dense(ModelId::TemporalRecent).unwrap())
        .collect();
    let n = v[0].len() / 2;
    for w in v.windows(2) {
        for j in 0..n {
            assert!(
                w[1][2 * j] <= w[0][2 * j] + 1e-7,
                "decay feature {j} increases with age"
            );
        }
        assert!(cosine(v[0], w[1]) < cosine(v[0], w[0]) + 1e-6);
    }
    // One half-life (1 h) halves the first feature.
    assert!((v[1][0] / v[0][0] - 0.5).abs() < 1e-4);
    // A future timestamp counts as age 0; no timestamp means "now".
    let fut = p
        .embed(&[
            EmbedInput::new("").with_timestamp(t0() + Duration::days(3)),
            EmbedInput::new(""),
        ])
        .unwrap();
    assert_eq!(fut[0].dense(ModelId::TemporalRecent), Some(v[0]));
    assert_eq!(fut[1].dense(ModelId::TemporalRecent), Some(v[0]));
    // The per-input reference time overrides the pipeline's.
    let shifted = p
        .embed(&[EmbedInput::new("")
            .with_timestamp(t0())
            .with_reference_time(t0() + Duration::hours(1))])
        .unwrap();
    assert_eq!(shifted[0].dense(ModelId::TemporalRecent), Some(v[1]));
}

#[test]
fn temporal_periodic_is_periodic() {
    let p = temporal_pipeline();
    let at = |d: Duration| EmbedInput::new("").with_timestamp(t0() + d);
    let out = p
        .embed(&[
            at(Duration::zero()),
            at(Duration::days(1)),
            at(Duration::days(7)),
            at(Duration::hours(12)),
        ])
        .unwrap();
    let v: Vec<&[f32]> = out
        .iter()
        .map(|o| o.dense(ModelId::TemporalPeriodic).unwrap())
        .collect();
    let k = v[0].len() / 6; // harmonics
    let (day, week) = (0..2 * k, 2 * k..4 * k);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    assert!(
        close(&v[0][day.clone()], &v[1][day.clone()]),
        "day block repeats after a day"
    );
    assert!(
        !close(&v[0][week.clone()], &v[1][week.clone()]),
        "week block moves after a day"
    );
    assert!(
        close(&v[0][..4 * k], &v[2][..4 * k]),
        "day and week blocks repeat after a week"
    );
    assert!(
        !close(&v[0][day.clone()], &v[3][day]),
        "noon differs from 3 pm"
    );
    // 12 hours is half a day: the first harmonic flips sign.
    assert!((v[0][0] + v[3][0]).abs() < 1e-5 && (v[0][1] + v[3][1]).abs() < 1e-5);
    for x in &v {
        assert!((norm(x) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn temporal_positional_is_sinusoidal() {
    let p = temporal_pipeline();
    let out = p
        .embed(&[0u64, 1, 2, 50].map(|i| EmbedInput::new("").with_position(i)))
        .unwrap();
    let v: Vec<&[f32]> = out
        .iter()
        .map(|o| o.dense(ModelId::TemporalPositional).unwrap())
        .collect();
    let s = (32f32).sqrt();
    assert!(
        (v[0][0]).abs() < 1e-7 && (v[0][1] * s - 1.0).abs() < 1e-6,
        "PE(0) = (sin 0, cos 0, ...)"
    );
    assert!((v[1][0] * s - 1f32.sin()).abs() < 1e-6);
    assert!(cosine(v[0], v[1]) > cosine(v[0], v[3]));
    assert!(
        (cosine(v[0], v[1]) - cosine(v[1], v[2])).abs() < 1e-5,
        "shift invariant"
    );
}

#[test]
fn hdc_and_sparse_properties() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    // Only the tokenizer of the model is loaded for these slots.
    let p = tiny_pipeline(tmp.path(), &[ModelId::Hdc, ModelId::Sparse]);
    assert_eq!(p.describe().models[0].weight_bytes, 0);
    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "the quick brown fox jumped over the lazy dog",
        "interest rates rose sharply in the third quarter",
        "the the the the fox",
    ];
    let a = p.embed_texts(&texts).unwrap();
    let b = p.embed_texts(&texts).unwrap();
    assert_eq!(a, b);
    let h: Vec<&[f32]> = a.iter().map(|o| o.dense(ModelId::Hdc).unwrap()).collect();
    assert!(h[0].iter().all(|x| x.abs() == h[0][0].abs()), "bipolar");
    assert!(
        dot(h[0], h[1]) > dot(h[0], h[2]) + 0.2,
        "{} vs {}",
        dot(h[0], h[1]),
        dot(h[0], h[2])
    );
    assert!(dot(h[0], h[1]) > 0.3);
    let s: Vec<_> = a.iter().map(|o| o.sparse().unwrap()).collect();
    for v in &s {
        assert!(v.values.iter().all(|x| *x > 0.0));
        assert!(v.indices.iter().all(|i| (*i as usize) < v.dim));
        assert!((norm(&v.values) - 1.0).abs() < 1e-5);
    }
    assert!(s[0].dot(s[1]) > s[0].dot(s[2]));
    // Log saturation: "the" x4 weighs ln 5 against "fox" ln 2.
    let (the, fox) = (
        s[3].values[0].max(s[3].values[1]),
        s[3].values[0].min(s[3].values[1]),
    );
    assert!((the / fox - 5f32.ln() / 2f32.ln()).abs() < 1e-4);
    // A different seed gives different hypervectors.
    let mut config = PipelineConfig::default();
    config.hdc.seed = 1;
    let p2 = EmbeddingPipeline::builder()
        .config(config)
        .model("default", ModelSource::path(tmp.path()))
        .only(&[ModelId::Hdc])
        .build()
        .unwrap();
    assert_ne!(
        p2.embed_texts(&texts[..1]).unwrap()[0].dense(ModelId::Hdc),
        Some(h[0])
    );
}

#[test]
fn default_fusion_preserves_geometry() {
    let p = temporal_pipeline();
    let inputs: Vec<EmbedInput> = (0..6)
        .map(|i| {
            EmbedInput::new("")
                .with_timestamp(t0() - Duration::hours(i * 7))
                .with_position(i as u64)
        })
        .collect();
    let out = p.embed(&inputs).unwrap();
    let reg = p.describe();
    let f = reg.fusion.as_ref().unwrap();
    assert_eq!((f.d_in, f.dim, f.trained), (16 + 24 + 64, 1536, false));
    for a in &out {
        assert!((norm(a.fused().unwrap()) - 1.0).abs() < 1e-4);
        for b in &out {
            // Gate-weighted mean of slot cosines (uniform gates here).
            let expected: f32 = TEMPORAL
                .iter()
                .map(|id| dot(a.dense(*id).unwrap(), b.dense(*id).unwrap()))
                .sum::<f32>()
                / 3.0;
            let got = dot(a.fused().unwrap(), b.fused().unwrap());
            assert!((got - expected).abs() < 0.12, "fused {got} vs {expected}");
        }
    }
}

#[test]
fn trained_fusion_weights_load_from_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fusion.safetensors");
    let d_in = 16 + 24 + 64;
    let dev = Device::Cpu;
    // Gate: only the bias matters, favouring temporal_positional (index 3).
    let mut bias = vec![0f32; 12];
    bias[ModelId::TemporalPositional.index()] = 10.0;
    // Projection: identity on the positional block (columns 40..104).
    let mut proj = vec![0f32; 64 * d_in];
    for r in 0..64 {
        proj[r * d_in + 40 + r] = 1.0;
    }
    let write = |proj_rows: usize, proj: Vec<f32>| {
        let mut t = HashMap::new();
        t.insert(
            "gate.weight".to_owned(),
            Tensor::zeros((12, d_in), candle_core::DType::F32, &dev).unwrap(),
        );
        t.insert(
            "gate.bias".to_owned(),
            Tensor::from_vec(bias.clone(), 12, &dev).unwrap(),
        );
        t.insert(
            "proj.weight".to_owned(),
            Tensor::from_vec(proj, (proj_rows, d_in), &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, &path).unwrap();
    };
    write(64, proj);
    let toml = format!(
        "[fusion]\ndim = 64\ntop_k = 1\ntrained_weights = \"{}\"",
        path.display()
    );
    let p = EmbeddingPipeline::builder()
        .config(PipelineConfig::from_toml_str(&toml).unwrap())
        .only(&TEMPORAL)
        .reference_time(t0())
        .build()
        .unwrap();
    assert!(p.describe().fusion.as_ref().unwrap().trained);
    let out = p.embed(&[EmbedInput::new("").with_position(7)]).unwrap();
    let fused = out[0].fused().unwrap();
    assert_eq!(fused.len(), 64);
    let pos = out[0].dense(ModelId::TemporalPositional).unwrap();
    assert!(
        cosine(fused, pos) > 0.9999,
        "top-1 gate routes the positional slot through"
    );

    // Wrong shape: typed error naming the expected shape.
    write(32, vec![0.5; 32 * d_in]);
    let err = EmbeddingPipeline::builder()
        .config(PipelineConfig::from_toml_str(&toml).unwrap())
        .only(&TEMPORAL)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, LoadError::Fusion(ref m) if m.contains("[64, 104]")),
        "{err}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    let err = EmbeddingPipeline::builder()
        .config(PipelineConfig::from_toml_str(&toml).unwrap())
        .only(&TEMPORAL)
        .build()
        .unwrap_err();
    assert!(matches!(err, LoadError::CorruptWeights { .. }), "{err}");
}

#[test]
fn configuration_is_validated() {
    let bad = [
        ("max_batch_size = 0", "max_batch_size"),
        ("typo = 1", "unknown field"),
        ("[slots.code]\nmodel = \"nope\"", "[models.nope]"),
        ("[slots.hdc]\nmodel = \"default\"", "built-in"),
        ("[slots.causal]\npooling = \"cls\"", "fixed head"),
        ("[slots.nonsense]\nenabled = false", "semantic"),
        ("[models.x]\npath = \"a\"\nhf_repo = \"o/n\"", "exactly one"),
        ("[fusion]\ntop_k = 13", "top_k"),
        ("[fusion.weights]\nsemantic = -1.0", "non-negative"),
        ("[temporal]\nhalf_lives_hours = []", "half_lives_hours"),
        ("[temporal]\npositional_dim = 5", "positional_dim"),
        ("device = \"tpu\"", "unknown variant"),
    ];
    for (text, needle) in bad {
        let err = PipelineConfig::from_toml_str(text).unwrap_err();
        assert!(
            matches!(err, LoadError::Config(_) | LoadError::OutOfRange { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    let doc_example = r#"
models_dir = "/srv/models"
max_batch_size = 32
device = "cpu"
builtin_tokenizer = "default"
[input]
truncation = "truncate"
empty_text = "embed"
[models.default]
path = "all-MiniLM-L6-v2"
[models.code]
hf_repo = "microsoft/codebert-base"
revision = "main"
max_seq_length = 512
[slots.code]
model = "code"
pooling = "cls"
[slots.graph]
enabled = false
[temporal]
reference_time = "2025-01-01T00:00:00Z"
half_lives_hours = [1, 24, 168, 720]
periodic_harmonics = 4
positional_dim = 64
[hdc]
dim = 1024
max_ngram = 3
[late_interaction]
project_dim = 128
[fusion]
dim = 1536
top_k = 8
weights = { semantic = 2.0, hdc = 0.5 }
"#;
    let c = PipelineConfig::from_toml_str(doc_example).unwrap();
    assert!(!c.slot(ModelId::Graph).enabled);
    assert_eq!(c.slot_model(ModelId::Code), "code");
    assert_eq!(c.slot_model(ModelId::Entity), "default");
    let round = toml::to_string(&c).unwrap();
    assert_eq!(PipelineConfig::from_toml_str(&round).unwrap(), c);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[fusion]\ndim = 0").unwrap();
    let err = EmbeddingPipeline::builder()
        .config_file(file.path())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("fusion.dim"), "{err}");
}

#[test]
fn no_slot_and_cuda_without_feature_are_typed_errors() {
    let err = EmbeddingPipeline::builder().only(&[]).build().unwrap_err();
    assert!(matches!(err, LoadError::NoSlotLoaded(_)), "{err}");
    let err = EmbeddingPipeline::builder()
        .model("default", ModelSource::path("/nonexistent"))
        .only(&[ModelId::Semantic])
        .build()
        .unwrap_err();
    assert!(
        matches!(err, LoadError::NoSlotLoaded(ref m) if m.contains("semantic")),
        "{err}"
    );
    if !cfg!(feature = "cuda") || !embeddings_pipeline::cuda_driver_present() {
        let err = EmbeddingPipeline::builder()
            .device(DeviceKind::Cuda)
            .only(&TEMPORAL)
            .build()
            .unwrap_err();
        assert!(matches!(err, LoadError::DeviceUnavailable(_)), "{err}");
    }
}

#[test]
fn every_numeric_key_is_held_to_its_range_with_a_typed_error() {
    // Values that once panicked the loader (a preallocating queue) or
    // wrapped multiplications: refused at build time, naming key and range.
    let huge = 9_000_000_000_000_000_000_u64;
    for (text, key) in [
        (
            format!("[batching]\nqueue_capacity = {huge}"),
            "batching.queue_capacity",
        ),
        (format!("max_batch_size = {huge}"), "max_batch_size"),
        (format!("max_forward_tokens = {huge}"), "max_forward_tokens"),
        (format!("[hdc]\ndim = {huge}"), "hdc.dim"),
        ("[hdc]\nmax_ngram = 99".to_owned(), "hdc.max_ngram"),
        (format!("[fusion]\ndim = {huge}"), "fusion.dim"),
        (
            format!("[fusion]\nsparse_hash_dim = {huge}"),
            "fusion.sparse_hash_dim",
        ),
        (
            format!("[late_interaction]\nproject_dim = {huge}"),
            "late_interaction.project_dim",
        ),
        (
            format!("[temporal]\nperiodic_harmonics = {huge}"),
            "temporal.periodic_harmonics",
        ),
        (
            format!("[temporal]\npositional_dim = {huge}"),
            "temporal.positional_dim",
        ),
        (format!("[cache]\nmax_bytes = {huge}"), "cache.max_bytes"),
        (
            format!("[models.default]\npath = \"m\"\nmax_seq_length = {huge}"),
            "models.default.max_seq_length",
        ),
    ] {
        let err = PipelineConfig::from_toml_str(&text).unwrap_err();
        let LoadError::OutOfRange {
            key: got, value, ..
        } = &err
        else {
            panic!("{text}: expected OutOfRange, got {err:?}");
        };
        assert_eq!(got, key, "{text}");
        assert!(text.contains(value.as_str()), "{text}: {value}");
        let message = err.to_string();
        assert!(
            message.contains(key) && message.contains("..="),
            "{message}"
        );
    }
    // The defaults are inside every range.
    PipelineConfig::default().validate().unwrap();
}

#[test]
fn a_model_config_json_outside_its_ranges_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_tiny_bert(&dir, 8);
    let path = dir.join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (field, value) in [
        ("num_hidden_layers", 1_000_000_u64),
        ("hidden_size", 1 << 40),
        ("intermediate_size", 1 << 40),
        ("vocab_size", 0),
    ] {
        let mut c = config.clone();
        c[field] = serde_json::json!(value);
        std::fs::write(&path, c.to_string()).unwrap();
        let e = failure_of(&dir);
        assert!(
            matches!(e, LoadError::BadModelConfig { .. }),
            "{field}: {e:?}"
        );
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}
