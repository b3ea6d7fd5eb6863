//! Admission by work: the token budget of the queue and the bound on the
//! size of an answer, both decided before any work, each refusal counted
//! once. A tiny random checkpoint (`max_seq_length` 128) with the MiniLM
//! tokenizer; workers paused so the queue's state is deterministic.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::write_tiny_bert;
use embeddings_pipeline::{
    BatchingConfig, EmbedInput, EmbedOptions, EmbeddingPipeline, ErrorKind, ModelId, ModelSource,
    PipelineError,
};

const H: usize = 16;

fn pipeline(dir: &Path, slots: &[ModelId], batching: BatchingConfig) -> EmbeddingPipeline {
    write_tiny_bert(dir, H);
    EmbeddingPipeline::builder()
        .model("default", ModelSource::path(dir))
        .only(slots)
        .batching(batching)
        .cache_max_bytes(0)
        .start_paused(true)
        .build()
        .unwrap()
}

fn one(text: &str) -> Vec<EmbedInput> {
    vec![EmbedInput::new(text)]
}

fn errors(p: &EmbeddingPipeline, kind: ErrorKind) -> u64 {
    p.metrics()
        .snapshot()
        .errors_by_kind
        .get(&kind)
        .copied()
        .unwrap_or(0)
}

#[test]
fn the_queue_admits_by_tokens_and_refuses_what_would_overflow_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget = BatchingConfig {
        token_budget: 100,
        ..BatchingConfig::default()
    };
    let p = pipeline(dir.path(), &[ModelId::Semantic], budget);
    let opts = EmbedOptions::default;

    // "hello": 5 bytes + 2 special tokens.
    let a = p.submit(one("hello"), opts()).unwrap();
    assert_eq!(p.tokens_admitted(), 7);
    // 90 bytes: 92 tokens at most, under the checkpoint's 128.
    let b = p.submit(one(&"x".repeat(90)), opts()).unwrap();
    assert_eq!(p.tokens_admitted(), 99);

    let refused = p.submit(one("hi"), opts()).unwrap_err();
    assert_eq!(
        refused,
        PipelineError::OverBudget {
            tokens: 4,
            in_use: 99,
            budget: 100,
            // Nothing has drained yet: no retry delay is made up.
            retry_after: None,
        }
    );
    assert_eq!(refused.kind(), ErrorKind::Overload);
    assert!(refused.to_string().contains("token budget"), "{refused}");
    assert_eq!(errors(&p, ErrorKind::Overload), 1);
    assert_eq!(p.metrics().snapshot().gauges.queue_depth, 2);

    // Longer than the checkpoint takes: 128 tokens, more than the whole
    // budget. A client error, whatever the queue holds.
    let too_large = p.submit(one(&"y".repeat(1000)), opts()).unwrap_err();
    assert_eq!(
        too_large,
        PipelineError::RequestTooLarge {
            tokens: 128,
            budget: 100
        }
    );
    assert_eq!(too_large.kind(), ErrorKind::Validation);
    assert_eq!(errors(&p, ErrorKind::Validation), 1);

    p.start_workers();
    a.wait().unwrap();
    b.wait().unwrap();
    // Given back before the answers went out.
    assert_eq!(p.tokens_admitted(), 0);
}

#[test]
fn a_refusal_after_work_drained_carries_a_retry_delay() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        &[ModelId::Semantic],
        BatchingConfig {
            token_budget: 10,
            ..BatchingConfig::default()
        },
    );
    p.start_workers();
    // 8 + 2 = 10 tokens: the whole budget, drained once.
    p.submit(one("abcdefgh"), EmbedOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    // Hold the whole budget with a request that stays queued: the worker
    // is busy only briefly, so hold it by submitting until one is refused.
    let mut held = Vec::new();
    let refusal = loop {
        match p.submit(one("abcdefgh"), EmbedOptions::default()) {
            Ok(ticket) => held.push(ticket),
            Err(e) => break e,
        }
        assert!(held.len() < 10_000, "the budget never filled");
    };
    let PipelineError::OverBudget { retry_after, .. } = refusal else {
        panic!("over budget expected, got {refusal:?}");
    };
    let after = retry_after.expect("10 tokens drained within the window");
    assert!(
        (1..=60).contains(&after.as_secs()),
        "a delay of 1 to 60 s: {after:?}"
    );
    for t in held {
        t.wait().unwrap();
    }
}

#[test]
fn an_answer_larger_than_allowed_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    // Three inputs of one dense slot of width H: 3 × H floats.
    let limit = |max| BatchingConfig {
        max_response_floats: max,
        ..BatchingConfig::default()
    };
    let p = pipeline(dir.path(), &[ModelId::Semantic], limit(3 * H - 1));
    let three = vec![
        EmbedInput::new("a"),
        EmbedInput::new("b"),
        EmbedInput::new("c"),
    ];
    let semantic = || EmbedOptions::only([ModelId::Semantic]);
    let err = p.submit(three.clone(), semantic()).unwrap_err();
    assert_eq!(
        err,
        PipelineError::ResponseTooLarge {
            inputs: 3,
            floats: 3 * H,
            max: 3 * H - 1
        }
    );
    assert!(err.to_string().contains("max_response_floats"), "{err}");
    let snap = p.metrics().snapshot();
    assert_eq!(snap.errors_by_kind[&ErrorKind::Validation], 1);
    assert_eq!(snap.gauges.queue_depth, 0, "nothing was queued");
    assert_eq!(p.tokens_admitted(), 0);
    p.shutdown();

    let p = pipeline(dir.path(), &[ModelId::Semantic], limit(3 * H));
    p.start_workers();
    let answer = p.submit(three, semantic()).unwrap().wait().unwrap();
    assert_eq!(
        answer.embeddings.len(),
        3,
        "exactly at the limit is allowed"
    );
}

#[test]
fn per_token_answers_are_bounded_by_the_length_of_each_input() {
    let dir = tempfile::tempdir().unwrap();
    // "abc": at most 5 tokens of width H.
    let p = pipeline(
        dir.path(),
        &[ModelId::LateInteraction],
        BatchingConfig {
            max_response_floats: 5 * H - 1,
            ..BatchingConfig::default()
        },
    );
    let err = p
        .submit(one("abc"), EmbedOptions::only([ModelId::LateInteraction]))
        .unwrap_err();
    assert_eq!(
        err,
        PipelineError::ResponseTooLarge {
            inputs: 1,
            floats: 5 * H,
            max: 5 * H - 1
        }
    );
}
