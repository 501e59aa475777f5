"""The demo's summary: Hit@1 per model, the paper's three claims checked, adaptive thinking (never /
always / auto) with its three checks, a table and a chart."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from ..environment import cpu_name, package_versions

LABELS = {
    "baseline": "Baseline (no ECR)",
    "tte-teacher": "TTE-teacher",
    "tte-student": "TTE-student",
    "tte-unified": "TTE-unified",
    "tte-student-rl": "TTE-student + GRPO",
}


CLAIMS = ("teacher >= baseline + 10", "student keeps >= 50% of the gain", "unified >= student - 5")
#: How each claim's slack reads: points of Hit@1, or percentage points of the teacher's gain.
SLACK_UNITS = {CLAIMS[0]: "points", CLAIMS[1]: "% of the gain", CLAIMS[2]: "points"}
#: With ``--rl``: the GRPO-tuned student against the SFT-only one.
RL_CLAIM = "GRPO student >= student + 3, or closes >= 30% of its gap to the teacher"
#: What adaptive thinking must show on the mixed held-out set (riddles + plain queries), per model.
ADAPTIVE_CHECKS = ("auto >= always - 1", "auto skips >= 40% of reasoner calls", "auto >= never + 10")
ADAPTIVE_UNITS = {ADAPTIVE_CHECKS[0]: "points", ADAPTIVE_CHECKS[1]: "% of the calls", ADAPTIVE_CHECKS[2]: "points"}
MODE_NAMES = ("never", "always", "auto")
#: evaluation task names: the held-out riddles (the paper's claims) and plain queries of the same compositions
RIDDLE_TASK, PLAIN_TASK = "held-out-compositions", "held-out-plain"
#: the picture task (`data.PICTURE_QUERY`: one text for every query), when the settings have one
PICTURE_TASK = "held-out-pictures"
#: What a ``--quick`` report says first (report.md, report.json's ``note``, the console).
SMOKE_NOTE = (
    "Smoke run (--quick): a plumbing check that every stage runs. Its tiny models train far too little for "
    "these numbers to mean anything (scores at or below chance are expected), so no claim or check is "
    "evaluated; run without --quick for the demo's results."
)
#: The libraries whose version can move a seed's figures: a report names the ones that computed it.
VERSIONED = ("torch", "transformers", "sentence-transformers", "trl", "peft", "accelerate", "tokenizers", "pillow")


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
    if "tte-student-rl" in scores:
        slack[RL_CLAIM] = rl_slack(scores["tte-student-rl"], scores["tte-student"], scores["tte-teacher"])
    return {
        "teacher_gain": gain,
        "student_recovery": recovered,
        "unified_gap": unified_gap,
        "checks": {claim: value is not None and value >= 0 for claim, value in slack.items()},
        "slack": slack,
    }


def rl_slack(rl: float, student: float, teacher: float) -> float:
    """How far the GRPO student is from failing `RL_CLAIM`, in points of Hit@1: the better of its margin
    over ``student + 3`` and over ``student + 30% of (teacher - student)``."""
    return max(rl - (student + 3), rl - (student + 0.3 * (teacher - student)))


def adaptive_summary(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three adaptive-thinking checks for one model from its per-mode results (``hit_at_1`` on the
    mixed set, in points; ``reasoner_calls``; ``queries``), each with its slack (>= 0 when it holds):
    auto keeps always-mode Hit@1 within 1 point, skips at least 40% of the reasoner calls always-mode
    makes, and beats never-reasoning by at least 10 points."""
    never, always, auto = (modes[m] for m in MODE_NAMES)
    skipped = 100 * (1 - auto["reasoner_calls"] / always["reasoner_calls"]) if always["reasoner_calls"] else 0.0
    slack = {
        ADAPTIVE_CHECKS[0]: auto["hit_at_1"] - (always["hit_at_1"] - 1),
        ADAPTIVE_CHECKS[1]: skipped - 40,
        ADAPTIVE_CHECKS[2]: auto["hit_at_1"] - (never["hit_at_1"] + 10),
    }
    checks: dict[str, bool | None] = {k: v >= 0 for k, v in slack.items()}
    gain = always["hit_at_1"] - never["hit_at_1"]
    if gain < 10:  # reasoning itself gains less than 10: no gate can beat never by 10
        checks[ADAPTIVE_CHECKS[2]] = slack[ADAPTIVE_CHECKS[2]] = None
    return {"skipped_calls": skipped, "gain_always_over_never": gain, "checks": checks, "slack": slack}


