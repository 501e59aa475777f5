"""Pair examples -> the `datasets.DatasetDict` sentence-transformers' trainer reads.

One dataset per recipe entry, columns ``anchor`` / ``positive`` (/ ``negative`` with hard
negatives). Each cell is a TTE ST input dict (``text``, ``images`` as paths, ``reasoning`` = the
ECR trace or ``None``, ``task``), which `TTETransformer.preprocess` turns into the reasoner's
generation sequence (prompt + trace + end token) exactly as at inference time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import PairExample, Side


def side_input(side: Side, task: str | None) -> dict[str, Any]:
    """One side as a TTE ST input dict."""
    return {"text": side.text, "images": list(side.images), "reasoning": side.trace, "task": task}


def pairs_dataset(examples: Sequence[PairExample], sizes: Sequence[int], names: Sequence[str]):
    """(``DatasetDict`` of the datasets in recipe order, ``{name: instruction or None}``).

    ``examples`` holds the datasets one after the other, ``sizes[i]`` rows of ``names[i]``; the
    instruction is the dataset's (the ST prompt of every column)."""
    from datasets import Dataset, DatasetDict

    parts, instructions, start = {}, {}, 0
    for name, size in zip(names, sizes):
        rows = examples[start : start + size]
        start += size
        columns = {
            "anchor": [side_input(ex.query, ex.task) for ex in rows],
            "positive": [side_input(ex.positive, ex.task) for ex in rows],
        }
        if rows[0].negative is not None:
            columns["negative"] = [side_input(ex.negative, ex.task) for ex in rows]
        parts[name] = Dataset.from_dict(columns)
        instructions[name] = rows[0].instruction
    return DatasetDict(parts), instructions
