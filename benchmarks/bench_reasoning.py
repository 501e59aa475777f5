"""Reasoner throughput on a tiny random Qwen2-VL (CPU): batched vs one-by-one generation, cache hit vs miss.

    OMP_NUM_THREADS=1 python benchmarks/bench_reasoning.py [--items 16] [--new-tokens 48] [--repeats 3]

Prints items/s for each mode and the ratios, all measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from PIL import Image

from tte_hf.reasoning import CachedReasoner, ReasoningRequest, load_reasoner
from tte_hf.testing import build_tiny_vlm


def _requests(n: int) -> list[ReasoningRequest]:
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "black", "gray"]
    return [
        ReasoningRequest(
            text=f"what is shown in picture number {i}?",
            images=(Image.new("RGB", (56, 56), colors[i % len(colors)]),) if i % 2 == 0 else (),
            task="vqa",
            item_id=str(i),
        )
        for i in range(n)
    ]


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm(f"{tmp}/tiny", hidden_size=args.hidden_size, num_layers=args.num_layers)
        requests = _requests(args.items)
        options = {"backend": "transformers", "model": str(path), "max_new_tokens": args.new_tokens}
        batched = load_reasoner(options, batch_size=args.items)
        single = load_reasoner(options, batch_size=1)
        batched.model = single.model  # same weights object: only the batching differs
        assert batched.generate(requests) == single.generate(requests), "batched and one-by-one traces differ"

        t_batched = _best_time(lambda: batched.generate(requests), args.repeats)
        t_single = _best_time(lambda: single.generate(requests), args.repeats)

        def cache_miss():
            cached = CachedReasoner(batched, f"{tmp}/cache-{time.perf_counter_ns()}.sqlite")
            cached.generate(requests)

        cached = CachedReasoner(batched, f"{tmp}/cache.sqlite")
        cached.generate(requests)  # fill
        t_miss = _best_time(cache_miss, args.repeats)
        t_hit = _best_time(lambda: cached.generate(requests), args.repeats)
        hits_before = cached.hits

    n = args.items
    print(
        f"tiny Qwen2-VL hidden={args.hidden_size} layers={args.num_layers}, {n} items (half with an image), "
        f"{args.new_tokens} new tokens, best of {args.repeats}"
    )
    print(f"one by one        : {n / t_single:8.1f} items/s  ({t_single:.3f} s)")
    print(f"batched ({n:>2})      : {n / t_batched:8.1f} items/s  ({t_batched:.3f} s)")
    print(f"cache miss        : {n / t_miss:8.1f} items/s  ({t_miss:.3f} s, generation + store)")
    print(f"cache hit         : {n / t_hit:8.1f} items/s  ({t_hit:.4f} s, hash pixels + SQLite read)")
    print(f"batched / one-by-one throughput: {t_single / t_batched:.1f}x")
    print(f"cache hit / miss throughput    : {t_miss / t_hit:.0f}x")
    assert hits_before >= n * args.repeats


if __name__ == "__main__":
    main()
