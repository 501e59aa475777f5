"""The reasoning gate against its baselines on the demo's two kinds of task, per gate feature: the mixed
set (riddles and plain queries, told apart by their words) and the picture task (one text for every
query; only the picture says whether a trace helps). For each finished demo folder (made with
``tte-hf demo --settings pictures`` for the picture task; a default demo has only the mixed set), each
adaptive model's gate is refitted with each feature on the demo's own recorded recipe (as `bench_gate_feature.py` does), its decisions on the held-out queries are
combined with the demo's per-query Hit@1 without and with the trace (``eval/<model>-never*``,
``eval/<model>-always*``: a skipped query's vector is its ``think=False`` one, a reasoned one its
``think=True`` one), and ``auto`` is compared with ``never``, ``always``, a random gate at the same
reasoner calls (its expected Hit@1) and the best fixed choice per task within the same calls.

    python benchmarks/bench_gate_tasks.py /tmp/gates/seed-3 /tmp/gates/seed-4 [--features embedding text joint] [--set l2=0.01]

Refits run on copies under ``--scratch``; the demo folders are only read. One thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_gate_feature import MODELS, copy_demo, held_out_queries, recipe_for, scratch_key

#: task -> the test files (name, file, the evaluation's task name) it is made of
TASKS = {
    "mixed": (("riddles", "test.jsonl", "held-out-compositions"), ("plain", "test_plain.jsonl", "held-out-plain")),
    "pictures": (("pictures", "test_picture.jsonl", "held-out-pictures"),),
}


def per_query_hits(demo: Path, model: str, mode: str, task: str, eval_task: str) -> dict[str, float]:
    """Hit@1 per query id of the demo's ``mode`` evaluation of ``model`` (``never``, ``always``)."""
    folder = demo / "eval" / (f"{model}-{mode}" + ("-pictures" if task == "pictures" else ""))
    lines = (folder / "tasks" / eval_task / "per_query.jsonl").read_text().splitlines()
    return {row["id"].split("/", 1)[1]: row["hit@1"] for row in map(json.loads, lines)}


def gate_scores(model, folder: Path, demo: Path, file: str) -> list[float]:
    """The gate's scores of the model in ``folder`` on the queries of ``file``, in file order."""
    task = json.loads((folder / "gate_config.json").read_text())["info"]["recipe"]["datasets"][0].get("task")
    return model.gate_decisions(held_out_queries(demo, file, task), batch_size=64)[1]


