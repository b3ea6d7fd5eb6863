//! The operations kit (`ops/`) as code under test: promtool lints the rules
//! and runs their unit tests and checks the example Prometheus config;
//! amtool checks the Alertmanager example and its routing; every alert has a
//! firing and a quiet test and a runbook section; every metric the rules use
//! is one the server exports (the metric catalogue, which `workload.rs`
//! keeps equal to a real scrape).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use embeddings_tests::{amtool, dashboard, dashboard_queries, promtool};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(root().join("ops/prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn alerts() -> Vec<String> {
    read("ops/prometheus/rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_rules_pass_promtools_lint_and_their_unit_tests() {
    run_promtool(&["check", "rules", "--lint=all", "rules.yml"]);
    run_promtool(&["test", "rules", "rules_test.yml"]);
}

#[test]
fn the_example_prometheus_config_is_valid() {
    run_promtool(&["check", "config", "prometheus.yml"]);
}

/// Runs amtool on the Alertmanager example; whether it succeeded, and what
/// it printed.
fn run_amtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(amtool())
        .args(args)
        .arg(format!(
            "--config.file={}",
            root().join("ops/alertmanager.yml").display()
        ))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alertmanager_pages_criticals_tickets_warnings_and_routes_the_watchdog() {
    let (ok, out) = Command::new(amtool())
        .arg("check-config")
        .arg(root().join("ops/alertmanager.yml"))
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .unwrap();
    assert!(ok, "{out}");
    for (labels, receiver) in [
        (
            &["severity=critical", "alertname=EmbeddingsErrorBudgetBurn"][..],
            "page",
        ),
        (
            &["severity=warning", "alertname=EmbeddingsOverloaded"][..],
            "ticket",
        ),
        (
            &["severity=info", "alertname=EmbeddingsWatchdog"][..],
            "heartbeat",
        ),
    ] {
        let verify = format!("--verify.receivers={receiver}");
        let mut args = vec!["config", "routes", "test", verify.as_str()];
        args.extend_from_slice(labels);
        let (ok, out) = run_amtool(&args);
        assert!(ok, "{labels:?} should go to {receiver}: {out}");
    }
    // A wrong expectation fails, so the checks above can fail too.
    let (ok, _) = run_amtool(&[
        "config",
        "routes",
        "test",
        "--verify.receivers=page",
        "severity=warning",
    ]);
    assert!(!ok, "a warning must not page");
    let text = read("ops/alertmanager.yml");
    assert!(
        text.contains("source_matchers: ['severity=\"critical\"']")
            && text.contains("target_matchers: ['severity=\"warning\"']"),
        "criticals inhibit warnings"
    );
}

#[test]
fn every_alert_has_a_firing_test_a_quiet_test_and_a_runbook_section() {
    let tests = read("ops/prometheus/rules_test.yml");
    let runbook = read("ops/runbook.md");
    let names = alerts();
    assert!(names.len() >= 7, "{names:?}");
    for name in &names {
        let quiet = format!("alertname: {name}, exp_alerts: []");
        let firing = format!("alertname: {name}\n");
        if name != "EmbeddingsWatchdog" {
            assert!(tests.contains(&quiet), "{name}: no quiet case");
        }
        assert!(tests.contains(&firing), "{name}: no firing case");
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "{name}: no runbook section"
        );
        assert!(
            read("ops/prometheus/rules.yml")
                .contains(&format!("runbook.md#{}", name.to_lowercase())),
            "{name}: runbook_url"
        );
    }
}

#[test]
fn every_metric_the_rules_use_is_one_the_server_exports() {
    let catalogue = read("docs/metrics.md");
    let rules = read("ops/prometheus/rules.yml");
    let used: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("embeddings_") && !w.contains(':'))
        .map(|w| {
            w.trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum")
                .to_owned()
        })
        .collect();
    assert!(!used.is_empty());
    for name in &used {
        assert!(
            catalogue.contains(&format!("`{name}`")) || catalogue.contains(&format!("`{name}{{")),
            "{name} is used by a rule but not exported (not in docs/metrics.md)"
        );
    }
}

