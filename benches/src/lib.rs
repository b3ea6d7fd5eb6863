//! Helpers shared by the measurement programs in `src/bin/`
//! (`inprocess_embed`, `overhead_ab`, `stage_breakdown`). The criterion
//! benchmarks live in `benches/benches/`.

use std::process::ExitCode;

/// Parses a count argument.
///
/// # Errors
/// The argument and why it is not a `usize`.
pub fn count_arg(s: &str) -> Result<usize, String> {
    s.parse::<usize>().map_err(|e| format!("{s}: {e}"))
}

/// The first `n` texts of the `kind` array (`short` or `long`) of a
/// `benches/data/sentences.json`-shaped file.
///
/// # Errors
/// An unreadable file, invalid JSON, or no array of that name.
pub fn sentences(path: &str, kind: &str, n: usize) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok(json[kind]
        .as_array()
        .ok_or(format!("{path}: no `{kind}` array"))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .take(n)
        .collect())
}

/// Runs a program's `run(args)`: prints its output on success, `name: error`
/// on failure, and turns that into the exit code.
pub fn main_with(name: &str, run: impl FnOnce(&[String]) -> Result<String, String>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_reads_the_bench_data() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sentences.json");
        let short = sentences(path, "short", 3).unwrap();
        assert_eq!(short.len(), 3);
        assert!(
            sentences(path, "missing", 3)
                .unwrap_err()
                .contains("missing")
        );
        assert!(count_arg("x").is_err());
        assert_eq!(count_arg("12"), Ok(12));
    }
}
