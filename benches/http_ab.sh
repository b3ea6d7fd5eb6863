#!/usr/bin/env bash
# Same-run before/after of the HTTP server (a benchmark, not a test; not part
# of `cargo xtask ci`). Bounded in time, loopback only.
#
#   bash benches/http_ab.sh BEFORE_REV
#
# Builds embeddings-server at BEFORE_REV (a git worktree under target/ab/) and
# at the working tree, then alternates them ROUNDS times under the same load:
# wrk, 4 connections, SECONDS_PER_RUN s, POST /embed of the first 32 short
# sentences of benches/data/sentences.json (Semantic slot, cache off, so every
# request runs a forward pass). Then, against the current build only, /health
# latency (wrk --latency, 1 connection) while 4 connections saturate /embed,
# and /livez latency without and with 2 000 idle connections held open.
#
# Needs wrk (Debian package `wrk`; installed here when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: benches/http_ab.sh BEFORE_REV}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18182}
# The native route of each build: /embed_multi since 2026-12-01; revisions
# before that served it at /embed (BEFORE_EMBED_PATH=/embed for those).
EMBED_PATH=${EMBED_PATH:-/embed_multi}
BEFORE_EMBED_PATH=${BEFORE_EMBED_PATH:-/embed_multi}
OUT=${OUT:-target/bench-results/http-ab}
mkdir -p "$OUT"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else echo "wrk not found: apt-get install wrk" >&2; exit 1; fi
fi
cargo xtask fetch-models
cargo build --release -q -p embeddings-server --bin embeddings-server
AFTER_BIN=target/release/embeddings-server

# The old revision builds in its own worktree and target folder; the
# dependencies are seeded from target/release (hard links) so only the
# workspace's own crates compile.
SRC=target/ab/src
if [ ! -d "$SRC" ]; then git worktree add -f --detach "$SRC" "$BEFORE" >/dev/null; fi
git -C "$SRC" checkout -q --detach "$BEFORE"
if [ ! -d target/ab/target/release ]; then
  mkdir -p target/ab/target
  cp -al target/release target/ab/target/release
fi
(cd "$SRC" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release -q -p embeddings-server --bin embeddings-server)
BEFORE_BIN=target/ab/target/release/embeddings-server

python3 - "$OUT/body.json" <<'PY'
import json, sys
short = json.load(open("benches/data/sentences.json"))["short"][:32]
json.dump({"inputs": short, "models": ["semantic"], "fused": False}, open(sys.argv[1], "w"))
PY
printf '[cache]\nmax_bytes = 0\n' > "$OUT/no-cache.toml"
export BODY_FILE="$OUT/body.json"
URL="http://127.0.0.1:$PORT"

SERVER=
stop() { if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=; fi; }
trap stop EXIT
start() {
  "$1" --bind "127.0.0.1:$PORT" --models-dir models --config "$OUT/no-cache.toml" --log-format json 2>>"$OUT/server.log" >/dev/null &
  SERVER=$!
  for _ in $(seq 1 600); do
    if curl -fs "$URL/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "the server at $1 did not become ready" >&2
  exit 1
}

echo "== $(date -u +%FT%TZ) load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    bin=$BEFORE_BIN; path=$BEFORE_EMBED_PATH
    if [ "$which" = after ]; then bin=$AFTER_BIN; path=$EMBED_PATH; fi
    start "$bin"
    wrk -t1 -c4 -d"${SECONDS_PER_RUN}s" --latency -s benches/http/embed.lua "$URL$path" > "$OUT/$which-$round.txt"
    stop
    rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$which-$round.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$OUT/$which-$round.txt")
    echo "round $round $which: $rps req/s ($(awk -v r="$rps" 'BEGIN {printf "%.1f", r * 32}') sentences/s) non-2xx: ${non2xx:-0}"
  done
done

echo "== /health while /embed is saturated (4 connections), current build"
start "$AFTER_BIN"
wrk -t1 -c4 -d"$((SECONDS_PER_RUN * 2 + 5))s" -s benches/http/embed.lua "$URL$EMBED_PATH" > "$OUT/saturating.txt" &
LOAD=$!
sleep 3
wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$URL/health" | tee "$OUT/health-under-load.txt"
wait $LOAD
stop

echo "== /livez without, then with 2 000 idle connections held open, current build"
start "$AFTER_BIN"
wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$URL/livez" | tee "$OUT/livez-quiet.txt"
python3 - "$PORT" "$((SECONDS_PER_RUN + 5))" <<'PY' &
import socket, sys, time
port, hold = int(sys.argv[1]), float(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
time.sleep(hold)
PY
IDLE=$!
sleep 2
wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$URL/livez" | tee "$OUT/livez-2000-idle.txt"
curl -s "$URL/metrics" | grep -E '^embeddings_http_connections_(open|evicted_total|refused_total) ' | tee "$OUT/connections.txt"
wait $IDLE
stop
echo "== $(date -u +%FT%TZ) load after: $(cut -d' ' -f1-3 /proc/loadavg)"
