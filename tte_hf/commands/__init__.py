"""One module per ``tte-hf`` sub-command: ``add_arguments(parser)`` and ``run(args)``.

Commands that read a recipe take TRL's override syntax: ``--config recipe.yaml`` then any recipe key as
``--key value`` (``--key=value`` too; dashes and underscores alike). `tte_hf.cli` hands the options a
command does not declare to it as ``args.overrides`` (an argv list) when the command accepts overrides.
"""

from __future__ import annotations

import argparse
import sys

OVERRIDES_HELP = "Any recipe key can follow as --KEY VALUE (TRL style), e.g. --learning_rate 1e-4."


def accept_overrides(parser: argparse.ArgumentParser, example: str = OVERRIDES_HELP) -> None:
    """Let ``parser``'s command take ``--key value`` recipe overrides, plus the deprecated ``--set KEY=VALUE``."""
    parser.set_defaults(_accepts_overrides=True, overrides=[])
    parser.epilog = example
    parser.add_argument("--set", dest="deprecated_set", action="append", default=[], metavar="KEY=VALUE", help="Deprecated: write --KEY VALUE instead.")  # fmt: skip


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe_help: str = "The YAML recipe (see recipes/).") -> None:
    """``--config RECIPE.yaml`` followed by ``--key value`` overrides, as the training commands take them."""
    parser.add_argument("--config", required=True, help=recipe_help)
    accept_overrides(parser)


def collect_overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The command's override argv: the undeclared options, then the deprecated ``--set`` pairs as ``--KEY VALUE``."""
    argv = list(extra)
    for pair in getattr(args, "deprecated_set", []):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"tte-hf: error: --set expects KEY=VALUE, got {pair!r} (and is deprecated: use --{pair} VALUE).")  # fmt: skip
        print(f"tte-hf: --set {pair} is deprecated; write --{key} {value}", file=sys.stderr)
        argv += [f"--{key}", value]
    return argv


def override_pairs(argv: list[str]) -> list[tuple[str, str]]:
    """``["--a", "1", "--b-c=2", "--flag"]`` -> ``[("a", "1"), ("b_c", "2"), ("flag", "true")]`` (a bare key
    is true, as HfArgumentParser reads a bool field); a stray value is an error naming it."""
    pairs, index = [], 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or len(token) == 2:
            raise SystemExit(f"tte-hf: error: expected --KEY VALUE, got {token!r}.")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                value = "true"
            else:
                value = argv[index + 1]
                index += 1
        pairs.append((key.replace("-", "_"), value))
        index += 1
    return pairs
