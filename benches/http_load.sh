#!/usr/bin/env bash
# HTTP load benchmark of embeddings-server (a benchmark, not a test; not part of
# `cargo xtask ci`). Bounded in time, loopback only.
#
# 0. One short sentence per request at concurrency 1 (what a search box sends):
#    p50 / p99 latency over HTTP (wrk --latency) versus in-process
#    (inprocess_embed, submit to answer); the target is HTTP p50 <= in-process
#    p50 + 0.5 ms.
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
target/release/inprocess_embed models benches/data/sentences.json 1 "$SECONDS_PER_RUN" 1 | tee "$OUT/inprocess-b1-c1.json"
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
BODY_FILE="$OUT/body-1.json" wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency -s benches/http/embed.lua "$URL/embed_multi" | tee "$OUT/http-embed-b1-c1.txt"
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
