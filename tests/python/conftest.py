"""Fixtures shared by the client compatibility tests.

One real `embeddings-server` process serves the whole session:

    $EMBEDDINGS_SERVER_BIN --bind 127.0.0.1:0 --models-dir $EMBEDDINGS_MODELS_DIR --log-format json

It prints `listening on 127.0.0.1:PORT` as its first stdout line; we then poll
`GET /readyz` until 200 and hand the base URL to the tests. At teardown it gets
SIGTERM (by PID) and, if it has not stopped 20 s later, SIGKILL.

Every wait is bounded, and everything talks to loopback only. Without the
environment variables the fixtures fall back to `target/debug/embeddings-server`
and `models/` of this checkout, so `pytest tests/python` works after
`cargo build -p embeddings-server` (`cargo xtask ci` sets both).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bounds on every wait, in seconds.
LISTEN_TIMEOUT = 30.0  # until the `listening on` line
READY_TIMEOUT = 120.0  # until GET /readyz answers 200 (the model loads meanwhile)
STOP_TIMEOUT = 20.0  # after SIGTERM, before SIGKILL
REQUEST_TIMEOUT = 60.0  # one HTTP request of a test (a debug build is slower)

# Loopback never goes through a proxy that happens to be set in the environment
# (httpx, httpx2 and so the openai and huggingface_hub clients honour these).
_no_proxy = ",".join(
    filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"])
)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = _no_proxy
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


class Server:
    """A running server: its base URL and where its logs went."""

    def __init__(self, url: str, process: subprocess.Popen[str], stderr_path: Path):
        self.url = url
        self.process = process
        self.stderr_path = stderr_path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read {self.stderr_path}: {e})"
        return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM by PID, then SIGKILL after STOP_TIMEOUT; always reaps."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def server_bin() -> Path:
    """The server binary under test."""
    return _path_from_env("EMBEDDINGS_SERVER_BIN", ROOT / "target" / "debug" / "embeddings-server")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, server_bin: Path) -> Iterator[Server]:
    binary = server_bin
    models = _path_from_env("EMBEDDINGS_MODELS_DIR", ROOT / "models")
    if not binary.is_file():
        pytest.exit(
            f"no server binary at {binary}: run `cargo build -p embeddings-server` "
            "or set EMBEDDINGS_SERVER_BIN",
            returncode=2,
        )
    if not models.is_dir():
        pytest.exit(
            f"no models folder at {models}: run `cargo xtask fetch-models` "
            "or set EMBEDDINGS_MODELS_DIR",
            returncode=2,
        )

    logs = tmp_path_factory.mktemp("server")
    stderr_path = logs / "stderr.jsonl"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [
                str(binary),
                "--bind",
                "127.0.0.1:0",
                "--models-dir",
                str(models),
                "--log-format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        # A thread reads stdout for the whole run, so the first line can be
        # awaited with a timeout and the pipe never fills up.
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="server-stdout", daemon=True).start()
        server = Server("", process, stderr_path)
        try:
            first = lines.get(timeout=LISTEN_TIMEOUT)
        except queue.Empty:
            first = None
        match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", (first or "").strip())
        if match is None:
            pytest.fail(
                f"the server did not print `listening on 127.0.0.1:PORT` within "
                f"{LISTEN_TIMEOUT:.0f} s (first stdout line: {first!r}, exit code: "
                f"{process.poll()}); its log:\n{server.log_tail()}",
                pytrace=False,
            )
        server.url = f"http://{match.group(1)}"

        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer yet"
        with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False) as probe:
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"the server exited ({process.returncode}) before it was ready; "
                        f"its log:\n{server.log_tail()}",
                        pytrace=False,
                    )
                try:
                    response = probe.get("/readyz")
                    if response.status_code == 200:
                        break
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as e:
                    last = repr(e)
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"GET /readyz did not answer 200 within {READY_TIMEOUT:.0f} s "
                        f"(last: {last}); the server's log:\n{server.log_tail()}",
                        pytrace=False,
                    )
                time.sleep(0.2)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    """`http://127.0.0.1:PORT`, no trailing slash."""
    return server.url


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    """Plain HTTP to the server, for routes no client library wraps."""
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT, trust_env=False) as client:
        yield client


NativeItems = Callable[..., list[dict]]


@pytest.fixture(scope="session")
def native(http: httpx.Client) -> NativeItems:
    """`native(texts, models=["semantic"], fused=False)`: the items of the
    native 12-slot API, each a dict of slot name -> slot output (plus `fused`
    when asked for): the reference every client's vectors are compared with.
    """

    def call(texts: list[str], models: list[str] | None = None, fused: bool = False) -> list[dict]:
        body = {"inputs": texts, "models": models or ["semantic"], "fused": fused}
        response = http.post("/embed_multi", json=body)
        assert response.status_code == 200, f"native API: {response.status_code} {response.text}"
        data = response.json()["data"]
        assert len(data) == len(texts), data
        items = []
        for item in data:
            slots = dict(item["slots"])
            if fused:
                slots["fused"] = item["fused"]
            items.append(slots)
        return items

    return call


@pytest.fixture(scope="session")
def reference(native: NativeItems) -> Callable[[list[str]], np.ndarray]:
    """`reference(texts)`: the native `semantic` vectors, shape (len(texts), 384)."""

    def call(texts: list[str]) -> np.ndarray:
        vectors = []
        for item in native(texts):
            semantic = item["semantic"]
            assert semantic["type"] == "dense" and semantic["dim"] == 384, semantic
            vectors.append(semantic["values"])
        return np.asarray(vectors, dtype=np.float32)

    return call
