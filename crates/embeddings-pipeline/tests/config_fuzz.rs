//! Random configurations and random model `config.json` values through the
//! loader: never a panic, always a typed error or a working pipeline.

#![allow(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

mod common;

use common::{TEMPORAL, write_tiny_bert};
use embeddings_pipeline::{EmbeddingPipeline, ModelId, PipelineConfig};
use proptest::prelude::*;

/// A numeric value from every region that matters: 0, small, around the
/// ranges' edges, huge, negative (TOML integers are signed).
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(-1),
        0..64i64,
        1_000..100_000i64,
        Just(65_536),
        Just(65_537),
        Just(1 << 40),
        Just(i64::MAX),
    ]
}

/// The numeric keys, in their TOML tables.
const KEYS: &[(&str, &str)] = &[
    ("", "max_batch_size"),
    ("", "max_forward_tokens"),
    ("batching", "queue_capacity"),
    ("batching", "max_batch_size"),
    ("batching", "max_batch_tokens"),
    ("batching", "max_wait_ms"),
    ("batching", "workers"),
    ("cache", "max_bytes"),
    ("temporal", "periodic_harmonics"),
    ("temporal", "positional_dim"),
    ("hdc", "dim"),
    ("hdc", "max_ngram"),
    ("late_interaction", "project_dim"),
    ("fusion", "dim"),
    ("fusion", "top_k"),
    ("fusion", "sparse_hash_dim"),
];

fn toml_of(values: &[(usize, i64)]) -> String {
    let mut top = String::new();
    let mut tables: std::collections::BTreeMap<&str, String> = Default::default();
    for &(k, v) in values {
        let (table, key) = KEYS[k % KEYS.len()];
        let line = format!("{key} = {v}\n");
        if table.is_empty() {
            if !top.contains(&format!("{key} =")) {
                top.push_str(&line);
            }
        } else {
            let t = tables.entry(table).or_default();
            if !t.contains(&format!("\n{key} =")) && !t.starts_with(&format!("{key} =")) {
                t.push_str(&line);
            }
        }
    }
    for (table, body) in tables {
        top.push_str(&format!("[{table}]\n{body}"));
    }
    top
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_configurations_are_a_typed_error_or_a_working_pipeline(
        values in proptest::collection::vec((0..KEYS.len(), number()), 0..6),
    ) {
        let text = toml_of(&values);
        let parsed = PipelineConfig::from_toml_str(&text);
        // i64::MAX is beyond every key's range: such a configuration is
        // refused. (Checked on the text: a key repeated in `values` is
        // written once, so a later i64::MAX for it may not be in it.)
        if text.contains(&i64::MAX.to_string()) {
            prop_assert!(parsed.is_err(), "{text}");
        }
        let Ok(config) = parsed else {
            return Ok(()); // a typed error
        };
        // Valid: it builds (built-in slots only, to stay fast) and embeds.
        let built = EmbeddingPipeline::builder()
            .config(config)
            .only(&TEMPORAL)
            .warm_up(false)
            .build();
        if let Ok(pipeline) = built {
            let out = pipeline.embed_texts(&["x"]).unwrap();
            prop_assert!(out[0].dense(ModelId::TemporalRecent).is_some());
        }
    }

    #[test]
    fn random_model_config_json_values_are_a_typed_error_or_a_working_model(
        field in prop::sample::select(vec![
            "hidden_size", "num_attention_heads", "num_hidden_layers",
            "intermediate_size", "vocab_size", "max_position_embeddings",
            "type_vocab_size",
        ]),
        value in number(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        write_tiny_bert(&dir, 8);
        let path = dir.join("config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json[field] = serde_json::json!(value);
        std::fs::write(&path, json.to_string()).unwrap();
        let config = PipelineConfig::from_toml_str(&format!(
            "[models.default]\npath = {:?}\n",
            dir.display().to_string()
        ))
        .unwrap();
        // Either the slot fails to load with a typed reason, or it embeds.
        let pipeline = EmbeddingPipeline::builder()
            .config(config)
            .only(&[ModelId::Semantic, ModelId::TemporalRecent])
            .warm_up(false)
            .build()
            .unwrap();
        if pipeline.describe().slot(ModelId::Semantic).state == embeddings_pipeline::SlotState::Loaded {
            let out = pipeline.embed_texts(&["hello world"]).unwrap();
            prop_assert!(out[0].dense(ModelId::Semantic).is_some());
        }
    }
}
