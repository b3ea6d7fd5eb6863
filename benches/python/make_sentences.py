#!/usr/bin/env python3
"""Generate benches/data/sentences.json, the fixed inputs of the embedding
throughput benchmarks (the candle benches and the PyTorch baseline read the
same file).

Output: {"short": [128 strings of ~12 words], "long": [128 strings of ~100 words]}

Deterministic: only the standard library, a fixed seed and the word lists
below. The JSON is committed; rerun this script only to change the inputs
(and then say so, since results before and after are not comparable):

    python3 benches/python/make_sentences.py            # rewrite the file
    python3 benches/python/make_sentences.py --check    # exit 1 if it differs
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20261125
N = 128
SHORT_WORDS = (10, 14)   # accepted word count range of a short input (mean ~12)
LONG_WORDS = (96, 104)   # accepted word count range of a long input (mean ~100)

SUBJECTS = [
    "The new library", "Our small team", "A curious student", "The city council",
    "My older brother", "The morning train", "A local bakery", "The research group",
    "Her grandmother", "The quiet neighbor", "The night shift", "A young engineer",
    "The museum guide", "Our landlord", "The football coach", "A retired teacher",
    "The delivery driver", "The school choir", "An old fisherman", "The hotel manager",
    "My cousin from Lisbon", "The support team", "A tired nurse", "The village doctor",
    "The marketing department", "A travelling musician", "The two volunteers",
    "Our family doctor", "The head chef", "A stray cat", "The project lead",
    "The orchestra", "Most of the guests", "The committee", "A software tester",
]
VERBS = [
    "repaired", "painted", "discussed", "reviewed", "delivered", "planted",
    "cleaned", "measured", "described", "ordered", "borrowed", "photographed",
    "rebuilt", "translated", "carried", "tested", "inspected", "shared",
    "rearranged", "forgot", "found", "sold", "explained", "watched", "signed",
    "checked", "prepared", "moved", "replaced", "celebrated",
]
OBJECTS = [
    "the broken fence", "an old wooden boat", "three fresh loaves of bread",
    "the quarterly budget report", "a map of the northern coast", "the garden shed",
    "the heavy piano", "a box of handwritten letters", "the faulty water heater",
    "the new timetable", "two dozen sunflowers", "the leaking roof",
    "a long list of complaints", "the school's science kit", "the tiny apartment",
    "a recipe for lemon cake", "the damaged bridge", "the conference schedule",
    "a pair of muddy boots", "the slow database server", "the café menu",
    "a stack of unpaid invoices", "the rusty bicycle", "the final draft",
    "forty chairs for the hall", "the harvest festival poster", "the old photographs",
    "a warm winter coat", "the parking permits", "the first chapter",
]
ADVERBIALS = [
    "before the storm arrived", "on a cold Tuesday morning", "after a long meeting",
    "near the river bank", "with surprising care", "during the summer festival",
    "without asking anyone", "just before midnight", "in less than an hour",
    "for the third time this year", "while the children were asleep",
    "at the end of the month", "despite the heavy rain", "behind the old station",
    "with help from a neighbor", "as the sun went down", "on the way home",
    "before anyone noticed", "over the long weekend", "in the busy market square",
    "after lunch", "yesterday", "last spring", "at dawn", "once again",
]
OPENERS = [
    "Last week,", "Surprisingly,", "As usual,", "In the end,", "On Friday,",
    "Without much fuss,", "According to the notes,", "Early that day,",
    "To everyone's relief,", "Once again,",
]
CLAUSES = [
    "because the old one had stopped working",
    "so that the visitors would feel welcome",
    "although nobody had asked for it",
    "since the deadline was only two days away",
    "and then went straight back to work",
    "but the results were still disappointing",
    "which pleased almost everyone in the building",
    "even though it took far longer than planned",
    "and wrote a short note about it",
    "while the radio played quietly in the background",
]
REMARKS = [
    "Nobody expected the weather to change so quickly.",
    "It was the kind of day that people remember for years.",
    "The price had gone up by nearly twelve percent since March.",
    "Some of the older residents still prefer the paper version.",
    "Everyone agreed that the second attempt went much better.",
    "The next meeting is planned for the first week of October.",
    "A few people stayed late to help tidy up.",
    "There were 37 entries, more than in any previous year.",
    "Nobody could quite remember where the spare keys were kept.",
    "The report will be published online later this month.",
    "Most visitors said the new layout was easier to follow.",
    "Coffee and biscuits were served in the small room upstairs.",
    "It is not clear yet whether the plan will be extended.",
    "The noise from the street made it hard to concentrate.",
    "Several questions about costs were left unanswered.",
    "Why does this always happen on the busiest day of the week?",
    "The local paper ran a short story about it on page four.",
    "Two of the volunteers had never done anything like it before.",
]


def words(s: str) -> int:
    return len(s.split())


def simple_sentence(rng: random.Random) -> str:
    parts = []
    opener = rng.random() < 0.35
    if opener:
        parts.append(rng.choice(OPENERS))
    subj = rng.choice(SUBJECTS)
    parts.append(subj)
    parts.append(rng.choice(VERBS))
    parts.append(rng.choice(OBJECTS))
    if rng.random() < 0.8:
        parts.append(rng.choice(ADVERBIALS))
    s = " ".join(parts)
    if opener:  # "Last week, The new library" -> "Last week, the new library"
        first, rest = s.split(", ", 1)
        s = f"{first}, {rest[0].lower()}{rest[1:]}"
    return s + "."


def compound_sentence(rng: random.Random) -> str:
    s = simple_sentence(rng)[:-1]
    return f"{s} {rng.choice(CLAUSES)}."


def short_input(rng: random.Random) -> str:
    while True:
        s = compound_sentence(rng) if rng.random() < 0.3 else simple_sentence(rng)
        if SHORT_WORDS[0] <= words(s) <= SHORT_WORDS[1]:
            return s


def long_input(rng: random.Random) -> str:
    lo, hi = LONG_WORDS
    while True:
        sents: list[str] = []
        n = 0
        while n < lo:
            r = rng.random()
            if r < 0.25:
                s = rng.choice(REMARKS)
            elif r < 0.6:
                s = compound_sentence(rng)
            else:
                s = simple_sentence(rng)
            if s in sents:
                continue
            sents.append(s)
            n += words(s)
        if n <= hi:
            return " ".join(sents)


def generate() -> dict[str, list[str]]:
    rng = random.Random(SEED)
    out: dict[str, list[str]] = {"short": [], "long": []}
    for key, make in (("short", short_input), ("long", long_input)):
        seen: set[str] = set()
        while len(out[key]) < N:
            s = make(rng)
            if s not in seen:
                seen.add(s)
                out[key].append(s)
    return out


def main() -> int:
    default = Path(__file__).resolve().parent.parent / "data" / "sentences.json"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=default)
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if --out differs from what would be generated")
    args = ap.parse_args()
    text = json.dumps(generate(), indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    data = json.loads(text)
    for k, v in data.items():
        wc = [words(s) for s in v]
        print(f"{k}: {len(v)} inputs, words mean {sum(wc) / len(wc):.1f} "
              f"min {min(wc)} max {max(wc)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
