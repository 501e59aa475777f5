"""MMEB's aggregation, shared by a run's report and the published baselines it is shown beside.

VLM2Vec `experiments/report_score_v2.py` and the MMEB leaderboards: each task contributes its main
metric (hit@1, or ndcg@5 for visual documents) in percent; a meta-task, a modality, an MMEB-V1 split
(IND / OOD) and the overall score are plain means over their tasks (so overall weights tasks, not
modalities).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

LEVELS = ("meta_task", "modality", "split")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def aggregate_scores(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``overall`` and, per level, ``{name: {"score", "num_tasks"}}`` (meta-tasks also name their
    modality) from task dicts with ``main_score``, ``meta_task``, ``modality`` and optional ``split``."""
    results = list(results)
    groups: dict[str, dict[str, list[float]]] = {level: defaultdict(list) for level in LEVELS}
    meta_modality = {}
    for result in results:
        for level in LEVELS:
            if result.get(level):
                groups[level][result[level]].append(result["main_score"])
        meta_modality[result["meta_task"]] = result["modality"]
    out: dict[str, Any] = {
        level: {name: {"score": _mean(scores), "num_tasks": len(scores)} for name, scores in by_name.items()}
        for level, by_name in groups.items()
    }
    for name, entry in out["meta_task"].items():
        entry["modality"] = meta_modality[name]
    out["overall"] = _mean([r["main_score"] for r in results]) if results else None
    out["num_tasks"] = len(results)
    return out
