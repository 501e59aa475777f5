"""Adaptive thinking: end-to-end ``encode_query`` wall time of ``think="auto"`` vs ``think=True``.

Same queries, same batches, one run, interleaved repeats (median); the ECR cache is emptied before
every call so each reasoned query really runs the reasoner. Prints, for the student (embedder + a
separate reasoner) and the unified model, reasoner calls and the auto / always time ratio (goal
<= 0.65 on a mixed set).

The set is built here: plain queries (the answer is in the text) mixed with picture riddles (a shape
image + a question about it), half and half. The models are tiny and random, so no trace can help
anything; the gate is therefore fitted (`tte_hf.training.gate_fit.fit_probe`, threshold 0.5) to the
query type, which is what ``train-gate`` learns where traces help only the riddles. What this measures
is the cost side: the gate's extra pass against the decodes it saves.

    python benchmarks/bench_adaptive.py [--queries 32 --batch 16 --trace-tokens 40 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tte_hf.gate_tte import ReasoningGate
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.testing import build_tiny_vlm
from tte_hf.training.gate_fit import fit_probe
from tte_hf.training.synthetic import COLORS, POSITIONS, SHAPES, _draw

INSTRUCTION = "Find the description that answers the query."


def mixed_queries(count: int) -> tuple[list, list[int]]:
    """``count`` queries, alternating plain text and picture riddles; 1 marks a riddle."""
    queries, riddle = [], []
    combos = [(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS]
    if count > len(combos):
        raise ValueError(f"at most {len(combos)} distinct queries, got {count}.")
    for index in range(count):
        color, shape, position = combos[(index * 7) % len(combos)]  # 7 is prime to 64: all distinct
        if index % 2 == 0:
            queries.append(f"a {color} {shape} drawn on the {position} of a white background")
            riddle.append(0)
        else:
            image = _draw(COLORS[color], shape, position)
            queries.append({"text": "What would you get if this shape lost one of its corners?", "image": image})
            riddle.append(1)
    return queries, riddle


def fit_type_gate(model, queries, riddle) -> float:
    features = model.encode_query(queries, think=False, convert_to_tensor=True).cpu()
    weight, bias = fit_probe(features, torch.tensor(riddle, dtype=torch.float32))
    gate = ReasoningGate(features.shape[1], threshold=0.5, info={"fitted_to": "query type (benchmark)"})
    with torch.no_grad():
        gate.linear.weight.copy_(weight.view(1, -1))
        gate.linear.bias.copy_(bias.view(1))
    model[0].set_gate(gate)
    think, _ = model.gate_decisions(queries)
    return 1 - sum(think) / len(think)


def time_modes(model, queries, batch: int, repeats: int) -> dict[str, tuple[float, int]]:
    module = model[0]
    results: dict[str, list[float]] = {"always": [], "auto": [], "never": []}
    calls: dict[str, int] = {}
    for repeat in range(repeats + 1):  # the first round warms up (lazy reasoner load, allocator) and is not kept
        for mode, think in (("always", True), ("auto", "auto"), ("never", False)):
            module.ecr_cache.clear()
            if hasattr(module, "trace_token_ids"):
                module.trace_token_ids.clear()
            start = time.perf_counter()
            model.encode_query(queries, think=think, batch_size=batch)
            if repeat:
                results[mode].append(time.perf_counter() - start)
            calls[mode] = len(module.ecr_cache)  # one entry per query the reasoner ran on
    return {mode: (statistics.median(times), calls[mode]) for mode, times in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--trace-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    queries, riddle = mixed_queries(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        size = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
        embedder = build_tiny_vlm(Path(tmp) / "embedder", seed=0, **size)
        reasoner = build_tiny_vlm(Path(tmp) / "reasoner", seed=1, **size)
        student = build_sentence_transformer(
            embedder, reasoner=reasoner, max_new_tokens=args.trace_tokens, prompts={"query": INSTRUCTION}
        )
        from transformers import AutoProcessor

        from tte_hf import TTEUnifiedModel

        unified_dir = Path(tmp) / "unified"
        TTEUnifiedModel.from_backbone(reasoner, head_type="mhsa", head_kwargs={"head_num_layers": 2}).save_pretrained(unified_dir)  # fmt: skip
        AutoProcessor.from_pretrained(reasoner).save_pretrained(unified_dir)
        unified = build_sentence_transformer(unified_dir, max_new_tokens=args.trace_tokens, prompts={"query": INSTRUCTION})  # fmt: skip
        print(f"{args.queries} queries ({sum(riddle)} riddles), batch {args.batch}, {args.trace_tokens} trace tokens, "
              f"hidden {args.hidden_size} x {args.num_layers} layers, {torch.get_num_threads()} threads")  # fmt: skip
        for name, model in (("student", student), ("unified", unified)):
            skip = fit_type_gate(model, queries, riddle)
            timing = time_modes(model, queries, args.batch, args.repeats)
            (always, always_calls), (auto, auto_calls) = timing["always"], timing["auto"]
            print(
                f"{name:8s} skip {skip:.0%}  reasoner calls always {always_calls} / auto {auto_calls}  "
                f"wall always {always:.2f} s / auto {auto:.2f} s / never {timing['never'][0]:.2f} s  "
                f"ratio auto/always {auto / always:.3f}"
            )


if __name__ == "__main__":
    main()
