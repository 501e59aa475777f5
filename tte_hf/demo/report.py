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


CLAIMS = ("teacher >= baseline + 10", "student keeps >= 50% of the gain", "unified >= student - 5")
#: How each claim's slack reads: points of Hit@1, or percentage points of the teacher's gain.
SLACK_UNITS = {CLAIMS[0]: "points", CLAIMS[1]: "% of the gain", CLAIMS[2]: "points"}


def summarize(scores: dict[str, float]) -> dict[str, Any]:
    """The paper's three claims, from Hit@1 scores in points: thinking first helps (teacher at least 10
    above the baseline), a student keeps at least half of the teacher's gain, and unifying costs little
    (the unified model at most 5 below its student; above it is no failure).

    ``slack``: how far each claim is from failing (>= 0 when it holds): points for the first and the
    third, percentage points of the gain for the second (``None`` without a gain to keep).
    """
    gain = scores["tte-teacher"] - scores["baseline"]
    recovered = (scores["tte-student"] - scores["baseline"]) / gain if gain > 0 else None  # no gain to recover
    unified_gap = scores["tte-unified"] - scores["tte-student"]  # signed: > 0 when unified is better
    slack = {
        CLAIMS[0]: gain - 10,
        CLAIMS[1]: None if recovered is None else 100 * (recovered - 0.5),
        CLAIMS[2]: unified_gap + 5,
    }
    return {
        "teacher_gain": gain,
        "student_recovery": recovered,
        "unified_gap": unified_gap,
        "checks": {claim: value is not None and value >= 0 for claim, value in slack.items()},
        "slack": slack,
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
        *(f"- [{'x' if ok else ' '}] {claim}{_slack(summary, claim)}" for claim, ok in summary["checks"].items()),
        "",
        "![Hit@1](hit_at_1.png)",
    ]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def _slack(summary: dict[str, Any], claim: str) -> str:
    value = summary["slack"][claim]
    return "" if value is None else f" (slack {value:+.1f} {SLACK_UNITS[claim]})"


def console_summary(summary: dict[str, Any], output: Path) -> str:
    """What the demo prints at the end: the table, the claims with their slack, where the files are."""
    scores = summary["hit_at_1"]
    width = max(len(label) for label in LABELS.values())
    settings = summary["settings"]
    lines = [
        "",
        f"Hit@1 on {settings['num_test']} held-out compositions, {settings['num_candidates']} candidates "
        f"(chance {100 / settings['num_candidates']:.1f}), seed {settings['seed']}:",
        *(f"  {LABELS[name]:<{width}}  {score:5.1f}" for name, score in scores.items()),
        "",
        "The paper's claims:",
        *(f"  [{'x' if ok else ' '}] {claim}{_slack(summary, claim)}" for claim, ok in summary["checks"].items()),
        "",
        f"Report: {output / 'report.md'} (and report.json)",
        f"Chart:  {output / 'hit_at_1.png'}",
        f"Log:    {output / 'demo.log'}   total {sum(summary['timings_s'].values()):.0f} s",
    ]
    return "\n".join(lines)
