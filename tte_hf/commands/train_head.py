"""``tte-hf train-head --config RECIPE.yaml``: Train a unified model's embedding head on its frozen reasoner from a YAML recipe."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.config import finish_run
    from ..training.train_head import train_head

    finish_run(train_head(args.config, args.overrides))
    return 0
