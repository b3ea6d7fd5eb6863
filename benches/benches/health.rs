//! Cost of one full health evaluation from a snapshot (`HealthPolicy::evaluate`),
//! and of one alert-engine pass over the recommended rules. Budget: 5 µs per
//! health evaluation.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use embeddings_health::doc_support::{fixed_time, snapshot};
use embeddings_health::{
    AlertConfig, AlertEngine, ComponentChecks, GpuObservation, HealthPolicy, Observation,
    RegistryState,
};
use embeddings_types::ModelId;

fn health(c: &mut Criterion) {
    let now = fixed_time();
    let snapshot = snapshot(now);
    let policy = HealthPolicy::default();
    let gpu = GpuObservation::from_gauges(true, &snapshot.gauges);

    let healthy = RegistryState::all_loaded();
    c.bench_function("health/evaluate/healthy", |b| {
        b.iter(|| {
            let observation = Observation::new(
                black_box(&healthy),
                black_box(&snapshot),
                &gpu,
                ComponentChecks::all_up(),
            )
            .with_warmed_up(true);
            black_box(policy.evaluate(&observation, now))
        });
    });

    // The expensive path: failures with reasons to copy and several rules failing.
    let mut degraded = RegistryState::all_loaded();
    degraded.mark_failed(
        ModelId::Code,
        "checkpoint not found: /models/code.safetensors",
    );
    degraded.mark_failed(ModelId::Graph, "out of GPU memory while loading");
    degraded.mark_failed(ModelId::Hdc, "tokenizer mismatch");
    let mut bad_snapshot = snapshot.clone();
    bad_snapshot.error_rate_per_minute = 25.0;
    let full_gpu = GpuObservation::Reading {
        used_bytes: 79 << 30,
        total_bytes: 80 << 30,
    };
    let mut components = ComponentChecks::all_up();
    components.cache_manager = false;
    c.bench_function("health/evaluate/unhealthy_5_reasons", |b| {
        b.iter(|| {
            let observation = Observation::new(
                black_box(&degraded),
                black_box(&bad_snapshot),
                &full_gpu,
                components,
            )
            .with_warmed_up(true);
            black_box(policy.evaluate(&observation, now))
        });
    });

    let mut engine = AlertEngine::new(AlertConfig::default());
    c.bench_function("health/alerts/evaluate_recommended_rules", |b| {
        b.iter(|| black_box(engine.evaluate(black_box(&snapshot), Some(0.01), now)));
    });
}

criterion_group!(benches, health);
criterion_main!(benches);
