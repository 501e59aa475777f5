"""Adaptive thinking where reasoning dominates: what ``think="auto"`` costs beyond the reasoning it keeps.

`bench_adaptive.py` times the demo's trained models, whose traces are about 20 tokens, so the
processor and vision tower that every mode runs weigh as much as the reasoning. Here the traces are
long, as a real reasoner's are (the paper's run to hundreds of tokens): a random tiny embedder and
reasoner (Qwen2-VL family, offline), traces forced to ``--trace-tokens`` tokens, and a gate whose
threshold skips a fixed share of the queries (a random probe: what it skips does not matter for
time). Same queries (text + image), same batches, one run, interleaved rounds (median). Prints
auto / always beside the share of queries reasoned, the time a gate that costs nothing would take, and
the gate's own pass (``gate_decisions``: for the no-trace-embedding and joint features the no-trace pass
a reasoned query makes on top of ``think=True``; for the text feature a table lookup) as a share of
``always``: the gate's share of a reasoned query's time. ``--hidden-size 1536 --num-layers 2`` is a
Qwen2-VL-2B-wide language model with few layers (its vision tower stays tiny, which understates every
pass that reads the image alike).

    python benchmarks/bench_gate_overhead.py [--skip 0.5 --trace-tokens 256 --queries 64 --batch 16 --feature joint]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def median_gate(model, queries, skip: float, feature: str = "joint"):
    """A random probe on ``feature`` (a `gate_tte.GATE_FEATURES` name), its threshold at the ``skip``
    quantile of the scores."""
    import torch

    from tte_hf.models.tte.gate_tte import GATE_FEATURES, ReasoningGate

    feature = GATE_FEATURES[feature]
    gate = ReasoningGate(model[0].gate_feature_dim(feature), feature=feature)
    with torch.no_grad():
        gate.linear.weight.copy_(torch.randn(gate.linear.weight.shape, generator=torch.Generator().manual_seed(0)))
        gate.linear.bias.zero_()
    model[0].set_gate(gate)
    gate.threshold.fill_(2.0)  # scores only
    scores = sorted(model.gate_decisions(queries)[1])
    cut = round(skip * len(scores))
    gate.threshold.fill_((scores[cut - 1] + scores[cut]) / 2 if 0 < cut < len(scores) else (2.0 if cut else -1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", type=float, default=0.5, help="Share of the queries the gate skips.")
    parser.add_argument("--trace-tokens", type=int, default=128)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feature", default="joint", choices=["embedding", "text", "joint"])
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from tte_hf.demo.runtime import pin_threads
    from tte_hf.models.tte.reasoner_transformers import TransformersReasoner
    from tte_hf.sentence_transformers import build_sentence_transformer
    from tte_hf.testing import build_tiny_vlm

    pin_threads()
    rng = np.random.default_rng(0)
    words = "red blue green small large dog cat bus road sky tree house boat bird apple sign".split()
    queries = [
        {
            "text": " ".join(rng.choice(words, size=int(rng.integers(4, 16)))),
            "image": Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)),
        }
        for _ in range(args.queries)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        size = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
        embedder = build_tiny_vlm(Path(tmp) / "embedder", **size)
        reasoner = TransformersReasoner(
            build_tiny_vlm(Path(tmp) / "reasoner", arch="qwen2_5_vl", seed=1, **size),
            max_new_tokens=args.trace_tokens,
            batch_size=args.batch,
        )
        reasoner.model.generation_config.eos_token_id = None  # every trace runs to --trace-tokens
        model = build_sentence_transformer(str(embedder), reasoner=reasoner)
        median_gate(model, queries, args.skip, args.feature)
        module = model[0]
        modes = {"always": True, "auto": "auto", "never": False}
        times: dict[str, list[float]] = {mode: [] for mode in [*modes, "gate"]}
        reasoned = 0
        for repeat in range(args.repeats + 1):  # the first round warms up
            for mode, think in modes.items():
                module.ecr_cache.clear()
                start = time.perf_counter()
                model.encode_query(queries, think=think, batch_size=args.batch, show_progress_bar=False)
                if repeat:
                    times[mode].append(time.perf_counter() - start)
                if mode == "auto":
                    reasoned = len(module.ecr_cache)  # one entry per query the reasoner ran on
            start = time.perf_counter()
            model.gate_decisions(queries, batch_size=args.batch)
            if repeat:
                times["gate"].append(time.perf_counter() - start)
        always, auto, never, gate = (statistics.median(times[m]) for m in times)
    print(f"{args.queries} queries (text + image), batch {args.batch}, traces of {args.trace_tokens} tokens, "
          f"hidden {args.hidden_size} x {args.num_layers} layers, {torch.get_num_threads()} threads, median of {args.repeats}, "
          f"gate feature {args.feature}")  # fmt: skip
    print("| reasoned / queries | always (s) | auto (s) | never (s) | gate pass (s) | auto / always | reasoned share | (auto - never) / always | gate pass / always |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {reasoned} / {args.queries} | {always:.2f} | {auto:.2f} | {never:.2f} | {gate:.2f} | **{auto / always:.2f}** | {reasoned / args.queries:.2f} | {(auto - never) / always:.2f} | **{gate / always:.3f}** |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
