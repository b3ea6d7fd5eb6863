//! The serving layer: queue, dynamic batching, instrumentation, cache,
//! health, async API and slot subsets. Uses built-in slots and tiny random
//! checkpoints (only the MiniLM tokenizer is borrowed), so these run fast.
//! Nothing here sleeps or asserts on wall-clock time: queue states are made
//! deterministic by building with the workers paused.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a failed unwrap is a failed test

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use chrono::{DateTime, Duration, Utc};
use common::{TEMPORAL, t0, write_tiny_bert};
use embeddings_health::{HealthRule, Verdict};
use embeddings_pipeline::{
    BatchingConfig, EmbedInput, EmbedOptions, EmbeddingPipeline, ErrorKind, InputError, ModelId,
    ModelSource, PipelineBuilder, PipelineConfig, PipelineError, PipelineMetrics, cosine,
};
use embeddings_types::Stage;

fn batching(queue_capacity: usize) -> BatchingConfig {
    BatchingConfig {
        queue_capacity,
        ..BatchingConfig::default()
    }
}

/// Built-in temporal slots only: no model files needed.
fn temporal() -> PipelineBuilder {
    EmbeddingPipeline::builder()
        .only(&TEMPORAL)
        .reference_time(t0())
}

fn tiny(dir: &Path) -> PipelineBuilder {
    EmbeddingPipeline::builder()
        .model("default", ModelSource::path(dir))
        .reference_time(t0())
}

fn inputs(prefix: &str, n: u64) -> Vec<EmbedInput> {
    (0..n)
        .map(|i| EmbedInput::new(format!("{prefix} {i}")).with_position(i))
        .collect()
}

/// A minimal executor: polls on the test thread, parks until woken (the
/// wake comes from a worker thread).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn a_full_queue_refuses_at_once_and_drains_after_start() {
    let p = temporal()
        .batching(batching(2))
        .cache_max_bytes(0)
        .start_paused(true)
        .build()
        .unwrap();
    let a = p.submit(inputs("a", 1), EmbedOptions::default()).unwrap();
    let b = p.submit(inputs("b", 3), EmbedOptions::default()).unwrap();
    assert!(!a.is_ready());
    let err = p
        .submit(inputs("c", 1), EmbedOptions::default())
        .unwrap_err();
    assert_eq!(err, PipelineError::Overloaded { capacity: 2 });
    assert_eq!(err.kind(), ErrorKind::Overload);
    assert!(err.to_string().contains("queue_capacity"), "{err}");
    let snap = p.metrics().snapshot();
    assert_eq!(snap.gauges.queue_depth, 2);
    assert_eq!(snap.errors_by_kind[&ErrorKind::Overload], 1);

    p.start_workers();
    assert_eq!(a.wait().unwrap().embeddings.len(), 1);
    let b = b.wait().unwrap();
    assert_eq!(b.embeddings.len(), 3);
    assert!(b.timings.total >= b.timings.queue_wait);
    // Room again.
    let c = p.submit(inputs("c", 1), EmbedOptions::default()).unwrap();
    assert_eq!(c.wait().unwrap().embeddings.len(), 1);
    assert_eq!(p.metrics().snapshot().gauges.queue_depth, 0);
}

#[test]
fn dynamic_batching_groups_queued_submissions() {
    let p = temporal()
        .cache_max_bytes(0)
        .start_paused(true)
        .build()
        .unwrap();
    let tickets: Vec<_> = (0..8)
        .map(|i| {
            p.submit(inputs(&format!("job {i}"), 1), EmbedOptions::default())
                .unwrap()
        })
        .collect();
    p.start_workers();
    for t in tickets {
        assert_eq!(t.wait().unwrap().embeddings.len(), 1);
    }
    let snap = p.metrics().snapshot();
    assert_eq!(snap.batch_items_processed, 8);
    assert_eq!(
        snap.batches_processed, 1,
        "eight queued requests, one batch"
    );
    assert_eq!(snap.stages[&Stage::QueueWait].count, 8);

    // The item limit splits batches without splitting or dropping a request.
    let p = temporal()
        .cache_max_bytes(0)
        .batching(BatchingConfig {
            max_batch_size: Some(4),
            ..BatchingConfig::default()
        })
        .start_paused(true)
        .build()
        .unwrap();
    let tickets: Vec<_> = [3u64, 3, 1, 5]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            p.submit(inputs(&format!("j{i}"), *n), EmbedOptions::default())
                .unwrap()
        })
        .collect();
    p.start_workers();
    let lens: Vec<usize> = tickets
        .into_iter()
        .map(|t| t.wait().unwrap().embeddings.len())
        .collect();
    assert_eq!(lens, vec![3, 3, 1, 5]);
    let snap = p.metrics().snapshot();
    assert_eq!(snap.batch_items_processed, 12);
    // [3] then [3, 1] then [5] (a request larger than the limit runs alone).
    assert_eq!(snap.batches_processed, 3);
}

