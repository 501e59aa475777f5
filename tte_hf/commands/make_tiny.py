"""``tte-hf make-tiny OUTPUT_DIR``: a tiny random VLM to try every command without a GPU or the Hub."""

from __future__ import annotations

import argparse

# The same tuple as tte_hf.testing.SUPPORTED_TINY_ARCHS (tested), not imported: that module imports torch.
TINY_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="Folder to write the checkpoint to.")
    parser.add_argument("--arch", default="qwen2_vl", choices=TINY_ARCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=4)


def run(args: argparse.Namespace) -> int:
    from ..testing import build_tiny_vlm

    path = build_tiny_vlm(
        args.output_dir, arch=args.arch, seed=args.seed, hidden_size=args.hidden_size, num_layers=args.num_layers
    )
    print(f"Wrote a tiny {args.arch} checkpoint to {path}")
    return 0
