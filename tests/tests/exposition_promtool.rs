//! Renders a realistic, concurrently recorded workload in both exposition
//! formats and checks them with `promtool check metrics` (the Prometheus
//! project's own parser and linter).
//!
//! promtool 2.42 parses its input as the Prometheus text format only: fed
//! OpenMetrics, it reads the counter sample `x_total` of family `x` as a
//! separate, untyped metric without help and fails the lint. So:
//!
//! - the Prometheus rendering goes to promtool as is, which must exit 0 with
//!   no output (no parse error, no lint complaint);
//! - the OpenMetrics rendering goes through a strict structural check of the
//!   OpenMetrics 1.0 rules we rely on (metadata before samples, one block per
//!   family, sample suffixes per type, `# UNIT` matching the name suffix,
//!   label syntax and escapes, canonical `le`, cumulative buckets ending in
//!   `+Inf` equal to `_count`, `# EOF` last), and is then mechanically
//!   translated to the Prometheus format, which must be byte-identical to the
//!   Prometheus rendering (so promtool's verdict on that covers it too), and
//!   that translation is also fed to promtool.
//!
//! Both renderings use a manual clock, so they describe the same instant.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use embeddings_metrics::{
    Clock, Counter, DEFAULT_LATENCY_BOUNDS_US, Encoder, ExportBounds, Family as MetricFamily,
    Format, Histogram, Labels, MetricsConfig, PipelineMetrics, Value,
};
use embeddings_types::{ErrorKind, ModelId, Stage};

const PROMTOOL_MISSING: &str =
    "promtool not found: run `cargo xtask ci`, which installs it, or `apt-get install prometheus`";

fn promtool() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/promtool")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{PROMTOOL_MISSING}"))
}

