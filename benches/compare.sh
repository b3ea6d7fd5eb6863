#!/usr/bin/env bash
# Pipeline throughput vs its CPU peers, in one session: ONNX Runtime (what
# fastembed, Infinity's optimum backend and TEI's x86 backend run) and
# sentence-transformers on PyTorch.
#   1. benches/python/setup.sh if benches/.venv is missing;
#   2. builds the criterion bench first (so no compile runs beside a measurement);
#   3. the ONNX Runtime baseline (benches/python/ort_throughput.py: plain and
#      fused graphs), the PyTorch baseline (benches/python/st_throughput.py),
#      then the criterion bench `pipeline`, back to back, with `uptime` before
#      and after each and the busiest processes sampled every 5 s into a log;
#   4. one table per cell (sentences/s; ratios vs the targets) from criterion's
#      <target>/criterion/**/new/estimates.json and the two JSON files.
#
# Usage: bash benches/compare.sh                  (from anywhere; ≈ 10–12 min)
# Env:   CARGO_TARGET_DIR  (default: <repo>/target)
#        SKIP_ORT=1        reuse the last ONNX Runtime JSON (the table says so)
#        SKIP_PYTORCH=1    reuse the last PyTorch JSON (the table says so)
#        SKIP_CARGO=1      reuse the last criterion results (the table says so)
#        BENCH_FILTER=short  only the criterion benches matching it
# Output: <target>/bench-results/{ort.json,pytorch.json,compare.log,compare-top.log,
#         compare-summary.md}
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
results="$target/bench-results"
mkdir -p "$results"
log="$results/compare.log"
toplog="$results/compare-top.log"
summary="$results/compare-summary.md"
pyjson="$results/pytorch.json"
ortjson="$results/ort.json"
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

if [[ ( "${SKIP_PYTORCH:-0}" != "1" || "${SKIP_ORT:-0}" != "1" ) && ! -x "$venv_py" ]]; then
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
if [[ "${SKIP_ORT:-0}" != "1" ]]; then
    load "before onnxruntime"
    "$venv_py" "$repo/benches/python/ort_throughput.py" --out "$ortjson" 2>&1 \
        | grep -v -e 'Warning' -e '^  *warnings.warn' | tee -a "$log"
    load "after onnxruntime"
else
    say "SKIP_ORT=1: reusing $ortjson"
fi
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
    (cd "$repo/benches" && CARGO_TARGET_DIR="$target" "$bench_bin" --bench ${BENCH_FILTER:-}) 2>&1 | tee -a "$log"
    load "after criterion"
else
    say "SKIP_CARGO=1: reusing $target/criterion"
fi

kill "$sampler" 2>/dev/null || true

py="$venv_py"
[[ -x "$py" ]] || py=python3
"$py" - "$target/criterion" "$pyjson" "$ortjson" "$start_epoch" <<'PY' | tee "$summary" | tee -a "$log"
import json
import sys
from pathlib import Path

crit, pyjson, ortjson = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
start = float(sys.argv[4])
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


def load(path):
    """{(input, batch) or (input, batch, graph): result}, environment."""
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    if path.stat().st_mtime < start:
        stale.append(str(path))
    rows = {}
    for r in data["results"]:
        key = (r["input"], r["batch_size"]) + ((r["graph"],) if "graph" in r else ())
        rows[key] = r["sentences_per_s_median"]
    return rows, data.get("environment", {})


torch, tenv = load(pyjson)
ort, oenv = load(ortjson)

print()
print("## Sentences/s, one run (criterion median per iteration; ONNX Runtime and PyTorch: median of rounds)")
print()
print("| input | batch | ORT plain | ORT fused | ours semantic | ours ÷ best ORT (target ≥ 1.0) "
      "| ours full (12 slots) | full ÷ semantic (target ≥ 0.8) | PyTorch (ST) | ours ÷ PyTorch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for kind in ("short", "long"):
    for b in (1, 32, 128):
        sem = sps(b, est(f"pipeline_{kind}", "semantic", str(b)))
        full = sps(b, est(f"pipeline_{kind}", "full", str(b)))
        plain, fused = ort.get((kind, b, "plain")), ort.get((kind, b, "fused"))
        best = max((x for x in (plain, fused) if x is not None), default=None)
        pt = torch.get((kind, b))
        r_ort, r_full, r_pt = ratio(sem, best), ratio(full, sem), ratio(sem, pt)
        m_ort = "" if r_ort is None else (" ✓" if r_ort >= 1.0 else " ✗")
        m_full = "" if r_full is None else (" ✓" if r_full >= 0.8 else " ✗")
        print(f"| {kind} | {b} | {f(plain)} | {f(fused)} | {f(sem)} | {f(r_ort, '.2f')}{m_ort} "
              f"| {f(full)} | {f(r_full, '.2f')}{m_full} | {f(pt)} | {f(r_pt, '.2f')} |")

print()
if oenv:
    print(f"ONNX Runtime {oenv.get('onnxruntime')}, {oenv.get('intra_op_threads')} intra-op threads, "
          f"loadavg before {oenv.get('loadavg_before')}, after {oenv.get('loadavg_after')}")
if tenv:
    print(f"PyTorch: torch {tenv.get('torch')}, sentence-transformers {tenv.get('sentence_transformers')}, "
          f"threads {tenv.get('torch_num_threads')}, loadavg before {tenv.get('loadavg_before')}, "
          f"after {tenv.get('loadavg_after')}")
if stale:
    print("STALE (older than this invocation): " + ", ".join(stale))
PY
say "summary: $summary; log: $log; process samples: $toplog"
