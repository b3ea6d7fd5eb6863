"""OpenAI drop-in: the official `openai` client against `/v1/embeddings` and
`/v1/models`, vectors checked against the native API's `semantic` slot.

Note: the client sends `"encoding_format": "base64"` on its own when the caller
does not choose one, and then decodes it; an explicit `encoding_format="base64"`
hands back the undecoded string; `encoding_format="float"` asks for JSON floats.
All three paths are exercised here.
"""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

ATOL = 1e-6
TIMEOUT = 60.0  # seconds, one request (a debug build is slower)
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors.",
    "Rust is a systems programming language.",
]


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    # No retries: an error must surface at once, and 4xx are never retried anyway.
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def vector(item) -> np.ndarray:
    return np.asarray(item.embedding, dtype=np.float32)


def test_float_single_input_matches_native(client, reference):
    result = client.embeddings.create(model="semantic", input=TEXTS[0], encoding_format="float")
    assert result.object == "list"
    assert result.model == "semantic"
    assert len(result.data) == 1
    item = result.data[0]
    assert item.object == "embedding" and item.index == 0
    assert isinstance(item.embedding, list) and all(isinstance(x, float) for x in item.embedding)
    assert len(item.embedding) == 384
    np.testing.assert_allclose(vector(item), reference([TEXTS[0]])[0], rtol=0, atol=ATOL)
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_base64_matches_float(client, reference):
    floats = client.embeddings.create(model="semantic", input=TEXTS[1], encoding_format="float")
    b64 = client.embeddings.create(model="semantic", input=TEXTS[1], encoding_format="base64")
    # Asked for explicitly, base64 comes back as the string (the client decodes
    # only when it chose base64 itself); decode it as the client does:
    # little-endian float32 bytes.
    encoded = b64.data[0].embedding
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert decoded.shape == (384,)
    np.testing.assert_allclose(decoded, vector(floats.data[0]), rtol=0, atol=ATOL)
    np.testing.assert_allclose(decoded, reference([TEXTS[1]])[0], rtol=0, atol=ATOL)


def test_default_encoding_is_base64_on_the_wire_and_decoded(client, reference):
    # Without encoding_format the client asks for base64 and decodes it.
    result = client.embeddings.create(model="semantic", input=TEXTS[2])
    assert len(result.data[0].embedding) == 384
    np.testing.assert_allclose(vector(result.data[0]), reference([TEXTS[2]])[0], rtol=0, atol=ATOL)


def test_dimensions_truncates_and_renormalises(client, reference):
    result = client.embeddings.create(
        model="semantic", input=TEXTS[0], dimensions=128, encoding_format="float"
    )
    got = vector(result.data[0])
    assert got.shape == (128,)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
    full = reference([TEXTS[0]])[0][:128]
    np.testing.assert_allclose(got, full / np.linalg.norm(full), rtol=0, atol=ATOL)


def test_batch_keeps_order_and_matches_native(client, reference):
    result = client.embeddings.create(model="semantic", input=TEXTS, encoding_format="float")
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    got = np.asarray([d.embedding for d in result.data], dtype=np.float32)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, reference(TEXTS), rtol=0, atol=ATOL)


def test_fused_model_gives_1536_floats_matching_native(client, native):
    result = client.embeddings.create(model="fused", input=TEXTS[0], encoding_format="float")
    got = vector(result.data[0])
    assert got.shape == (1536,)
    assert result.model == "fused"
    want = np.asarray(native([TEXTS[0]], fused=True)[0]["fused"], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_models_list_has_semantic_and_fused(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "semantic" in ids
    assert "fused" in ids
    for m in models.data:
        assert m.object == "model"
    assert client.models.retrieve("semantic").id == "semantic"


def test_unknown_model_is_422_naming_the_valid_ones(client):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="nope", input="hello")
    error = caught.value
    assert error.status_code == 422
    # The client keeps the inner `error` object as `body`, and builds `message`
    # from it: our own text must reach the caller.
    assert isinstance(error.body, dict), error.body
    assert "semantic" in error.body["message"]
    assert "nope" in error.body["message"]
    assert error.body.get("param") == "model"
    assert "semantic" in str(error)
    assert error.response.headers.get("content-type", "").startswith("application/json")


def test_too_many_dimensions_is_422_with_the_range(client):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="semantic", input="hello", dimensions=100000)
    error = caught.value
    assert error.status_code == 422
    assert "between 1 and 384" in error.body["message"]
    assert error.body.get("param") == "dimensions"
    assert "between 1 and 384" in str(error)


def test_unknown_model_on_models_retrieve_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.status_code == 404
    assert "semantic" in str(caught.value)


def test_the_unprefixed_alias_tei_also_serves(base_url, reference):
    # TEI answers OpenAI's API at /embeddings too; a client pointed at the
    # server root (no /v1) reaches it.
    root = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=TIMEOUT)
    result = root.embeddings.create(model="semantic", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(vector(result.data[0]), reference([TEXTS[0]])[0], rtol=0, atol=ATOL)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        root.embeddings.create(model="nope", input="x")
    assert "semantic" in str(e.value)


def test_info_says_which_route_speaks_which_protocol(http):
    routes = {(r["method"], r["path"]): r["protocol"] for r in http.get("/info").json()["routes"]}
    assert routes[("POST", "/embed_multi")] == "native"
    assert routes[("POST", "/v1/embeddings")] == "openai"
    assert routes[("POST", "/embeddings")] == "openai"
    assert routes[("POST", "/embed")] == "tei"
    assert routes[("POST", "/")] == "tei"
