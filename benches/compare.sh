#!/usr/bin/env bash
# Pipeline throughput vs sentence-transformers on PyTorch, in one session:
#   1. benches/python/setup.sh if benches/.venv is missing;
#   2. builds the criterion bench first (so no compile runs beside a measurement);
#   3. the PyTorch baseline (benches/python/st_throughput.py), then the criterion
#      bench `pipeline`, back to back, with `uptime` before and after each and
#      the busiest processes sampled every 5 s into a log;
#   4. a summary table (sentences/s; ratios vs the targets) from criterion's
#      <target>/criterion/**/new/estimates.json and the PyTorch JSON.
#
# Usage: bash benches/compare_pytorch.sh          (from anywhere; ≈ 6–8 min)
# Env:   CARGO_TARGET_DIR  (default: <repo>/target)
#        SKIP_PYTORCH=1    reuse the last PyTorch JSON (the table says so)
#        SKIP_CARGO=1      reuse the last criterion results (the table says so)
# Output: <target>/bench-results/{pytorch.json,compare-pytorch.log,compare-pytorch-top.log,
#         compare-pytorch-summary.md}
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
results="$target/bench-results"
mkdir -p "$results"
log="$results/compare-pytorch.log"
toplog="$results/compare-pytorch-top.log"
summary="$results/compare-pytorch-summary.md"
pyjson="$results/pytorch.json"
venv_py="$repo/benches/.venv/bin/python"

say() { printf '[compare] %s\n' "$*" | tee -a "$log"; }
load() { say "$1: $(date -u +%FT%TZ) uptime:$(uptime | sed 's/.*up/ up/')"; }

: >"$log"
say "repo $repo, target $target"
say "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"

if [[ ! -d "$repo/models/all-MiniLM-L6-v2" && -z "${EMBEDDINGS_MODELS_DIR:-}" ]]; then
    say "ERROR: models/all-MiniLM-L6-v2 is missing: run 'cargo xtask fetch-models' first."
    exit 1
fi

if [[ "${SKIP_PYTORCH:-0}" != "1" && ! -x "$venv_py" ]]; then
    say "benches/.venv missing: running benches/python/setup.sh"
    bash "$repo/benches/python/setup.sh"
fi

# Build first (not timed), then run the bench executable directly: the
# measurement then does not hold cargo's lock on the target directory (another
# session's `cargo test` does not stall it, nor it them). BENCH_BIN=path skips
# the build and runs that executable.
bench_bin="${BENCH_BIN:-}"
if [[ "${SKIP_CARGO:-0}" != "1" && -z "$bench_bin" ]]; then
    say "building the bench (not timed; waits if another cargo holds $target)"
    bench_bin="$(cargo bench -p embeddings-benches --bench pipeline --no-run --message-format=json 2>>"$log" \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])')"
    [[ -x "$bench_bin" ]] || { say "ERROR: building the bench failed (see $log)"; exit 1; }
fi

# Busiest processes every 5 s, to see who shared the two cores during the run
# (ps %CPU is the average over each process's life: a new rustc shows at once,
# a long-lived idle one fades).
(
    while :; do
        printf '=== %s\n' "$(date -u +%T)"
        ps -eo pid,pcpu,etimes,comm --sort=-pcpu | head -n 6
        sleep 5
    done
) >"$toplog" 2>&1 &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

start_epoch="$(date +%s)"
if [[ "${SKIP_PYTORCH:-0}" != "1" ]]; then
    load "before pytorch"
    "$venv_py" "$repo/benches/python/st_throughput.py" --out "$pyjson" 2>&1 | tee -a "$log"
    load "after pytorch"
else
    say "SKIP_PYTORCH=1: reusing $pyjson"
fi

if [[ "${SKIP_CARGO:-0}" != "1" ]]; then
    load "before criterion"
    say "running $bench_bin --bench"
    (cd "$repo/benches" && CARGO_TARGET_DIR="$target" "$bench_bin" --bench) 2>&1 | tee -a "$log"
    load "after criterion"
else
    say "SKIP_CARGO=1: reusing $target/criterion"
fi

kill "$sampler" 2>/dev/null || true

py="$venv_py"
[[ -x "$py" ]] || py=python3
"$py" - "$target/criterion" "$pyjson" "$start_epoch" <<'PY' | tee "$summary" | tee -a "$log"
import json
import sys
from pathlib import Path

crit, pyjson, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
stale = []


def est(*parts):
    """Median ns per iteration of one criterion bench, or None."""
    p = crit.joinpath(*parts, "new", "estimates.json")
    if not p.is_file():
        return None
    if p.stat().st_mtime < start:
        stale.append(str(p))
    return json.loads(p.read_text())["median"]["point_estimate"]


def sps(b, ns):
    return None if ns is None else b / (ns * 1e-9)


def f(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


torch = {}
env = {}
if pyjson.is_file():
    data = json.loads(pyjson.read_text())
    env = data.get("environment", {})
    if pyjson.stat().st_mtime < start:
        stale.append(str(pyjson))
    for r in data["results"]:
        torch[(r["input"], r["batch_size"])] = r

print()
print("## Summary: sentences/s (criterion median per iteration; PyTorch median of rounds)")
print()
print("| input | batch | ours semantic | ours full (12 slots) | PyTorch (ST) | full / semantic (target ≥ 0.8) | semantic / PyTorch (target ≥ 1.0) | PyTorch cpu_util |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for kind in ("short", "long"):
    for b in (1, 32, 128):
        sem = sps(b, est(f"pipeline_{kind}", "semantic", str(b)))
        full = sps(b, est(f"pipeline_{kind}", "full", str(b)))
        t = torch.get((kind, b))
        pt = t["sentences_per_s_median"] if t else None
        r1, r2 = ratio(full, sem), ratio(sem, pt)
        m1 = "" if r1 is None else (" ✓" if r1 >= 0.8 else " ✗")
        m2 = "" if r2 is None else (" ✓" if r2 >= 1.0 else " ✗")
        print(f"| {kind} | {b} | {f(sem)} | {f(full)} | {f(pt)} | {f(r1, '.2f')}{m1} | {f(r2, '.2f')}{m2} | {f(t['cpu_util'] if t else None, '.2f')} |")

print()
print()
if env:
    print(f"PyTorch: torch {env.get('torch')}, sentence-transformers {env.get('sentence_transformers')}, "
          f"threads {env.get('torch_num_threads')}, loadavg before {env.get('loadavg_before')}, after {env.get('loadavg_after')}")
if stale:
    print("STALE (older than this invocation): " + ", ".join(stale))
PY
say "summary: $summary; log: $log; process samples: $toplog"
