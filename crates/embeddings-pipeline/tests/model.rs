//! Tests against the real all-MiniLM-L6-v2 checkpoint.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a failed unwrap is a failed test

mod common;

use std::sync::{Arc, OnceLock};

use common::{dot, link_minilm, minilm_dir, models_dir, norm};
use embeddings_pipeline::{
    Backend, EmbedInput, EmbeddingPipeline, ErrorKind, HeadKind, InputError, LoadError, ModelId,
    ModelSource, PipelineConfig, PipelineError, SlotOutput, SlotState, cosine,
};

#[derive(serde::Deserialize)]
struct Reference {
    items: Vec<RefItem>,
}
#[derive(serde::Deserialize)]
struct RefItem {
    text: String,
    tokens_after_truncation: usize,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One full 12-slot pipeline per test binary.
fn full() -> &'static EmbeddingPipeline {
    static P: OnceLock<EmbeddingPipeline> = OnceLock::new();
    P.get_or_init(|| {
        EmbeddingPipeline::builder()
            .models_dir(models_dir())
            .reference_time("2024-06-01T12:00:00Z".parse().unwrap())
            .strict(true)
            .build()
            .unwrap()
    })
}

const SENTENCES: [&str; 6] = [
    "Heavy rain caused severe flooding in the valley.",
    "The flooding destroyed the harvest and the farmers lost their income.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market crashed after the interest rate hike.",
    "fn main() { println!(\"hello\"); }",
];

#[test]
fn semantic_matches_sentence_transformers_batched_and_single() {
    let r = reference();
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    let texts: Vec<&str> = r.items.iter().map(|i| i.text.as_str()).collect();
    let batched = p.embed_texts(&texts).unwrap();
    for (item, out) in r.items.iter().zip(&batched) {
        let v = out.dense(ModelId::Semantic).unwrap();
        let c = cosine(v, &item.embedding);
        println!("batched cos {c:.7} {:?}", item.text);
        assert!(c >= 0.9999, "batched cos {c} for {:?}", item.text);
        assert_eq!(
            out.token_count(),
            item.tokens_after_truncation,
            "{:?}",
            item.text
        );
        let single = p.embed_texts(&[item.text.as_str()]).unwrap();
        let c1 = cosine(single[0].dense(ModelId::Semantic).unwrap(), &item.embedding);
        println!("single  cos {c1:.7}");
        assert!(c1 >= 0.9999, "single cos {c1} for {:?}", item.text);
    }
    // The full pipeline gives the same Semantic vectors.
    let all = full().embed_texts(&texts).unwrap();
    for (item, out) in r.items.iter().zip(&all) {
        assert!(cosine(out.dense(ModelId::Semantic).unwrap(), &item.embedding) >= 0.9999);
    }
}

