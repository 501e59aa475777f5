"""`tte-hf demo` on several seeds: per-seed table, median and range, each claim's minimum slack.

    python benchmarks/demo_seeds.py --seeds 0-9 --output /tmp/demo-seeds          # run, then tabulate
    python benchmarks/demo_seeds.py --seeds 0-9 --output /tmp/demo-seeds --no-run # tabulate what is there

Each seed runs as its own `tte-hf demo --seed N --output OUTPUT/seed-N` process (what README's line
does), timed by wall clock; a seed whose report exists is not rerun. ``--jobs 2`` runs two seeds side
by side (each demo pins two threads; results do not change, only the wall times, which then are not
the idle figures). The table is Markdown, ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tte_hf.demo.report import CLAIMS, LABELS, SLACK_UNITS


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def run_seed(seed: int, output: Path, quick: bool) -> float:
    command = ["tte-hf", "demo", "--seed", str(seed), "--output", str(output)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    with open(output.parent / f"{output.name}.console.txt", "w") as console:
        subprocess.run(command, check=True, stdout=console, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def table(reports: dict[int, dict], walls: dict[int, float]) -> str:
    models = list(LABELS)
    head = ["seed", *(LABELS[m] for m in models), *CLAIMS, "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seed, report in sorted(reports.items()):
        scores = [f"{report['hit_at_1'][m]:.1f}" for m in models]
        slack = [_slack_cell(report, claim) for claim in CLAIMS]
        wall = f"{walls[seed]:.0f} s" if seed in walls else f"({sum(report['timings_s'].values()):.0f} s stages)"
        lines.append("| " + " | ".join([str(seed), *scores, *slack, wall]) + " |")
    lines.append("")
    lines.append("| model | median | min–max |")
    lines.append("| --- | --- | --- |")
    for m in models:
        values = [r["hit_at_1"][m] for r in reports.values()]
        lines.append(f"| {LABELS[m]} | {statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f} |")
    lines.append("")
    lines.append("| claim | holds on | min slack (seed) |")
    lines.append("| --- | --- | --- |")
    for claim in CLAIMS:
        held = sum(r["checks"][claim] for r in reports.values())
        known = {s: r["slack"][claim] for s, r in reports.items() if r["slack"][claim] is not None}
        worst = min(known, key=known.get) if known else None
        cell = f"{known[worst]:+.1f} {SLACK_UNITS[claim]} ({worst})" if worst is not None else "n/a"
        lines.append(f"| {claim} | {held} of {len(reports)} seeds | {cell} |")
    return "\n".join(lines)


def _slack_cell(report: dict, claim: str) -> str:
    value = report["slack"][claim]
    mark = "" if report["checks"][claim] else " ✗"
    return "n/a ✗" if value is None else f"{value:+.1f}{mark}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5-7")
    parser.add_argument("--output", type=Path, default=Path("/tmp/demo-seeds"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-run", action="store_true", help="Only tabulate the reports already there.")
    parser.add_argument("--jobs", type=int, default=1, help="Seeds run side by side.")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    walls_path = args.output / "walls.json"
    walls = {int(k): v for k, v in json.loads(walls_path.read_text()).items()} if walls_path.exists() else {}
    seeds = parse_seeds(args.seeds)
    todo = [s for s in seeds if not (args.output / f"seed-{s}" / "report.json").exists() and not args.no_run]

    def one(seed: int) -> None:
        walls[seed] = run_seed(seed, args.output / f"seed-{seed}", args.quick)
        walls_path.write_text(json.dumps(walls, indent=1))
        print(f"seed {seed} done in {walls[seed]:.0f} s", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    reports = {}
    for seed in seeds:
        folder = args.output / f"seed-{seed}"
        if (folder / "report.json").exists():
            reports[seed] = json.loads((folder / "report.json").read_text())
            print(f"seed {seed}: {reports[seed]['hit_at_1']}", file=sys.stderr, flush=True)
    if reports:
        print(table(reports, walls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
