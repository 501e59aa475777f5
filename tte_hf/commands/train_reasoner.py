"""``tte-hf train-reasoner --config RECIPE.yaml``: Student reasoner SFT on teacher ECR traces (TRL SFTTrainer) from a YAML recipe."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="The YAML recipe (see recipes/).")
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="Recipe keys to override, e.g. --learning_rate 1e-4."
    )


def run(args: argparse.Namespace) -> int:
    from ..training.train_reasoner import train_reasoner

    train_reasoner(args.config, args.overrides)
    return 0