#[test]
fn metrics_after_a_known_workload_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let metrics = Arc::new(PipelineMetrics::new());
    let p = tiny(tmp.path())
        .only(&[ModelId::Semantic, ModelId::TemporalRecent, ModelId::Hdc])
        .metrics(Arc::clone(&metrics))
        .start_paused(true)
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(p.metrics(), &metrics));
    assert!(p.is_warmed_up(), "build ran the warm-up pass");
    assert_eq!(
        metrics.snapshot().embeddings_generated,
        0,
        "warm-up is not recorded"
    );

    let work = inputs("known workload", 3);
    let first = p.submit(work.clone(), EmbedOptions::default()).unwrap();
    p.start_workers();
    let first = first.wait().unwrap();
    let again = p
        .submit(work.clone(), EmbedOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(first.embeddings, again.embeddings, "served from the cache");
    p.embed(&inputs("inline", 2)).unwrap();

    let s = metrics.snapshot();
    // Generated: what the models computed (3 queued + 2 inline); served:
    // every input answered, the 3 cache hits included.
    assert_eq!(s.embeddings_generated, 3 + 2);
    assert_eq!(s.inputs_served, 3 + 3 + 2);
    assert_eq!((s.cache_hits, s.cache_misses), (3, 5));
    assert_eq!((s.batches_processed, s.batch_items_processed), (2, 5));
    for id in [ModelId::Semantic, ModelId::TemporalRecent, ModelId::Hdc] {
        assert_eq!(s.models[&id].requests, 5, "{id}");
        assert_eq!(s.models[&id].latency.count, 2, "{id}: one sample per chunk");
    }
    for id in [ModelId::Code, ModelId::Causal, ModelId::Sparse] {
        assert_eq!(s.models[&id].requests, 0, "{id}");
    }
    assert_eq!(s.errors, 0);
    assert_eq!(s.gauges.queue_depth, 0);
    assert_eq!(s.gauges.in_flight, 0);
    assert_eq!(s.gauges.workers, 1);
    assert_eq!(s.gauges.cache_entries, Some(5));
    assert!(s.gauges.cache_bytes.unwrap() > 0);
    assert_eq!(s.stages[&Stage::QueueWait].count, 1);
    for stage in [Stage::Tokenization, Stage::Inference, Stage::Fusion] {
        assert_eq!(s.stages[&stage].count, 2, "{stage}");
    }
    assert_eq!(s.latency.count, 5, "one latency per computed input");
    // The stages of a request never overlap.
    let t = first.timings;
    assert!(
        t.queue_wait + t.tokenization + t.inference <= t.total,
        "{t:?}"
    );

    // A rejected request counts one error of its kind.
    let bad = vec![
        EmbedInput::new("fine"),
        EmbedInput::new("bad").with_timestamp(DateTime::<Utc>::MIN_UTC),
    ];
    assert!(matches!(
        p.submit(bad, EmbedOptions::default()),
        Err(PipelineError::InvalidInput { index: 1, .. })
    ));
    assert_eq!(metrics.snapshot().errors_by_kind[&ErrorKind::Validation], 1);
}