#[test]
fn every_slot_has_the_right_shape_is_finite_unit_and_deterministic() {
    let p = full();
    let inputs: Vec<EmbedInput> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            EmbedInput::new(*s)
                .with_timestamp_rfc3339("2024-05-30T08:15:00Z")
                .unwrap()
                .with_position(i as u64)
        })
        .collect();
    let a = p.embed(&inputs).unwrap();
    let b = p.embed(&inputs).unwrap();
    assert_eq!(a, b, "deterministic");
    let finite_unit = |v: &[f32], what: &str| {
        assert!(v.iter().all(|x| x.is_finite()), "{what} finite");
        assert!((norm(v) - 1.0).abs() < 1e-4, "{what} norm {}", norm(v));
    };
    for out in &a {
        assert_eq!(out.iter().count(), 12);
        for (id, o) in out.iter() {
            assert_eq!(o.dim(), p.describe().slot(id).dim.unwrap(), "{id} dim");
            match o {
                SlotOutput::Dense(v) => finite_unit(v, id.as_str()),
                SlotOutput::Causal(c) => {
                    finite_unit(&c.cause, "cause");
                    finite_unit(&c.effect, "effect");
                    assert_eq!(c.cause.len(), 384);
                }
                SlotOutput::Sparse(s) => {
                    finite_unit(&s.values, "sparse");
                    assert!(s.values.iter().all(|v| *v > 0.0));
                    assert!(s.indices.windows(2).all(|w| w[0] < w[1]));
                    assert!(s.indices.iter().all(|i| (*i as usize) < s.dim));
                    assert_eq!(s.dim, 30522);
                }
                SlotOutput::PerToken(t) => {
                    assert_eq!(t.dim(), 384);
                    assert_eq!(t.len(), out.token_count());
                    for tok in t.iter() {
                        finite_unit(tok, "token");
                    }
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(out.dense(ModelId::Semantic).unwrap().len(), 384);
        assert_eq!(out.dense(ModelId::TemporalRecent).unwrap().len(), 16);
        assert_eq!(out.dense(ModelId::TemporalPeriodic).unwrap().len(), 24);
        assert_eq!(out.dense(ModelId::TemporalPositional).unwrap().len(), 64);
        assert_eq!(out.dense(ModelId::Hdc).unwrap().len(), 1024);
        finite_unit(out.fused().unwrap(), "fused");
        assert_eq!(out.fused().unwrap().len(), 1536);
    }
}

#[test]
fn causal_heads_are_asymmetric() {
    let out = full().embed_texts(&SENTENCES[..2]).unwrap();
    let (a, b) = (out[0].causal().unwrap(), out[1].causal().unwrap());
    let ab = dot(&a.cause, &b.effect);
    let ba = dot(&b.cause, &a.effect);
    assert!(
        (ab - ba).abs() > 1e-3,
        "cause(A)·effect(B) = {ab}, cause(B)·effect(A) = {ba}"
    );
    assert!(cosine(&a.cause, &a.effect) < 0.9999, "heads differ");
    // Both heads live in the semantic space.
    assert!(cosine(&a.cause, out[0].dense(ModelId::Semantic).unwrap()) > 0.8);
}

#[test]
fn shared_checkpoint_runs_once_and_identical_heads_share_output() {
    let p = full();
    let out = p.embed_texts(&SENTENCES[2..4]).unwrap();
    let get = |id| match out[0].get(id).unwrap() {
        SlotOutput::Dense(v) => v.clone(),
        _ => unreachable!(),
    };
    let sem = get(ModelId::Semantic);
    for id in [
        ModelId::Code,
        ModelId::Graph,
        ModelId::Multimodal,
        ModelId::Entity,
    ] {
        assert!(Arc::ptr_eq(&sem, &get(id)), "{id} shares Semantic's vector");
    }
    let reg = p.describe();
    let s = reg.slot(ModelId::Semantic);
    assert_eq!(
        s.output_shared_with,
        vec![
            ModelId::Code,
            ModelId::Graph,
            ModelId::Multimodal,
            ModelId::Entity
        ]
    );
    assert!(s.trunk_shared_with.contains(&ModelId::Causal));
    assert!(s.trunk_shared_with.contains(&ModelId::LateInteraction));
    assert!(!s.is_dedicated());
    assert_eq!(
        reg.slot(ModelId::Causal).backend,
        Backend::Transformer {
            model: "default".into(),
            head: HeadKind::Causal
        }
    );
    let m = &reg.models[0];
    assert_eq!(m.hidden, Some(384));
    assert_eq!(m.max_seq_length, Some(256));
    assert!(m.weight_bytes > 80_000_000, "{}", m.weight_bytes);
    let text = reg.to_string();
    assert!(text.contains("shares trunk with"), "{text}");
    println!("{text}");
}

#[test]
fn a_dedicated_checkpoint_is_reported_and_still_matches() {
    let tmp = tempfile::tempdir().unwrap();
    link_minilm(&tmp.path().join("copy"));
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .only(&[ModelId::Semantic, ModelId::Code])
        .model("codeish", ModelSource::path(tmp.path().join("copy")))
        .bind(ModelId::Code, "codeish")
        .build()
        .unwrap();
    let reg = p.describe();
    assert!(reg.slot(ModelId::Code).is_dedicated());
    assert!(reg.slot(ModelId::Semantic).is_dedicated());
    let out = p.embed_texts(&["A man is eating food."]).unwrap();
    let (s, c) = (
        out[0].dense(ModelId::Semantic).unwrap(),
        out[0].dense(ModelId::Code).unwrap(),
    );
    assert!(cosine(s, c) > 0.99999);
}

#[test]
fn missing_model_dir_fails_only_its_slot() {
    let p = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .model("gone", ModelSource::path("/nonexistent/model"))
        .bind(ModelId::Code, "gone")
        .build()
        .unwrap();
    let reg = p.describe();
    match &reg.slot(ModelId::Code).state {
        SlotState::Failed(LoadError::ModelDirNotFound { model, .. }) => {
            assert_eq!(model, "gone")
        }
        other => panic!("unexpected {other:?}"),
    }
    let failed: Vec<_> = reg.failed().map(|(id, _)| id).collect();
    assert_eq!(failed, vec![ModelId::Code]);
    assert!(reg.to_string().contains("cargo xtask fetch-models"));
    let out = p.embed_texts(&["still works"]).unwrap();
    assert!(out[0].get(ModelId::Code).is_none());
    assert!(out[0].dense(ModelId::Semantic).is_some());
    assert!(out[0].fused().is_some());
    // Strict mode turns it into an error.
    let err = EmbeddingPipeline::builder()
        .models_dir(models_dir())
        .model("gone", ModelSource::path("/nonexistent/model"))
        .bind(ModelId::Code, "gone")
        .strict(true)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::SlotFailed {
                slot: ModelId::Code,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn hugging_face_cache_layout_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp
        .path()
        .join("hub/models--sentence-transformers--all-MiniLM-L6-v2");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    link_minilm(&repo.join("snapshots").join(rev));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let text = format!(
        "[models.default]\nhf_repo = \"sentence-transformers/all-MiniLM-L6-v2\"\nhf_home = \"{}\"\n[fusion]\nenabled = false\n",
        tmp.path().display()
    );
    let config = PipelineConfig::from_toml_str(&text).unwrap();
    let p = EmbeddingPipeline::builder()
        .config(config)
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    assert_eq!(
        p.describe().models[0].dir.as_deref(),
        Some(repo.join("snapshots").join(rev).as_path())
    );
    let r = reference();
    let out = p.embed_texts(&[r.items[0].text.as_str()]).unwrap();
    assert!(
        cosine(
            out[0].dense(ModelId::Semantic).unwrap(),
            &r.items[0].embedding
        ) >= 0.9999
    );
    // Without refs/main, the only snapshot is used; a wrong revision is a typed error.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let src = ModelSource::hf(
        "sentence-transformers/all-MiniLM-L6-v2",
        Some(tmp.path().into()),
    );
    assert!(
        EmbeddingPipeline::builder()
            .model("default", src.clone())
            .only(&[ModelId::Semantic])
            .build()
            .is_ok()
    );
    let bad = ModelSource {
        revision: Some("v9".into()),
        ..src
    };
    let err = EmbeddingPipeline::builder()
        .model("default", bad)
        .only(&[ModelId::Semantic])
        .build()
        .unwrap_err();
    assert!(
        matches!(err, LoadError::NoSlotLoaded(ref m) if m.contains("revision `v9`")),
        "{err}"
    );
}

#[test]
fn long_text_truncates_by_default_and_rejects_when_configured() {
    let long = "word ".repeat(600);
    let p = full();
    let out = p.embed_texts(&[long.as_str(), "short"]).unwrap();
    assert_eq!(out[0].token_count(), 256);
    assert!(out[0].truncated());
    assert!(!out[1].truncated());
    // Sparse and Hdc see the whole text.
    assert!(out[0].sparse().unwrap().values.len() == 1);

    let config = PipelineConfig::from_toml_str("[input]\ntruncation = \"reject\"").unwrap();
    let strict = EmbeddingPipeline::builder()
        .config(config)
        .models_dir(models_dir())
        .only(&[ModelId::Semantic])
        .build()
        .unwrap();
    let inputs = [
        EmbedInput::new("fine"),
        EmbedInput::new(long.clone()),
        EmbedInput::new("also fine"),
    ];
    let err = strict.embed(&inputs).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::InvalidInput {
                index: 1,
                reason: InputError::TooLong {
                    tokens: 602,
                    max: 256,
                    ..
                }
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Validation);
    let each = strict.embed_each(&inputs).unwrap();
    assert!(each[0].is_ok() && each[1].is_err() && each[2].is_ok());
    // Neighbours are unaffected by the rejected item.
    let alone = strict.embed_texts(&["fine"]).unwrap();
    assert_eq!(
        each[0].as_ref().unwrap().dense(ModelId::Semantic),
        alone[0].dense(ModelId::Semantic)
    );
}

#[test]
fn empty_text_and_empty_batch() {
    let p = full();
    assert!(p.embed(&[]).unwrap().is_empty());
    let out = p.embed_texts(&["", "   "]).unwrap();
    assert_eq!(out[0].token_count(), 2);
    assert!(out[0].sparse().unwrap().indices.is_empty());
    assert!((norm(out[0].dense(ModelId::Semantic).unwrap()) - 1.0).abs() < 1e-4);
    assert!((norm(out[0].dense(ModelId::Hdc).unwrap()) - 1.0).abs() < 1e-4);
    assert!(out[0].fused().unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn late_interaction_projection_to_128() {
    let config = PipelineConfig::from_toml_str("[late_interaction]\nproject_dim = 128").unwrap();
    let p = EmbeddingPipeline::builder()
        .config(config)
        .models_dir(models_dir())
        .only(&[ModelId::LateInteraction, ModelId::Semantic])
        .build()
        .unwrap();
    let out = p.embed_texts(&SENTENCES[2..4]).unwrap();
    let (q, d) = (out[0].per_token().unwrap(), out[1].per_token().unwrap());
    assert_eq!(q.dim(), 128);
    assert_eq!(p.describe().slot(ModelId::LateInteraction).dim, Some(128));
    for t in q.iter() {
        assert!((norm(t) - 1.0).abs() < 1e-4);
    }
    let self_sim = q.max_sim(q);
    assert!((self_sim - q.len() as f32).abs() < 1e-3);
    assert!(q.max_sim(d) < self_sim);
}

#[test]
fn tokenizer_json_is_present_for_the_default_model() {
    assert!(
        minilm_dir().join("tokenizer.json").is_file(),
        "set EMBEDDINGS_MODELS_DIR"
    );
}

#[test]
fn tokenize_reports_each_token_and_decode_reverses_it() {
    let p = full();
    let tokens = p.tokenize(ModelId::Semantic, "Hello world", true).unwrap();
    let texts: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["[CLS]", "Hello", "world", "[SEP]"]);
    assert!(tokens[0].special && tokens[0].start.is_none());
    assert_eq!((tokens[1].start, tokens[1].stop), (Some(0), Some(5)));
    assert_eq!((tokens[2].start, tokens[2].stop), (Some(6), Some(11)));
    let plain = p.tokenize(ModelId::Semantic, "Hello world", false).unwrap();
    assert_eq!(plain.len(), 2, "no special tokens when not asked");
    let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    assert_eq!(
        p.decode(ModelId::Semantic, &ids, true).unwrap(),
        "hello world"
    );
    assert_eq!(
        p.decode(ModelId::Semantic, &ids, false).unwrap(),
        "[CLS] hello world [SEP]"
    );
    assert_eq!(p.max_input_tokens(ModelId::Semantic), Some(256));
    assert_eq!(
        p.max_input_tokens(ModelId::Sparse),
        None,
        "built-in: any length"
    );
    assert!(matches!(
        p.tokenize(ModelId::TemporalRecent, "x", true),
        Err(PipelineError::SlotUnavailable { .. })
    ));
}

#[test]
fn left_truncation_keeps_the_end_and_pre_norm_gives_the_raw_pooling() {
    use embeddings_pipeline::{EmbedOptions, TruncationDirection};
    let p = full();
    let long = format!("{}{}", "apple ".repeat(200), "orange ".repeat(200));
    let tail = format!("{}{}", "apple ".repeat(54), "orange ".repeat(200));
    let semantic = || EmbedOptions::only([ModelId::Semantic]);
    let embed = |text: &str, options: EmbedOptions| {
        p.submit(vec![EmbedInput::new(text)], options)
            .unwrap()
            .wait()
            .unwrap()
            .embeddings
            .remove(0)
    };
    let left = embed(
        &long,
        semantic().with_truncation_direction(TruncationDirection::Left),
    );
    let right = embed(&long, semantic());
    let kept = embed(&tail, semantic());
    let l = left.dense(ModelId::Semantic).unwrap();
    assert!(left.truncated());
    assert!(
        l.iter()
            .zip(kept.dense(ModelId::Semantic).unwrap())
            .all(|(a, b)| (a - b).abs() < 1e-6),
        "Left keeps the last 254 words"
    );
    assert!(
        dot(l, right.dense(ModelId::Semantic).unwrap()) < 0.999,
        "and differs from Right"
    );
    // The mean pooling's own length: positive, not 1, and only for pooled slots.
    let n = left.pre_norm(ModelId::Semantic).unwrap();
    assert!(n.is_finite() && n > 0.0 && (n - 1.0).abs() > 1e-3, "{n}");
    let all = embed("hello", EmbedOptions::default());
    assert!(all.pre_norm(ModelId::Semantic).is_some());
    assert!(all.pre_norm(ModelId::Sparse).is_none());
    assert!(all.pre_norm(ModelId::LateInteraction).is_none());
}
