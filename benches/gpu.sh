#!/usr/bin/env bash
# The GPU half of issue 15, as one script (GPU time is scarce), for a machine
# with an NVIDIA GPU and its driver, Rust, and the package registries:
#
# 1. the CUDA tests (crates/embeddings-server/tests/gpu.rs): device round
#    trip, the reference vectors on the GPU (cosine >= 0.9999, batched and
#    alone), the GPU memory the server reports against nvidia-smi (1 %);
# 2. throughput, sentences/s at batch 1 / 32 / 128, short and long inputs:
#    ours (`inprocess_embed`, Semantic only, `device = "cuda"`) and PyTorch
#    (sentence-transformers on `cuda`) on the same GPU, in the same run.
#
# Results go to $OUT (default target/bench-results/gpu/). PyTorch needs the
# bench venv (benches/python/setup.sh) or any python3 with torch and
# sentence-transformers: set PYTHON. SECONDS_PER_RUN (default 5) per cell.
# The `gpu` test binary also runs away from the source tree: it reads the
# reference vectors from EMBEDDINGS_REFERENCE_JSON when set (the file is
# crates/embeddings-pipeline/tests/data/minilm.json).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-results/gpu}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
PYTHON=${PYTHON:-benches/.venv/bin/python}
mkdir -p "$OUT"

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  lscpu | sed -n 's/^Model name: *//p'
} | tee "$OUT/machine.txt"

cargo xtask fetch-models
# The toolkit and the run-time libraries (cuBLAS, cuRAND, NVRTC) from PyPI.
eval "$(cargo xtask cuda-toolkit --runtime | grep '^export ')"
HOST=$(rustc -vV | sed -n 's/^host: //p')
CUDA_ARGS=(--release --features cuda --target "$HOST" --target-dir target/cuda)
cargo build -p embeddings-server "${CUDA_ARGS[@]}"
cargo build -p embeddings-benches --bin inprocess_embed "${CUDA_ARGS[@]}"
BIN=target/cuda/$HOST/release
LIBS="$CUDA_ROOT/lib"

# 1. The tests, run by the ordinary test build (not the CUDA flags).
env -u RUSTFLAGS -u CUDA_ROOT -u CUDA_COMPUTE_CAP \
  LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  EMBEDDINGS_CUDA_SERVER="$PWD/$BIN/embeddings-server" \
  cargo test -p embeddings-server --test gpu -- --ignored 2>&1 | tee "$OUT/tests.txt"

# 2. Throughput, ours then PyTorch's, same inputs.
for kind in short long; do
  for batch in 1 32 128; do
    LD_LIBRARY_PATH="$LIBS" BENCH_KIND=$kind BENCH_CONFIG='device = "cuda"' \
      "$BIN/inprocess_embed" models benches/data/sentences.json "$batch" "$SECONDS_PER_RUN" 1 \
      | tee "$OUT/ours-$kind-b$batch.json"
  done
done
"$PYTHON" benches/python/st_throughput.py --device cuda --out "$OUT/pytorch.json" \
  | tee "$OUT/pytorch.txt"
echo "results in $OUT"