#[test]
fn recording_can_be_switched_off() {
    let p = temporal().record_metrics(false).build().unwrap();
    p.embed(&inputs("x", 4)).unwrap();
    p.submit(inputs("y", 2), EmbedOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    let s = p.metrics().snapshot();
    assert_eq!(s.embeddings_generated, 0);
    assert_eq!(s.batches_processed, 0);
    assert_eq!(s.cache_misses, 0);
}

#[test]
fn cache_hits_misses_and_byte_bound() {
    let p = temporal().build().unwrap();
    let x = EmbedInput::new("same text").with_timestamp(t0() - Duration::hours(3));
    let a = p.embed(std::slice::from_ref(&x)).unwrap();
    let b = p.embed(std::slice::from_ref(&x)).unwrap();
    assert_eq!(a, b, "identical vectors");
    let s = p.metrics().snapshot();
    assert_eq!((s.cache_hits, s.cache_misses), (1, 1));
    assert_eq!(s.batches_processed, 1, "the hit ran no inference");

    // A different timestamp, position or slot selection is another entry.
    let later = x.clone().with_timestamp(t0() - Duration::hours(4));
    let c = p.embed(&[later]).unwrap();
    assert_ne!(
        c[0].dense(ModelId::TemporalRecent),
        a[0].dense(ModelId::TemporalRecent)
    );
    p.submit(
        vec![x.clone()],
        EmbedOptions::only([ModelId::TemporalRecent]),
    )
    .unwrap()
    .wait()
    .unwrap();
    let s = p.metrics().snapshot();
    assert_eq!((s.cache_hits, s.cache_misses), (1, 3));

    // A batch with some hits runs only the misses.
    let mixed = vec![x.clone(), EmbedInput::new("new one"), x];
    let out = p.embed(&mixed).unwrap();
    assert_eq!(out[0], a[0]);
    assert_eq!(out[2], a[0]);
    let s = p.metrics().snapshot();
    assert_eq!((s.cache_hits, s.cache_misses), (3, 4));
    assert_eq!(s.batch_items_processed, 1 + 1 + 1 + 1);

    // The byte bound: ~8 KB entries (fused 1536 floats), 64 KiB cache.
    let max = 64 << 10;
    let small = temporal().cache_max_bytes(max).build().unwrap();
    for chunk in inputs("fill", 40).chunks(5) {
        small.embed(chunk).unwrap();
    }
    let stats = small.cache_stats().unwrap();
    assert_eq!(stats.max_bytes, max);
    assert!(stats.bytes <= max, "{stats:?}");
    assert!(stats.entries < 40 && stats.entries > 0, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");
    let s = small.metrics().snapshot();
    assert_eq!(s.cache_evictions, stats.evictions);
    assert_eq!(s.gauges.cache_bytes, Some(stats.bytes));
    assert_eq!(s.gauges.cache_entries, Some(stats.entries));
    // Weighed by real size: the bytes are at least the fused vectors held.
    assert!(stats.bytes >= stats.entries * 1536 * 4, "{stats:?}");

    assert!(
        temporal()
            .cache_max_bytes(0)
            .build()
            .unwrap()
            .cache_stats()
            .is_none()
    );
}

#[test]
fn health_reports_a_missing_model_and_a_healthy_cpu_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);

    let healthy = tiny(tmp.path()).build().unwrap();
    let report = healthy.health();
    assert_eq!(report.verdict, Verdict::Healthy, "{report}");
    assert!(report.status.healthy);
    assert_eq!(report.status.models_loaded.len(), 12);
    assert!(!report.status.components.gpu_available);
    assert!(!report.status.components.gpu_required);
    assert!(report.reason(HealthRule::GpuMemory).is_none());
    assert_eq!(report.probes.readiness.http_status(), 200);
    assert_eq!(report.probes.liveness.http_status(), 200);
    assert!(healthy.is_warmed_up());

    let broken = tiny(tmp.path())
        .model("code_model", ModelSource::path(tmp.path().join("missing")))
        .bind(ModelId::Code, "code_model")
        .build()
        .unwrap();
    let report = broken.health();
    assert_eq!(report.status.models_failed, vec![ModelId::Code]);
    assert_eq!(report.verdict, Verdict::Degraded, "{report}");
    assert!(report.reason(HealthRule::AllModelsLoaded).is_some());
    let failure = &report.model_failures[0];
    assert_eq!(failure.model, ModelId::Code);
    assert!(failure.reason.contains("not found"), "{}", failure.reason);
    assert!(report.status.healthy, "11 of 12 can still serve");

    // Paused workers: the batch processor is down.
    let paused = tiny(tmp.path()).start_paused(true).build().unwrap();
    let report = paused.health();
    assert!(!report.status.components.batch_processor);
    assert!(report.reason(HealthRule::BatchProcessor).is_some());
    paused.start_workers();
    assert!(paused.health().status.components.batch_processor);

    // Disabled slots count as not loaded (the operator lowers the threshold).
    let few = temporal().build().unwrap();
    let report = few.health();
    assert_eq!(report.verdict, Verdict::Unhealthy);
    assert!(report.reason(HealthRule::ModelsLoaded).is_some());
    let lenient = temporal()
        .health_policy(embeddings_pipeline::HealthPolicySpec {
            min_models_loaded: 3,
            ..Default::default()
        })
        .build()
        .unwrap();
    assert!(lenient.health().status.healthy);
}

