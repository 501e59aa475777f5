"""``tte-hf train-reasoner-rl --config RECIPE.yaml``: GRPO on the student reasoner with a frozen TTE embedder as the reward (TRL GRPOTrainer)."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.config import finish_run
    from ..training.train_reasoner_rl import train_reasoner_rl

    finish_run(train_reasoner_rl(args.config, args.overrides))
    return 0