/// Runs `promtool check metrics < file` and fails on a non-zero exit or any
/// output (promtool prints lint problems and still may exit non-zero).
fn promtool_check(file: &Path) {
    let input = std::fs::File::open(file).unwrap();
    let output = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .output()
        .unwrap_or_else(|e| panic!("{PROMTOOL_MISSING} ({e})"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics failed on {}: status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        file.display(),
        output.status.code(),
    );
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("exposition_promtool");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn workload() -> Arc<PipelineMetrics> {
    let (clock, hand) = Clock::manual();
    let config = MetricsConfig::default().with_const_label("replica", "eu-1 \"blue\"\\pool\nB");
    let metrics = Arc::new(PipelineMetrics::with_config_and_clock(config, clock).unwrap());
    metrics.set_workers(4);
    metrics.set_process_rss_bytes(512 << 20);
    metrics.set_gpu_memory_bytes(6 << 30, 24 << 30);
    // Cache figures deliberately left unset: their families must still parse.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let m = Arc::clone(&metrics);
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let _in_flight = m.track_in_flight();
                    m.queue_depth_inc();
                    let model = ModelId::ALL[((i + t) % 12) as usize];
                    m.record_model_request(model);
                    m.record_stage(Stage::QueueWait, i % 300);
                    m.record_stage(Stage::Tokenization, 50 + i % 100);
                    m.record_stage(Stage::Inference, 800 + (i * 37) % 20_000);
                    m.record_stage(Stage::Fusion, 30 + i % 70);
                    m.record_model_latency(model, 700 + (i * 53) % 25_000);
                    if i % 3 == 0 {
                        m.record_cache_hit();
                    } else {
                        m.record_cache_miss();
                    }
                    if i % 97 == 0 {
                        m.record_model_failure(model, ErrorKind::ALL[(i % 6) as usize]);
                    } else if i % 501 == 0 {
                        m.record_error();
                    } else {
                        m.record_embedding(1_000 + (i * 71) % 40_000);
                    }
                    if i % 32 == 31 {
                        m.record_batch(32, 20_000 + i);
                        m.record_cache_eviction(2);
                    }
                    m.queue_depth_dec();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    hand.advance(Duration::from_millis(42_500));
    metrics
}

#[test]
fn prometheus_rendering_passes_promtool() {
    let metrics = workload();
    let text = metrics.render_prometheus();
    promtool_check(&write_temp("metrics.prom", &text));
    // And a fresh recorder (every series at zero) too.
    let fresh = PipelineMetrics::new().render_prometheus();
    promtool_check(&write_temp("fresh.prom", &fresh));
}

#[test]
fn openmetrics_rendering_is_strictly_valid_and_matches_prometheus() {
    let metrics = workload();
    let om = metrics.render_openmetrics();
    let prom = metrics.render_prometheus();
    check_openmetrics(&om);
    let translated = openmetrics_to_prometheus(&om);
    assert_eq!(
        translated, prom,
        "OpenMetrics and Prometheus renderings disagree"
    );
    promtool_check(&write_temp("translated.prom", &translated));
    check_openmetrics(&PipelineMetrics::new().render_openmetrics());
}

/// Custom families written with the public encoder — counters, gauges of
/// every value kind, histograms in seconds and in plain integers, labels
/// needing escapes — followed by a recorder's own exposition through the
/// same encoder, as a server exposing both would.
fn custom_exposition(format: Format) -> String {
    let requests =
        MetricFamily::counter("app_requests", "Requests by route, \"quoted\" help.").unwrap();
    let temperature = MetricFamily::gauge("app_temperature_celsius", "A gauge.").unwrap();
    let latency = MetricFamily::histogram(
        "app_latency_seconds",
        "Request latency.",
        ExportBounds::new(&DEFAULT_LATENCY_BOUNDS_US, 6, 6).unwrap(),
    )
    .unwrap();
    let payload = MetricFamily::histogram(
        "app_payload_bytes",
        "Payload sizes.",
        ExportBounds::new(&[0, 64, 1024, 65_536], 0, 6).unwrap(),
    )
    .unwrap();
    let routes: Vec<Labels> = ["/", "/embed", "/odd \"route\"\\x\ny"]
        .iter()
        .map(|r| Labels::new([("route", *r), ("replica", "eu-1")]).unwrap())
        .collect();
    let counters: Vec<Counter> = routes.iter().map(|_| Counter::new()).collect();
    let histograms: Vec<Histogram> = routes.iter().map(|_| Histogram::new()).collect();
    let sizes = Histogram::new();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (counters, histograms, sizes) = (&counters, &histograms, &sizes);
            s.spawn(move || {
                for i in 0..3_000u64 {
                    let r = ((i + t) % 3) as usize;
                    counters[r].inc();
                    histograms[r].record(50 + (i * 7_919) % 3_000_000);
                    sizes.record((i * 31) % 100_000);
                }
            });
        }
    });

    let mut text = String::new();
    let mut e = Encoder::new(&mut text, format);
    let mut f = e.family(&requests).unwrap();
    for (labels, counter) in routes.iter().zip(&counters) {
        f.counter(labels, counter.get()).unwrap();
    }
    let mut f = e.family(&temperature).unwrap();
    f.gauge(&routes[0], -4_i64).unwrap();
    f.gauge(&routes[1], 21.25).unwrap();
    f.gauge(
        &routes[2],
        Value::Scaled {
            value: 36_600,
            decimals: 3,
        },
    )
    .unwrap();
    let mut f = e.family(&latency).unwrap();
    for (labels, histogram) in routes.iter().zip(&histograms) {
        f.histogram(labels, histogram).unwrap();
    }
    e.family(&payload)
        .unwrap()
        .histogram_counts(&Labels::empty(), &sizes.counts())
        .unwrap();
    // The recorder's own families, prefixed apart, through the same encoder.
    let metrics = workload();
    let own = match format {
        Format::Prometheus => metrics.render_prometheus(),
        Format::OpenMetrics => metrics.render_openmetrics(),
    };
    e.finish().unwrap();
    // Both end the exposition: keep a single `# EOF`, last.
    let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
    body + &own
}

