"""The fault-containment pieces of ``tte-hf serve`` one at a time: the batcher halves a failing batch
and stops in bounded time, the reasoner guard keeps the traces of a partly failed batch and never
re-sends a failed item, the HTTP reasoner reports per-item results and does not retry a 4xx, the
SQLite cache keeps partial results, a full queue answers 429 before the body arrives, and /health
says draining."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")

from chat_server import ChatServer  # noqa: E402

from tte_hf.models.tte.fetch import FetchError, FetchRefused, SafeFetcher  # noqa: E402
from tte_hf.models.tte.reasoner_base import ReasoningRequest  # noqa: E402
from tte_hf.models.tte.reasoner_openai import OpenAIReasoner, PartialGenerationError  # noqa: E402
from tte_hf.reasoning import CachedReasoner  # noqa: E402
from tte_hf.serving import BackgroundServer, ServeConfig, create_app  # noqa: E402
from tte_hf.serving.batcher import BatchKey, Closed, ItemError, MicroBatcher  # noqa: E402
from tte_hf.serving.reasoner_guard import GuardedReasoner, ReasonerError  # noqa: E402

KEY = BatchKey("query", None, None)


def test_a_failing_item_is_found_by_halving_and_everyone_else_is_answered():
    calls = []

    def encode(inputs, key):
        calls.append(len(inputs))
        if "bad" in inputs:
            raise ValueError("bad item")
        return np.array([[float(x.split("-")[1]), 1.0] for x in inputs], dtype=np.float32)

    batcher = MicroBatcher(encode, max_batch=64, window=0.2, max_queue=64)
    jobs = [[f"x-{4 * j + i}" for i in range(4)] for j in range(16)]
    jobs[9][2] = "bad"
    futures = [batcher.submit(inputs, KEY) for inputs in jobs]
    for j, future in enumerate(futures):
        if j == 9:
            with pytest.raises(ItemError) as info:
                future.result(10)
            assert info.value.index == 2 and "bad item" in str(info.value.error)
        else:
            np.testing.assert_array_equal(future.result(10)[:, 0], [4 * j + i for i in range(4)])
    batcher.close()
    # 1 call for all 64 items, then halves down to the item: 2 per level over log2(16) + log2(4) levels;
    # trying request by request, then item by item, took 16 + 3 calls after the first
    assert calls[0] == 64 and len(calls) <= 1 + 2 * 6, calls


def test_close_is_bounded_when_the_encoder_hangs():
    release = threading.Event()
    batcher = MicroBatcher(lambda inputs, key: (release.wait(30), np.zeros((len(inputs), 2)))[1], window=0)
    running = batcher.submit(["a"], KEY)
    time.sleep(0.1)
    queued = batcher.submit(["b"], KEY)
    start = time.monotonic()
    assert batcher.close(timeout=0.3) is False
    assert time.monotonic() - start < 1.5
    with pytest.raises(Closed):
        queued.result(1)
    release.set()
    assert running.result(5).shape == (1, 2)


class _FlakyBackend:
    """Fails on requests whose text contains 'bad' (per item, like the HTTP reasoner); counts calls."""

    name, thread_safe = "flaky", True

    def __init__(self):
        self.seen: list[str] = []

    def describe(self):
        return {"name": self.name}

    def generate(self, requests):
        self.seen += [r.text for r in requests]
        outputs = [None if "bad" in r.text else f"<think>{r.text}</think> ok" for r in requests]
        errors = {i: "rejected" for i, o in enumerate(outputs) if o is None}
        if errors:
            raise PartialGenerationError(outputs, errors)
        return outputs


def test_guard_keeps_the_good_traces_and_never_resends_a_failed_item():
    backend, stored = _FlakyBackend(), {}
    guard = GuardedReasoner(backend, store=stored.__setitem__)
    requests = [ReasoningRequest(text=t) for t in ("a", "bad one", "c")]
    with guard.remembering_failures():
        with pytest.raises(ReasonerError, match="1 of 3"):
            guard.generate(requests)
        assert sorted(stored.values()) == ["<think>a</think> ok", "<think>c</think> ok"]
        with pytest.raises(ReasonerError):
            guard.generate(requests[1:2])  # remembered: the backend is not asked again
    assert backend.seen == ["a", "bad one", "c"]
    assert guard.generate(requests[:1]) == ["<think>a</think> ok"]  # outside the block: asked again


def test_http_reasoner_reports_per_item_results_and_does_not_retry_a_4xx(tmp_path):
    with ChatServer() as chat:
        chat.faults["REJECT"] = "always400"
        reasoner = OpenAIReasoner("r", chat.base_url, max_retries=3, backoff=0.01)
        requests = [ReasoningRequest(text=t) for t in ("one", "REJECT two", "three", "four")]
        cached = CachedReasoner(reasoner, tmp_path / "ecr.sqlite")
        with pytest.raises(PartialGenerationError) as info:
            cached.generate(requests)
        assert [o is None for o in info.value.outputs] == [False, True, False, False]
        assert list(info.value.errors) == [1] and "HTTP 400" in info.value.errors[1]
        assert chat.attempts["REJECT"] == 1
        sent = len(chat.received)
        assert cached.generate([requests[0], requests[2], requests[3]])[0].endswith("ok")
        assert len(chat.received) == sent  # the three good traces were stored despite the failure


def test_http_reasoner_deadline_bounds_a_hung_server():
    with ChatServer(hang_seconds=20) as chat:
        chat.faults["HANG"] = "hang"
        reasoner = OpenAIReasoner("r", chat.base_url, max_retries=5, timeout=60, deadline=1.0)
        start = time.monotonic()
        with pytest.raises(PartialGenerationError):
            reasoner.generate([ReasoningRequest(text="HANG now")])
        assert time.monotonic() - start < 2.5


def test_allow_list_entries_and_refusals():
    fetcher = SafeFetcher(allow_hosts=["127.0.0.1:8081", "[::1]:9", "10.1.0.0/16", "Images.Internal"])
    assert fetcher.allowed("127.0.0.1", "127.0.0.1", 8081) and not fetcher.allowed("127.0.0.1", "127.0.0.1", 8080)
    assert fetcher.allowed("::1", "::1", 9) and fetcher.allowed("x", "10.1.2.3", 80)
    assert fetcher.allowed("images.internal", "10.9.9.9", 443) and not fetcher.allowed("x", "10.9.9.9", 443)
    assert fetcher.allowed("example.org", "93.184.215.14", 80)
    for url in ("http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://[fd00::1]/", "ftp://a/"):
        with pytest.raises(FetchRefused):
            fetcher.fetch(url)


def test_image_urls_per_request_are_capped_before_any_fetch():
    from tte_hf.serving.schemas import Limits, RequestError, parse_request

    limits = Limits(allow_image_urls=True, max_image_urls=3)
    body = {"input": [{"text": "x", "images": [f"http://example.org/{i}.png" for i in range(4)]}]}
    with pytest.raises(RequestError) as info:
        parse_request(body, limits, max_dimensions=8)
    assert info.value.param == "input[0].images[3]" and "at most 3 image URLs" in info.value.message


class _StubModel:
    """Enough of a SentenceTransformer for the app; encode waits for ``release``."""

    class Module:
        reasoner = None
        ecr_cache = None

    def __init__(self):
        self.module, self.release = self.Module(), threading.Event()

    def __getitem__(self, index):
        return self.module

    def get_embedding_dimension(self) -> int:
        return 2

    def encode_query(self, inputs, **kwargs):
        self.release.wait(30)
        return np.ones((len(inputs), 2), dtype=np.float32) / np.sqrt(2)

    encode_document = encode_query


def _raw_status(port: int, head: str, timeout: float = 5.0) -> tuple[str, float]:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        return sock.recv(200).decode().split("\r\n")[0], time.monotonic() - start


def test_full_queue_answers_429_before_the_body_is_sent_and_health_says_draining():
    import httpx

    model = _StubModel()
    app = create_app(model, ServeConfig(max_batch=1, batch_window_ms=0, max_queue=1))
    server = BackgroundServer(app)
    url = server.start()
    port = int(url.rsplit(":", 1)[1])
    try:
        posts = [threading.Thread(target=httpx.post, args=(f"{url}/v1/embeddings",), kwargs={"json": {"input": [f"t{i}"]}, "timeout": 30}) for i in range(2)]  # fmt: skip
        for post in posts:
            post.start()
            time.sleep(0.3)  # one held by the worker, one waiting: the queue is full
        head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"  # fmt: skip
        status, seconds = _raw_status(port, head)  # 50 MB announced, not one byte sent
        assert status == "HTTP/1.1 429 Too Many Requests" and seconds < 2, status
        usage = None
        model.release.set()
        for post in posts:
            post.join(30)
        usage = httpx.post(f"{url}/v1/embeddings", json={"input": ["a b c d"]}).json()["usage"]
        assert usage["prompt_tokens"] >= 1 and usage["total_tokens"] == usage["prompt_tokens"]
        app.state.serve.begin_drain()
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        assert httpx.post(f"{url}/v1/embeddings", json={"input": ["late"]}).status_code == 503
    finally:
        model.release.set()
        server.stop()


def test_a_body_that_never_finishes_gets_408_at_the_request_timeout():
    model = _StubModel()
    model.release.set()
    app = create_app(model, ServeConfig(request_timeout=1.0))
    with BackgroundServer(app) as url:
        port = int(url.rsplit(":", 1)[1])
        head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"  # fmt: skip
        status, seconds = _raw_status(port, head)  # one byte of the body, then silence
        assert status == "HTTP/1.1 408 Request Timeout" and 0.9 < seconds < 3, (status, seconds)
        assert app.state.serve.admission.snapshot() == {"waiting": 0, "items": 0, "pixels": 0, "bytes": 0}


def test_https_connects_to_the_checked_address_and_verifies_the_name(tmp_path):
    """The socket goes to the address that was checked, TLS still verifies the URL's host name (SNI)."""
    import ssl
    import subprocess
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = f"host={self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        fetcher = SafeFetcher(allow_hosts=[f"localhost:{port}", f"127.0.0.1:{port}"], ssl_context=trusting)
        assert fetcher.fetch(f"https://localhost:{port}/x.png").data == f"host=localhost:{port}".encode()
        with pytest.raises(FetchError):  # the certificate names localhost, not 127.0.0.1
            fetcher.fetch(f"https://127.0.0.1:{port}/x.png")
        with pytest.raises(FetchError):  # not trusted by the system's store
            SafeFetcher(allow_hosts=[f"localhost:{port}"]).fetch(f"https://localhost:{port}/x.png")
    finally:
        server.shutdown()
        server.server_close()
