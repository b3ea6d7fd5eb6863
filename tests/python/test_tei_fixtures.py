"""Every request TEI's own documentation shows (tests/python/fixtures/
tei_documented.json) answers in exactly the shape TEI documents, with TEI's
timing headers on success."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = json.loads(
    (Path(__file__).parent / "fixtures" / "tei_documented.json").read_text()
)["cases"]

TIMING_HEADERS = [
    "x-compute-time",
    "x-compute-characters",
    "x-compute-tokens",
    "x-total-time",
    "x-tokenization-time",
    "x-queue-time",
    "x-inference-time",
]


def _is_floats(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, float) for x in v)


def _check_shape(shape: str, body, rows: int | None) -> None:
    if shape == "error":
        assert set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and body["error"]
        return
    assert isinstance(body, list), body
    if rows is not None:
        assert len(body) == rows, body
    for row in body:
        if shape == "floats2":
            assert _is_floats(row)
        elif shape == "floats3":
            assert isinstance(row, list) and row and all(_is_floats(t) for t in row)
        elif shape == "sparse2":
            assert isinstance(row, list) and row
            for entry in row:
                assert set(entry) == {"index", "value"}, entry
                assert isinstance(entry["index"], int) and isinstance(entry["value"], float)
        elif shape == "tokens2":
            assert isinstance(row, list) and row
            for token in row:
                assert set(token) == {"id", "text", "special", "start", "stop"}, token
                assert isinstance(token["id"], int) and isinstance(token["special"], bool)
        elif shape == "strings":
            assert isinstance(row, str)
        else:
            raise AssertionError(f"unknown shape {shape!r} in the fixtures")


@pytest.mark.parametrize("case", FIXTURES, ids=[c["doc"] for c in FIXTURES])
def test_documented_request_answers_the_documented_shape(http, case):
    response = http.post(case["path"], json=case["body"])
    assert response.status_code == case["status"], response.text
    body = response.json()
    _check_shape(case["shape"], body, case.get("rows"))
    if case["shape"] == "error":
        assert body["error_type"] == case["error_type"]
    elif case["path"] in ("/embed", "/", "/embed_sparse", "/embed_all"):
        for header in TIMING_HEADERS:
            assert response.headers.get(header, "").isdigit(), (header, dict(response.headers))