#[test]
fn custom_families_pass_promtool_and_the_strict_openmetrics_check() {
    let prom = custom_exposition(Format::Prometheus);
    promtool_check(&write_temp("custom.prom", &prom));
    let om = custom_exposition(Format::OpenMetrics);
    check_openmetrics(&om);
    let translated = openmetrics_to_prometheus(&om);
    promtool_check(&write_temp("custom-translated.prom", &translated));
}

#[test]
fn promtool_rejects_a_broken_exposition() {
    // Guards against a check that passes vacuously.
    let bad = "# TYPE x_seconds_total counter\nx_seconds_total{a=\"1\" 3\n";
    let file = write_temp("bad.prom", bad);
    let input = std::fs::File::open(&file).unwrap();
    let status = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

// ---------------------------------------------------------------------------
// A strict OpenMetrics 1.0 check, of the subset this crate emits.

#[derive(Debug, Default)]
struct Family {
    kind: String,
    unit: Option<String>,
    help: bool,
    samples: usize,
}

fn check_openmetrics(text: &str) {
    assert!(
        text.ends_with("# EOF\n"),
        "must end with `# EOF` and a newline"
    );
    let body = &text[..text.len() - "# EOF\n".len()];
    assert!(
        !body.contains("# EOF"),
        "`# EOF` must be the last line only"
    );
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut series = BTreeSet::new();
    // Histogram state per series: (last le, last cumulative count).
    let mut buckets: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut inf: BTreeMap<String, f64> = BTreeMap::new();
    for line in body.lines() {
        assert!(!line.is_empty(), "blank lines are not allowed");
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name, rest) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
            );
            assert!(is_metric_name(name), "bad family name in {line:?}");
            if order.last().map(String::as_str) != Some(name) {
                assert!(!families.contains_key(name), "family {name} is split");
                order.push(name.to_owned());
            }
            let family = families.entry(name.to_owned()).or_default();
            assert_eq!(family.samples, 0, "metadata after samples in {name}");
            match keyword {
                "HELP" => {
                    assert!(!family.help, "two HELP lines for {name}");
                    assert!(valid_escapes(rest, true), "bad HELP escape: {line:?}");
                    family.help = true;
                }
                "TYPE" => {
                    assert!(family.kind.is_empty(), "two TYPE lines for {name}");
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&rest),
                        "{line:?}"
                    );
                    assert!(!(rest == "counter" && name.ends_with("_total")), "{line:?}");
                    family.kind = rest.to_owned();
                }
                "UNIT" => {
                    assert!(family.unit.is_none(), "two UNIT lines for {name}");
                    assert!(
                        name.ends_with(&format!("_{rest}")),
                        "UNIT must suffix the name: {line:?}"
                    );
                    family.unit = Some(rest.to_owned());
                }
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment {line:?}");
        let (name, labels, value) = parse_sample(line);
        let family_name = order
            .last()
            .unwrap_or_else(|| panic!("sample before metadata: {line:?}"));
        let family = families.get_mut(family_name).unwrap();
        assert!(
            family.help && !family.kind.is_empty(),
            "{family_name} lacks HELP or TYPE"
        );
        let suffix = name
            .strip_prefix(family_name.as_str())
            .unwrap_or_else(|| panic!("sample {name} outside its family {family_name}"));
        let allowed: &[&str] = match family.kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            _ => &["_bucket", "_sum", "_count"],
        };
        assert!(
            allowed.contains(&suffix),
            "sample {name} not allowed in {} {family_name}",
            family.kind
        );
        family.samples += 1;
        let number: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(number.is_finite(), "{line:?}");
        if family.kind != "gauge" {
            assert!(number >= 0.0, "negative counter/histogram value: {line:?}");
        }
        assert!(
            series.insert(line.rsplit_once(' ').unwrap().0.to_owned()),
            "duplicate series {line:?}"
        );
        let key: String = labels
            .iter()
            .filter(|(k, _)| k != "le")
            .map(|(k, v)| format!("{k}={v},"))
            .collect();
        let key = format!("{family_name}|{key}");
        match suffix {
            "_bucket" => {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le")
                    .1
                    .clone();
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    assert!(
                        le.contains('.') || le.contains('e'),
                        "non-canonical le {le:?}"
                    );
                    le.parse::<f64>().unwrap()
                };
                let (last_le, last_count) = buckets
                    .get(&key)
                    .copied()
                    .unwrap_or((f64::NEG_INFINITY, 0.0));
                assert!(bound > last_le, "le not increasing in {line:?}");
                assert!(number >= last_count, "buckets not cumulative in {line:?}");
                buckets.insert(key.clone(), (bound, number));
                if bound.is_infinite() {
                    inf.insert(key, number);
                }
            }
            "_count" => {
                assert_eq!(
                    inf.get(&key),
                    Some(&number),
                    "+Inf bucket != _count for {key}"
                );
            }
            _ => {}
        }
    }
    for (name, family) in &families {
        assert!(
            family.help && !family.kind.is_empty(),
            "{name} lacks HELP or TYPE"
        );
        if family.kind == "histogram" {
            assert!(family.samples > 0, "histogram {name} has no samples");
        }
    }
    assert!(
        buckets.keys().all(|k| inf.contains_key(k)),
        "a histogram lacks +Inf"
    );
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Only `\\`, `\n` and (where allowed) `\"` escapes; no raw `"` in values.
fn valid_escapes(s: &str, quote_must_be_escaped: bool) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !matches!(chars.next(), Some('\\' | 'n' | '"')) => return false,
            '"' if quote_must_be_escaped => return false,
            '\n' => return false,
            _ => {}
        }
    }
    true
}