#[test]
fn the_dashboard_passes_the_grafana_linter_checks() {
    let d = dashboard();
    let vars: Vec<&serde_json::Value> =
        d["templating"]["list"].as_array().unwrap().iter().collect();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).copied();
    let ds = var("datasource").expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance", "model"] {
        assert!(var(name).is_some(), "${name} variable");
    }
    let panels: Vec<&serde_json::Value> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 15);
    for p in &panels {
        let title = &p["title"];
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: description"
        );
        assert!(
            p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{title}: unit"
        );
    }
    for q in dashboard_queries() {
        let e = &q.expr;
        // Every range is $__rate_interval, every selector has the job matcher.
        for (i, _) in e.match_indices('[') {
            assert!(e[i..].starts_with("[$__rate_interval]"), "{}: {e}", q.panel);
        }
        for (i, _) in e.match_indices('{') {
            let selector = &e[i..e[i..].find('}').map_or(e.len(), |j| i + j)];
            assert!(selector.contains("job=~\"$job\""), "{}: {e}", q.panel);
        }
    }
}

/// The histograms whose buckets carry exemplars (request ids); see
/// `docs/metrics.md`, "Exemplars".
const EXEMPLAR_BUCKETS: [&str; 2] = [
    "embeddings_latency_seconds_bucket",
    "embeddings_http_request_duration_seconds_bucket",
];

#[test]
fn latency_panels_ask_for_exemplars_exactly_where_the_server_has_them() {
    let d = dashboard();
    let mut asked = 0;
    for panel in d["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let carries = EXEMPLAR_BUCKETS.iter().any(|b| expr.contains(b));
            assert_eq!(
                target["exemplar"].as_bool().unwrap_or(false),
                carries,
                "{}: {expr}",
                panel["title"]
            );
            asked += usize::from(carries);
        }
    }
    assert!(asked >= 2, "both exemplar histograms are on the dashboard");
}

#[test]
fn every_dashboard_query_is_valid_promql_over_exported_metrics() {
    let catalogue = read("docs/metrics.md");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries().iter().enumerate() {
        for word in q
            .expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        {
            if word.starts_with("embeddings_") || word.starts_with("process_") {
                let family = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    catalogue.contains(&format!("`{family}`"))
                        || catalogue.contains(&format!("`{family}{{")),
                    "{}: {family} is not exported",
                    q.panel
                );
            }
        }
        let expr = serde_json::to_string(&q.resolved("5m")).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}:check\n        expr: {expr}\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("embeddings-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard_rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The block of `rules.yml` that defines `alert`.
fn alert_block(rules: &str, alert: &str) -> Option<String> {
    let start = rules.find(&format!("- alert: {alert}\n"))?;
    let rest = &rules[start + 1..];
    let end = rest.find("- alert: ").unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// `latency_p95_high` → `EmbeddingsLatencyP95High`.
fn prometheus_name(rule: &str) -> String {
    let camel: String = rule
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("Embeddings{camel}")
}

#[test]
fn the_prometheus_alerts_agree_with_the_in_process_rules() {
    use embeddings_health::{AlertConfig, AlertMetric, Direction};
    let rules = read("ops/prometheus/rules.yml");
    for rule in AlertConfig::recommended_rules() {
        let name = prometheus_name(rule.name());
        let block = alert_block(&rules, &name)
            .unwrap_or_else(|| panic!("{} has no Prometheus alert {name}", rule.name()));
        // Thresholds in Prometheus' units: seconds where the engine has µs.
        let threshold = match rule.metric() {
            AlertMetric::LatencyP95 => rule.threshold() / 1e6,
            _ => rule.threshold(),
        };
        let op = match rule.metric().direction() {
            Direction::Above => ">",
            Direction::Below => "<",
        };
        assert!(
            block.contains(&format!("{op} {threshold}\n")),
            "{name}: threshold {op} {threshold} expected in\n{block}"
        );
        let for_secs = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("for: "))
            .map_or(0, |d| {
                let (n, unit) = d.split_at(d.len() - 1);
                let n: u64 = n.parse().unwrap();
                match unit {
                    "s" => n,
                    "m" => n * 60,
                    "h" => n * 3600,
                    other => panic!("{name}: unit {other}"),
                }
            });
        assert_eq!(for_secs, rule.for_duration().as_secs(), "{name}: for");
        assert!(
            block.contains(&format!("severity: {}\n", rule.severity())),
            "{name}: severity {}",
            rule.severity()
        );
    }
}

/// The families a text uses (`embeddings_*`, `process_*`), histogram and
/// counter suffixes folded onto their family as the catalogue names it.
fn families_in(text: &str, catalogue: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| (w.starts_with("embeddings_") || w.starts_with("process_")) && !w.contains(':'))
        .map(|w| {
            let base = w
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            // Counters are catalogued with their `_total` sample name.
            if catalogue.contains(&format!("`{base}_total`"))
                || catalogue.contains(&format!("`{base}_total{{"))
            {
                format!("{base}_total")
            } else {
                base.to_owned()
            }
        })
        .collect()
}

