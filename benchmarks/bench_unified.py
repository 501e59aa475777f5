"""Unified model: the embedding cost after generation vs a second full forward over prompt + trace.

`generate_and_embed` embeds from hidden states captured while the reasoner generated; the
alternative is a second backbone pass over prompt + trace. This prints, per head, the time of the
head alone on the captured states divided by the time of that second pass (head included). Goal for
the MHSA head with n of L layers: ratio <= n / L + 0.1. Timings are interleaved medians in one run.

    python benchmarks/bench_unified.py [--hidden-size 256 --num-layers 8 --batch 16 --trace-tokens 48]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoProcessor

from tte_hf import TTEUnifiedModel
from tte_hf.models.tte.inputs import build_messages, render_prompt
from tte_hf.testing import build_tiny_vlm


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def head_vs_second_pass(model: TTEUnifiedModel, batch, trace_tokens: int, repeats: int) -> float:
    """Median time of the head on captured states / median time of a second pass over prompt + trace."""
    out = model.generate_and_embed(**batch, max_new_tokens=trace_tokens)
    # The full sequences the reasoner produced, left-padded, as a second pass would see them.
    end = torch.tensor([model.backbone.generation_config.eos_token_id])
    full = [
        torch.cat([ids[mask.bool()], trace, end])
        for ids, mask, trace in zip(batch["input_ids"], batch["attention_mask"], out.trace_ids)
    ]
    width = max(len(f) for f in full)
    input_ids = torch.stack([F.pad(f, (width - len(f), 0)) for f in full])
    attention_mask = torch.stack([F.pad(torch.ones_like(f), (width - len(f), 0)) for f in full])
    mm_token_type_ids = (input_ids == model.config.backbone_config.image_token_id).long()
    second = dict(batch, input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids)
    captured, handle = model._capture_head_inputs()
    with torch.no_grad():
        model(**second)
    handle.remove()

    def head_only():
        with torch.no_grad():
            model.embed_hidden_states(captured[0], attention_mask)

    def second_pass():
        with torch.no_grad():
            model(**second)

    head_times, pass_times = [], []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        head_times.append(median_time(head_only, 1))
        pass_times.append(median_time(second_pass, 1))
    return statistics.median(head_times) / statistics.median(pass_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--head-layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--trace-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm(tmp, hidden_size=args.hidden_size, num_layers=args.num_layers)
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"
        image = Image.effect_noise((112, 112), 50).convert("RGB")
        texts = [f"which shape is {i} steps left of the red star" for i in range(args.batch)]
        prompts = [render_prompt(processor, build_messages(t, num_images=1)) for t in texts]
        batch = processor(text=prompts, images=[image] * args.batch, return_tensors="pt", padding=True)

        print(
            f"backbone: hidden {args.hidden_size}, {args.num_layers} layers; batch {args.batch}; "
            f"trace {args.trace_tokens} tokens; torch threads {torch.get_num_threads()}"
        )
        print(f"{'head':<18}{'head only / second pass':>26}{'goal':>8}")
        for head_type in ("mhsa", "attention_pooler", "latent_attention", "qformer"):
            head_kwargs = {"head_num_layers": args.head_layers, "head_num_heads": 4, "head_num_queries": 16}
            model = TTEUnifiedModel.from_backbone(path, head_type=head_type, head_kwargs=head_kwargs).eval()
            ratio = head_vs_second_pass(model, batch, args.trace_tokens, args.repeats)
            goal = f"{args.head_layers / args.num_layers + 0.1:.2f}" if head_type == "mhsa" else "-"
            print(f"{head_type:<18}{ratio:>26.3f}{goal:>8}")


if __name__ == "__main__":
    main()