/// Parses `name{k="v",...} value` strictly; returns unescaped label values.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad sample {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad metric name in {line:?}");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().unwrap().0;
            let eq = inner[start..].find('=').unwrap() + start;
            let key = &inner[start..eq];
            assert!(
                is_metric_name(key) && !key.contains(':'),
                "bad label name in {line:?}"
            );
            while chars.peek().unwrap().0 <= eq {
                chars.next();
            }
            assert_eq!(
                chars.next().map(|c| c.1),
                Some('"'),
                "label value must be quoted: {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated label value in {line:?}"))
                    .1
                {
                    '\\' => match chars.next().map(|c| c.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in {line:?}"),
                    c => value.push(c),
                }
            }
            assert!(
                labels.iter().all(|(k, _): &(String, String)| k != key),
                "duplicate label {key}"
            );
            labels.push((key.to_owned(), value));
            match chars.next().map(|c| c.1) {
                Some(',') => continue,
                Some('}') => {
                    let at = chars.peek().map_or(inner.len(), |c| c.0);
                    rest = &inner[at..];
                    break;
                }
                other => panic!("expected , or }} after a label, got {other:?} in {line:?}"),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("missing value in {line:?}"));
    assert!(
        !value.contains(' '),
        "timestamps/exemplars are not expected: {line:?}"
    );
    (name.to_owned(), labels, value.to_owned())
}

/// The mechanical OpenMetrics → Prometheus 0.0.4 translation: counter
/// families take their `_total` sample name, `# UNIT` and `# EOF` go, and
/// HELP text drops the `\"` escape Prometheus does not have.
fn openmetrics_to_prometheus(om: &str) -> String {
    let mut counters = BTreeSet::new();
    let mut out = String::new();
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            if kind == "counter" {
                counters.insert(name.to_owned());
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            let help = help.replace("\\\"", "\"");
            // HELP precedes TYPE, so counter-ness is known from the next
            // TYPE line; look it up in the original text instead.
            let is_counter = om.contains(&format!("# TYPE {name} counter\n"));
            let name = if is_counter {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            out.push_str(&format!("# HELP {name} {help}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
