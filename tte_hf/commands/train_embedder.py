"""``tte-hf train-embedder --config RECIPE.yaml``: Contrastive training of the TTE embedder (sentence-transformers trainer, cached ranking loss, LoRA) from a YAML recipe."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.config import finish_run
    from ..training.train_embedder import train_embedder

    finish_run(train_embedder(args.config, args.overrides))
    return 0
