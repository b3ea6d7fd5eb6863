//! The operations rules (`ops/prometheus/`) as code under test: promtool
//! lints them and runs their unit tests, every alert has a firing and a
//! quiet test and a runbook section, and every metric they use is one the
//! server exports (the metric catalogue, which `workload.rs` keeps equal to
//! a real scrape).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a failed test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use embeddings_tests::promtool;

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
