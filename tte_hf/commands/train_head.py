"""``tte-hf train-head --config RECIPE.yaml``: Train a unified model's embedding head on its frozen reasoner from a YAML recipe."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="The YAML recipe (see recipes/).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set learning_rate=1e-4 (repeatable).",
    )


def run(args: argparse.Namespace) -> int:
    from ..training.config import override_args
    from ..training.train_head import train_head

    train_head(args.config, override_args(args.overrides))
    return 0