#[test]
fn embed_async_and_submit_under_a_simple_executor() {
    let p = temporal().cache_max_bytes(0).build().unwrap();
    let xs = inputs("async", 3);
    let out = block_on(p.embed_async(xs.clone(), EmbedOptions::default())).unwrap();
    assert_eq!(out.embeddings.len(), 3);
    let blocking = p.embed(&xs).unwrap();
    for (a, b) in out.embeddings.iter().zip(&blocking) {
        assert!(cosine(a.fused().unwrap(), b.fused().unwrap()) > 0.99999);
        assert_eq!(
            a.dense(ModelId::TemporalPositional),
            b.dense(ModelId::TemporalPositional)
        );
    }
    // Several tickets awaited together in one future.
    let t1 = p.submit(inputs("p", 2), EmbedOptions::default()).unwrap();
    let t2 = p.submit(inputs("q", 1), EmbedOptions::default()).unwrap();
    let (r1, r2) = block_on(async { (t1.await, t2.await) });
    assert_eq!(
        (r1.unwrap().embeddings.len(), r2.unwrap().embeddings.len()),
        (2, 1)
    );
    // Empty input: answered at once.
    let empty = p.submit(Vec::new(), EmbedOptions::default()).unwrap();
    assert!(empty.is_ready());
    assert!(block_on(empty).unwrap().embeddings.is_empty());
}

#[test]
fn only_requested_slots_are_returned_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let p = tiny(tmp.path()).cache_max_bytes(0).build().unwrap();
    let xs = inputs("subset", 4);

    let out = p
        .submit(
            xs.clone(),
            EmbedOptions::only([ModelId::TemporalRecent, ModelId::Hdc]),
        )
        .unwrap()
        .wait()
        .unwrap();
    for e in &out.embeddings {
        let present: Vec<ModelId> = e.iter().map(|(id, _)| id).collect();
        assert_eq!(present, vec![ModelId::TemporalRecent, ModelId::Hdc]);
        assert!(e.fused().is_none());
        assert_eq!(e.token_count(), 0, "no transformer ran");
    }
    let s = p.metrics().snapshot();
    for id in [ModelId::TemporalRecent, ModelId::Hdc] {
        assert_eq!(s.models[&id].requests, 4, "{id}");
    }
    for id in [
        ModelId::Semantic,
        ModelId::Causal,
        ModelId::LateInteraction,
        ModelId::Sparse,
    ] {
        assert_eq!(s.models[&id].requests, 0, "{id}: the trunk did not run");
    }

    // One transformer slot: the trunk runs, other heads do not.
    let out = p
        .submit(xs.clone(), EmbedOptions::only([ModelId::Semantic]))
        .unwrap()
        .wait()
        .unwrap();
    assert!(out.embeddings[0].dense(ModelId::Semantic).is_some());
    assert!(out.embeddings[0].get(ModelId::Code).is_none());
    let s = p.metrics().snapshot();
    assert_eq!(s.models[&ModelId::Semantic].requests, 4);
    assert_eq!(s.models[&ModelId::LateInteraction].requests, 0);
    assert_eq!(s.models[&ModelId::Causal].requests, 0);

    // Fused: every slot runs, only the requested ones are returned.
    let out = p
        .submit(
            xs.clone(),
            EmbedOptions::only([ModelId::Hdc]).with_fused(true),
        )
        .unwrap()
        .wait()
        .unwrap();
    let full = p.embed(&xs).unwrap();
    assert_eq!(out.embeddings[0].iter().count(), 1);
    assert!(cosine(out.embeddings[0].fused().unwrap(), full[0].fused().unwrap()) > 0.99999);

    // Bad options are typed.
    let only_temporal = temporal().build().unwrap();
    let err = only_temporal
        .submit(xs.clone(), EmbedOptions::only([ModelId::Semantic]))
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::SlotUnavailable { slot: ModelId::Semantic, ref reason } if reason.contains("disabled")),
        "{err}"
    );
    assert_eq!(
        only_temporal
            .submit(xs, EmbedOptions::only([]))
            .unwrap_err(),
        PipelineError::NothingRequested
    );
}

