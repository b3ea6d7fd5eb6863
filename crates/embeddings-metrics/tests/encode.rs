//! The public encoder: golden text in both formats, validation, kind
//! checks, precision handling, and exact bucket counts for arbitrary bounds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use embeddings_metrics::histogram::{edge_at_or_below, is_edge};
use embeddings_metrics::{
    Counter, Encoder, ExportBounds, Family, Format, Histogram, HistogramCounts, Labels,
    MetricsError, Value,
};
use proptest::prelude::*;

struct Registry {
    jobs: Family,
    temperature: Family,
    latency: Family,
    sizes: Family,
    get: Labels,
    odd: Labels,
    none: Labels,
    counter: Counter,
    micros: Histogram,
    items: Histogram,
}

fn registry() -> Registry {
    let r = Registry {
        jobs: Family::counter("app_jobs", "Jobs run, \"all\" of them.\nReally.").unwrap(),
        temperature: Family::gauge("app_temperature", "Temperatures \\ readings.").unwrap(),
        latency: Family::histogram(
            "app_latency_seconds",
            "Job latency.",
            ExportBounds::new(&[100, 1_000], 6, 6).unwrap(),
        )
        .unwrap(),
        sizes: Family::histogram(
            "app_size_bytes",
            "Payload sizes.",
            ExportBounds::new(&[0, 64, 1024], 0, 6).unwrap(),
        )
        .unwrap(),
        get: Labels::new([("method", "GET"), ("code", "200")]).unwrap(),
        odd: Labels::new([("path", "a\\b\"c\nd")]).unwrap(),
        none: Labels::empty(),
        counter: Counter::new(),
        micros: Histogram::new(),
        items: Histogram::new(),
    };
    r.counter.add(41);
    r.counter.inc();
    for us in [0, 100, 101, 1_000, 2_500_000] {
        r.micros.record(us);
    }
    for bytes in [0, 0, 64, 65, 4096] {
        r.items.record(bytes);
    }
    r
}

fn render(r: &Registry, format: Format) -> String {
    let mut out = String::new();
    let mut e = Encoder::new(&mut out, format);
    assert_eq!(e.format(), format);
    let mut f = e.family(&r.jobs).unwrap();
    f.counter(&r.get, r.counter.get()).unwrap();
    f.counter(&r.odd, 0).unwrap();
    let mut f = e.family(&r.temperature).unwrap();
    f.gauge(&r.none, -3_i64).unwrap();
    f.gauge(&r.get, 21.5).unwrap();
    f.gauge(&r.odd, 7_u64).unwrap();
    f.gauge(
        &Labels::new([("sensor", "scaled")]).unwrap(),
        Value::Scaled {
            value: 1_250,
            decimals: 3,
        },
    )
    .unwrap();
    e.family(&r.latency)
        .unwrap()
        .histogram(&r.get, &r.micros)
        .unwrap();
    e.family(&r.sizes)
        .unwrap()
        .histogram(&r.none, &r.items)
        .unwrap();
    e.finish().unwrap();
    out
}

const SAMPLES: &str = "app_jobs_total{method=\"GET\",code=\"200\"} 42\n\
app_jobs_total{path=\"a\\\\b\\\"c\\nd\"} 0\n";

const GAUGES_AND_HISTOGRAMS: &str = "app_temperature -3\n\
app_temperature{method=\"GET\",code=\"200\"} 21.5\n\
app_temperature{path=\"a\\\\b\\\"c\\nd\"} 7\n\
app_temperature{sensor=\"scaled\"} 1.25\n";

const LATENCY: &str = "app_latency_seconds_bucket{method=\"GET\",code=\"200\",le=\"0.0001\"} 2\n\
app_latency_seconds_bucket{method=\"GET\",code=\"200\",le=\"0.001\"} 4\n\
app_latency_seconds_bucket{method=\"GET\",code=\"200\",le=\"+Inf\"} 5\n\
app_latency_seconds_sum{method=\"GET\",code=\"200\"} 2.501201\n\
app_latency_seconds_count{method=\"GET\",code=\"200\"} 5\n";

const SIZES: &str = "app_size_bytes_bucket{le=\"0.0\"} 2\n\
app_size_bytes_bucket{le=\"64.0\"} 3\n\
app_size_bytes_bucket{le=\"1024.0\"} 4\n\
app_size_bytes_bucket{le=\"+Inf\"} 5\n\
app_size_bytes_sum 4225\n\
app_size_bytes_count 5\n";

#[test]
fn golden_prometheus() {
    let expected = format!(
        "# HELP app_jobs_total Jobs run, \"all\" of them.\\nReally.\n\
         # TYPE app_jobs_total counter\n\
         {SAMPLES}\
         # HELP app_temperature Temperatures \\\\ readings.\n\
         # TYPE app_temperature gauge\n\
         {GAUGES_AND_HISTOGRAMS}\
         # HELP app_latency_seconds Job latency.\n\
         # TYPE app_latency_seconds histogram\n\
         {LATENCY}\
         # HELP app_size_bytes Payload sizes.\n\
         # TYPE app_size_bytes histogram\n\
         {SIZES}"
    );
    assert_eq!(render(&registry(), Format::Prometheus), expected);
}

