"""``tte-hf generate-ecr --config recipes/ecr/NAME.yaml``: write ECR traces for a dataset (sharded, resumable)."""

from __future__ import annotations

import argparse
import sys

from . import accept_overrides, override_pairs

# flag -> config key, listed in --help; flags override the YAML. Any other key of GenerateECRConfig follows
# as --key value (TRL style); the reasoner's open-ended options as --reasoner.KEY value (see `apply_overrides`).
_FLAGS = {
    "input": str,
    "input_format": str,
    "image_root": str,
    "dataset_name": str,
    "task": str,
    "output": str,
    "cache": str,
    "chunk_size": int,
    "num_shards": int,
    "shard_id": int,
    "max_items": int,
    "max_trace_chars": int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (keys of GenerateECRConfig).")
    for key, kind in _FLAGS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None)
    parser.add_argument("--sides", nargs="+", choices=("query", "target"), default=None)
    parser.add_argument("--model", default=None, help="Reasoner model (reasoner.model).")
    parser.add_argument("--backend", default=None, help="Reasoner backend (reasoner.backend).")
    parser.add_argument(
        "--skip-bad", action="store_true", default=None, help="Log bad rows to <output>.skipped.jsonl and go on."
    )
    parser.add_argument(
        "--retry-skipped",
        action="store_true",
        default=None,
        help="On resume, try the rows of <output>.skipped.jsonl again (recorded in the manifest).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    accept_overrides(
        parser,
        "Any other config key follows as --KEY VALUE (e.g. --max_trace_chars 2000), and the reasoner's options as "
        "--reasoner.KEY VALUE (e.g. --reasoner.max_new_tokens 128); VALUE is parsed as YAML.",
    )


def build_config(args: argparse.Namespace) -> dict:
    """The YAML recipe with the command-line overrides applied."""
    import yaml

    config: dict = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    for key in (*_FLAGS, "sides", "skip_bad", "retry_skipped"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    reasoner = dict(config.get("reasoner") or {})
    if args.model:
        reasoner["model"] = args.model
    if args.backend:
        reasoner["backend"] = args.backend
    config["reasoner"] = reasoner
    if args.no_progress:
        config["progress"] = False
    apply_overrides(config, override_pairs(args.overrides))
    return config


def apply_overrides(config: dict, pairs: list[tuple[str, str]]) -> None:
    """Set ``key`` (a GenerateECRConfig field) or ``reasoner.key`` (a `load_reasoner` option) to its YAML value.

    TRL/HF parsers have no nested keys (a dict field takes a JSON string, replacing the whole dict); the
    reasoner's options depend on its backend, so one dotted level merges a single option into the recipe's.
    """
    import dataclasses

    import yaml

    from ..reasoning.generate import GenerateECRConfig

    known = sorted(f.name for f in dataclasses.fields(GenerateECRConfig))
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if head not in known or (dot and (head != "reasoner" or not rest or "." in rest)):
            raise SystemExit(
                f"tte-hf generate-ecr: error: unknown option --{key}; config keys: {known}, "
                "and the reasoner's options as --reasoner.KEY."
            )
        if dot:
            config["reasoner"] = {**(config.get("reasoner") or {}), rest: yaml.safe_load(value)}
        else:
            config[head] = yaml.safe_load(value)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..models.tte.reasoner_openai import ReasonerRequestError
    from ..reasoning.generate import generate_ecr
    from ..reasoning.sources import BadInputError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = build_config(args)
    if not config.get("output"):
        raise SystemExit("generate-ecr needs an output path: `output:` in the recipe or --output.")
    try:
        result = generate_ecr(config)
    except (BadInputError, FileNotFoundError, ValueError, ReasonerRequestError) as err:
        # Messages name the row / item / setting at fault; work already written stays and resumes.
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{result.output}: {result.written} new traces, {result.skipped} rows skipped, "
        f"{result.already_done} already done, {result.total} items in this shard"
        + (f", {result.retried} skipped rows retried" if result.retried else "")
        + f"; manifest {result.manifest}"
    )
    return 0
