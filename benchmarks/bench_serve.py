"""Throughput of ``tte-hf serve``: dynamic micro-batching vs one request at a time, side by side.

Both servers serve the same tiny TTE model (Qwen2-VL embedder + a Qwen2.5-VL reasoner run in process
with transformers, greedy, ``--max-new-tokens``) on 127.0.0.1 and receive the same single-input query
requests (reasoning on, every query distinct, a fresh ECR cache each) from ``--clients`` concurrent
clients. The only difference: ``max_batch=1`` (each request alone) vs ``max_batch=--max-batch`` with a
``--window-ms`` window. The vectors of both runs must agree (1e-5). Goal: >= 3x requests per second.

    python benchmarks/bench_serve.py [--requests 128] [--clients 64] [--max-batch 32] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