#[test]
fn a_bad_request_fails_alone_and_names_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let config = PipelineConfig::from_toml_str("[input]\ntruncation = \"reject\"").unwrap();
    let p = tiny(tmp.path())
        .config(config)
        .model("default", ModelSource::path(tmp.path()))
        .start_paused(true)
        .build()
        .unwrap();
    let good = p
        .submit(inputs("good", 2), EmbedOptions::default())
        .unwrap();
    let long = "word ".repeat(500);
    let bad = p
        .submit(
            vec![EmbedInput::new("short"), EmbedInput::new(long)],
            EmbedOptions::default(),
        )
        .unwrap();
    let good2 = p
        .submit(inputs("also good", 1), EmbedOptions::default())
        .unwrap();
    p.start_workers();
    assert!(matches!(
        bad.wait(),
        Err(PipelineError::InvalidInput {
            index: 1,
            reason: InputError::TooLong { .. }
        })
    ));
    assert_eq!(good.wait().unwrap().embeddings.len(), 2);
    assert_eq!(good2.wait().unwrap().embeddings.len(), 1);
    let s = p.metrics().snapshot();
    assert_eq!(s.batches_processed, 1, "batched together");
    assert_eq!(s.batch_items_processed, 3, "the bad request ran nothing");
    assert_eq!(s.errors_by_kind[&ErrorKind::Validation], 1);

    // Invalid timestamps fail at submission, naming the input.
    let err = p
        .submit(
            vec![
                EmbedInput::new("a"),
                EmbedInput::new("b"),
                EmbedInput::new("c").with_reference_time(DateTime::<Utc>::MAX_UTC),
            ],
            EmbedOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::InvalidInput { index: 2, .. }),
        "{err}"
    );
}

#[test]
fn ten_thousand_items_are_one_job() {
    let p = temporal()
        .batching(batching(1))
        .cache_max_bytes(0)
        .build()
        .unwrap();
    let xs: Vec<EmbedInput> = (0..10_000u64)
        .map(|i| EmbedInput::new("").with_position(i))
        .collect();
    let out = p
        .submit(
            xs.clone(),
            EmbedOptions::only([ModelId::TemporalPositional]),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.embeddings.len(), 10_000);
    let direct = p.embed(&xs[9_999..]).unwrap();
    assert_eq!(
        out.embeddings[9_999].dense(ModelId::TemporalPositional),
        direct[0].dense(ModelId::TemporalPositional)
    );
    let s = p.metrics().snapshot();
    assert_eq!(s.batch_items_processed, 10_001);
}

#[test]
fn shutdown_finishes_queued_work_and_joins_workers() {
    let p = temporal()
        .cache_max_bytes(0)
        .batching(BatchingConfig {
            workers: 3,
            ..BatchingConfig::default()
        })
        .start_paused(true)
        .build()
        .unwrap();
    let tickets: Vec<_> = (0..5)
        .map(|i| {
            p.submit(inputs(&format!("s{i}"), 2), EmbedOptions::default())
                .unwrap()
        })
        .collect();
    p.shutdown();
    assert_eq!(p.workers_alive(), 0, "every worker joined");
    for t in tickets {
        assert_eq!(
            t.wait().unwrap().embeddings.len(),
            2,
            "queued work finished"
        );
    }
    assert_eq!(
        p.submit(inputs("late", 1), EmbedOptions::default())
            .unwrap_err(),
        PipelineError::ShutDown
    );
    assert_eq!(p.metrics().snapshot().gauges.workers, 0);
    assert!(!p.health().status.components.batch_processor);
    // The blocking API still works.
    assert_eq!(p.embed(&inputs("after", 1)).unwrap().len(), 1);

    // Dropping the pipeline does the same.
    let p = temporal().cache_max_bytes(0).build().unwrap();
    let t = p
        .submit(inputs("dropped", 2), EmbedOptions::default())
        .unwrap();
    drop(p);
    assert_eq!(t.wait().unwrap().embeddings.len(), 2);
}

