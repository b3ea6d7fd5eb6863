#!/usr/bin/env bash
# HTTP load benchmark of embeddings-server (a benchmark, not a test; not part of
# `cargo xtask ci`). Bounded in time, loopback only.
#
# 0. One short sentence per request at concurrency 1 (what a search box sends):
#    p50 / p99 latency over HTTP (wrk --latency) versus in-process
#    (inprocess_embed, submit to answer); the target is HTTP p50 <= in-process
#    p50 + 0.5 ms. Both in steady state, interleaved: the server gets a
#    WARMUP_SECONDS wrk run (discarded) after /readyz, then in-process, HTTP,
#    in-process, HTTP, in-process runs of SECONDS_B1 each; the summary line
#    compares each HTTP p50 with the mean of the in-process runs beside it
#    (this machine's speed drifts by more than 0.5 ms between minutes).
# 1. Embedding throughput over HTTP versus in-process, at batch 32 (the first 32
#    short sentences of benches/data/sentences.json, Semantic slot, cache off),
#    at concurrency 1 and 4.
# 2. /health and /metrics latency (p50/p90/p99, wrk --latency) while /embed is
#    saturated by 4 connections.
#
# Needs wrk (Debian package `wrk`; installed here when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
SECONDS_B1=${SECONDS_B1:-10}
WARMUP_SECONDS=${WARMUP_SECONDS:-5}
PORT=${PORT:-18181}
OUT=${OUT:-target/bench-results/http}
mkdir -p "$OUT"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else echo "wrk not found: apt-get install wrk" >&2; exit 1; fi
fi
cargo xtask fetch-models
cargo build --release -q -p embeddings-server -p embeddings-benches --bin embeddings-server --bin inprocess_embed

python3 - "$OUT/body.json" "$OUT/body-1.json" <<'PY'
import json, sys
short = json.load(open("benches/data/sentences.json"))["short"]
json.dump({"inputs": short[:32], "models": ["semantic"], "fused": False}, open(sys.argv[1], "w"))
json.dump({"inputs": short[:1], "models": ["semantic"], "fused": False}, open(sys.argv[2], "w"))
PY
printf '[cache]\nmax_bytes = 0\n' > "$OUT/no-cache.toml"

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in 1 4; do
  target/release/inprocess_embed models benches/data/sentences.json 32 "$SECONDS_PER_RUN" "$c" | tee "$OUT/inprocess-c$c.json"
done

target/release/embeddings-server --bind "127.0.0.1:$PORT" --models-dir models --config "$OUT/no-cache.toml" --log-format json 2>"$OUT/server.log" >/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  if curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
URL="http://127.0.0.1:$PORT"

echo "== one short sentence, concurrency 1: warm-up ${WARMUP_SECONDS}s (discarded), then interleaved"
BODY_FILE="$OUT/body-1.json" wrk -t1 -c1 -d"${WARMUP_SECONDS}s" -s benches/http/embed.lua "$URL/embed_multi" > "$OUT/http-embed-b1-warmup.txt"
inproc_b1() { target/release/inprocess_embed models benches/data/sentences.json 1 "$SECONDS_B1" 1 | tee "$OUT/inprocess-b1-c1-$1.json"; }
http_b1() { BODY_FILE="$OUT/body-1.json" wrk -t1 -c1 -d"${SECONDS_B1}s" --latency -s benches/http/embed.lua "$URL/embed_multi" | tee "$OUT/http-embed-b1-c1-$1.txt"; }
inproc_b1 1; http_b1 1; inproc_b1 2; http_b1 2; inproc_b1 3
python3 - "$OUT" <<'PY' | tee "$OUT/b1-summary.txt"
import json, re, sys
out = sys.argv[1]
def ms(text):
    value, unit = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
inproc = [json.load(open(f"{out}/inprocess-b1-c1-{i}.json"))["p50_ms"] for i in (1, 2, 3)]
for i in (1, 2):
    http = ms(open(f"{out}/http-embed-b1-c1-{i}.txt").read())
    around = (inproc[i - 1] + inproc[i]) / 2
    print(f"HTTP run {i}: p50 {http:.3f} ms; in-process p50 before/after {inproc[i-1]:.3f}/{inproc[i]:.3f} ms; "
          f"HTTP - in-process {http - around:+.3f} ms (target <= +0.5)")
PY
export BODY_FILE="$OUT/body.json"
for c in 1 4; do
  wrk -t1 -c"$c" -d"${SECONDS_PER_RUN}s" --latency -s benches/http/embed.lua "$URL/embed_multi" | tee "$OUT/http-embed-c$c.txt"
done

echo "== /health and /metrics while /embed is saturated (4 connections)"
wrk -t1 -c4 -d"$((SECONDS_PER_RUN * 2 + 5))s" -s benches/http/embed.lua "$URL/embed_multi" > "$OUT/saturating.txt" &
LOAD=$!
sleep 3
wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$URL/health" | tee "$OUT/health-under-load.txt"
wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$URL/metrics" | tee "$OUT/metrics-under-load.txt"
wait $LOAD
cat "$OUT/saturating.txt"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
