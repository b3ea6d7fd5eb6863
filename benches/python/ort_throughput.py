#!/usr/bin/env python3
"""ONNX Runtime throughput baseline for all-MiniLM-L6-v2 on the CPU.

What fastembed, Infinity's optimum backend and TEI's x86 backend run: the
same model folder exported to ONNX, tokenised with `tokenizers`, padded to
the longest input of the call, mean-pooled. Measured exactly as
`st_throughput.py` measures sentence-transformers (its `measure` function:
warm-up, then the median of timed rounds of one call on the first b inputs
of `benches/data/sentences.json`), so the two JSON files compare cell by
cell. Not part of `cargo xtask ci`.

Two graphs, both with ORT_ENABLE_ALL:
  * plain: `torch.onnx.export` of the Hugging Face `BertModel` (TorchScript
    exporter, opset 17, dynamic batch and sequence axes);
  * fused: the plain graph through `onnxruntime.transformers.optimizer`
    (`model_type="bert"`: fused attention, skip layer norm, bias GELU).
Both are exported into `<out dir>/onnx/` once and reused while the model
file is unchanged. Before timing, each graph's vectors for the reference set
(`crates/embeddings-pipeline/tests/data/minilm.json`, sentence-transformers'
own vectors) must reach cosine >= 0.9999, or the script stops.

Threads: `intra_op_num_threads` = the CPUs this process may use (2 here),
`inter_op_num_threads` = 1, sequential execution: ORT's own CPU defaults
for one session.

Usage:
    benches/.venv/bin/python benches/python/ort_throughput.py [--out PATH]
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from st_throughput import BATCH_SIZES, KINDS, REPO, cpu_model, measure, token_stats  # noqa: E402

REFERENCE = REPO / "crates" / "embeddings-pipeline" / "tests" / "data" / "minilm.json"
MIN_COSINE = 0.9999


def threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def export(model_dir: Path, onnx_dir: Path) -> dict[str, Path]:
    """The plain and fused graphs, exported unless already there for this
    exact model file (a stamp holds the safetensors' SHA-256)."""
    weights = model_dir / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    plain, fused, stamp = onnx_dir / "plain.onnx", onnx_dir / "fused.onnx", onnx_dir / "stamp"
    if stamp.is_file() and stamp.read_text() == digest and plain.is_file() and fused.is_file():
        return {"plain": plain, "fused": fused}
    onnx_dir.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        """Keyword arguments: transformers' `forward` takes more positionals."""

        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir)).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            Encoder().eval(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(plain),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                          ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )
    from onnxruntime.transformers import optimizer

    cfg = json.loads((model_dir / "config.json").read_text())
    opt = optimizer.optimize_model(str(plain), model_type="bert",
                                   num_heads=cfg["num_attention_heads"],
                                   hidden_size=cfg["hidden_size"])
    opt.save_model_to_file(str(fused))
    stamp.write_text(digest)
    return {"plain": plain, "fused": fused}


class OrtEncoder:
    """`encode()` with sentence-transformers' signature, so `measure` times
    the whole call: tokenise (pad to longest, truncate at max_seq_length),
    run, mean-pool over the attention mask."""

    def __init__(self, graph: Path, model_dir: Path, max_len: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_len)
        self.tok.enable_padding()
        self.names = {i.name for i in self.session.get_inputs()}

    def encode(self, inputs, batch_size=None, normalize_embeddings=False,
               convert_to_numpy=True, show_progress_bar=False):
        enc = self.tok.encode_batch(list(inputs))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.names})[0]
        m = mask[..., None].astype(np.float32)
        out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if normalize_embeddings:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def check_reference(enc: OrtEncoder, name: str) -> float:
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    texts = [it["text"] for it in ref["items"]]
    want = np.array([it["embedding"] for it in ref["items"]], dtype=np.float64)
    got = enc.encode(texts, normalize_embeddings=True).astype(np.float64)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    worst = float((got * want).sum(axis=1).min())
    if worst < MIN_COSINE:
        sys.exit(f"{name}: worst cosine {worst:.6f} to the reference vectors (< {MIN_COSINE})")
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--data", type=Path, default=REPO / "benches" / "data" / "sentences.json")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "bench-results" / "ort.json")
    ap.add_argument("--graphs", default="plain,fused")
    ap.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--min-s", type=float, default=3.0)
    ap.add_argument("--min-rounds", type=int, default=5)
    args = ap.parse_args()

    data = json.loads(args.data.read_text(encoding="utf-8"))
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    max_len = json.loads((args.model / "sentence_bert_config.json").read_text())["max_seq_length"]
    graphs = export(args.model, args.out.parent / "onnx")

    env = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "onnx": version("onnx"),
        "torch (export)": version("torch"),
        "tokenizers": version("tokenizers"),
        "intra_op_threads": threads(),
        "max_seq_length": max_len,
        "loadavg_before": os.getloadavg(),
    }
    tokens = token_stats(args.model, data, max_len)
    print("ONNX Runtime baseline: all-MiniLM-L6-v2 on CPU")
    for k, v in env.items():
        print(f"  {k:18} {v}")

    results = []
    cosines = {}
    for g in [g for g in args.graphs.split(",") if g]:
        enc = OrtEncoder(graphs[g], args.model, max_len)
        cosines[g] = check_reference(enc, g)
        print(f"  {g}: worst cosine to the reference vectors {cosines[g]:.7f}", flush=True)
        for k in kinds:
            for b in batch_sizes:
                r = measure(enc, data[k][:b], b, args.warmup_s, args.min_s, args.min_rounds)
                r.update(input=k, graph=g)
                results.append(r)
                print(f"  measured {g:5} {k:5} b={b:<4} {r['sentences_per_s_median']:>9.1f} "
                      f"sent/s ({r['rounds']} rounds, cpu util {r['cpu_util']:.2f})", flush=True)
    env["loadavg_after"] = os.getloadavg()

    out = {
        "implementation": "onnxruntime",
        "model": "all-MiniLM-L6-v2",
        "environment": env,
        "reference_worst_cosine": cosines,
        "tokens_per_input": tokens,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
