"""``tte-hf train-gate --config RECIPE.yaml``: Train the reasoning gate of a TTE model (think="auto") from MMEB-train rows and their ECR traces."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.train_gate import train_gate

    train_gate(args.config, args.overrides)
    return 0