def mode_results(report: dict[str, Any]) -> dict[str, Any]:
    """One adaptive evaluation: Hit@1 on the riddles, the plain queries and both together (query-weighted),
    and how many inputs the reasoner wrote a trace for."""
    tasks = list(report["tasks"].values())
    queries = sum(t["num_queries"] for t in tasks)
    return {
        "riddles": report["tasks"][RIDDLE_TASK]["main_score"],
        "plain": report["tasks"][PLAIN_TASK]["main_score"],
        "hit_at_1": sum(t["main_score"] * t["num_queries"] for t in tasks) / queries,
        "reasoner_calls": report["reasoner_calls"],
        "queries": queries,
    }


def write_chart(scores: dict[str, float], adaptive: dict[str, Any], path: Path, smoke: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.1]})
    colours = ["#999", "#2a6", "#4a8", "#48c", "#a6c"][: len(names)]
    bars = left.bar([LABELS[n].replace(" + ", "\n+ ") for n in names], [scores[n] for n in names], color=colours)
    left.bar_label(bars, fmt="%.1f")
    left.set_ylabel("Hit@1 (held-out riddles)")
    left.set_ylim(0, 105)
    left.set_title("Smoke run (--quick): numbers mean nothing" if smoke else "Think-Then-Embed in miniature")
    left.tick_params(axis="x", labelsize=8)
    width = 0.38
    for offset, (name, result) in zip((-width / 2, width / 2), adaptive.items()):
        xs = [i + offset for i in range(len(MODE_NAMES))]
        modes = result["modes"]
        bars = right.bar(xs, [modes[m]["hit_at_1"] for m in MODE_NAMES], width, label=LABELS[name])
        labels = [f"{modes[m]['hit_at_1']:.1f}\n{modes[m]['reasoner_calls']} calls" for m in MODE_NAMES]
        right.bar_label(bars, labels=labels, fontsize=7)
    right.set_xticks(range(len(MODE_NAMES)), [f"think={m}" for m in MODE_NAMES])
    right.set_ylabel("Hit@1 (riddles + plain queries)")
    right.set_ylim(0, 118)
    right.set_title("Adaptive thinking: reasoner calls per mode")
    right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def not_evaluated(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (`summarize` or `adaptive_summary`) with every check ``None``: not evaluated."""
    return {**result, "checks": dict.fromkeys(result["checks"])}


def split_reports(reports: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """The evaluation reports (keys ``"baseline"``, ``"tte-teacher"``, ``"<model>/<mode>"``) as the main
    table's riddle scores (the adaptive models in always-mode) and the adaptive results per model."""
    scores, adaptive = {}, {}
    for key, report in reports.items():
        name, _, mode = key.partition("/")
        if mode.endswith("/pictures"):
            continue  # `picture_results`
        if mode:
            adaptive.setdefault(name, {"modes": {}})["modes"][mode] = mode_results(report)
        if mode in ("", "always"):
            scores[name] = report["tasks"][RIDDLE_TASK]["main_score"]
    for result in adaptive.values():
        result.update(adaptive_summary(result["modes"]))
    return {name: scores[name] for name in LABELS if name in scores}, adaptive


def picture_results(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The picture task per adaptive model and mode: Hit@1 (points), reasoner calls, queries."""
    results: dict[str, Any] = {}
    for key, report in reports.items():
        name, _, mode = key.partition("/")
        if mode.endswith("/pictures"):
            task = report["tasks"][PICTURE_TASK]
            results.setdefault(name, {})[mode.removesuffix("/pictures")] = {
                "hit_at_1": task["main_score"],
                "reasoner_calls": report["reasoner_calls"],
                "queries": task["num_queries"],
            }
    return results


def write_demo_report(
    output: Path,
    reports: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    timings: dict[str, float],
    smoke: bool = False,
    user_cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``hit_at_1.png`` into ``output``; return the summary.
    ``smoke``: a ``--quick`` run, whose report says so (`SMOKE_NOTE`) and leaves every check ``None``
    (not evaluated); its figures are still reported, as computed."""
    scores, adaptive = split_reports(reports)
    claims = summarize(scores)
    if smoke:
        claims = not_evaluated(claims)
        adaptive = {name: not_evaluated(result) for name, result in adaptive.items()}
    summary = {
        "smoke_run": smoke,
        **({"note": SMOKE_NOTE} if smoke else {}),
        "hit_at_1": scores,
        **claims,
        "adaptive": adaptive,
        **({"pictures": pictures} if (pictures := picture_results(reports)) else {}),
        "settings": settings,
        "timings_s": timings,
        "user_cpu_s": user_cpu or {},
        "versions": package_versions(VERSIONED, missing="missing"),
        "cpu": cpu_name(),
    }
    (output / "report.json").write_text(json.dumps(summary, indent=2))
    write_chart(scores, adaptive, output / "hit_at_1.png", smoke)
    lines = [*_main_table(summary, settings), *_adaptive_table(summary, settings), *_footer(summary)]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def _main_table(summary: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The riddles' table, the paper's claims and their checks (lines of ``report.md``)."""
    recovery = summary["student_recovery"]
    return [
        "# Think-Then-Embed demo",
        "",
        *([f"> **{SMOKE_NOTE}**", ""] if summary["smoke_run"] else []),
        f"Held-out colour/object compositions, {settings['num_test']} riddles, "
        f"{settings['num_candidates']} candidates each (chance {100 / settings['num_candidates']:.1f}).",
        "",
        "| model | Hit@1 |",
        "| --- | --- |",
        *(f"| {LABELS[name]} | {score:.1f} |" for name, score in summary["hit_at_1"].items()),
        "",
        f"- Teacher gain over the baseline: **{summary['teacher_gain']:+.1f}** points",
        "- Share of that gain the student keeps: "
        + (f"**{100 * recovery:.0f}%**" if recovery is not None else "n/a (no gain)"),
        f"- Unified model vs student: **{summary['unified_gap']:+.1f}** points",
        "",
        *(f"- {_claim_line(summary, claim)}" for claim in summary["checks"]),
        "",
    ]


def _adaptive_table(summary: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The adaptive models in every ``think`` mode on riddles + plain queries, and their checks."""
    adaptive = summary["adaptive"]
    mixed = settings["num_test"] + settings["num_test_plain"]
    return [
        "## Adaptive thinking",
        "",
        f"The riddles plus {settings['num_test_plain']} plain queries of the same compositions ({mixed} queries; "
        "a plain query names its answer, so a trace cannot help). `think=auto`: the model's gate, trained on "
        "dev compositions, decides per query.",
        "",
        "| model | think | Hit@1 (all) | riddles | plain | reasoner calls |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {LABELS[name]} | {mode} | {m['hit_at_1']:.1f} | {m['riddles']:.1f} | {m['plain']:.1f} "
            f"| {m['reasoner_calls']} of {m['queries']} |"
            for name, result in adaptive.items()
            for mode, m in result["modes"].items()
        ),
        "",
        *(
            f"- {LABELS[name]}: {_adaptive_line(result, check, summary['smoke_run'])}"
            for name, result in adaptive.items()
            for check in result["checks"]
        ),
        "",
    ]


def _footer(summary: dict[str, Any]) -> list[str]:
    return [
        "![Hit@1](hit_at_1.png)",
        "",
        f"Stages: {sum(summary['timings_s'].values()):.0f} s wall, "
        f"{sum(summary.get('user_cpu_s', {}).values()):.0f} s user CPU.",
        "",
        f"Computed on {summary['cpu']} with "
        + ", ".join(f"{name} {v}" for name, v in summary["versions"].items())
        + ".",
    ]


def _slack(summary: dict[str, Any], claim: str) -> str:
    value = summary["slack"][claim]
    return "" if value is None else f" (slack {value:+.1f} {SLACK_UNITS.get(claim, 'points')})"


def _claim_line(summary: dict[str, Any], claim: str) -> str:
    ok = summary["checks"][claim]
    if ok is None:  # a smoke run: without its slack too, which would read as a near miss or a failure
        return f"[not evaluated] {claim}"
    return f"[{'x' if ok else ' '}] {claim}{_slack(summary, claim)}"


def _adaptive_line(result: dict[str, Any], check: str, smoke: bool = False) -> str:
    ok, slack = result["checks"][check], result["slack"][check]
    if smoke:
        return f"[not evaluated] {check}"
    if ok is None:
        gain = result["gain_always_over_never"]
        return f"[n/a] {check} (reasoning itself gains {gain:+.1f} points here: there is nothing to keep)"
    return f"[{'x' if ok else ' '}] {check} (slack {slack:+.1f} {ADAPTIVE_UNITS[check]})"


def console_summary(summary: dict[str, Any], output: Path) -> str:
    """What the demo prints at the end: the table, the claims with their slack, adaptive thinking,
    where the files are."""
    scores = summary["hit_at_1"]
    width = max(len(label) for label in LABELS.values())
    settings = summary["settings"]
    smoke = summary.get("smoke_run", False)
    lines = [
        "",
        *([*textwrap.wrap(SMOKE_NOTE, 100), ""] if smoke else []),
        f"Hit@1 on {settings['num_test']} held-out compositions, {settings['num_candidates']} candidates "
        f"(chance {100 / settings['num_candidates']:.1f}), seed {settings['seed']}:",
        *(f"  {LABELS[name]:<{width}}  {score:5.1f}" for name, score in scores.items()),
        "",
        "The paper's claims:",
        *(f"  {_claim_line(summary, claim)}" for claim in summary["checks"]),
        "",
        f"Adaptive thinking, riddles + {settings['num_test_plain']} plain queries (Hit@1, reasoner calls):",
    ]
    for name, result in summary.get("adaptive", {}).items():
        cells = [f"{mode} {m['hit_at_1']:5.1f} ({m['reasoner_calls']})" for mode, m in result["modes"].items()]
        lines.append(f"  {LABELS[name]:<{width}}  " + "   ".join(cells))
        lines.extend(f"    {_adaptive_line(result, check, smoke)}" for check in result["checks"])
    if summary.get("pictures"):
        lines += ["", f"Picture task, {settings['num_picture_test']} queries with one text (Hit@1, reasoner calls):"]
        for name, modes in summary["pictures"].items():
            cells = [f"{mode} {m['hit_at_1']:5.1f} ({m['reasoner_calls']})" for mode, m in modes.items()]
            lines.append(f"  {LABELS[name]:<{width}}  " + "   ".join(cells))
    lines += [
        "",
        f"Report: {output / 'report.md'} (and report.json)",
        f"Chart:  {output / 'hit_at_1.png'}",
        f"Log:    {output / 'demo.log'}   total {sum(summary['timings_s'].values()):.0f} s"
        f" (user CPU {sum(summary.get('user_cpu_s', {}).values()):.0f} s)",
    ]
    return "\n".join(lines)