/// `ops/metric-usage.md`, as the rules and the dashboard make it.
fn metric_usage() -> String {
    let catalogue = read("docs/metrics.md");
    let rules = read("ops/prometheus/rules.yml");
    let mut used: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> =
        std::collections::BTreeMap::new();
    for block in rules.split("\n      - ").skip(1) {
        let name = block
            .strip_prefix("record: ")
            .or_else(|| block.strip_prefix("alert: "))
            .and_then(|b| b.lines().next())
            .unwrap_or_default()
            .to_owned();
        for family in families_in(block, &catalogue) {
            used.entry(family).or_default().0.push(format!("`{name}`"));
        }
    }
    for q in dashboard_queries() {
        for family in families_in(&q.expr, &catalogue) {
            let panels = &mut used.entry(family).or_default().1;
            let panel = format!("{:?}", q.panel);
            if !panels.contains(&panel) {
                panels.push(panel);
            }
        }
    }
    let mut out = String::from(
        "# Which rules and panels use each metric family\n\n\
         Generated from `ops/prometheus/rules.yml` and `ops/grafana/embeddings.json`\n\
         by `tests/tests/ops_rules.rs` (run it with `UPDATE_OPS_DOCS=1` to rewrite\n\
         this page); the families themselves are described in `docs/metrics.md`.\n\n\
         | family | rules | dashboard panels |\n|---|---|---|\n",
    );
    for (family, (rules, panels)) in &used {
        let cell = |v: &Vec<String>| {
            if v.is_empty() {
                "—".to_owned()
            } else {
                v.join(", ")
            }
        };
        out.push_str(&format!(
            "| `{family}` | {} | {} |\n",
            cell(rules),
            cell(panels)
        ));
    }
    out
}

#[test]
fn the_metric_usage_page_is_up_to_date() {
    let expected = metric_usage();
    let path = root().join("ops/metric-usage.md");
    if std::env::var_os("UPDATE_OPS_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "ops/metric-usage.md is stale: run `UPDATE_OPS_DOCS=1 cargo test -p embeddings-tests --test ops_rules`"
    );
    // Every family named there is catalogued.
    let catalogue = read("docs/metrics.md");
    for line in expected.lines().filter(|l| l.starts_with("| `")) {
        let family = line.split('`').nth(1).unwrap();
        assert!(
            catalogue.contains(&format!("`{family}`"))
                || catalogue.contains(&format!("`{family}{{")),
            "{family}"
        );
    }
}
