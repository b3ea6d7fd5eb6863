//! Shared test helpers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use chrono::{DateTime, Utc};
use embeddings_pipeline::ModelId;

/// `$EMBEDDINGS_MODELS_DIR`, else `<crate>/../../models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("EMBEDDINGS_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"),
            PathBuf::from,
        )
}

pub fn minilm_dir() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Writes a tiny random BERT (hidden `h`, one layer) into `dir`, with the real
/// MiniLM tokenizer, so tests that need *a* model run in milliseconds.
pub fn write_tiny_bert(dir: &Path, h: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = 30522;
    let inter = 2 * h;
    let config = serde_json::json!({
        "vocab_size": vocab, "hidden_size": h, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": inter, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "max_position_embeddings": 512, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "model_type": "bert"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 128}"#,
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: &str, shape: &[usize]| {
        let x = Tensor::randn(0f32, 0.5, shape, &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        t.insert(name.to_owned(), x);
    };
    add("embeddings.word_embeddings.weight", &[vocab, h]);
    add("embeddings.position_embeddings.weight", &[512, h]);
    add("embeddings.token_type_embeddings.weight", &[2, h]);
    for n in [
        "embeddings.LayerNorm",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.0.output.LayerNorm",
    ] {
        add(&format!("{n}.weight"), &[h]);
        add(&format!("{n}.bias"), &[h]);
    }
    for n in ["query", "key", "value"] {
        add(
            &format!("encoder.layer.0.attention.self.{n}.weight"),
            &[h, h],
        );
        add(&format!("encoder.layer.0.attention.self.{n}.bias"), &[h]);
    }
    add("encoder.layer.0.attention.output.dense.weight", &[h, h]);
    add("encoder.layer.0.attention.output.dense.bias", &[h]);
    add("encoder.layer.0.intermediate.dense.weight", &[inter, h]);
    add("encoder.layer.0.intermediate.dense.bias", &[inter]);
    add("encoder.layer.0.output.dense.weight", &[h, inter]);
    add("encoder.layer.0.output.dense.bias", &[h]);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

/// Copies (symlinks where possible) every file of the MiniLM folder into `dst`.
pub fn link_minilm(dst: &Path) {
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        let src = minilm_dir().join(f);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&src, dst.join(f)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&src, dst.join(f)).unwrap();
    }
}

/// Copies the MiniLM folder into `dst` with one weight tensor changed
/// (see [`embeddings_tests::altered_model`]).
pub fn altered_minilm(dst: &Path, tensor: &str, change: fn(f32, usize) -> f32) {
    embeddings_tests::altered_model(&minilm_dir(), dst, tensor, change);
}

/// The three temporal slots.
pub const TEMPORAL: [ModelId; 3] = [
    ModelId::TemporalRecent,
    ModelId::TemporalPeriodic,
    ModelId::TemporalPositional,
];

/// A fixed instant for deterministic temporal features.
pub fn t0() -> DateTime<Utc> {
    "2024-03-14T15:09:26Z".parse().unwrap()
}
