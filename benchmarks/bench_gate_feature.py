"""Which gate feature tells the demo's riddles from its plain queries on held-out data: refits the reasoning
gate of a finished demo's ``tte-student`` and ``tte-unified`` with each feature (``embedding``: the
no-trace embedding, images included; ``text``: the mean input embedding of the prompt's text tokens), with
the demo's own recorded recipe (its dev split and student traces), then counts how many of the held-out
test riddles (``data/test.jsonl``) and plain queries (``data/test_plain.jsonl``) each gate reasons on.
A good gate reasons on the riddles and skips the plain queries.

The demo folder is only read: what the fits need is copied to ``--scratch`` first. One thread.

    python benchmarks/bench_gate_feature.py /tmp/p44/seeds/seed-0 [--scratch /tmp/wt-gate-scratch]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

MODELS = ("tte-student", "tte-unified")
#: the demo's test files: (name, file) -> a good gate reasons on the first, skips the second
TEST_SETS = (("riddles", "test.jsonl"), ("plain", "test_plain.jsonl"))


def _refit_parts(models: list[str]) -> list[str]:
    """The parts of a demo folder a refit reads."""
    return [*(f"models/{m}" for m in models), "data", "ecr/student-dev.jsonl"]


def scratch_key(demo: Path, models: list[str]) -> str:
    """A digest of everything a scratch copy and its refits depend on: the demo folder's path, each file
    a refit reads (name, size, modification time) and tte_hf's source. A scratch made from another
    demo of the same name, a rerun demo or other code then gets another folder instead of being reused."""
    import hashlib

    import tte_hf

    digest = hashlib.sha256(str(demo.resolve()).encode())
    files = [demo / part for part in _refit_parts(models)]
    files = sorted(f for path in files for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    code = sorted(Path(tte_hf.__file__).parent.rglob("*.py"))
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(demo)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for path in code:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def copy_demo(demo: Path, scratch: Path, models: list[str]) -> Path:
    """The parts of ``demo`` a refit reads, copied under ``scratch`` (kept between runs: name ``scratch``
    by `scratch_key`)."""
    target = scratch / "demo"
    for part in _refit_parts(models):
        source, copy = demo / part, target / part
        if copy.exists():
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, copy)
    return target


def recipe_for(demo: Path, model: str, feature: str, output: Path) -> dict:
    """The demo's recorded gate recipe for ``model``, its data read from the copy, fitted on ``feature``."""
    recorded = json.loads((demo / "models" / model / "gate_config.json").read_text())["info"]["recipe"]
    datasets = []
    for dataset in recorded["datasets"]:
        dataset = dict(dataset)
        dataset["path"] = str(demo / "data" / Path(dataset["path"]).name)
        dataset["image_root"] = str(demo / "data")
        dataset["query_ecr"] = str(demo / "ecr" / Path(dataset["query_ecr"]).name)
        datasets.append(dataset)
    from dataclasses import fields

    from tte_hf.training.train_gate import GateArguments

    known = {f.name for f in fields(GateArguments)}
    unknown = sorted(set(recorded) - known)
    if unknown:  # recorded by another tte-hf version
        print(f"{demo}: {model}'s recorded gate recipe has settings this version does not know, left out: {unknown}")
    recorded = {k: v for k, v in recorded.items() if k in known}
    recipe = {**recorded, "datasets": datasets, "feature": feature, "overwrite_output_dir": True}
    return {**recipe, "model_name_or_path": str(demo / "models" / model), "output_dir": str(output), "device": "cpu"}


def held_out_queries(demo: Path, file: str, task: str | None) -> list[dict]:
    """The queries of an MMEB-format test file as the evaluation builds them: instruction + text, image."""
    from tte_hf.evaluation.rows import join
    from tte_hf.models.tte.inputs import strip_image_tags

    queries = []
    for line in (demo / "data" / file).read_text().splitlines():
        row = json.loads(line)
        query = {"text": join(strip_image_tags(row.get("qry_inst") or ""), row["qry_text"])}
        if row.get("qry_img_path"):
            query["image"] = str(demo / "data" / row["qry_img_path"])
        if task:
            query["task"] = task
        queries.append(query)
    return queries


def reasoned_on(folder: Path, demo: Path) -> dict[str, tuple[int, int]]:
    """Per test set: (queries the gate of the model in ``folder`` reasons on, queries)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    task = json.loads((folder / "gate_config.json").read_text())["info"]["recipe"]["datasets"][0].get("task")
    counts = {}
    for name, file in TEST_SETS:
        think, _ = model.gate_decisions(held_out_queries(demo, file, task), batch_size=64)
        counts[name] = (sum(think), len(think))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="A finished demo folder (models/, data/, ecr/).")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/wt-gate-scratch"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--features", nargs="+", default=["embedding", "text"], choices=["embedding", "text", "joint"])
    args = parser.parse_args(argv)

    import torch

    from tte_hf.training.train_gate import train_gate

    torch.set_num_threads(1)
    scratch = args.scratch / f"{args.demo.name}-{scratch_key(args.demo, args.models)}"
    demo = copy_demo(args.demo, scratch, args.models)
    rows = []
    for model_name in args.models:
        # the demo's own gate first (a control: the refit with its feature should decide alike)
        demo_gate = json.loads((demo / "models" / model_name / "gate_config.json").read_text())["info"]
        rows.append((model_name, "demo's own", demo_gate["held_out"], reasoned_on(demo / "models" / model_name, demo), 0.0))  # fmt: skip
        for feature in args.features:
            output = scratch / "gates" / f"{model_name}-{feature}"
            start = time.perf_counter()
            info = train_gate(recipe_for(demo, model_name, feature, output))
            rows.append((model_name, feature, info["held_out"], reasoned_on(output, demo), time.perf_counter() - start))
    print(f"\n{'model':<12} {'feature':<10} {'dev OOF skip':>12} {'dev Hit@1 auto/always/never':>28} "
          f"{'test riddles reasoned':>22} {'test plain reasoned':>20} {'fit s':>6}")  # fmt: skip
    for model_name, feature, held, reasoned, fit_s in rows:
        hits = f"{held['hit_at_1_auto']:.3f}/{held['hit_at_1_always']:.3f}/{held['hit_at_1_never']:.3f}"
        riddles, plain = (f"{n}/{total}" for n, total in (reasoned["riddles"], reasoned["plain"]))
        print(f"{model_name:<12} {feature:<10} {held['skip_rate']:>12.3f} {hits:>28} {riddles:>22} {plain:>20} {fit_s:>6.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
