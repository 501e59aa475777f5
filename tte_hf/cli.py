"""The ``tte-hf`` command line: one sub-command per stage of Think-Then-Embed."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under tte_hf.commands defining `add_arguments(parser)` and `run(args) -> int`.
# Command modules import heavy libraries inside `run`, so `tte-hf --help` stays fast and optional
# extras (vLLM, ...) are only needed by the commands that use them.
COMMANDS = {
    "make-tiny": "make_tiny",
    "generate-ecr": "generate_ecr",
    "export": "export",
    "push": "push",
    "eval": "eval",
    "prepare-sft": "prepare_sft",
    "train-reasoner": "train_reasoner",
    "train-reasoner-rl": "train_reasoner_rl",
    "train-embedder": "train_embedder",
    "train-head": "train_head",
    "train-gate": "train_gate",
    "demo": "demo",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tte-hf", description="Think-Then-Embed multimodal embeddings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"tte_hf.commands.{module_name}")
        summary = (module.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, help=summary, description=summary, allow_abbrev=False)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; the options a recipe command does not declare become ``args.overrides``."""
    from .commands import collect_overrides

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_accepts_overrides", False):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args
    args.overrides = collect_overrides(args, extra)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return args._run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