#[test]
fn golden_openmetrics() {
    let expected = format!(
        "# HELP app_jobs Jobs run, \\\"all\\\" of them.\\nReally.\n\
         # TYPE app_jobs counter\n\
         {SAMPLES}\
         # HELP app_temperature Temperatures \\\\ readings.\n\
         # TYPE app_temperature gauge\n\
         {GAUGES_AND_HISTOGRAMS}\
         # HELP app_latency_seconds Job latency.\n\
         # TYPE app_latency_seconds histogram\n\
         # UNIT app_latency_seconds seconds\n\
         {LATENCY}\
         # HELP app_size_bytes Payload sizes.\n\
         # TYPE app_size_bytes histogram\n\
         # UNIT app_size_bytes bytes\n\
         {SIZES}\
         # EOF\n"
    );
    assert_eq!(render(&registry(), Format::OpenMetrics), expected);
}

#[test]
fn writes_to_any_fmt_write_and_appends() {
    struct Lines(Vec<String>);
    impl std::fmt::Write for Lines {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push(s.to_owned());
            Ok(())
        }
    }
    let r = registry();
    let mut sink = Lines(Vec::new());
    let mut e = Encoder::new(&mut sink, Format::Prometheus);
    e.family(&r.latency)
        .unwrap()
        .histogram(&r.get, &r.micros)
        .unwrap();
    e.finish().unwrap();
    // The header, then the whole series in one piece.
    assert_eq!(sink.0.len(), 2);
    assert_eq!(sink.0[1], LATENCY);

    let mut text = String::from("already here\n");
    let mut e = Encoder::new(&mut text, Format::Prometheus);
    e.family(&r.jobs).unwrap().counter(&r.none, 1).unwrap();
    e.finish().unwrap();
    assert!(text.starts_with("already here\n# HELP app_jobs_total "));
    assert!(text.ends_with("\napp_jobs_total 1\n"));
}

#[test]
fn a_sample_of_another_kind_is_refused_and_writes_nothing() {
    let r = registry();
    let mut out = String::new();
    let mut e = Encoder::new(&mut out, Format::Prometheus);
    let mut f = e.family(&r.jobs).unwrap();
    assert!(f.gauge(&r.none, 1_u64).is_err());
    assert!(f.histogram(&r.none, &r.micros).is_err());
    assert!(f.histogram_counts(&r.none, &r.micros.counts()).is_err());
    let mut f = e.family(&r.temperature).unwrap();
    assert!(f.counter(&r.none, 1).is_err());
    let mut f = e.family(&r.latency).unwrap();
    assert!(f.counter(&r.none, 1).is_err());
    assert!(f.gauge(&r.none, 1.0).is_err());
    assert!(out.lines().all(|l| l.starts_with('#')), "{out}");
}

#[test]
fn names_and_labels_are_validated() {
    for bad in ["", "9a", "a-b", "a:b", "é"] {
        assert!(matches!(
            Family::gauge(bad, "x"),
            Err(MetricsError::InvalidMetricName { .. })
        ));
    }
    assert!(matches!(
        Family::counter("requests_total", "x"),
        Err(MetricsError::InvalidMetricName { .. })
    ));
    assert!(Family::gauge("requests_total", "x").is_ok());
    for bad in [
        vec![("le", "1")],
        vec![("__name__", "x")],
        vec![("a b", "x")],
        vec![("a", "1"), ("a", "2")],
    ] {
        assert!(matches!(
            Labels::new(bad),
            Err(MetricsError::InvalidLabel { .. })
        ));
    }
    assert!(
        Labels::new(Vec::<(String, String)>::new())
            .unwrap()
            .is_empty()
    );
    assert_eq!(Labels::default(), Labels::empty());
    assert!(matches!(
        ExportBounds::new(&[10, 10], 6, 6),
        Err(MetricsError::InvalidBounds { .. })
    ));
    assert!(matches!(
        ExportBounds::new(&[1], 6, 0),
        Err(MetricsError::InvalidPrecision { bits: 0 })
    ));
    assert!(matches!(
        ExportBounds::new(&[2500], 6, 6),
        Err(MetricsError::BoundNotAnEdge {
            family: "export",
            bound: 2500,
            ..
        })
    ));
    let bounds = ExportBounds::new(&[1, 2, 4], 0, 3).unwrap();
    assert_eq!(
        (bounds.bounds(), bounds.decimals(), bounds.precision_bits()),
        (&[1, 2, 4][..], 0, 3)
    );
    let family = Family::histogram("h", "x", bounds.clone()).unwrap();
    assert_eq!(family.name(), "h");
    assert_eq!(family.bounds(), Some(&bounds));
    assert_eq!(Family::gauge("g", "x").unwrap().bounds(), None);
}

