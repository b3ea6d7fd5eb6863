#!/usr/bin/env python3
"""Generate crates/embeddings-pipeline/data/canary.json: the quality canary's
probe sentences and their reference vectors, computed with
sentence-transformers (the reference implementation) from the project's own
all-MiniLM-L6-v2 folder (`cargo xtask fetch-models`).

The probes vary in length (2 to ~200 tokens), language, script and content
(prose, numbers, code, a URL, an emoji), so a fault in tokenization,
padding, attention masking, pooling or normalisation moves at least one of
them. The first eight are the sentences of the pipeline's reference test
(crates/embeddings-pipeline/tests/data/minilm.json).

Needs the bench venv (bash benches/python/setup.sh). The JSON is committed;
rerun only to change the probes:

    benches/.venv/bin/python benches/python/make_canary.py [--models-dir models]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

PROBES = [
    "A man is eating food.",
    "The new movie is awesome, and everyone in the theatre loved it!",
    "Distributed systems fail in interesting ways; observability helps engineers understand them.",
    "Prometheus scrapes the /metrics endpoint every fifteen seconds.",
    "The cache hit rate dropped to 42% after the deployment.",
    'fn main() { println!("hello, world"); }',
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "GPU memory usage climbed above ninety percent during the batch job.",
    "Hi",
    "ok",
    "What time does the pharmacy on Elm Street close on Sundays?",
    "Refund request: order #48213 arrived damaged, please advise.",
    "SELECT name, count(*) FROM orders WHERE created_at > now() - interval '1 day' GROUP BY name;",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "https://example.com/docs/embeddings?version=2&lang=en#quick-start",
    "Le chat dort sur le canapé pendant que la pluie tombe doucement.",
    "El mercado de valores subió un tres por ciento esta mañana.",
    "東京の天気は明日晴れるでしょう。",
    "Москва — столица России.",
    "The quick brown fox jumps over the lazy dog 🦊",
    "3.14159 2.71828 1.41421 1.73205",
    "Patient presents with mild fever, dry cough and fatigue for three days.",
    "The court ruled that the contract was void because one party lacked capacity.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I can't log in — the page keeps saying my password expired yesterday.",
    "Heavy rain caused severe flooding in the valley, and the farmers lost their harvest.",
    "ERROR 2026-11-30T23:59:59Z worker-3 panicked: index out of bounds: the len is 3 but the index is 7",
    "A recipe: whisk two eggs, add flour and milk, rest the batter, then fry thin pancakes in butter.",
    (
        "In the early years of the project the team shipped a single binary that did everything: it "
        "parsed requests, loaded models, batched inputs and wrote metrics. As traffic grew, every part "
        "of it was measured, and the slowest parts were rewritten one at a time, each change checked "
        "against the numbers it was meant to move."
    ),
    (
        "Embedding services are judged by more than their latency: a model file that is silently "
        "swapped or corrupted, a numerics change in a kernel, or an answer that depends on which other "
        "requests happened to share its batch can all return wrong vectors with a perfect success rate, "
        "which is why a canary re-embeds fixed sentences and compares them with known answers."
    ),
    (
        "The committee met on Tuesday to review the budget for the coming year. After a long "
        "discussion of the transport, housing and education lines, the members agreed to postpone the "
        "vote on the new library until the engineers had finished their survey of the site, and asked "
        "the treasurer to prepare two alternative plans, one with and one without the extension of the "
        "tram line to the northern districts, for the next meeting in three weeks."
    ),
    "word " * 60,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--models-dir", default=str(root / "models"))
    parser.add_argument(
        "--out", default=str(root / "crates/embeddings-pipeline/data/canary.json")
    )
    args = parser.parse_args()

    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    model_dir = Path(args.models_dir) / "all-MiniLM-L6-v2"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(
        PROBES, batch_size=1, normalize_embeddings=True, convert_to_numpy=True
    )
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "folder": "all-MiniLM-L6-v2",
        "head": "mean",
        "computed_with": (
            f"sentence-transformers {sentence_transformers.__version__} on CPU (float32), "
            f"one sentence per batch, mean pooling, L2-normalised, max_seq_length {model.max_seq_length}"
        ),
        "source": "benches/python/make_canary.py",
        "probes": [
            {"text": text, "reference": [round(float(x), 7) for x in vec]}
            for text, vec in zip(PROBES, vectors)
        ],
    }
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(PROBES)} probes to {args.out}")


if __name__ == "__main__":
    main()
