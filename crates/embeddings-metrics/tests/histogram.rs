//! Histogram accuracy against an exact oracle, and merging.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use embeddings_metrics::Histogram;
use embeddings_metrics::histogram::{MAX_PRECISION_BITS, MIN_PRECISION_BITS, relative_error};
use proptest::prelude::*;

/// The exact oracle: the value of rank `ceil(q·n)` (clamped to `1..=n`) in
/// the sorted values — the same definition the histogram documents.
fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn within(estimate: u64, exact: u64, bound: f64) -> bool {
    (estimate as f64 - exact as f64).abs() <= exact as f64 * bound
}

/// Values spread over many orders of magnitude, plus the extremes.
fn values() -> impl Strategy<Value = Vec<u64>> {
    let one = prop_oneof![
        4 => (0u32..64).prop_flat_map(|bits| 0u64..=(u64::MAX >> bits)),
        2 => 0u64..300,
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ];
    prop::collection::vec(one, 1..500)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn quantiles_are_within_the_stated_relative_error(values in values(), bits in MIN_PRECISION_BITS..=MAX_PRECISION_BITS) {
        let h = Histogram::with_precision(bits).unwrap();
        for v in &values {
            h.record(*v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let s = h.snapshot();
        let bound = relative_error(bits);
        prop_assert_eq!(s.relative_error, bound);
        prop_assert_eq!(s.count, values.len() as u64);
        prop_assert_eq!(s.min, sorted[0]);
        prop_assert_eq!(s.max, *sorted.last().unwrap());
        prop_assert_eq!(s.sum, values.iter().fold(0u64, |a, v| a.wrapping_add(*v)));
        let pairs = [(0.5, s.p50), (0.9, s.p90), (0.95, s.p95), (0.99, s.p99), (0.999, s.p999)];
        for (q, estimate) in pairs {
            let exact = exact_quantile(&sorted, q);
            prop_assert!(within(estimate, exact, bound), "q={} estimate={} exact={} bits={}", q, estimate, exact, bits);
        }
        let counts = h.counts();
        for q in [0.0, 0.01, 0.25, 0.333, 0.75, 1.0] {
            let (estimate, exact) = (counts.quantile(q), exact_quantile(&sorted, q));
            prop_assert!(within(estimate, exact, bound), "q={} estimate={} exact={}", q, estimate, exact);
        }
    }

    #[test]
    fn merge_equals_recording_into_one(a in values(), b in values()) {
        let (ha, hb, both) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in &a {
            ha.record(*v);
            both.record(*v);
        }
        for v in &b {
            hb.record(*v);
            both.record(*v);
        }
        // Owned read-outs merge ...
        let mut merged = ha.counts();
        merged.merge(&hb.counts()).unwrap();
        prop_assert_eq!(&merged, &both.counts());
        // ... and live histograms merge.
        ha.merge(&hb).unwrap();
        prop_assert_eq!(ha.counts(), both.counts());
        prop_assert_eq!(ha.snapshot(), both.snapshot());
    }

    #[test]
    fn count_le_is_exact_at_edges(values in values(), bound_exp in 0u32..40) {
        let h = Histogram::new();
        for v in &values {
            h.record(*v);
        }
        let counts = h.counts();
        for bound in [1u64 << bound_exp, 1000 << bound_exp.min(30), 0, 1, 100] {
            prop_assume!(embeddings_metrics::histogram::is_edge(bound, 6));
            let exact = values.iter().filter(|v| **v <= bound).count() as u64;
            prop_assert_eq!(counts.count_le(bound), exact);
        }
    }
}

#[test]
fn merge_rejects_other_precision() {
    let a = Histogram::new();
    let b = Histogram::with_precision(7).unwrap();
    assert!(a.merge(&b).is_err());
    assert!(Histogram::with_precision(0).is_err());
    assert!(Histogram::with_precision(11).is_err());
}

#[test]
fn empty_histogram_is_all_zero() {
    let s = Histogram::new().snapshot();
    assert_eq!(
        (s.count, s.sum, s.min, s.max, s.p50, s.p999),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(s.mean, 0.0);
    assert_eq!(Histogram::new().counts().quantile(0.5), 0);
}

#[test]
fn concurrent_records_are_all_counted() {
    let h = Histogram::new();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let h = &h;
            scope.spawn(move || {
                for i in 0..50_000u64 {
                    h.record(i * (t + 1));
                }
            });
        }
    });
    let s = h.snapshot();
    assert_eq!(s.count, 200_000);
    assert_eq!(
        s.sum,
        (1..=4)
            .map(|k| k * (0..50_000u64).sum::<u64>())
            .sum::<u64>()
    );
    assert_eq!((s.min, s.max), (0, 49_999 * 4));
}
