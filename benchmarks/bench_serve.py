"""Throughput of ``tte-hf serve``: dynamic micro-batching vs one request at a time, side by side.

Both servers serve the same tiny TTE model (Qwen2-VL embedder + a Qwen2.5-VL reasoner run in process
with transformers, greedy, ``--max-new-tokens``) on 127.0.0.1 and receive the same single-input query
requests (reasoning on, every query distinct, a fresh ECR cache each) from ``--clients`` concurrent
clients. The only difference: ``max_batch=1`` (each request alone) vs ``max_batch=--max-batch`` with a
``--window-ms`` window. The vectors of both runs must agree (1e-5). Goal: >= 3x requests per second.

    python benchmarks/bench_serve.py [--requests 128] [--clients 64] [--max-batch 32] [--max-new-tokens 24]

``--abuse`` measures something else: good clients' latency with and without abusive ones. It starts
the ``tte-hf serve`` CLI (a subprocess on 127.0.0.1) with a remote reasoner (the fake OpenAI-compatible
server of ``tests/chat_server.py``, 50 ms per call), then runs ``--clients`` good clients (each
``--rounds`` requests of two fresh queries, reasoning on) alone, then again beside ``--abusers``
abusive clients that loop until the good ones are done, taking turns at: 64 one-bit 4096x4096 PNGs
in one request, 4 of them, an image URL that drips one byte every half second, and a request with an
item the reasoner rejects.
Goal: every good request answered, p50/p99 within 2x of the clean run.

    python benchmarks/bench_serve.py --abuse [--clients 64 --abusers 8 --rounds 4]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np

from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.serving import BackgroundServer, ServeConfig, create_app
from tte_hf.testing import _WORDS, build_tiny_vlm


def _queries(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choices(_WORDS, k=rng.randint(6, 14))) for i in range(n)]


def measure(embedder: str, reasoner: str, queries: list[str], args, max_batch: int) -> tuple[float, np.ndarray]:
    """Seconds to answer every query (``args.clients`` at a time) and the vectors, in query order."""
    model = build_sentence_transformer(embedder, reasoner=reasoner, max_new_tokens=args.max_new_tokens)
    config = ServeConfig(max_batch=max_batch, batch_window_ms=args.window_ms if max_batch > 1 else 0.0)
    app = create_app(model, config)
    with BackgroundServer(app) as url:
        httpx.post(f"{url}/v1/embeddings", json={"input": ["warm up"], "think": True}, timeout=600)

        def one(text: str) -> list[float]:
            body = {"input": [text], "think": True, "encoding_format": "float"}
            response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=600)
            response.raise_for_status()
            return response.json()["data"][0]["embedding"]

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as executor:
            vectors = list(executor.map(one, queries))
        seconds = time.perf_counter() - start
        calls = app.state.batcher.calls[1:]  # without the warm-up call
    print(f"max_batch={max_batch}: {len(calls)} encode calls, mean {np.mean(calls):.1f} inputs per call")
    return seconds, np.array(vectors, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--window-ms", type=float, default=50.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--abuse", action="store_true", help="Good clients' latency beside abusive ones.")
    parser.add_argument("--abusers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="--abuse: requests per good client.")
    args = parser.parse_args()
    if args.abuse:
        run_abuse(args)
        return
    root = tempfile.mkdtemp(prefix="bench_serve_")
    embedder = str(build_tiny_vlm(f"{root}/embedder", arch="qwen2_vl"))
    reasoner = str(build_tiny_vlm(f"{root}/reasoner", arch="qwen2_5_vl"))
    queries = _queries(args.requests)
    single, single_vectors = measure(embedder, reasoner, queries, args, max_batch=1)
    batched, batched_vectors = measure(embedder, reasoner, queries, args, max_batch=args.max_batch)
    np.testing.assert_allclose(batched_vectors, single_vectors, atol=1e-5, rtol=0)
    print(f"{args.requests} single-query requests, reasoning on ({args.max_new_tokens} new tokens), {args.clients} concurrent clients")  # fmt: skip
    print("| server | seconds | requests/s |\n| --- | --- | --- |")
    print(f"| one request at a time (max_batch=1) | {single:.2f} | {args.requests / single:.1f} |")
    print(f"| micro-batched (max_batch={args.max_batch}, {args.window_ms:g} ms window) | {batched:.2f} | {args.requests / batched:.1f} |")  # fmt: skip
    print(f"speed-up: {single / batched:.1f}x (goal >= 3x); vectors equal to 1e-5")


# --- --abuse ---------------------------------------------------------------------------------------


def _drip_server() -> ThreadingHTTPServer:
    """127.0.0.1: every GET is answered one byte per half second, for at most 30 s."""

    class Drip(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            for _ in range(60):
                time.sleep(0.5)
                try:
                    self.wfile.write(b"H")
                    self.wfile.flush()
                except OSError:
                    return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _bomb_bodies() -> tuple[dict, dict]:
    """64 one-bit 4096x4096 PNGs in one request (over --max-request-pixels: refused at the fifth
    header), and 4 of them (within it: decoded and downscaled, about 0.2 s of CPU)."""
    from PIL import Image, ImageDraw

    image = Image.new("1", (4096, 4096))
    ImageDraw.Draw(image).rectangle((300, 200, 3000, 3900), fill=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    many = {"input": [{"text": f"bomb {i}", "images": [url] * 8} for i in range(8)], "think": False}
    return many, {"input": [{"text": "four bombs", "images": [url] * 4}], "think": False}


def _start_cli(model: str, chat_url: str, drip_port: int, root: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tte_hf.cli", "serve", model, "--trust-remote-code", "--port", str(port)]
    command += ["--reasoner-endpoint", chat_url, "--reasoner-model", "r", "--ecr-cache", f"{root}/ecr.sqlite"]
    command += ["--allow-image-urls", "--image-url-allow-hosts", f"127.0.0.1:{drip_port}", "--image-url-timeout", "2"]
    command += ["--request-timeout", "30", "--max-batch", "32", "--batch-window-ms", "20"]
    process = subprocess.Popen(command, stderr=open(f"{root}/serve.log", "w"), env={**os.environ})  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError("the server did not start; see serve.log")


def _good_run(url: str, tag: str, args) -> tuple[list[float], int]:
    """Latencies of every good request (seconds) and how many were not answered 200."""

    def client(c: int) -> list[float | None]:
        out = []
        with httpx.Client(timeout=120) as http:
            for r in range(args.rounds):
                body = {"input": [f"{tag} client {c} round {r} query {k} about a bus" for k in range(2)], "think": True}
                start = time.perf_counter()
                response = http.post(f"{url}/v1/embeddings", json=body)
                out.append(time.perf_counter() - start if response.status_code == 200 else None)
        return out

    with ThreadPoolExecutor(args.clients) as pool:
        rows = [x for client_rows in pool.map(client, range(args.clients)) for x in client_rows]
    return [x for x in rows if x is not None], sum(x is None for x in rows)


def _abuser(url: str, drip_port: int, stop: threading.Event, index: int, outcomes: dict) -> None:
    many_bombs, four_bombs = _bomb_bodies()
    slow = {"input": [{"text": "x", "image": f"http://127.0.0.1:{drip_port}/slow.png"}], "think": False}
    turn = index
    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            kind = ("64_bombs", "slow_url", "4_bombs", "failing_item")[turn % 4]
            turn += 1
            failing = {"input": [f"abuser {index} turn {turn} fine", "REJECTME now", "fine too"], "think": True}
            body = {"64_bombs": many_bombs, "4_bombs": four_bombs, "slow_url": slow, "failing_item": failing}[kind]
            status = http.post(f"{url}/v1/embeddings", json=body).status_code
            outcomes[(kind, status)] = outcomes.get((kind, status), 0) + 1


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def run_abuse(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from chat_server import ChatServer

    root = tempfile.mkdtemp(prefix="bench_serve_abuse_")
    model = build_sentence_transformer(str(build_tiny_vlm(f"{root}/embedder", arch="qwen2_vl")), prompts={"query": "Find it."})  # fmt: skip
    model.save(f"{root}/tte-tiny")
    drip = _drip_server()
    with ChatServer() as chat:
        chat.faults["REJECTME"] = "always400"
        process, url = _start_cli(f"{root}/tte-tiny", chat.base_url, drip.server_address[1], root)
        try:
            _good_run(url, "warm-up", argparse.Namespace(clients=4, rounds=1))
            clean, clean_lost = _good_run(url, "clean", args)
            stop, outcomes = threading.Event(), {}
            abusers = [threading.Thread(target=_abuser, args=(url, drip.server_address[1], stop, i, outcomes)) for i in range(args.abusers)]  # fmt: skip
            for thread in abusers:
                thread.start()
            abused, abused_lost = _good_run(url, "abused", args)
            stop.set()
            for thread in abusers:
                thread.join(180)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            drip.shutdown()
    _report(args, clean, clean_lost, abused, abused_lost, outcomes)


def _report(args, clean, clean_lost, abused, abused_lost, outcomes) -> None:
    (c50, c99), (a50, a99) = _percentiles(clean), _percentiles(abused)
    print(f"{args.clients} good clients x {args.rounds} requests (2 queries, reasoning on); {args.abusers} abusers")
    print("| run | answered | lost | p50 s | p99 s |\n| --- | --- | --- | --- | --- |")
    print(f"| clean | {len(clean)} | {clean_lost} | {c50:.2f} | {c99:.2f} |")
    print(f"| with abusers | {len(abused)} | {abused_lost} | {a50:.2f} ({a50 / c50:.2f}x) | {a99:.2f} ({a99 / c99:.2f}x) |")  # fmt: skip
    print("abusive requests (kind, status): count:", dict(sorted(outcomes.items())))


if __name__ == "__main__":
    main()
