"""`tte-hf demo` on several seeds: per-seed tables (the paper's claims; adaptive thinking), median and
range, each claim's and check's minimum slack.

    python benchmarks/demo_seeds.py --seeds 0-9 --output /tmp/demo-seeds          # run, then tabulate
    python benchmarks/demo_seeds.py --seeds 0-9 --output /tmp/demo-seeds --no-run # tabulate what is there
    python benchmarks/demo_seeds.py --seeds 0-2 --rl --output /tmp/demo-seeds-rl  # with the GRPO student

Each seed runs as its own `tte-hf demo --seed N --output OUTPUT/seed-N` process (what README's line
does), timed by wall clock and user CPU (`os.wait4`, as `/usr/bin/time -v`); a seed whose report exists
is not rerun. ``--jobs 2`` runs two seeds side
by side (each demo pins two threads; results do not change, only the wall times, which then are not
the idle figures). The table is Markdown, ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tte_hf.demo.report import ADAPTIVE_CHECKS, ADAPTIVE_UNITS, LABELS, SLACK_UNITS


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def run_seed(seed: int, output: Path, quick: bool, rl: bool = False) -> tuple[float, float]:
    """Run one seed's demo process; its wall and user-CPU seconds (what `/usr/bin/time -v` reports)."""
    command = ["tte-hf", "demo", "--seed", str(seed), "--output", str(output)]
    command += (["--quick"] if quick else []) + (["--rl"] if rl else [])
    start = time.perf_counter()
    with open(output.parent / f"{output.name}.console.txt", "w") as console:
        process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return time.perf_counter() - start, usage.ru_utime


