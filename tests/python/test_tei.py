"""Text Embeddings Inference (TEI) drop-in: TEI's own routes over plain HTTP,
`huggingface_hub.InferenceClient` and LlamaIndex's `TextEmbeddingsInference`,
vectors checked against the native API's `semantic` slot.

What the clients send (recorded from the pinned versions):
- `InferenceClient(base_url=url).feature_extraction(text, ...)` posts to `/`
  (the root, not `/embed`) the body `{"inputs": <str or [str]>}` plus only the
  options given: `normalize`, `prompt_name`, `truncate`, `truncation_direction`
  (lowercase: "left" / "right"), `dimensions`, `encoding_format`; it reads
  `[[float]]` into a float32 array (a string input gives shape (1, dim)).
- `TextEmbeddingsInference(...)` posts to `{base_url}/embed` the body
  `{"inputs": [str, ...], "truncate": true}` (no `normalize`: TEI's default,
  true, applies) and returns `response.json()` without checking the status.

TEI's error body is `{"error": str, "error_type": str}`, with status 422 for
Validation and Tokenizer, 400 for Empty, 429 Overloaded, 424 Backend, 503
Unhealthy.

`normalize: false` gives the raw mean pooling and `truncation_direction:
"Left"` keeps the end of a long input, as in TEI. Where this server
deliberately differs from TEI (crates/embeddings-server/src/tei.rs) the tests
pin the documented behaviour and say what TEI would do instead: `prompt_name`
is refused with 422 Validation (no model here has prompts); `/embed_all`
serves the `late_interaction` slot (unit vectors per token) rather than raw
hidden states.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

ATOL = 1e-6
TIMEOUT = 60.0  # seconds, one request (a debug build is slower)
TEXTS = [
    "What is Deep Learning?",
    "Text embeddings inference serves sentence vectors.",
    "The cat sat on the mat.",
]
# Over the model's 256-token window (≈ 402 tokens, 2,600 characters), and
# different at its two ends, so left and right truncation give different vectors.
LONG = "apple " * 200 + "orange " * 200
# What survives of LONG when cut to 256 tokens ([CLS] + 254 words + [SEP]).
KEPT_RIGHT = "apple " * 200 + "orange " * 54
KEPT_LEFT = "apple " * 54 + "orange " * 200
ERROR_TYPES = {"Validation", "Empty", "Overloaded", "Backend", "Unhealthy", "Tokenizer"}


def tei_error(response: httpx.Response, status: int, error_type: str) -> str:
    """Checks a TEI error answer and returns its message."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error_type") == error_type, body
    assert body["error_type"] in ERROR_TYPES
    assert isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


