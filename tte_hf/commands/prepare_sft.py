"""``tte-hf prepare-sft --config RECIPE.yaml --output FILE.parquet``: the reasoner recipe's SFT rows for `trl sft`."""

from __future__ import annotations

import argparse

from . import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "A reasoner recipe (recipes/reasoner/*.yaml).")
    parser.add_argument("--output", required=True, help="Parquet file to write (images embedded).")


def run(args: argparse.Namespace) -> int:
    from ..training.train_reasoner import export_sft_dataset

    path = export_sft_dataset(args.config, args.output, args.overrides)
    print(f"Wrote the SFT rows to {path}")
    return 0