#[test]
fn describe_and_limits_serialize_to_json() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), 8);
    let p = tiny(tmp.path())
        .enable(ModelId::Graph, false)
        .model("code_model", ModelSource::path(tmp.path().join("missing")))
        .bind(ModelId::Code, "code_model")
        .build()
        .unwrap();
    let info = serde_json::to_value(p.describe()).unwrap();
    assert_eq!(info["slots"][0]["slot"], "semantic");
    assert_eq!(info["slots"][0]["state"]["state"], "loaded");
    assert_eq!(info["slots"][0]["backend"]["kind"], "transformer");
    let code = &info["slots"][ModelId::Code.index()]["state"];
    assert_eq!(code["state"], "failed");
    assert!(code["reason"].as_str().unwrap().contains("not found"));
    let limits = p.limits();
    let json = serde_json::to_value(&limits).unwrap();
    assert_eq!(json["batching"]["queue_capacity"], 256);
    assert_eq!(json["batching"]["max_batch_size"], 32);
    assert_eq!(json["batching"]["workers"], 1);
    assert_eq!(
        (
            &json["batching"]["chunk_size"],
            &json["batching"]["chunk_max_tokens"]
        ),
        (&serde_json::json!(32), &serde_json::json!(1536))
    );
    assert_eq!(json["cache_max_bytes"], 128 << 20);
    assert_eq!(json["fusion_dim"], 1536);
    let semantic = &limits.slots[ModelId::Semantic.index()];
    assert!(semantic.loaded && semantic.shared);
    assert_eq!(semantic.dim, Some(8));
    assert_eq!(semantic.max_seq_length, Some(128));
    assert!(!limits.slots[ModelId::Graph.index()].loaded);
    assert_eq!(json["device"], "cpu");
}

#[test]
fn batching_and_cache_configuration_is_validated() {
    let c = PipelineConfig::from_toml_str(
        "[batching]\nqueue_capacity = 8\nmax_batch_size = 4\nmax_batch_tokens = 100\nmax_wait_ms = 0\nworkers = 2\n[cache]\nmax_bytes = 0\n[health]\nmin_models_loaded = 3\nwarm_up = false",
    );
    assert!(c.is_err(), "warm_up is top-level, not under [health]");
    let c = PipelineConfig::from_toml_str(
        "warm_up = false\n[batching]\nqueue_capacity = 8\nmax_batch_size = 4\nworkers = 2\n[cache]\nmax_bytes = 0\n[health]\nmin_models_loaded = 3",
    )
    .unwrap();
    assert_eq!(c.batching.queue_capacity, 8);
    assert_eq!(c.gather_limit(), 4);
    assert_eq!(c.cache.max_bytes, 0);
    assert!(!c.warm_up);
    let d = PipelineConfig::default();
    assert_eq!(d.gather_limit(), 32);
    assert_eq!(d.batching.max_wait_ms, 0);
    for (text, needle) in [
        ("[batching]\nqueue_capacity = 0", "queue_capacity"),
        ("[batching]\nworkers = 0", "workers"),
        ("[batching]\nmax_batch_size = 0", "batching.max_batch_size"),
        ("[batching]\nmax_batch_tokens = 0", "max_batch_tokens"),
        ("[batching]\nmax_wait_ms = 60000", "max_wait_ms"),
        ("max_forward_tokens = 0", "max_forward_tokens"),
        ("[cache]\nmax_entries = 3", "unknown field"),
        ("[health]\nmin_models_loaded = 13", "[health]"),
    ] {
        let err = PipelineConfig::from_toml_str(text).unwrap_err();
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}
