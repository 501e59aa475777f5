"""Published MMEB scores to print beside a run (percent), aggregated the way tte-hf aggregates its own.

The figures and their sources live in ``baseline_scores.json`` (package data). Three granularities:

- ``task``: every per-task score a source publishes (VLM2Vec's
  `experiments/public/all_scores/v2.1-baselines-visdoc-page-fixed/*.json`; those files lack
  ViDoSeek-doc and MMLongBench-doc). Meta-task, modality and overall means are recomputed here with
  `aggregate.aggregate_scores` over the tasks present, each with its task count.
- ``meta_task``: meta-task means with their dataset counts (the most granular figures a source such
  as the Qwen3-VL-Embedding card publishes); modality and overall means are their task-weighted means.
- ``overall``: one published figure.

A source's own aggregate (``published``) can differ from the recomputed one: VLM2Vec-V2's printed
58.0 averages a visdoc figure from before the page-fixed datasets (65.4) where its printed visdoc
figure (69.2) is from after; the same per-task scores give 59.0 over their 76 tasks.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .aggregate import aggregate_scores

DATA_FILE = "baseline_scores.json"


@cache
def load_baseline_data() -> dict[str, Any]:
    """The package's ``baseline_scores.json``: per benchmark key, per model, its figures and source."""
    return json.loads(resources.files(__package__).joinpath(DATA_FILE).read_text())


def _from_tasks(entry: dict[str, Any], key: str) -> dict[str, Any]:
    from .tasks import get_benchmark

    specs = {t.name: t for t in get_benchmark(key).tasks}
    unknown = sorted(set(entry["tasks"]) - set(specs))
    if unknown:
        raise ValueError(f"{DATA_FILE}: tasks {unknown} are not in {key}.")
    rows = [
        {
            "main_score": score,
            "meta_task": specs[name].meta_task,
            "modality": specs[name].modality,
            "split": specs[name].split,
        }  # fmt: skip
        for name, score in entry["tasks"].items()
    ]
    return aggregate_scores(rows)


def _from_meta_tasks(entry: dict[str, Any], key: str) -> dict[str, Any]:
    from .tasks import get_benchmark

    modality_of = {t.meta_task: t.modality for t in get_benchmark(key).tasks}
    unknown = sorted(set(entry["meta_task"]) - set(modality_of))
    if unknown:
        raise ValueError(f"{DATA_FILE}: meta-tasks {unknown} are not in {key}.")
    # A meta-task mean over n tasks stands for n tasks of that score: the same plain means over tasks.
    rows = [
        {"main_score": m["score"], "meta_task": name, "modality": modality_of[name]}
        for name, m in entry["meta_task"].items()
        for _ in range(m["num_tasks"])
    ]
    return aggregate_scores(rows)


def baseline_row(entry: dict[str, Any], key: str) -> dict[str, Any]:
    """One model's row: ``overall``, ``modality``/``meta_task``/``split`` as ``{name: score}``, their
    task counts in ``num_tasks`` (``{"overall": n, level: {name: n}}``), and ``note`` / ``source``."""
    granularity = entry["granularity"]
    if granularity == "task":
        agg = _from_tasks(entry, key)
    elif granularity == "meta_task":
        agg = _from_meta_tasks(entry, key)
    elif granularity == "overall":
        agg = {"overall": entry["overall"], "num_tasks": None, "modality": {}, "meta_task": {}, "split": {}}
    else:
        raise ValueError(f"{DATA_FILE}: granularity {granularity!r} (task, meta_task or overall).")
    row: dict[str, Any] = {"overall": agg["overall"], "num_tasks": {"overall": agg["num_tasks"]}}
    for level in ("modality", "meta_task", "split"):
        row[level] = {name: value["score"] for name, value in agg[level].items()}
        row["num_tasks"][level] = {name: value["num_tasks"] for name, value in agg[level].items()}
    row["granularity"], row["source"] = granularity, entry["source"]
    for optional in ("note", "published", "missing_tasks"):
        if optional in entry:
            row[optional] = entry[optional]
    return row


def baselines_for(key: str | None) -> dict[str, dict]:
    """Published scores for a benchmark key (``mmeb-v1`` / ``mmeb-v2``), aggregates recomputed;
    empty for custom task lists."""
    entries = load_baseline_data()["benchmarks"].get(key or "", {})
    return {name: baseline_row(entry, key) for name, entry in entries.items()}
