#!/usr/bin/env bash
# Creates benches/.venv (git-ignored) with pinned torch + sentence-transformers
# and onnxruntime from PyPI, for the PyTorch and ONNX Runtime baselines in
# benches/python/ (and make_canary.py). Idempotent: if the
# venv already has the pinned versions it does nothing.
#
# Usage: bash benches/python/setup.sh        (from anywhere)
# Env:   PYTHON=python3.11  to pick the interpreter (default: python3)
#        FORCE=1            to delete and recreate the venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
benches="$(cd "$here/.." && pwd)"
venv="$benches/.venv"
req="$here/requirements.txt"
py="${PYTHON:-python3}"

say()  { printf '[setup] %s\n' "$*"; }
die()  { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$py" >/dev/null 2>&1 || die "'$py' not found. Install Python >= 3.10 (e.g. apt-get install python3 python3-venv python3-pip) or set PYTHON=..."
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$py" -V 2>&1) is too old; need Python >= 3.10 (torch 2.15 wheels)."
"$py" -c 'import venv, ensurepip' 2>/dev/null \
    || die "'$py' lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)."

# Expected versions, read from requirements.txt (single source of truth).
want_torch="$(sed -n 's/^torch==//p' "$req")"
want_st="$(sed -n 's/^sentence-transformers==//p' "$req")"
want_ort="$(sed -n 's/^onnxruntime==//p' "$req")"

venv_ok() {
    [[ -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "$want_torch" "$want_st" "$want_ort" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import torch, sentence_transformers, tokenizers, onnxruntime, onnx  # noqa: F401  (import must work)
assert version("torch") == sys.argv[1], version("torch")
assert version("sentence-transformers") == sys.argv[2]
assert version("onnxruntime") == sys.argv[3]
PY
}

if [[ "${FORCE:-0}" == "1" && -d "$venv" ]]; then
    say "FORCE=1: removing $venv"
    rm -rf "$venv"
fi

if venv_ok; then
    say "venv at $venv already has torch==$want_torch, sentence-transformers==$want_st and onnxruntime==$want_ort; nothing to do."
    exit 0
fi

if [[ -d "$venv" && ! -x "$venv/bin/python" ]]; then
    say "removing broken venv at $venv"
    rm -rf "$venv"
fi
if [[ ! -d "$venv" ]]; then
    say "creating venv at $venv with $("$py" -V 2>&1)"
    "$py" -m venv "$venv" || die "python -m venv failed (Debian: apt-get install python3-venv)."
fi
"$venv/bin/python" -m pip --version >/dev/null 2>&1 \
    || die "pip is not usable inside $venv (Debian: apt-get install python3-pip python3-venv)."

# Cheap network probe through pip's own configuration before the big download.
say "checking that PyPI is reachable (small download of sentence-transformers==$want_st)..."
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
if ! "$venv/bin/python" -m pip download --quiet --no-deps --dest "$probe" \
        "sentence-transformers==$want_st" >"$probe/log" 2>&1; then
    tail -n 5 "$probe/log" >&2 || true
    die "cannot download from PyPI (no network, or the pinned version is gone). Nothing installed."
fi

say "installing pinned packages from $req"
say "NOTE: PyPI's Linux torch wheel is the CUDA build: ~3 GB download, ~6 GB on disk, several minutes."
start=$(date +%s)
"$venv/bin/python" -m pip install --upgrade --quiet pip \
    || die "upgrading pip in the venv failed."
"$venv/bin/python" -m pip install --progress-bar off -r "$req" \
    || die "pip install -r $req failed (see pip's message above)."
end=$(date +%s)

venv_ok || die "install finished but 'import torch, sentence_transformers' fails or versions differ."
size="$(du -sh "$venv" 2>/dev/null | cut -f1)"
say "done in $((end - start)) s; venv size $size"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
for p in ("torch", "sentence-transformers", "transformers", "tokenizers", "numpy", "onnxruntime", "onnx"):
    print(f"[setup]   {p}=={version(p)}")
PY
say "next: bash $benches/compare.sh"
