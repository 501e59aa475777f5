"""The server's queue and lifecycle with a slow stub model: 429 when the queue is full, graceful shutdown
finishes every accepted request; the micro-batcher never mixes rows or batch keys."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from tte_hf.serving import BackgroundServer, ServeConfig, create_app  # noqa: E402
from tte_hf.serving.batcher import BatchKey, Closed, MicroBatcher, QueueFull  # noqa: E402


def _row(text: str) -> np.ndarray:
    """A deterministic unit vector per input text."""
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    v = rng.standard_normal(4).astype(np.float32)
    return v / np.linalg.norm(v)


class SlowModel:
    """Just enough of a SentenceTransformer for the app: encode sleeps ``delay`` per call."""

    class Module:
        reasoner = None
        ecr_cache = None

    def __init__(self, delay: float):
        self.delay, self.module, self.calls = delay, self.Module(), 0

    def __getitem__(self, index):
        return self.module

    def get_embedding_dimension(self) -> int:
        return 4

    def encode_query(self, inputs, **kwargs):
        self.calls += 1
        time.sleep(self.delay)
        return np.stack([_row(x) for x in inputs])

    encode_document = encode_query


def _post(url: str, text: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"input": [text], "encoding_format": "float"}, timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


def test_full_queue_answers_429_and_queued_requests_still_succeed():
    model = SlowModel(delay=0.0)
    entered, release = threading.Event(), threading.Event()
    encode = model.encode_query
    model.encode_query = lambda inputs, **kw: (entered.set(), release.wait(30), encode(inputs, **kw))[2]
    app = create_app(model, ServeConfig(max_batch=1, batch_window_ms=0, max_queue=1))
    with BackgroundServer(app) as url, ThreadPoolExecutor(max_workers=2) as executor:
        batcher = app.state.batcher
        first = executor.submit(_post, url, "text 0")
        _wait(entered.is_set)  # the worker holds the first request
        second = executor.submit(_post, url, "text 1")
        _wait(lambda: batcher.pending == 1)  # queued: the queue is now full
        rejected = _post(url, "text 2")
        release.set()
        responses = [first.result(60), second.result(60)]
    assert rejected.status_code == 429, rejected.text
    assert rejected.headers["Retry-After"] == "1"
    assert "queue is full" in rejected.json()["error"]["message"]
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], _row(f"text {i}"), atol=1e-6)


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_graceful_shutdown_finishes_accepted_requests_then_refuses():
    model = SlowModel(delay=0.3)
    app = create_app(model, ServeConfig(max_batch=1, batch_window_ms=0))
    server = BackgroundServer(app)
    url = server.start()
    with ThreadPoolExecutor(max_workers=5) as executor:
        futures = [executor.submit(_post, url, f"late {i}") for i in range(5)]
        deadline = time.monotonic() + 30
        while model.calls + app.state.batcher.pending < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # all five accepted: one encoding, the rest queued
        assert model.calls < 5  # shutdown starts while work is still pending
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        responses = [f.result(timeout=60) for f in futures]
        stopper.join(60)
    assert [r.status_code for r in responses] == [200] * 5
    for i, response in enumerate(responses):
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], _row(f"late {i}"), atol=1e-6)
    with pytest.raises(httpx.TransportError):
        _post(url, "after shutdown")


def test_batcher_groups_by_key_and_never_mixes_rows():
    seen_keys = []

    def encode(inputs, key):
        seen_keys.append({x[0] for x in inputs} | {key})
        time.sleep(0.002)
        return np.stack([[hash(x) % 1000, len(x[1]), 0.0] for x in inputs]).astype(np.float32)

    batcher = MicroBatcher(encode, max_batch=16, window=0.01, max_queue=4096)
    keys = [BatchKey("query", None, None), BatchKey("document", False, 8)]

    def client(c: int):
        out = []
        for r in range(20):
            key = keys[(c + r) % 2]
            inputs = [(key, f"c{c}r{r}i{i}") for i in range(1 + (c + r) % 3)]
            out.append((inputs, batcher.submit(inputs, key).result(timeout=60)))
        return out

    with ThreadPoolExecutor(max_workers=32) as executor:
        results = [row for rows in executor.map(client, range(32)) for row in rows]
    batcher.close()
    for inputs, vectors in results:
        expected = np.array([[hash(x) % 1000, len(x[1]), 0.0] for x in inputs], dtype=np.float32)
        np.testing.assert_array_equal(vectors, expected)
    assert all(len(group) == 1 for group in seen_keys)  # each call: inputs of one key only, called with it
    assert max(batcher.calls) > 3 and sum(batcher.calls) == sum(len(i) for i, _ in results)
    with pytest.raises(Closed):
        batcher.submit([(keys[0], "x")], keys[0])


def test_batcher_queue_bound():
    release = threading.Event()
    batcher = MicroBatcher(lambda inputs, key: (release.wait(10), np.zeros((len(inputs), 2)))[1], max_queue=2)
    key = BatchKey("query", None, None)
    first = batcher.submit(["a"], key)
    deadline = time.monotonic() + 5
    while batcher.pending and time.monotonic() < deadline:
        time.sleep(0.005)  # the worker holds "a"
    queued = [batcher.submit([x], key) for x in ("b", "c")]
    with pytest.raises(QueueFull):
        batcher.submit(["d"], key)
    release.set()
    assert first.result(10).shape == (1, 2) and all(f.result(10).shape == (1, 2) for f in queued)
    batcher.close()


def test_cli_serves_a_saved_model_and_stops_cleanly_on_sigterm(tiny_vlm, tmp_path):
    """``tte-hf serve FOLDER``: the vectors of a saved model; SIGTERM shuts it down gracefully."""
    import os
    import signal
    import subprocess
    import sys

    from tte_hf.sentence_transformers import build_sentence_transformer

    model = build_sentence_transformer(tiny_vlm, prompts={"query": "Find it."})
    model.save(str(tmp_path / "tte-tiny"))
    port = _free_port()
    env = {**os.environ, "TTE_HF_API_KEY": "k-123", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "tte_hf.cli", "serve", str(tmp_path / "tte-tiny"), "--port", str(port)]
    process = subprocess.Popen([*command, "--trust-remote-code"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(url, process)
        body = {"model": "tte-tiny", "input": ["a red bus", "a dog"], "encoding_format": "float"}
        response = httpx.post(f"{url}/v1/embeddings", json=body, headers={"Authorization": "Bearer k-123"}, timeout=60)
        got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, model.encode_query(body["input"], normalize_embeddings=True), atol=1e-5)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        stderr = process.stderr.read()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM
    assert code in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert "k-123" not in stderr


def test_cli_with_a_remote_reasoner_and_ecr_cache_as_readme_deploys_it(tiny_vlm, tmp_path):
    """README's GPU line minus ``--device cuda``: ``tte-hf serve MODEL --reasoner-endpoint URL
    --reasoner-model NAME --ecr-cache FILE`` reasons on the remote server (a fake OpenAI-compatible one
    here), embeds in process, and keeps the traces in the SQLite file for the next start."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from chat_server import ChatServer

    from tte_hf.sentence_transformers import build_sentence_transformer

    build_sentence_transformer(tiny_vlm, prompts={"query": "Find it."}).save(str(tmp_path / "tte-tiny"))
    cache = tmp_path / "ecr.sqlite"
    texts = ["a red bus", "which dog is closest"]
    with ChatServer() as chat:
        expected = build_sentence_transformer(
            tiny_vlm, reasoner_endpoint=chat.base_url, reasoner_model="reasoner-2b", prompts={"query": "Find it."}
        ).encode_query(texts, normalize_embeddings=True)
        chat.received.clear()
        for start in range(2):
            port = _free_port()
            command = [sys.executable, "-m", "tte_hf.cli", "serve", str(tmp_path / "tte-tiny"), "--trust-remote-code"]
            command += ["--port", str(port), "--reasoner-endpoint", chat.base_url, "--reasoner-model", "reasoner-2b"]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            process = subprocess.Popen(
                [*command, "--ecr-cache", str(cache)], env=env, stderr=subprocess.PIPE, text=True
            )
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_until_healthy(url, process)
                body = {"input": texts, "think": True, "encoding_format": "float"}
                response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
                assert response.status_code == 200, response.text
                got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
                np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
                process.stderr.read()
            # first start: one remote call per input; the restarted server reads every trace from the file
            assert len(chat.received) == len(texts), start
            assert {body["model"] for body in chat.received} == {"reasoner-2b"}
    with sqlite3.connect(cache) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables == ["ecr"] and db.execute("SELECT COUNT(*) FROM ecr").fetchone()[0] == len(texts)
