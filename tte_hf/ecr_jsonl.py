"""The one reader of ECR JSONL files (``tte-hf generate-ecr`` output: ``id``, ``ecr``, ``raw``, ...).

Training, evaluation, the precomputed reasoner and generate-ecr's resume all read traces here, with
one duplicate policy: an id seen twice (in one file or across files) with the same trace is kept once,
since concatenated shards, a file listed twice or a deterministic rerun append identical rows and
carry no ambiguity; the same id with a different trace is an error naming both lines, because which
trace a model trains or is evaluated on must never depend on file order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Need = Literal["id", "ecr", "raw", "trace"]


@dataclass(frozen=True)
class ECRRecord:
    """One trace: the parsed ``ecr``, the reasoner's ``raw`` output and its token ids, where recorded."""

    id: str
    ecr: str | None
    raw: str | None
    raw_token_ids: tuple[int, ...] | None
    where: str  # "path:line", for messages

    @property
    def trace(self) -> str:
        """The raw output when it was kept, else the parsed ECR (what a precomputed reasoner answers)."""
        return self.raw if self.raw is not None else self.ecr


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, row) for each non-blank line; a malformed line raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg}).") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object.")
            rows.append((line_no, row))
    return rows


def _record(row: dict[str, Any], where: str, need: Need) -> ECRRecord:
    if "id" not in row:
        raise ValueError(f"{where}: ECR row has no `id` field.")
    for key in ("ecr", "raw"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: `{key}` must be a string, got {type(row[key]).__name__}.")
    if need == "ecr" and row.get("ecr") is None:
        raise ValueError(f"{where}: ECR row has no `ecr` field.")
    if need == "raw" and row.get("raw") is None:
        raise ValueError(
            f"{where}: ECR row has no `raw` string. The unified head trains on the reasoner's own "
            "output as generated; write the traces with `tte-hf generate-ecr` (it records `raw`)."
        )
    if need == "trace" and row.get("raw") is None and row.get("ecr") is None:
        raise ValueError(f"{where}: ECR row has neither `raw` nor `ecr`; regenerate it with `tte-hf generate-ecr`.")
    ids = row.get("raw_token_ids")
    if ids is not None and (not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids)):
        raise ValueError(f"{where}: `raw_token_ids` must be a list of non-negative ints.")
    return ECRRecord(str(row["id"]), row.get("ecr"), row.get("raw"), None if ids is None else tuple(ids), where)


def read_ecr(paths: str | os.PathLike | Iterable[str | os.PathLike], need: Need = "ecr") -> dict[str, ECRRecord]:
    """id -> record from one or more ECR JSONL files, checked line by line.

    ``need`` names the field every row must have: ``"ecr"`` (embedder training, evaluation), ``"raw"``
    (unified head), ``"trace"`` (raw or ecr: a precomputed reasoner) or ``"id"`` (resume). Duplicate
    ids follow the module's policy: identical traces are kept once, different ones raise naming both.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: dict[str, ECRRecord] = {}
    for path in paths:
        for line_no, row in read_jsonl(path):
            record = _record(row, f"{path}:{line_no}", need)
            first = records.get(record.id)
            if first is None:
                records[record.id] = record
            elif (first.ecr, first.raw, first.raw_token_ids) != (record.ecr, record.raw, record.raw_token_ids):
                raise ValueError(
                    f"ECR id {record.id!r} appears at {first.where} and at {record.where} with different traces; "
                    "keep one of the two lines (which one is meant cannot be guessed)."
                )
    return records
