"""One module per ``tte-hf`` sub-command: ``add_arguments(parser)`` and ``run(args)``."""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe_help: str = "The YAML recipe (see recipes/).") -> None:
    """``--config RECIPE.yaml`` plus repeatable ``--set KEY=VALUE`` overrides, as the training commands take them."""
    parser.add_argument("--config", required=True, help=recipe_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set learning_rate=1e-4 (repeatable).",
    )
