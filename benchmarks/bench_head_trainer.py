"""train-head time per epoch, this tree against another checkout of the package (e.g. an older commit).

Each run is its own process (``PYTHONPATH`` = the tree) on the tiny recipe (recipes/unified/tiny.yaml of
this tree: the same model, data and settings for both), with a fresh hidden-state cache: epoch 1 fills
it, later epochs read it back. Per epoch: wall seconds and the process's user CPU seconds (every
thread). Runs alternate between the trees, so drift on a shared machine hits both alike; medians.

    git archive <commit> | tar -x -C /tmp/baseline
    python benchmarks/bench_head_trainer.py --baseline-tree /tmp/baseline [--items 64 --epochs 3 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_head_cache import recipe  # noqa: E402  (the same tiny recipe both benchmarks time)


def worker(cfg: dict) -> list[dict[str, float]]:
    """Train ``cfg`` with `train_head`; per epoch: wall and user CPU seconds."""
    import resource
    import time

    from transformers import TrainerCallback

    from tte_hf.training import train_head

    class EpochClock(TrainerCallback):
        def __init__(self):
            self.epochs: list[dict[str, float]] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime)

        def on_epoch_end(self, args, state, control, **kwargs):
            wall, user = self.start
            now = resource.getrusage(resource.RUSAGE_SELF).ru_utime
            self.epochs.append({"wall_s": time.perf_counter() - wall, "user_s": now - user})

    clock = EpochClock()
    train_head(cfg, progress=clock)
    return clock.epochs


def run(tree: Path, cfg: dict) -> list[dict[str, float]]:
    env = os.environ | {"PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--_worker", json.dumps(cfg)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"train-head failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="the other checkout (required)")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--_worker", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker is not None:
        print(json.dumps(worker(args._worker)))
        return
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")

    from tte_hf.testing import build_tiny_vlm
    from tte_hf.training.synthetic import write_synthetic_retrieval

    trees = {"baseline": args.baseline_tree.resolve(), "this tree": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm = build_tiny_vlm(tmp / "vlm")
        data = write_synthetic_retrieval(tmp / "data", num_items=args.items)
        results: dict[str, list[list[dict[str, float]]]] = {name: [] for name in trees}
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                out = tmp / f"{name.replace(' ', '_')}{repeat}"
                results[name].append(run(tree, recipe(vlm, data, out / "out", out / "cache", args.epochs)))

    print(
        f"tiny recipe: {args.items} pairs with hard negatives, batch 8, {args.epochs} epochs, medians of {args.repeats}"
    )
    print(f"{'tree':<12}{'epoch 1 wall s':>16}{'user s':>9}{'cached epoch wall s':>21}{'user s':>9}")
    for name, runs in results.items():
        first = [epochs[0] for epochs in runs]
        later = [epoch for epochs in runs for epoch in epochs[1:]]

        def median(rows, key):
            return statistics.median(row[key] for row in rows)

        print(
            f"{name:<12}{median(first, 'wall_s'):>16.2f}{median(first, 'user_s'):>9.2f}"
            f"{median(later, 'wall_s'):>21.2f}{median(later, 'user_s'):>9.2f}"
        )


if __name__ == "__main__":
    main()