/// `(le, count)` of every bucket line, then the `_count` value.
fn bucket_counts(text: &str) -> (Vec<(String, u64)>, u64) {
    let mut buckets = Vec::new();
    let mut count = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        if series.contains("_sum") {
            continue;
        }
        let value: u64 = value.parse().unwrap();
        if let Some(le) = series.split("le=\"").nth(1) {
            buckets.push((le.trim_end_matches("\"}").to_owned(), value));
        } else if series.contains("_count") {
            count = Some(value);
        }
    }
    (buckets, count.unwrap())
}

fn render_histogram(family: &Family, h: &Histogram) -> String {
    let mut out = String::new();
    let mut e = Encoder::new(&mut out, Format::Prometheus);
    e.family(family)
        .unwrap()
        .histogram(&Labels::empty(), h)
        .unwrap();
    out
}

fn render_counts(family: &Family, c: &HistogramCounts) -> String {
    let mut out = String::new();
    let mut e = Encoder::new(&mut out, Format::Prometheus);
    e.family(family)
        .unwrap()
        .histogram_counts(&Labels::empty(), c)
        .unwrap();
    out
}

#[test]
fn bounds_fit_finer_histograms_and_stop_at_the_edge_below_on_coarser_ones() {
    let bounds = [10, 100, 1_000, 2_500 - 4, 64_000];
    let family =
        Family::histogram("h_seconds", "x", ExportBounds::new(&bounds, 6, 6).unwrap()).unwrap();
    let values: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 80_000).collect();
    for bits in [1, 3, 6, 8, 10] {
        let h = Histogram::with_precision(bits).unwrap();
        for v in &values {
            h.record(*v);
        }
        let text = render_histogram(&family, &h);
        assert_eq!(text, render_counts(&family, &h.counts()), "bits {bits}");
        let (buckets, count) = bucket_counts(&text);
        assert_eq!(count, values.len() as u64);
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_owned(), count));
        for ((_, got), bound) in buckets.iter().zip(bounds) {
            let edge = edge_at_or_below(bound, bits);
            let expected = values.iter().filter(|v| **v <= edge).count() as u64;
            assert_eq!(*got, expected, "bits {bits} bound {bound}");
            if bits >= 6 {
                assert!(is_edge(bound, bits));
                let exact = values.iter().filter(|v| **v <= bound).count() as u64;
                assert_eq!(*got, exact, "bits {bits} bound {bound}");
            }
            assert_eq!(
                *got,
                h.counts().count_le(bound),
                "bits {bits} bound {bound}"
            );
        }
    }
}

#[test]
fn concurrent_writers_are_all_counted() {
    let family = Family::histogram(
        "h",
        "x",
        ExportBounds::new(&embeddings_metrics::DEFAULT_LATENCY_BOUNDS_US, 6, 6).unwrap(),
    )
    .unwrap();
    let h = Histogram::new();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let h = &h;
            s.spawn(move || {
                for i in 0..5_000u64 {
                    h.record((i * 104_729 + t) % 70_000_000);
                }
            });
        }
    });
    let text = render_histogram(&family, &h);
    let (buckets, count) = bucket_counts(&text);
    assert_eq!(count, 30_000);
    let all: Vec<u64> = (0..6u64)
        .flat_map(|t| (0..5_000u64).map(move |i| (i * 104_729 + t) % 70_000_000))
        .collect();
    for ((_, got), bound) in buckets
        .iter()
        .zip(embeddings_metrics::DEFAULT_LATENCY_BOUNDS_US)
    {
        assert_eq!(*got, all.iter().filter(|v| **v <= bound).count() as u64);
    }
    // `_sum` is the exact sum, in seconds.
    let sum_text = text.lines().find_map(|l| l.strip_prefix("h_sum ")).unwrap();
    let (int, frac) = sum_text.split_once('.').unwrap_or((sum_text, ""));
    let micros: u64 =
        int.parse::<u64>().unwrap() * 1_000_000 + format!("{frac:0<6}").parse::<u64>().unwrap();
    assert_eq!(micros, all.iter().sum::<u64>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bucket_counts_are_exact_for_any_edge_bounds(
        raw_bounds in prop::collection::btree_set(prop_oneof![0u64..300, 0u64..5_000_000, Just(u64::MAX / 2)], 1..12),
        values in prop::collection::vec(prop_oneof![0u64..300, 0u64..10_000_000, Just(u64::MAX)], 0..400),
    ) {
        // Snap every bound to an edge at the default precision.
        let mut bounds: Vec<u64> = raw_bounds.iter().map(|b| edge_at_or_below(*b, 6)).collect();
        bounds.dedup();
        let family = Family::histogram("h", "x", ExportBounds::new(&bounds, 3, 6).unwrap()).unwrap();
        let h = Histogram::new();
        for v in &values {
            h.record(*v);
        }
        let text = render_histogram(&family, &h);
        prop_assert_eq!(&text, &render_counts(&family, &h.counts()));
        let (buckets, count) = bucket_counts(&text);
        prop_assert_eq!(count, values.len() as u64);
        prop_assert_eq!(buckets.len(), bounds.len() + 1);
        for ((_, got), bound) in buckets.iter().zip(&bounds) {
            prop_assert_eq!(*got, values.iter().filter(|v| *v <= bound).count() as u64);
        }
    }
}