def dense(response: httpx.Response, rows: int, dim: int = 384) -> np.ndarray:
    """Checks a TEI `[[f32]]` answer and returns it as an array."""
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body, list) and len(body) == rows, body
    assert all(isinstance(row, list) and len(row) == dim for row in body)
    assert all(isinstance(x, float) for row in body for x in row)
    return np.asarray(body, dtype=np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --- TEI's routes over plain HTTP ---------------------------------------------


@pytest.mark.parametrize("path", ["/", "/embed"])
def test_embed_single_string(http, reference, path):
    got = dense(http.post(path, json={"inputs": TEXTS[0]}), rows=1)
    np.testing.assert_allclose(got, reference([TEXTS[0]]), rtol=0, atol=ATOL)


@pytest.mark.parametrize("path", ["/", "/embed"])
def test_embed_batch_keeps_order(http, reference, path):
    got = dense(http.post(path, json={"inputs": TEXTS}), rows=len(TEXTS))
    np.testing.assert_allclose(got, reference(TEXTS), rtol=0, atol=ATOL)


def test_embed_normalize_true_is_unit_length(http, reference):
    got = dense(http.post("/embed", json={"inputs": TEXTS[1], "normalize": True}), rows=1)[0]
    np.testing.assert_allclose(got, reference([TEXTS[1]])[0], rtol=0, atol=ATOL)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_embed_normalize_false_returns_the_raw_pooling(http, reference):
    # TEI answers the mean pooling before normalisation: its direction is the
    # reference vector's, its length is whatever the pooling gave (not 1).
    raw = dense(http.post("/embed", json={"inputs": TEXTS[1], "normalize": False}), rows=1)[0]
    length = float(np.linalg.norm(raw))
    assert abs(length - 1.0) > 1e-3, length
    np.testing.assert_allclose(raw / length, reference([TEXTS[1]])[0], rtol=0, atol=ATOL)
    # With `dimensions`: the first components of the raw vector, not rescaled.
    short = dense(
        http.post("/embed", json={"inputs": TEXTS[1], "normalize": False, "dimensions": 64}),
        rows=1,
        dim=64,
    )[0]
    np.testing.assert_allclose(short, raw[:64], rtol=0, atol=ATOL * max(1.0, length))


def test_embed_dimensions(http, reference):
    got = dense(http.post("/embed", json={"inputs": TEXTS[0], "dimensions": 128}), rows=1, dim=128)
    assert abs(float(np.linalg.norm(got[0])) - 1.0) < 1e-5
    np.testing.assert_allclose(got[0], unit(reference([TEXTS[0]])[0][:128]), rtol=0, atol=ATOL)


def test_truncate_true_keeps_the_start_of_a_long_input(http, reference):
    right = dense(http.post("/embed", json={"inputs": LONG, "truncate": True}), rows=1)[0]
    # Right truncation (TEI's default) keeps the first 254 word tokens plus
    # [CLS] and [SEP]; it is also what the native API does to long input.
    np.testing.assert_allclose(right, reference([LONG])[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(right, reference([KEPT_RIGHT])[0], rtol=0, atol=ATOL)
    for direction in ("Right", "right"):
        explicit = dense(
            http.post(
                "/embed",
                json={"inputs": LONG, "truncate": True, "truncation_direction": direction},
            ),
            rows=1,
        )[0]
        np.testing.assert_allclose(explicit, right, rtol=0, atol=ATOL)


@pytest.mark.parametrize("direction", ["Left", "left"])
def test_truncation_direction_left_on_short_input_is_accepted(http, reference, direction):
    # huggingface_hub sends the direction in lowercase; TEI accepts both spellings.
    got = dense(
        http.post(
            "/embed",
            json={"inputs": TEXTS[0], "truncate": True, "truncation_direction": direction},
        ),
        rows=1,
    )
    np.testing.assert_allclose(got, reference([TEXTS[0]]), rtol=0, atol=ATOL)


@pytest.mark.parametrize("direction", ["Left", "left"])
def test_left_truncation_keeps_the_end_of_a_long_input(http, reference, direction):
    # TEI's Left truncation cuts the start: the vector is the kept tail's.
    got = dense(
        http.post(
            "/embed", json={"inputs": LONG, "truncate": True, "truncation_direction": direction}
        ),
        rows=1,
    )[0]
    np.testing.assert_allclose(got, reference([KEPT_LEFT])[0], rtol=0, atol=ATOL)


def test_too_long_without_truncate_is_422_validation(http):
    message = tei_error(
        http.post("/embed", json={"inputs": LONG, "truncate": False}), 422, "Validation"
    )
    assert "256" in message, message  # names the limit


def test_empty_inputs_is_400_empty(http):
    tei_error(http.post("/embed", json={"inputs": []}), 400, "Empty")


def test_unknown_prompt_name_is_422_validation(http):
    tei_error(
        http.post("/embed", json={"inputs": TEXTS[0], "prompt_name": "no-such-prompt"}),
        422,
        "Validation",
    )


def test_embed_sparse_matches_the_native_sparse_slot(http, native):
    response = http.post("/embed_sparse", json={"inputs": TEXTS[:2]})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body, list) and len(body) == 2
    items = native(TEXTS[:2], models=["sparse"])
    for row, item in zip(body, items):
        assert isinstance(row, list) and row, row
        assert all(set(e) == {"index", "value"} for e in row), row[:3]
        assert all(isinstance(e["index"], int) and isinstance(e["value"], float) for e in row)
        indices = [e["index"] for e in row]
        assert indices == sorted(set(indices)), "indices must be ascending and distinct"
        sparse = item["sparse"]
        assert sparse["type"] == "sparse"
        assert all(0 <= i < sparse["dim"] for i in indices)
        assert indices == list(sparse["indices"])
        np.testing.assert_allclose(
            [e["value"] for e in row], sparse["values"], rtol=0, atol=ATOL
        )


def test_embed_sparse_empty_is_400(http):
    tei_error(http.post("/embed_sparse", json={"inputs": []}), 400, "Empty")


def test_embed_all_gives_one_vector_per_token(http, native):
    texts = [TEXTS[0], TEXTS[2]]
    response = http.post("/embed_all", json={"inputs": texts})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body, list) and len(body) == 2
    tokens = http.post("/tokenize", json={"inputs": texts}).json()
    items = native(texts, models=["late_interaction"])
    for per_token, toks, item in zip(body, tokens, items):
        # One vector per token, special tokens included, as TEI does.
        assert len(per_token) == len(toks), (len(per_token), len(toks))
        assert all(isinstance(v, list) and len(v) == 384 for v in per_token)
        # This server answers with its `late_interaction` slot (tei.rs);
        # TEI answers with the raw last hidden states (not unit length, and
        # their mean-pool is the sentence vector). Clients that pool
        # /embed_all themselves see that difference.
        want = item["late_interaction"]
        assert want["type"] == "per_token", want["type"]
        np.testing.assert_allclose(
            np.asarray(per_token, dtype=np.float32),
            np.asarray(want["vectors"], dtype=np.float32),
            rtol=0,
            atol=ATOL,
        )


def test_tokenize_single(http):
    response = http.post("/tokenize", json={"inputs": "Hello world"})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert body == [
        [
            {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None},
            # `text` is the slice of the input (original case); start/stop are byte offsets.
            {"id": 7592, "text": "Hello", "special": False, "start": 0, "stop": 5},
            {"id": 2088, "text": "world", "special": False, "start": 6, "stop": 11},
            {"id": 102, "text": "[SEP]", "special": True, "start": None, "stop": None},
        ]
    ]


def test_tokenize_batch_without_special_tokens(http):
    response = http.post(
        "/tokenize", json={"inputs": ["Hello world", "cat"], "add_special_tokens": False}
    )
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert [[t["id"] for t in row] for row in body] == [[7592, 2088], [4937]]
    assert not any(t["special"] for row in body for t in row)


def test_tokenize_empty_is_400(http):
    tei_error(http.post("/tokenize", json={"inputs": []}), 400, "Empty")


def test_decode(http):
    ids = [101, 7592, 2088, 102]
    response = http.post("/decode", json={"ids": ids})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    assert response.json() == ["hello world"]
    response = http.post("/decode", json={"ids": ids, "skip_special_tokens": False})
    assert response.json() == ["[CLS] hello world [SEP]"]
    response = http.post("/decode", json={"ids": [ids, [4937]]})
    assert response.json() == ["hello world", "cat"]


def test_decode_empty_is_400(http):
    tei_error(http.post("/decode", json={"ids": []}), 400, "Empty")


def test_info_has_tei_fields_beside_ours(http):
    response = http.get("/info")
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    info = response.json()
    assert isinstance(info["model_id"], str) and info["model_id"]
    assert info["max_input_length"] == 256
    for field in ("max_batch_tokens", "max_client_batch_size"):
        assert isinstance(info[field], int) and info[field] > 0, (field, info.get(field))
    assert isinstance(info["version"], str) and info["version"]
    # Our own fields stay.
    assert info["name"] == "embeddings-server"
    assert info["state"] == "ready"
    assert "pipeline" in info and "limits" in info


def test_more_inputs_than_max_client_batch_size_is_422(http):
    limit = http.get("/info").json()["max_client_batch_size"]
    tei_error(http.post("/embed", json={"inputs": ["a"] * (limit + 1)}), 422, "Validation")


# --- huggingface_hub.InferenceClient --------------------------------------------


@pytest.fixture(scope="module")
def hf(base_url: str) -> InferenceClient:
    return InferenceClient(base_url=base_url, timeout=TIMEOUT)


def test_hf_feature_extraction_single(hf, reference):
    got = hf.feature_extraction(TEXTS[0])
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    # A string input gets TEI's [[...]] back, which the client keeps as (1, dim).
    assert got.shape == (1, 384)
    np.testing.assert_allclose(got, reference([TEXTS[0]]), rtol=0, atol=ATOL)


def test_hf_feature_extraction_batch(hf, reference):
    got = hf.feature_extraction(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, reference(TEXTS), rtol=0, atol=ATOL)


def test_hf_feature_extraction_normalize_truncate(hf, reference):
    got = hf.feature_extraction(TEXTS[1], normalize=True, truncate=True)
    assert got.shape == (1, 384)
    np.testing.assert_allclose(got, reference([TEXTS[1]]), rtol=0, atol=ATOL)


def test_hf_feature_extraction_truncation_direction(hf, reference):
    # The client sends "truncation_direction": "right" / "left" (lowercase).
    got = hf.feature_extraction(LONG, truncate=True, truncation_direction="right")
    np.testing.assert_allclose(got, reference([KEPT_RIGHT]), rtol=0, atol=ATOL)
    got = hf.feature_extraction(TEXTS[0], truncate=True, truncation_direction="left")
    np.testing.assert_allclose(got, reference([TEXTS[0]]), rtol=0, atol=ATOL)
    got = hf.feature_extraction(LONG, truncate=True, truncation_direction="left")
    np.testing.assert_allclose(got, reference([KEPT_LEFT]), rtol=0, atol=ATOL)


def test_hf_feature_extraction_dimensions(hf, reference):
    got = hf.feature_extraction(TEXTS[2], dimensions=128)
    assert got.shape == (1, 128)
    np.testing.assert_allclose(got[0], unit(reference([TEXTS[2]])[0][:128]), rtol=0, atol=ATOL)


def test_hf_too_long_raises_with_our_message(hf, http):
    message = tei_error(
        http.post("/", json={"inputs": LONG, "truncate": False}), 422, "Validation"
    )
    with pytest.raises(HfHubHTTPError) as caught:
        hf.feature_extraction(LONG, truncate=False)
    assert caught.value.response.status_code == 422
    assert message in str(caught.value)


# --- LlamaIndex TextEmbeddingsInference ----------------------------------------


@pytest.fixture(scope="module")
def llama(base_url: str) -> TextEmbeddingsInference:
    return TextEmbeddingsInference(model_name="semantic", base_url=base_url, timeout=TIMEOUT)


def test_llama_index_text_embedding(llama, reference):
    got = llama.get_text_embedding(TEXTS[0])
    assert isinstance(got, list) and len(got) == 384
    np.testing.assert_allclose(got, reference([TEXTS[0]])[0], rtol=0, atol=ATOL)


def test_llama_index_text_embedding_batch(llama, reference):
    got = llama.get_text_embedding_batch(TEXTS)
    assert len(got) == len(TEXTS)
    np.testing.assert_allclose(np.asarray(got), reference(TEXTS), rtol=0, atol=ATOL)


def test_llama_index_query_embedding(llama, reference):
    # No instruction is prepended for a model name it does not know.
    got = llama.get_query_embedding(TEXTS[2])
    np.testing.assert_allclose(got, reference([TEXTS[2]])[0], rtol=0, atol=ATOL)


def test_llama_index_async(llama, reference):
    got = asyncio.run(llama.aget_text_embedding(TEXTS[1]))
    np.testing.assert_allclose(got, reference([TEXTS[1]])[0], rtol=0, atol=ATOL)


def test_llama_index_truncates_long_input(llama, reference):
    # It always sends "truncate": true, so long input must not fail.
    got = llama.get_text_embedding(LONG)
    np.testing.assert_allclose(got, reference([LONG])[0], rtol=0, atol=ATOL)