def table(reports: dict[int, dict], walls: dict[int, float], cpus: dict[int, float] | None = None) -> str:
    first = next(iter(reports.values()))
    models = [m for m in LABELS if any(m in r["hit_at_1"] for r in reports.values())]
    claims = list(dict.fromkeys(claim for r in reports.values() for claim in r["slack"]))
    cpus = cpus or {}
    head = ["seed", *(LABELS[m] for m in models), *claims, "wall", "user CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seed, report in sorted(reports.items()):
        scores = [f"{report['hit_at_1'][m]:.1f}" if m in report["hit_at_1"] else "–" for m in models]
        slack = [_cell(report["slack"][c], report["checks"][c]) if c in report["slack"] else "–" for c in claims]
        wall = f"{walls[seed]:.0f} s" if seed in walls else f"({sum(report['timings_s'].values()):.0f} s stages)"
        stages_cpu = sum(report.get("user_cpu_s", {}).values())
        cpu = f"{cpus[seed]:.0f} s" if seed in cpus else (f"({stages_cpu:.0f} s stages)" if stages_cpu else "–")
        lines.append("| " + " | ".join([str(seed), *scores, *slack, wall, cpu]) + " |")
    lines += ["", "| model | median | min–max |", "| --- | --- | --- |"]
    for m in models:
        values = [r["hit_at_1"][m] for r in reports.values() if m in r["hit_at_1"]]
        lines.append(f"| {LABELS[m]} | {statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f} |")
    lines += ["", "| claim | holds on | min slack (seed) |", "| --- | --- | --- |"]
    lines += [_summary_row(reports, claim, lambda r, c=claim: (r["slack"][c], r["checks"][c]) if c in r["slack"] else None, SLACK_UNITS.get(claim, "points")) for claim in claims]  # fmt: skip
    if "adaptive" in first:
        lines += ["", adaptive_table(reports)]
    return "\n".join(lines)


def summary_table(reports: dict[int, dict], walls: dict[int, float], cpus: dict[int, float]) -> str:
    """README's one table: per model the median and range of Hit@1, the seeds on which every claim holds
    (and the CPU), and the wall and user-CPU seconds of a run."""
    models = [m for m in LABELS if any(m in r["hit_at_1"] for r in reports.values())]
    seeds = sorted(reports)
    span = f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
    lines = [f"| | median (seeds {span}) | min–max |", "| --- | --- | --- |"]
    for m in models:
        values = [r["hit_at_1"][m] for r in reports.values() if m in r["hit_at_1"]]
        lines.append(f"| {LABELS[m]} | {statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f} |")
    joint = sum(all(ok is True for ok in r["checks"].values()) for r in reports.values())
    cpu_names = "; ".join(sorted({r.get("cpu", "unknown CPU") for r in reports.values()}))
    lines.append(f"| all three claims hold | {joint} of {len(reports)} seeds | {cpu_names} |")
    for label, values in (("wall per run", walls), ("user CPU per run", cpus)):
        known = [values[s] for s in seeds if s in values]
        if known:
            lines.append(f"| {label} | {statistics.median(known):.0f} s | {min(known):.0f}–{max(known):.0f} s |")
    return "\n".join(lines)


def adaptive_table(reports: dict[int, dict]) -> str:
    """Per seed and model: Hit@1 on the mixed set and reasoner calls for never / always / auto, and the checks."""
    head = ["seed", "model", "never", "always", "auto", "calls always / auto", *ADAPTIVE_CHECKS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seed, report in sorted(reports.items()):
        for name, result in report["adaptive"].items():
            modes = result["modes"]
            hits = [f"{modes[m]['hit_at_1']:.1f}" for m in ("never", "always", "auto")]
            calls = f"{modes['always']['reasoner_calls']} / {modes['auto']['reasoner_calls']}"
            checks = [_cell(result["slack"][c], result["checks"][c]) for c in ADAPTIVE_CHECKS]
            lines.append("| " + " | ".join([str(seed), LABELS[name], *hits, calls, *checks]) + " |")
    lines += ["", "| model: check | holds on | min slack (seed) |", "| --- | --- | --- |"]
    for name in next(iter(reports.values()))["adaptive"]:
        for check in ADAPTIVE_CHECKS:

            def read(report, n=name, c=check):
                result = report["adaptive"][n]
                return result["slack"][c], result["checks"][c]

            lines.append(_summary_row(reports, f"{LABELS[name]}: {check}", read, ADAPTIVE_UNITS[check]))
    return "\n".join(lines)


def _summary_row(reports: dict[int, dict], label: str, read, unit: str) -> str:
    """How many seeds a claim or check holds on (n/a seeds apart) and its smallest slack."""
    values = {seed: read(report) for seed, report in reports.items()}
    values = {seed: value for seed, value in values.items() if value is not None}
    held = sum(ok is True for _, ok in values.values())
    applicable = sum(ok is not None for _, ok in values.values())
    na = len(values) - applicable
    known = {seed: slack for seed, (slack, _) in values.items() if slack is not None}
    worst = min(known, key=known.get) if known else None
    cell = f"{known[worst]:+.1f} {unit} ({worst})" if worst is not None else "n/a"
    na = f" ({na} n/a)" if na else ""
    return f"| {label} | {held} of {applicable} seeds{na} | {cell} |"


def _cell(value, ok) -> str:
    if ok is None:
        return "n/a"
    return "n/a ✗" if value is None else f"{value:+.1f}{'' if ok else ' ✗'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5-7")
    parser.add_argument("--output", type=Path, default=Path("/tmp/demo-seeds"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rl", action="store_true", help="Run with --rl (the GRPO student's row and claim).")
    parser.add_argument("--no-run", action="store_true", help="Only tabulate the reports already there.")
    parser.add_argument("--jobs", type=int, default=1, help="Seeds run side by side.")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    walls_path = args.output / "walls.json"
    cpus_path = args.output / "user_cpu.json"
    walls, cpus = (
        {int(k): v for k, v in json.loads(p.read_text()).items()} if p.exists() else {} for p in (walls_path, cpus_path)
    )
    seeds = parse_seeds(args.seeds)
    todo = [s for s in seeds if not (args.output / f"seed-{s}" / "report.json").exists() and not args.no_run]

    def one(seed: int) -> None:
        walls[seed], cpus[seed] = run_seed(seed, args.output / f"seed-{seed}", args.quick, args.rl)
        walls_path.write_text(json.dumps(walls, indent=1))
        cpus_path.write_text(json.dumps(cpus, indent=1))
        print(f"seed {seed} done in {walls[seed]:.0f} s, {cpus[seed]:.0f} s user CPU", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    reports = {}
    for seed in seeds:
        folder = args.output / f"seed-{seed}"
        if (folder / "report.json").exists():
            reports[seed] = json.loads((folder / "report.json").read_text())
            print(f"seed {seed}: {reports[seed]['hit_at_1']}", file=sys.stderr, flush=True)
    if reports:
        print(table(reports, walls, cpus))
        print("\n" + summary_table(reports, walls, cpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
