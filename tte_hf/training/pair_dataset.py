"""Pair examples -> the `datasets.DatasetDict` sentence-transformers' trainer reads.

One dataset per recipe entry, columns ``anchor`` / ``positive`` (/ ``negative`` with hard
negatives). Each cell is a TTE ST input dict (``text``, ``images`` as paths, ``reasoning`` = the
ECR trace or ``None``, ``task``), which `TTETransformer.preprocess` turns into the reasoner's
generation sequence (prompt + trace + end token) exactly as at inference time. For the unified head
(``token_ids=True``) cells also hold ``reasoning_ids``, the trace's generated token ids or ``None``
(`head_module.HeadTrainingModule.preprocess` reads them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import PairExample, Side


def side_input(side: Side, task: str | None, token_ids: bool = False) -> dict[str, Any]:
    """One side as a TTE ST input dict (with ``reasoning_ids`` when ``token_ids``)."""
    cell = {"text": side.text, "images": list(side.images), "reasoning": side.trace, "task": task}
    if token_ids:
        cell["reasoning_ids"] = list(side.trace_ids) if side.trace_ids is not None else None
    return cell


def pairs_dataset(examples: Sequence[PairExample], sizes: Sequence[int], names: Sequence[str], token_ids: bool = False):
    """(``DatasetDict`` of the datasets in recipe order, ``{name: instruction or None}``).

    ``examples`` holds the datasets one after the other, ``sizes[i]`` rows of ``names[i]``; the
    instruction is the dataset's (the ST prompt of every column)."""
    from datasets import Dataset, DatasetDict

    parts, instructions, start = {}, {}, 0
    for name, size in zip(names, sizes):
        rows = examples[start : start + size]
        start += size
        columns = {
            "anchor": [side_input(ex.query, ex.task, token_ids) for ex in rows],
            "positive": [side_input(ex.positive, ex.task, token_ids) for ex in rows],
        }
        if rows[0].negative is not None:
            columns["negative"] = [side_input(ex.negative, ex.task, token_ids) for ex in rows]
        parts[name] = Dataset.from_dict(columns)
        instructions[name] = rows[0].instruction
    return DatasetDict(parts), instructions
