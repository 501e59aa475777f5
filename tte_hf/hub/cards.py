"""Model cards for exported repos: YAML metadata (``ModelCardData``, model-index from an eval report)
rendered with the Jinja templates shipped as package data in ``tte_hf/hub/templates/``.

Eval report shape accepted (JSON; the evaluation command writes it, any tool can)::

    {"benchmark": "MMEB-V2",                      # optional, default "MMEB"
     "dataset_id": "TIGER-Lab/MMEB-V2",           # optional, the Hub dataset the scores are on
     "tasks": [{"task": "ImageNet-1K", "meta_task": "classification", "modality": "image",
                "metric": "hit@1", "score": 65.2}, ...],
     "summary": {"overall": 60.1, "image": 64.0}} # optional means (same metric scale as the tasks)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import ExportError

CARD_TEMPLATES = {"embedder": "embedder.md.j2", "unified": "unified.md.j2", "reasoner": "reasoner.md.j2"}
VLLM_TEMPLATE = "vllm_embedder.md.j2"
PAPER_URL = "https://arxiv.org/abs/2510.05014"
_TASK_KEYS = ("task", "metric", "score")


@dataclass(frozen=True)
class TaskScore:
    task: str
    metric: str
    score: float
    meta_task: str | None = None
    modality: str | None = None


@dataclass(frozen=True)
class EvalReport:
    benchmark: str
    tasks: list[TaskScore]
    dataset_id: str | None = None
    summary: dict[str, float] = field(default_factory=dict)


def _from_eval_command(report: dict) -> dict:
    """The ``report.json`` that ``tte-hf eval`` writes (tasks by name, ``main_score``), in the shape above."""
    tasks = [
        {
            "task": name,
            "metric": row.get("metric") if isinstance(row, dict) else None,
            "score": row.get("main_score") if isinstance(row, dict) else None,
            "meta_task": row.get("meta_task") if isinstance(row, dict) else None,
            "modality": row.get("modality") if isinstance(row, dict) else None,
        }
        for name, row in report["tasks"].items()
    ]
    summary = {"overall": report.get("overall")} if report.get("overall") is not None else {}
    modality = (report.get("modality") or {}).items()
    summary |= {name: entry["score"] for name, entry in modality if entry.get("score") is not None}
    return {"benchmark": report.get("benchmark"), "tasks": tasks, "summary": summary}


def load_eval_report(path: str | Path) -> EvalReport:
    """Read and check an eval report (shape in the module docstring); errors name the bad entry."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"Eval report {path} does not exist.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"Eval report {path} is not valid JSON: {err}.") from err
    if isinstance(data, dict) and isinstance(data.get("tasks"), dict):
        data = _from_eval_command(data)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ExportError(f"Eval report {path} needs a non-empty 'tasks' list (see tte_hf.hub.cards for the shape).")
    tasks = []
    for i, row in enumerate(data["tasks"]):
        missing = [k for k in _TASK_KEYS if not isinstance(row, dict) or row.get(k) in (None, "")]
        if missing:
            raise ExportError(f"Eval report {path}: tasks[{i}] lacks {missing}; each task needs {list(_TASK_KEYS)}.")
        if not isinstance(row["score"], (int, float)) or isinstance(row["score"], bool):
            raise ExportError(
                f"Eval report {path}: tasks[{i}] ({row['task']}) has a non-numeric score {row['score']!r}."
            )
        tasks.append(
            TaskScore(
                task=str(row["task"]),
                metric=str(row["metric"]),
                score=float(row["score"]),
                meta_task=row.get("meta_task"),
                modality=row.get("modality"),
            )
        )
    summary = data.get("summary") or {}
    bad = [k for k, v in summary.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise ExportError(f"Eval report {path}: summary[{bad[0]!r}] is not a number.")
    return EvalReport(
        benchmark=str(data.get("benchmark") or "MMEB"),
        tasks=tasks,
        dataset_id=data.get("dataset_id"),
        summary={k: float(v) for k, v in summary.items()},
    )


def eval_results(report: EvalReport, model_name: str | None = None) -> list:
    """One ``EvalResult`` per task (and per summary mean) for the card's model-index."""
    from huggingface_hub import EvalResult

    dataset_type = report.dataset_id or report.benchmark
    results = [
        EvalResult(
            task_type=(t.meta_task or "embedding").lower().replace(" ", "-"),
            task_name=t.meta_task,
            dataset_type=dataset_type,
            dataset_name=f"{report.benchmark} {t.task}",
            dataset_config=t.task,
            dataset_split="test",
            metric_type=t.metric,
            metric_name=t.metric,
            metric_value=t.score,
        )
        for t in report.tasks
    ]
    results += [
        EvalResult(
            task_type="embedding",
            task_name=f"{report.benchmark} mean",
            dataset_type=dataset_type,
            dataset_name=f"{report.benchmark} ({name})",
            dataset_config=name,
            dataset_split="test",
            metric_type="mean",
            metric_name=f"mean score ({name})",
            metric_value=value,
        )
        for name, value in report.summary.items()
    ]
    return results


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    """A training recipe (YAML), flattened to ``{"a.b": value}`` for the card's training table."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"Recipe {path} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ExportError(f"Recipe {path} must be a YAML mapping, got {type(data).__name__}.")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", data)
    return flat


TEMPLATE_PACKAGE = ("tte_hf.hub", "templates")  # read with importlib.resources: a wheel or zip works too


def template_environment():
    """The Jinja environment over the card templates (package data, found through ``importlib.resources``)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(*TEMPLATE_PACKAGE),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_model_card(
    template: str,
    *,
    card_data,
    context: dict[str, Any],
):
    """Render the card template ``template`` with ``context`` under the YAML header of ``card_data``."""
    from huggingface_hub import ModelCard

    body = template_environment().get_template(template).render(**context)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def build_card_data(
    *,
    kind: str,
    library_name: str,
    pipeline_tag: str,
    base_model: str | None,
    datasets: list[str] | None,
    license: str,
    tags: list[str],
    model_name: str | None,
    report: EvalReport | None,
):
    from huggingface_hub import ModelCardData

    return ModelCardData(
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=tags,
        base_model=base_model,
        datasets=datasets or None,
        license=license,
        model_name=model_name,
        eval_results=eval_results(report) if report else None,
    )
