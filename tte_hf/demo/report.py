"""The demo's summary: Hit@1 per model, the paper's three claims checked, a table and a chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "baseline": "Baseline (no ECR)",
    "tte-teacher": "TTE-teacher",
    "tte-student": "TTE-student",
    "tte-unified": "TTE-unified",
}


def summarize(scores: dict[str, float]) -> dict[str, Any]:
    """The demo's claims, from Hit@1 scores in points: thinking first helps, a student keeps most of
    the gain, and unifying costs little: the unified model is not worse than the student by more than
    5 points (the paper's claim; a unified model above its student is not a failure)."""
    gain = scores["tte-teacher"] - scores["baseline"]
    recovered = (scores["tte-student"] - scores["baseline"]) / gain if gain > 0 else None  # no gain to recover
    unified_gap = scores["tte-unified"] - scores["tte-student"]  # signed: > 0 when unified is better
    return {
        "teacher_gain": gain,
        "student_recovery": recovered,
        "unified_gap": unified_gap,
        "checks": {
            "teacher >= baseline + 10": gain >= 10,
            "student recovers >= 50% of the gain": recovered is not None and recovered >= 0.5,
            "unified >= student - 5": unified_gap >= -5,
        },
    }


def write_chart(scores: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar([LABELS[n] for n in names], [scores[n] for n in names], color=["#999", "#2a6", "#4a8", "#48c"])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("Hit@1 (held-out compositions)")
    ax.set_ylim(0, 105)
    ax.set_title("Think-Then-Embed in miniature")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_demo_report(
    output: Path, reports: dict[str, dict[str, Any]], settings: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``hit_at_1.png`` into ``output``; return the summary."""
    scores = {name: report["overall"] for name, report in reports.items()}
    summary = {"hit_at_1": scores, **summarize(scores), "settings": settings, "timings_s": timings}
    (output / "report.json").write_text(json.dumps(summary, indent=2))
    write_chart(scores, output / "hit_at_1.png")
    lines = [
        "# Think-Then-Embed demo",
        "",
        f"Held-out colour/object compositions, {settings['num_test']} queries, "
        f"{settings['num_candidates']} candidates each (chance {100 / settings['num_candidates']:.1f}).",
        "",
        "| model | Hit@1 |",
        "| --- | --- |",
        *(f"| {LABELS[name]} | {score:.1f} |" for name, score in scores.items()),
        "",
        f"- Teacher gain over the baseline: **{summary['teacher_gain']:+.1f}** points",
        "- Share of that gain the student keeps: "
        + (
            f"**{100 * summary['student_recovery']:.0f}%**"
            if summary["student_recovery"] is not None
            else "n/a (no gain)"
        ),
        f"- Unified model vs student: **{summary['unified_gap']:+.1f}** points",
        "",
        *(f"- [{'x' if ok else ' '}] {claim}" for claim, ok in summary["checks"].items()),
        "",
        "![Hit@1](hit_at_1.png)",
    ]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines[:-2]))
    return summary
