"""A reasoner that answers from an ECR JSONL written by ``tte-hf generate-ecr`` (lookup by item id)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..ecr_jsonl import read_ecr
from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest


class PrecomputedReasoner(ReasoningBackend):
    """Returns the stored ``raw`` trace (or ``ecr`` when no raw text was kept) of each request's ``item_id``."""

    def __init__(self, path: str | Path | Sequence[str | Path]):
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        self.paths = [Path(p) for p in paths]
        self.traces = {item_id: record.trace for item_id, record in read_ecr(self.paths, need="trace").items()}
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
