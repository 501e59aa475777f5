"""Recipe parsing: a YAML file (or a dict) plus CLI overrides into the recipe's dataclasses.

TRL's `TrlParser` already does this (``--config recipe.yaml``, CLI overrides, ``env:`` block) and
rejects keys no dataclass knows, so every recipe of this package goes through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parse_recipe(dataclass_types: Sequence[type], config: str | os.PathLike | dict[str, Any] | None, argv=None):
    """Parse ``config`` (a YAML path or a dict) and ``argv`` overrides into instances of ``dataclass_types``.

    An unknown key raises ``ValueError`` naming it, before anything is loaded.
    """
    import yaml
    from trl import TrlParser

    argv = list(argv or [])
    parser = TrlParser(list(dataclass_types))
    if config is None:
        return parser.parse_args_and_config(argv)
    if isinstance(config, dict):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(config, handle)
        try:
            return _parse(parser, handle.name, argv, label="(recipe given as a dict)")
        finally:
            os.unlink(handle.name)
    if not Path(config).is_file():
        raise FileNotFoundError(f"Recipe file {config} does not exist.")
    return _parse(parser, str(config), argv)


def _parse(parser, path: str, argv: list[str], label: str | None = None):
    try:
        return parser.parse_args_and_config(["--config", path, *argv])
    except ValueError as err:
        raise ValueError(f"Recipe {label or path}: {err}") from err


def finish_run(trainer) -> None:
    """End a launched run: every rank waits for the main process to finish saving, then leaves the
    process group (`Trainer.end`, transformers >= 5.18). A rank that exits with its gloo/NCCL group
    still alive can abort at interpreter shutdown ("terminate called without an active exception")
    and fail the launch."""
    trainer.accelerator.wait_for_everyone()
    trainer.end()


def use_progress(trainer, progress) -> None:
    """Show ``progress`` (a `TrainerCallback`) instead of the Trainer's own console display: its tqdm
    bar that also prints every log dict, or, with ``disable_tqdm``, the printed dicts. ``None``: keep it."""
    if progress is None:
        return
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress)