def scored_rows(demo: Path, source: Path, gate_folder: Path, model_name: str) -> dict[str, list[tuple[float, float, float, str]]]:  # fmt: skip
    """Per task, per query: (the gate's score, Hit@1 without the trace, Hit@1 with it, its kind: the
    test file's name in `TASKS`); the hits from ``source``'s evaluations, the queries from ``demo`` (its
    copy)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gate_folder), trust_remote_code=True, device="cpu")
    rows: dict[str, list] = {}
    for task, files in TASKS.items():
        if not all((demo / "data" / file).is_file() for _, file, _ in files):
            continue  # a default demo has no picture task
        rows[task] = []
        for kind, file, eval_task in files:
            ids = [json.loads(line)["id"] for line in (demo / "data" / file).read_text().splitlines()]
            never, always = (per_query_hits(source, model_name, mode, task, eval_task) for mode in ("never", "always"))
            scores = gate_scores(model, gate_folder, demo, file)
            rows[task] += [(score, never[i], always[i], kind) for score, i in zip(scores, ids)]
    return rows


def thresholds(info: dict, saved: float, budgets: list[str]) -> dict[str, float]:
    """Per budget, the threshold the out-of-fold curve gives it: ``lost:X`` (train-gate's
    ``max_lost_share``: at most a share X of the trace-only hits lost) or ``drop:X`` (out-of-fold Hit@1
    at most X below always-mode's, net of the hits skipping wins back); the fewest calls within it, then
    the recipe's ``call_margin`` (``choose_threshold``; none for ``drop:X``). The
    recipe's own budget keeps the gate's saved threshold (the curve in ``gate_config.json`` is thinned)."""
    from tte_hf.training.gate_fit import CurvePoint, choose_threshold

    curve = [CurvePoint(**point) for point in info["curve"]]
    out = {}
    for budget in budgets:
        kind, value = budget.split(":")
        if kind == "lost" and float(value) == info["recipe"]["max_lost_share"]:
            out[budget] = saved
        elif kind == "lost":
            out[budget] = choose_threshold(curve, float(value), info["recipe"].get("call_margin", 0.0)).threshold
        else:
            allowed = [p for p in curve if p.hit_at_1 >= curve[0].hit_at_1 - float(value) - 1e-9]
            out[budget] = min(allowed, key=lambda p: (p.call_share, -p.hit_at_1)).threshold
    return out


def kind_oracle(rows: list[tuple[bool, float, float, str]]) -> dict[str, float]:
    """Per kind of query, never or always, whichever scores more on these rows: Hit@1 and calls; and
    each kind's own never / always Hit@1 and the gate's calls on it (``per_kind``)."""
    hits, calls, per_kind = 0.0, 0, {}
    for kind in sorted({r[3] for r in rows}):
        mine = [r for r in rows if r[3] == kind]
        never, always = sum(r[1] for r in mine), sum(r[2] for r in mine)
        hits += max(never, always)
        calls += len(mine) if always > never else 0
        per_kind[kind] = {"queries": len(mine), "never": 100 * never / len(mine), "always": 100 * always / len(mine), "calls": sum(r[0] for r in mine)}  # fmt: skip
    return {"kind_oracle": 100 * hits / len(rows), "kind_oracle_calls": calls, "per_kind": per_kind}


def compare(rows: dict[str, list[tuple[bool, float, float, str]]]) -> dict[str, dict[str, float]]:
    """Per task and over both: Hit@1 (points) of never, always, auto and the random gate at auto's calls,
    auto's calls, and the best fixed choice per task within auto's total calls. Per task also the best
    fixed choice per kind of query (riddles, plain), read off these test rows: what a gate that knew
    the kind could score at most, and its calls."""
    out = {}
    for task, task_rows_ in rows.items():
        n = len(task_rows_)
        never = 100 * sum(r[1] for r in task_rows_) / n
        always = 100 * sum(r[2] for r in task_rows_) / n
        calls = sum(r[0] for r in task_rows_)
        auto = 100 * sum(r[2] if r[0] else r[1] for r in task_rows_) / n
        out[task] = {"queries": n, "never": never, "always": always, "auto": auto, "calls": calls,
                     "skipped": 100 * (1 - calls / n), "random": never + calls / n * (always - never),
                     **kind_oracle(task_rows_)}  # fmt: skip
    total = sum(t["queries"] for t in out.values())
    calls = sum(t["calls"] for t in out.values())
    fixed = []
    for choice in range(2 ** len(out)):  # each task always (bit set) or never
        picks = [(t, bool(choice >> k & 1)) for k, t in enumerate(out.values())]
        if sum(t["queries"] for t, reasons in picks if reasons) <= calls:
            fixed.append(sum(t["queries"] * (t["always"] if reasons else t["never"]) for t, reasons in picks) / total)
    auto = sum(t["queries"] * t["auto"] for t in out.values()) / total
    random_ = sum(t["queries"] * t["random"] for t in out.values()) / total
    out["both"] = {"queries": total, "auto": auto, "calls": calls, "random": random_, "best_fixed": max(fixed)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", type=Path, nargs="+", help="Finished `tte-hf demo --settings pictures` folders.")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-gate-tasks"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--features", nargs="+", default=["embedding", "text", "joint"])
    parser.add_argument("--budgets", nargs="+", help="lost:X (max_lost_share) or drop:X (net Hit@1 drop); default: the recipe's.")  # fmt: skip
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="Recipe settings for every refit (YAML values), e.g. l2=0.01 fold_by=row.")  # fmt: skip
    parser.add_argument("--json", type=Path, help="Also write every figure here.")
    args = parser.parse_args(argv)

    import torch
    import yaml

    from tte_hf.training.train_gate import GateArguments, recorded_recipe, train_gate

    torch.set_num_threads(1)
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    tag = "".join(f" {key}={value}" for key, value in sorted(overrides.items()))
    # the folder becomes a remote-code module name: letters, digits and underscores only
    folder_tag = "".join(c if c.isalnum() else "_" for c in tag)
    results = []
    for source in args.demos:
        scratch = args.scratch / f"{source.name}-{scratch_key(source, args.models)}"  # reused only as it was made
        demo = copy_demo(source, scratch, args.models)
        for model in args.models:
            for feature in args.features:
                output = scratch / "gates" / f"{model}-{feature}{folder_tag}"
                recipe = {**recipe_for(demo, model, feature, output), **overrides}
                config = output / "gate_config.json"
                recorded = json.loads(config.read_text())["info"]["recipe"] if config.is_file() else None
                if recorded != recorded_recipe(GateArguments(**recipe)):
                    train_gate(recipe)  # else: fitted with this recipe by an earlier run into the same scratch
                info = json.loads(config.read_text())["info"]
                saved = json.loads(config.read_text())["threshold"]
                scored = scored_rows(demo, source, output, model)
                for budget, cut in thresholds(
                    info, saved, args.budgets or [f"lost:{info['recipe']['max_lost_share']}"]
                ).items():
                    rows = {task: [(s >= cut, *hits) for s, *hits in r] for task, r in scored.items()}
                    results.append({"demo": source.name, "model": model, "feature": feature + tag, "budget": budget, **compare(rows)})  # fmt: skip
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: list[dict]) -> None:
    header = ("demo", "model", "feature", "budget", "pictures never/always/auto/random (calls of n)",
              "mixed never/always/auto (calls of n)", "mixed kind oracle (calls)", "mixed per kind: never → always (auto's calls)", "both auto/random/best fixed (calls)")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for r in results:
        p, m, b = r.get("pictures"), r["mixed"], r["both"]
        pictures = f"{p['never']:.1f} / {p['always']:.1f} / {p['auto']:.1f} / {p['random']:.1f} ({p['calls']} of {p['queries']})" if p else "–"  # fmt: skip
        print(f"| {r['demo']} | {r['model']} | {r['feature']} | {r['budget']} | {pictures} "
              f"| {m['never']:.1f} / {m['always']:.1f} / {m['auto']:.1f} ({m['calls']} of {m['queries']}) "
              f"| {m['kind_oracle']:.1f} ({m['kind_oracle_calls']}) | {_per_kind(m)} "
              f"| {b['auto']:.1f} / {b['random']:.1f} / {b['best_fixed']:.1f} ({b['calls']}) |")  # fmt: skip


def _per_kind(task: dict) -> str:
    return "; ".join(f"{k} {v['never']:.1f} → {v['always']:.1f} ({v['calls']})" for k, v in task["per_kind"].items())


if __name__ == "__main__":
    sys.exit(main())
