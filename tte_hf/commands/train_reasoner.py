"""``tte-hf train-reasoner --config RECIPE.yaml``: Student reasoner SFT on teacher ECR traces (TRL SFTTrainer) from a YAML recipe."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.config import finish_run
    from ..training.train_reasoner import train_reasoner

    finish_run(train_reasoner(args.config, args.overrides))
    return 0
