"""The JSON, Markdown and PNG reports of a run: MMEB aggregation (`aggregate.py`), the protocol and
input format the scores follow, how many queries the protocol's tie rules touched, and published
baselines beside them. MMEB-V1 also reports the IND / OOD means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .aggregate import aggregate_scores
from .baselines import baselines_for

TIE_KEYS = ("duplicate_gold_queries", "duplicate_gold_decided", "tied_gold_queries", "tied_gold_decided")


def build_report(
    results: list[dict[str, Any]],
    *,
    benchmark: str,
    baseline_key: str | None,
    model_id: str,
    benchmark_tasks: int | None = None,
    protocol: str = "leaderboard",
    input_format: str = "tte",
) -> dict:
    """The report dict from per-task ``score.json`` dicts (``benchmark_tasks``: the full benchmark's size)."""
    summary = aggregate_scores(results)
    ties = {key: sum(r.get("ties", {}).get(key, 0) for r in results) for key in TIE_KEYS}
    return {
        "benchmark": benchmark,
        "model": model_id,
        "protocol": protocol,
        "input_format": input_format,
        "num_tasks": len(results),
        "benchmark_tasks": benchmark_tasks or len(results),
        "overall": summary["overall"],
        "meta_task": summary["meta_task"],
        "modality": summary["modality"],
        "split": summary["split"],
        "ties": ties,
        "tasks": {r["task"]: r for r in results},
        "baselines": baselines_for(baseline_key),
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _protocol_lines(report: dict) -> list[str]:
    ties = report.get("ties", {})
    return [
        f"Protocol: **{report.get('protocol', 'strict')}** (candidate identity and tie rules, see "
        f"`tte_hf/evaluation/metrics.py`); input format: **{report.get('input_format', 'tte')}**.",
        "",
        f"Queries whose gold is listed more than once: {ties.get('duplicate_gold_queries', 0)} "
        f"(hit@1 decided by the protocol: {ties.get('duplicate_gold_decided', 0)}); whose gold ties exactly "
        f"with another candidate: {ties.get('tied_gold_queries', 0)} (decided: {ties.get('tied_gold_decided', 0)}).",
        "",
    ]


def render_markdown(report: dict) -> str:
    """Tables: overall / modality / meta-task (with baselines), then every task."""
    baselines = report["baselines"]
    names = list(baselines)
    header = "| | ours | " + " | ".join(names) + " |" if names else "| | ours |"
    rule = "|---|---:|" + "---:|" * len(names)

    def row(label: str, ours: float | None, level: str | None, key: str | None, full: int | None) -> str:
        cells = [_fmt(ours)]
        for name in names:
            entry = baselines[name]
            value = entry.get("overall") if level is None else entry.get(level, {}).get(key)
            counts = entry.get("num_tasks", {})
            count = counts.get("overall") if level is None else counts.get(level, {}).get(key)
            partial = value is not None and count is not None and full is not None and count < full
            cells.append(_fmt(value) + (f" ({count}/{full} tasks)" if partial else ""))
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [f"# {report['benchmark']} — {report['model']}", "", f"{report['num_tasks']} tasks scored.", ""]
    if report["num_tasks"] < report["benchmark_tasks"]:
        lines[-2] = (
            f"**Partial run: {report['num_tasks']} of {report['benchmark_tasks']} tasks.** Its means cover only "
            "these tasks, so they are not comparable with the published full-benchmark figures."
        )
    lines += _protocol_lines(report)
    lines += ["## Summary", "", header, rule, row(f"**Overall** ({report['num_tasks']} tasks)", report["overall"], None, None, report["num_tasks"])]  # fmt: skip
    for level in ("modality", "split", "meta_task"):
        for name, entry in report[level].items():
            label = f"{entry['modality']} / {name}" if level == "meta_task" else name
            lines.append(row(f"{label} ({entry['num_tasks']})", entry["score"], level, name, entry["num_tasks"]))
    notes = [f"{n}: {b['note']}" for n, b in baselines.items() if b.get("note")]
    if names:
        lines += ["", "Baselines: published figures, their means recomputed over the tasks each source publishes "
                  "(sources and dates: `tte_hf/evaluation/baseline_scores.json`)."]  # fmt: skip
        lines += [f"- {note}" for note in notes]
    if report.get("skipped"):
        lines += ["", "Skipped tasks:"] + [f"- {name}: {reason}" for name, reason in report["skipped"].items()]
    lines += ["", "## Tasks", "", "| task | modality | meta-task | metric | score | MRR | R@5 | queries | candidates | gold repeated (decided) | gold tied (decided) |"]  # fmt: skip
    lines.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, task in report["tasks"].items():
        m, ties = task["metrics"], task.get("ties", {})
        lines.append(
            f"| {name} | {task['modality']} | {task['meta_task']} | {task['metric']} | {task['main_score']:.1f} "
            f"| {100 * m['mrr']:.1f} | {100 * m['recall@5']:.1f} | {task['num_queries']} | {task['num_candidates']} "
            f"| {ties.get('duplicate_gold_queries', 0)} ({ties.get('duplicate_gold_decided', 0)}) "
            f"| {ties.get('tied_gold_queries', 0)} ({ties.get('tied_gold_decided', 0)}) |"
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
