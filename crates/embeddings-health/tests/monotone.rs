//! Property: making any single input worse never improves the verdict.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: helpers outside #[test] fns may unwrap, as tests do (clippy.toml).
mod common;

use common::{Inputs, at, check_invariants};
use embeddings_health::{GpuObservation, SlotState};
use embeddings_types::ModelId;
use proptest::prelude::*;

fn slot() -> impl Strategy<Value = SlotState> {
    prop_oneof![
        6 => Just(SlotState::Loaded),
        1 => Just(SlotState::Loading),
        1 => Just(SlotState::Failed { reason: "x".into() }),
    ]
}

fn gpu() -> impl Strategy<Value = GpuObservation> {
    prop_oneof![
        Just(GpuObservation::NotExpected),
        Just(GpuObservation::Unreadable { reason: "x".into() }),
        (0u64..=120, 0u64..=100).prop_map(|(used_bytes, total_bytes)| GpuObservation::Reading {
            used_bytes,
            total_bytes
        }),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0..20.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-1.0),
    ]
}

prop_compose! {
    fn inputs()(
        slots in proptest::array::uniform12(slot()),
        gpu in gpu(),
        error_rate in number(),
        throughput in number(),
        hit_rate in prop_oneof![4 => 0.0..=1.0f64, 1 => Just(f64::NAN), 1 => Just(1.5)],
        components in proptest::array::uniform4(prop::bool::weighted(0.85)),
        age in 0i64..120,
        warmed_up in any::<bool>(),
    ) -> Inputs {
        let mut i = Inputs::good();
        for (model, state) in ModelId::ALL.into_iter().zip(slots) {
            i.registry.set(model, state);
        }
        i.gpu = gpu;
        i.snapshot.error_rate_per_minute = error_rate;
        i.snapshot.throughput_60s = throughput;
        i.snapshot.cache_hit_rate = hit_rate;
        let [a, b, c, d] = components;
        i.components.model_registry = a;
        i.components.batch_processor = b;
        i.components.fusemoe = c;
        i.components.cache_manager = d;
        i.now = at(age);
        i.warmed_up = warmed_up;
        i
    }
}

/// One way of making one input worse.
#[derive(Debug, Clone)]
enum Worse {
    UnloadSlot(usize, bool),
    GpuUnreadable,
    GpuMoreUsed(u64),
    GpuLessTotal(u64),
    MoreErrors(f64),
    ErrorsNaN,
    ComponentDown(usize),
    OlderSnapshot(i64),
    ThroughputNaN,
}

fn worse() -> impl Strategy<Value = Worse> {
    prop_oneof![
        (0usize..12, any::<bool>()).prop_map(|(i, fail)| Worse::UnloadSlot(i, fail)),
        Just(Worse::GpuUnreadable),
        (1u64..50).prop_map(Worse::GpuMoreUsed),
        (1u64..50).prop_map(Worse::GpuLessTotal),
        (0.001..20.0f64).prop_map(Worse::MoreErrors),
        Just(Worse::ErrorsNaN),
        (0usize..4).prop_map(Worse::ComponentDown),
        (1i64..120).prop_map(Worse::OlderSnapshot),
        Just(Worse::ThroughputNaN),
    ]
}

fn apply(mut i: Inputs, w: &Worse) -> Inputs {
    match *w {
        Worse::UnloadSlot(idx, fail) => {
            let model = ModelId::from_index(idx).unwrap();
            if fail {
                i.registry.mark_failed(model, "made worse");
            } else if i.registry.get(model) == &SlotState::Loaded {
                i.registry.mark_loading(model);
            }
        }
        Worse::GpuUnreadable => {
            i.gpu = GpuObservation::Unreadable {
                reason: "made worse".into(),
            };
        }
        Worse::GpuMoreUsed(k) => {
            if let GpuObservation::Reading { used_bytes, .. } = &mut i.gpu {
                *used_bytes += k;
            }
        }
        Worse::GpuLessTotal(k) => {
            if let GpuObservation::Reading { total_bytes, .. } = &mut i.gpu {
                *total_bytes = total_bytes.saturating_sub(k);
            }
        }
        Worse::MoreErrors(d) => {
            let rate = &mut i.snapshot.error_rate_per_minute;
            // Only a valid rate can get worse by growing; garbage stays garbage.
            if rate.is_finite() && *rate >= 0.0 {
                *rate += d;
            }
        }
        Worse::ErrorsNaN => i.snapshot.error_rate_per_minute = f64::NAN,
        Worse::ComponentDown(c) => match c {
            0 => i.components.model_registry = false,
            1 => i.components.batch_processor = false,
            2 => i.components.fusemoe = false,
            _ => i.components.cache_manager = false,
        },
        Worse::OlderSnapshot(s) => i.now += chrono::Duration::seconds(s),
        Worse::ThroughputNaN => i.snapshot.throughput_60s = f64::NAN,
    }
    i
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn worse_input_never_improves_the_verdict(base in inputs(), w in worse()) {
        let before = base.report();
        check_invariants(&before, base.warmed_up);
        let worse_inputs = apply(base, &w);
        let after = worse_inputs.report();
        check_invariants(&after, worse_inputs.warmed_up);
        prop_assert!(
            after.verdict >= before.verdict,
            "{w:?} improved {} to {}", before, after
        );
    }

    #[test]
    fn bad_numbers_are_never_healthy(bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -1e9..-1e-9f64]) {
        for field in 0..6 {
            let mut i = Inputs::good();
            match field {
                0 => i.snapshot.error_rate_per_minute = bad,
                1 => i.snapshot.throughput = bad,
                2 => i.snapshot.throughput_10s = bad,
                3 => i.snapshot.cache_hit_rate = bad,
                4 => i.snapshot.mean_latency_us = bad,
                _ => i.snapshot.latency.mean = bad,
            }
            let report = i.report();
            prop_assert!(report.verdict != embeddings_health::Verdict::Healthy, "field {field}: {report}");
        }
    }
}
