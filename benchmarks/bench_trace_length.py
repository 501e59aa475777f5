"""What decides the time floor of ``think="auto"`` on a CPU: the decoder's width or the trace's length.

For tiny random Qwen2-VL decoders of several widths (4 layers, the demo's colour-patch tower), on
the demo's held-out riddle prompts (image + text, the VQA task prompt), batch 64, two threads:
``never`` is the processor plus one forward pass (a stand-in for a skipped query; it runs every layer
and the LM head on every position, so it costs more than the unified model's no-trace pass, which
stops at the head's layer), ``gen L`` the processor plus ``generate`` of exactly L tokens. With half
the queries reasoned and the traces of one length, ``auto`` can take no less than
``(1 + never / gen L) / 2`` of ``always`` (no gate; the real floors are lower by the gap above).
Best of the rounds after a warm-up round; the widths run one after the other in one process.

    python benchmarks/bench_trace_length.py --demo tte-demo [--widths 64 128 256 --lengths 30 70 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_adaptive import mixed_queries


def run(model, processor, prompts: list[str], images: list[list], batch: int, length: int) -> None:
    """One pass over ``prompts`` in batches: ``generate`` exactly ``length`` tokens, or (0) one forward pass."""
    import torch

    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            flat = [image for row in images[start : start + batch] for image in row]
            inputs = processor(
                text=prompts[start : start + batch], images=flat or None, padding=True, return_tensors="pt"
            )
            if length:
                model.generate(**inputs, min_new_tokens=length, max_new_tokens=length, do_sample=False)
            else:
                model(**inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="A finished `tte-hf demo --output` folder.")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--lengths", type=int, nargs="+", default=[30, 70, 150])
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if not (args.demo / "report.json").is_file():
        parser.error(f"{args.demo} holds no finished demo (no report.json); run `tte-hf demo --output {args.demo}`.")

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tte_hf.demo.runtime import pin_threads
    from tte_hf.testing import build_tiny_vlm

    pin_threads()  # the demo's two threads
    queries, riddles = mixed_queries(args.demo)
    module = SentenceTransformer(str(args.demo / "models" / "tte-unified"), trust_remote_code=True)[0]
    items = module.parse_inputs(queries[: min(args.queries, riddles)])
    prompts = [module.prompt_text(it.text, len(it.images), False, None, it.task, True) for it in items]
    images = [it.images for it in items]

    print(
        f"{len(prompts)} riddle prompts, batch {args.batch}, {torch.get_num_threads()} threads, best of {args.repeats}"
    )
    header = " | ".join(f"gen {n} (s)" for n in args.lengths)
    floors = " | ".join(f"floor, {n} tokens" for n in args.lengths)
    print(f"| width | never (s) | {header} | {floors} |")
    print("| --- " * (2 + 2 * len(args.lengths)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            path = build_tiny_vlm(Path(tmp) / f"w{width}", hidden_size=width, num_layers=4, colour_patches=True)
            model = AutoModelForImageTextToText.from_pretrained(path).eval()
            processor = AutoProcessor.from_pretrained(path)
            processor.tokenizer.padding_side = "left"

            best: dict[int, float] = {}
            for repeat in range(args.repeats + 1):  # the first round warms up
                for length in (0, *args.lengths):
                    start = time.perf_counter()
                    run(model, processor, prompts, images, args.batch, length)
                    if repeat:
                        best[length] = min(best.get(length, float("inf")), time.perf_counter() - start)
            gens = " | ".join(f"{best[n]:.2f}" for n in args.lengths)
            limits = " | ".join(f"{(1 + best[0] / best[n]) / 2:.2f}" for n in args.lengths)
            print(f"| {width} | {best[0]:.2f} | {gens} | {limits} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
