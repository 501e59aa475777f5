"""Aggregate task scores the MMEB way and write the JSON, Markdown and PNG reports.

Aggregation (VLM2Vec `experiments/report_score_v2.py`, MMEB leaderboards): each task contributes its
main metric (hit@1, or ndcg@5 for visual documents) in percent; a meta-task, a modality and the
overall score are plain means over their tasks (so overall weights tasks, not modalities).
MMEB-V1 also reports the IND / OOD means.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .baselines import baselines_for


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def build_report(
    results: list[dict[str, Any]],
    *,
    benchmark: str,
    baseline_key: str | None,
    model_id: str,
    benchmark_tasks: int | None = None,
) -> dict:
    """The report dict from per-task ``score.json`` dicts (``benchmark_tasks``: the full benchmark's size)."""
    groups: dict[str, dict[str, list[float]]] = {"meta_task": defaultdict(list), "modality": defaultdict(list), "split": defaultdict(list)}  # fmt: skip
    meta_modality = {}
    for result in results:
        groups["meta_task"][result["meta_task"]].append(result["main_score"])
        groups["modality"][result["modality"]].append(result["main_score"])
        meta_modality[result["meta_task"]] = result["modality"]
        if result.get("split"):
            groups["split"][result["split"]].append(result["main_score"])
    summary = {
        level: {name: {"score": _mean(scores), "num_tasks": len(scores)} for name, scores in by_name.items()}
        for level, by_name in groups.items()
    }
    for name, entry in summary["meta_task"].items():
        entry["modality"] = meta_modality[name]
    return {
        "benchmark": benchmark,
        "model": model_id,
        "num_tasks": len(results),
        "benchmark_tasks": benchmark_tasks or len(results),
        "overall": _mean([r["main_score"] for r in results]) if results else None,
        "meta_task": summary["meta_task"],
        "modality": summary["modality"],
        "split": summary["split"],
        "tasks": {r["task"]: r for r in results},
        "baselines": baselines_for(baseline_key),
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_markdown(report: dict) -> str:
    """Tables: overall / modality / meta-task (with baselines), then every task."""
    baselines = report["baselines"]
    names = list(baselines)
    header = "| | ours | " + " | ".join(names) + " |" if names else "| | ours |"
    rule = "|---|---:|" + "---:|" * len(names)

    def row(label: str, ours: float | None, level: str | None, key: str | None) -> str:
        cells = [_fmt(ours)]
        for name in names:
            entry = baselines[name]
            cells.append(_fmt(entry.get("overall") if level is None else entry.get(level, {}).get(key)))
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [f"# {report['benchmark']} — {report['model']}", "", f"{report['num_tasks']} tasks scored.", ""]
    if report["num_tasks"] < report["benchmark_tasks"]:
        lines[-2] = (
            f"**Partial run: {report['num_tasks']} of {report['benchmark_tasks']} tasks.** Its means cover only "
            "these tasks, so they are not comparable with the published full-benchmark figures."
        )
    lines += ["## Summary", "", header, rule, row(f"**Overall** ({report['num_tasks']} tasks)", report["overall"], None, None)]  # fmt: skip
    for name, entry in report["modality"].items():
        lines.append(row(f"{name} ({entry['num_tasks']})", entry["score"], "modality", name))
    for name, entry in report["split"].items():
        lines.append(row(f"{name} ({entry['num_tasks']})", entry["score"], "split", name))
    for name, entry in report["meta_task"].items():
        lines.append(row(f"{entry['modality']} / {name} ({entry['num_tasks']})", entry["score"], "meta_task", name))
    notes = [f"{n}: {b['note']}" for n, b in baselines.items() if b.get("note")]
    if names:
        lines += ["", "Baselines: published figures (see `tte_hf/evaluation/baselines.py` for sources)."]
        lines += [f"- {note}" for note in notes]
    if report.get("skipped"):
        lines += ["", "Skipped tasks:"] + [f"- {name}: {reason}" for name, reason in report["skipped"].items()]
    lines += ["", "## Tasks", "", "| task | modality | meta-task | metric | score | MRR | R@5 | queries | candidates |"]
    lines.append("|---|---|---|---|---:|---:|---:|---:|---:|")
    for name, task in report["tasks"].items():
        m = task["metrics"]
        lines.append(
            f"| {name} | {task['modality']} | {task['meta_task']} | {task['metric']} | {task['main_score']:.1f} "
            f"| {100 * m['mrr']:.1f} | {100 * m['recall@5']:.1f} | {task['num_queries']} | {task['num_candidates']} |"
        )
    return "\n".join(lines) + "\n"


def plot_meta_tasks(report: dict, path: str | Path) -> None:
    """Grouped bar chart of meta-task scores, ours beside each baseline that has the meta-task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = list(report["meta_task"])
    series = {"ours": [report["meta_task"][m]["score"] for m in meta]}
    for name, entry in report["baselines"].items():
        values = entry.get("meta_task", {})
        if any(m in values for m in meta):
            series[name] = [values.get(m, float("nan")) for m in meta]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(meta) + 2), 4))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(meta))], values, width, label=name)
    ax.set_xticks(range(len(meta)))
    ax.set_xticklabels(meta, rotation=30, ha="right")
    ax.set_ylabel("score (hit@1 / ndcg@5, %)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['benchmark']}: meta-task scores — {report['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, output_dir: str | Path, chart: bool = True) -> None:
    """``report.json``, ``report.md`` and (``chart``) ``meta_tasks.png`` in ``output_dir``."""
    output_dir = Path(output_dir)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    (output_dir / "report.md").write_text(render_markdown(report))
    if chart and report["meta_task"]:
        plot_meta_tasks(report, output_dir / "meta_tasks.png")
