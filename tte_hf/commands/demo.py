"""Run every stage of Think-Then-Embed on tiny models on a CPU, and show that thinking first helps."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="tte-demo", help="Folder for every artefact (reruns resume from it).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A smoke run in about a minute (numbers meaningless).")
    parser.add_argument(
        "--settings",
        default="default",
        help="A shipped settings file's name (default, pictures, pictures-distinct) or a .yaml path; its values replace the defaults.",
    )
    parser.add_argument(
        "--rl", action="store_true", help="Also tune the student with GRPO (the embedder as reward) and score it."
    )


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.output, seed=args.seed, quick=args.quick, rl=args.rl, settings=args.settings)
    return 0
