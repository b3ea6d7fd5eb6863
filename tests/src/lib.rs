//! Shared helpers for the workspace's integration tests: the real
//! Prometheus parser (`promtool check metrics`) and a strict OpenMetrics 1.0
//! structural check, used by `tests/tests/` and by the server's tests.
//!
//! promtool 2.42 parses only the Prometheus text format: fed OpenMetrics, it
//! reads the counter sample `x_total` of family `x` as a separate, untyped
//! metric and fails the lint. So OpenMetrics goes through
//! [`check_openmetrics`] and is then translated mechanically with
//! [`openmetrics_to_prometheus`] so promtool can check it too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed check is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What to do when promtool is missing.
pub const PROMTOOL_MISSING: &str = "promtool not found: run `cargo xtask ci` or `cargo xtask install-tools`, which unpack it under target/tools/";

/// A tool the tests run: `$env` when set, else where `cargo xtask
/// install-tools` unpacks it (`target/tools/<package>/usr/bin/<name>`), else
/// on `PATH`.
///
/// # Panics
/// When it is nowhere: the message says how to fetch it.
#[must_use]
pub fn tool(name: &str, env: &str, package: &str) -> PathBuf {
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools")
        .join(package)
        .join("usr/bin")
        .join(name);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::env::var_os(env)
        .map(PathBuf::from)
        .into_iter()
        .chain([unpacked])
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run `cargo xtask install-tools` (it unpacks Debian's `{package}` under target/tools/), or set {env}")
        })
}

/// `promtool` (see [`tool`]).
#[must_use]
pub fn promtool() -> PathBuf {
    tool("promtool", "EMBEDDINGS_PROMTOOL", "prometheus")
}

/// `amtool` (see [`tool`]).
#[must_use]
pub fn amtool() -> PathBuf {
    tool("amtool", "EMBEDDINGS_AMTOOL", "prometheus-alertmanager")
}

/// Runs `promtool check metrics < file` and fails on a non-zero exit or any
/// output (promtool prints lint problems and still may exit non-zero).
pub fn promtool_check(file: &Path) {
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

pub fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("embeddings-exposition-checks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
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

pub fn check_openmetrics(text: &str) {
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
        let (name, labels, rest) = parse_sample(line);
        let (value, exemplar) = split_exemplar(&rest, line);
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
        assert!(
            exemplar.is_none() || matches!(suffix, "_bucket" | "_total"),
            "exemplars belong on buckets and counters only: {line:?}"
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
                if let Some((_, value, _)) = &exemplar {
                    assert!(
                        *value <= bound && (*value > last_le || last_le.is_infinite()),
                        "exemplar value outside its bucket: {line:?}"
                    );
                }
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
    (name.to_owned(), labels, value.to_owned())
}

/// An exemplar's labels, value and timestamp.
type ParsedExemplar = (Vec<(String, String)>, f64, Option<f64>);

/// Splits `value[ # {labels} value[ timestamp]]` into the value and the
/// parsed exemplar: its labels, value and timestamp. Checks the exemplar's
/// syntax and the 128-character bound on its label set.
fn split_exemplar(rest: &str, line: &str) -> (String, Option<ParsedExemplar>) {
    let Some((value, exemplar)) = rest.split_once(" # ") else {
        assert!(!rest.contains(' '), "timestamps are not expected: {line:?}");
        return (rest.to_owned(), None);
    };
    assert!(
        !value.contains(' '),
        "timestamps are not expected: {line:?}"
    );
    assert!(
        exemplar.starts_with('{'),
        "exemplar without labels: {line:?}"
    );
    let (_, labels, tail) = parse_sample(&format!("exemplar{exemplar}"));
    let chars: usize = labels
        .iter()
        .map(|(k, v)| k.chars().count() + v.chars().count())
        .sum();
    assert!(
        chars <= 128,
        "exemplar label set over 128 characters: {line:?}"
    );
    let mut fields = tail.split(' ');
    let number = |f: Option<&str>| -> Option<f64> {
        f.map(|f| {
            let n: f64 = f
                .parse()
                .unwrap_or_else(|_| panic!("bad exemplar number {f:?} in {line:?}"));
            assert!(n.is_finite(), "{line:?}");
            n
        })
    };
    let value_of_exemplar = number(fields.next()).unwrap_or_else(|| panic!("{line:?}"));
    let timestamp = number(fields.next());
    assert_eq!(
        fields.next(),
        None,
        "trailing text after the exemplar: {line:?}"
    );
    (
        value.to_owned(),
        Some((labels, value_of_exemplar, timestamp)),
    )
}

/// The mechanical OpenMetrics → Prometheus 0.0.4 translation: counter
/// families take their `_total` sample name, `# UNIT` and `# EOF` go, and
/// HELP text drops the `\"` escape Prometheus does not have.
pub fn openmetrics_to_prometheus(om: &str) -> String {
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
        // Prometheus' text has no exemplars; a label value never holds
        // ` # {` in what we render, so the first one starts the exemplar.
        out.push_str(line.split_once(" # {").map_or(line, |(sample, _)| sample));
        out.push('\n');
    }
    out
}

/// Checks `text` (Prometheus format) with `promtool check metrics`: exit 0 and
/// no output at all, or the test fails.
pub fn promtool_check_text(name: &str, text: &str) {
    let path = write_temp(name, text);
    promtool_check(&path);
    let _ = std::fs::remove_file(path);
}

/// One query of the Grafana dashboard (`ops/grafana/embeddings.json`).
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    /// The panel's title.
    pub panel: String,
    /// The panel's description.
    pub description: String,
    /// The query as written, with Grafana's variables.
    pub expr: String,
}

impl DashboardQuery {
    /// The query as Prometheus runs it with every variable at "All" and
    /// `$__rate_interval` at `window`.
    #[must_use]
    pub fn resolved(&self, window: &str) -> String {
        self.expr
            .replace("$__rate_interval", window)
            .replace("\"$job\"", "\".*\"")
            .replace("\"$instance\"", "\".*\"")
            .replace("\"$model\"", "\".*\"")
    }
}

/// The dashboard, parsed.
#[must_use]
pub fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/grafana/embeddings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of every panel of the dashboard.
#[must_use]
pub fn dashboard_queries() -> Vec<DashboardQuery> {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| DashboardQuery {
                    panel: p["title"].as_str().unwrap_or_default().to_owned(),
                    description: p["description"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// Copies the model folder `src` into `dst` (which should keep the folder's
/// name, e.g. `all-MiniLM-L6-v2`, so the canary's reference still applies)
/// with the weight tensor `tensor` changed element by element by
/// `change(value, flat index)`: a corrupted checkpoint for the quality
/// tests. The tokenizer and configuration files are copied as they are.
pub fn altered_model(src: &Path, dst: &Path, tensor: &str, change: fn(f32, usize) -> f32) {
    use candle_core::{Device, Tensor};
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let original = tensors
        .get(tensor)
        .unwrap_or_else(|| panic!("no tensor {tensor}"));
    let shape = original.dims().to_vec();
    let values: Vec<f32> = original
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, v)| change(v, i))
        .collect();
    let altered = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    tensors.insert(tensor.to_owned(), altered);
    candle_core::safetensors::save(&tensors, dst.join("model.safetensors")).unwrap();
}
