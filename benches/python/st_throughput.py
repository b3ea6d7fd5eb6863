#!/usr/bin/env python3
"""PyTorch / sentence-transformers throughput baseline for all-MiniLM-L6-v2.

Measures sentences/second of SentenceTransformer.encode on CPU for batch sizes
1, 32, 128 and the "short" / "long" inputs of benches/data/sentences.json,
the same inputs the candle benches use. Not part of `cargo xtask ci`.

Method, per (input kind, batch size b):
  * inputs = the first b strings of that kind (every call encodes the same b);
  * one round = one call  model.encode(inputs, batch_size=b,
        normalize_embeddings=False, convert_to_numpy=True);
  * warm-up: rounds until --warmup-s seconds have passed (at least 1 round);
  * timed: N = max(--min-rounds, ceil(--min-s / warm-up round time)) rounds,
    each timed with time.perf_counter(); throughput of a round = b / seconds;
  * reported: the median over rounds (also min/max/mean, rounds, seconds).
Torch's default threading is left alone (torch.get_num_threads() is printed
and recorded); set OMP_NUM_THREADS yourself to change it.

Usage:
    benches/.venv/bin/python benches/python/st_throughput.py [--out PATH]
"""
from __future__ import annotations

import os

# Local files only: never reach for the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BATCH_SIZES = (1, 32, 128)
KINDS = ("short", "long")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def token_stats(model_dir: Path, data: dict[str, list[str]], max_len: int) -> dict:
    """Token counts under the model's own tokenizer.json (with [CLS]/[SEP],
    no padding, no truncation), via the `tokenizers` library."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out = {}
    for kind in KINDS:
        lens = [len(e.ids) for e in tok.encode_batch(data[kind])]
        out[kind] = {
            "mean": round(statistics.fmean(lens), 2),
            "min": min(lens),
            "max": max(lens),
            "over_max_seq_length": sum(n > max_len for n in lens),
        }
    return out


def measure(model, inputs: list[str], b: int, warmup_s: float, min_s: float,
            min_rounds: int) -> dict:
    cpu = [0.0]

    def one_round() -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        emb = model.encode(inputs, batch_size=b, normalize_embeddings=False,
                           convert_to_numpy=True, show_progress_bar=False)
        t = time.perf_counter() - t0
        cpu[0] += time.process_time() - c0
        assert emb.shape[0] == b, emb.shape
        return t

    w_times = []
    w_start = time.perf_counter()
    while not w_times or time.perf_counter() - w_start < warmup_s:
        w_times.append(one_round())
    per_round = min(w_times)
    rounds = max(min_rounds, math.ceil(min_s / per_round))
    cpu[0] = 0.0
    times = [one_round() for _ in range(rounds)]
    tput = [b / t for t in times]
    return {
        "batch_size": b,
        "rounds": rounds,
        "warmup_rounds": len(w_times),
        "timed_seconds": round(sum(times), 3),
        "sentences_per_s_median": round(statistics.median(tput), 2),
        "sentences_per_s_mean": round(b * rounds / sum(times), 2),
        "sentences_per_s_min": round(min(tput), 2),
        "sentences_per_s_max": round(max(tput), 2),
        "round_ms_median": round(1000 * statistics.median(times), 3),
        # CPU seconds of this process per wall second while timed: close to
        # torch_num_threads when it had the cores to itself; much lower means
        # other processes were competing (or the work did not parallelize).
        "cpu_util": round(cpu[0] / sum(times), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--data", type=Path, default=REPO / "benches" / "data" / "sentences.json")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "bench-results" / "pytorch.json",
                    help="JSON results path (directories are created)")
    ap.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per configuration")
    ap.add_argument("--min-s", type=float, default=3.0, help="min timed seconds per configuration")
    ap.add_argument("--min-rounds", type=int, default=5, help="min timed rounds per configuration")
    args = ap.parse_args()

    if not (args.model / "modules.json").is_file():
        sys.exit(f"model folder not found or not in sentence-transformers layout: {args.model}")
    data = json.loads(args.data.read_text(encoding="utf-8"))
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if len(data[k]) < max(batch_sizes):
            sys.exit(f"{args.data}: '{k}' has {len(data[k])} inputs, need {max(batch_sizes)}")

    import torch
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(str(args.model), device=args.device)
    load_s = time.perf_counter() - t0
    model.eval()

    env = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": version("sentence-transformers"),
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
        "numpy": version("numpy"),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkl_available": torch.backends.mkl.is_available(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                  "TOKENIZERS_PARALLELISM") if k in os.environ},
        "max_seq_length": model.max_seq_length,
        "model_dir": str(args.model),
        "model_load_s": round(load_s, 3),
        "loadavg_before": os.getloadavg(),
    }
    tokens = token_stats(args.model, data, model.max_seq_length)

    print("PyTorch / sentence-transformers baseline: all-MiniLM-L6-v2 on CPU")
    for k in ("date_utc", "cpu_model", "cpu_count", "python", "torch", "sentence_transformers",
              "transformers", "torch_num_threads", "torch_num_interop_threads",
              "mkldnn_available", "max_seq_length", "model_load_s", "loadavg_before"):
        print(f"  {k:26} {env[k]}")
    if env["thread_env"]:
        print(f"  {'thread_env':26} {env['thread_env']}")
    for k in kinds:
        t = tokens[k]
        print(f"  tokens/{k:19} mean {t['mean']} (min {t['min']}, max {t['max']}, "
              f"over {model.max_seq_length}: {t['over_max_seq_length']})")
    print(f"  method: median of timed rounds, >= {args.min_s:g} s and >= {args.min_rounds} "
          f"rounds per config after {args.warmup_s:g} s warm-up", flush=True)

    results = []
    for k in kinds:
        for b in batch_sizes:
            r = measure(model, data[k][:b], b, args.warmup_s, args.min_s, args.min_rounds)
            r["input"] = k
            results.append(r)
            print(f"  measured {k:5} b={b:<4} {r['sentences_per_s_median']:>9.1f} sent/s "
                  f"({r['rounds']} rounds, {r['timed_seconds']:.1f} s, cpu util {r['cpu_util']:.2f})",
                  flush=True)

    env["loadavg_after"] = os.getloadavg()
    print(f"  loadavg 1/5/15 min: before {env['loadavg_before']}, after {env['loadavg_after']}"
          " (other work on the machine skews results)")
    print()
    print("sentences/second (median over rounds)")
    print(f"| input | {' | '.join(f'batch {b}' for b in batch_sizes)} |")
    print(f"|---|{'|'.join('---:' for _ in batch_sizes)}|")
    for k in kinds:
        row = {r["batch_size"]: r["sentences_per_s_median"] for r in results if r["input"] == k}
        cells = " | ".join(f"{row[b]:.1f}" for b in batch_sizes)
        print(f"| {k} ({tokens[k]['mean']:.1f} tok) | {cells} |")

    out = {
        "implementation": "pytorch/sentence-transformers",
        "model": "all-MiniLM-L6-v2",
        "device": args.device,
        "encode_kwargs": {"normalize_embeddings": False, "convert_to_numpy": True,
                          "batch_size": "= b"},
        "method": {"warmup_s": args.warmup_s, "min_s": args.min_s,
                   "min_rounds": args.min_rounds, "statistic": "median of rounds",
                   "round": "one encode() call of the first b inputs"},
        "environment": env,
        "tokens_per_input": tokens,
        "parallel_info": torch.__config__.parallel_info(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
