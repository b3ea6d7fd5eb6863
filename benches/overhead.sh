#!/usr/bin/env bash
# Instrumentation overhead of the full pipeline, paired and interleaved
# (benches/src/bin/overhead_ab.rs; method and results in BENCHMARKS.md,
# "Instrumentation overhead"). Builds the binary first (not timed), then runs
# the three input/batch cases with `uptime` around them and the busiest
# processes sampled every 3 s, so interference can be read off afterwards.
#
# Usage: bash benches/overhead.sh            (≈ 10 min on 2 cores)
# Env:   CARGO_TARGET_DIR (default <repo>/target)
#        ROUNDS_SHORT_1 / ROUNDS_SHORT_32 / ROUNDS_LONG_1 (defaults 8000 / 600 / 1000)
# Output: <target>/bench-results/overhead-ab.log (one JSON line per case) and
#         overhead-ab-top.log
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
results="$target/bench-results"
mkdir -p "$results"
log="$results/overhead-ab.log"
toplog="$results/overhead-ab-top.log"
models="${EMBEDDINGS_MODELS_DIR:-$repo/models}"

if [[ ! -d "$models/all-MiniLM-L6-v2" ]]; then
    echo "overhead.sh: $models/all-MiniLM-L6-v2 is missing: run 'cargo xtask fetch-models' first." >&2
    exit 1
fi

cargo build --release -p embeddings-benches --bin overhead_ab
bin="$target/release/overhead_ab"

(while sleep 3; do date -u +%T; top -b -n1 | sed -n 8,10p; done) >"$toplog" 2>&1 &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

{
    echo "uptime before: $(uptime)"
    for spec in "short 1 ${ROUNDS_SHORT_1:-8000}" "short 32 ${ROUNDS_SHORT_32:-600}" "long 1 ${ROUNDS_LONG_1:-1000}"; do
        echo "start $(date -u +%FT%TZ): $spec"
        # shellcheck disable=SC2086 # $spec is three words on purpose
        "$bin" "$models" "$repo/benches/data/sentences.json" $spec
    done
    echo "uptime after: $(uptime)"
} | tee "$log"
echo "overhead.sh: results in $log; process samples in $toplog"
