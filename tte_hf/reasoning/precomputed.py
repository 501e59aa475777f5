"""A reasoner that answers from an ECR JSONL written by ``tte-hf generate-ecr`` (lookup by item id)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import ReasoningBackend, ReasoningRequest


class PrecomputedReasoner(ReasoningBackend):
    """Returns the stored ``raw`` trace (or ``ecr`` when no raw text was kept) of each request's ``item_id``."""

    def __init__(self, path: str | Path | Sequence[str | Path]):
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        self.paths = [Path(p) for p in paths]
        self.traces: dict[str, str] = {}
        for file in self.paths:
            with open(file, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        self.traces[str(row["id"])] = row.get("raw", row["ecr"])
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise ValueError(
                            f"{file}:{line_no}: not an ECR row with 'id' and 'ecr' ({err}); "
                            "regenerate it with `tte-hf generate-ecr`."
                        ) from err
        self.name = "precomputed:" + ",".join(str(p) for p in self.paths)

    def describe(self) -> dict[str, Any]:
        return {"backend": "precomputed", "paths": [str(p) for p in self.paths]}

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        out = []
        for index, request in enumerate(requests):
            if request.item_id is None or str(request.item_id) not in self.traces:
                raise KeyError(
                    f"Request {index} (item_id={request.item_id!r}) has no trace in {self.name}; "
                    "generate it first or use a generating backend."
                )
            out.append(self.traces[str(request.item_id)])
        return out
