"""Unified-head training: epochs after the first, with and without the frozen hidden-state cache.

The backbone is frozen, so `hidden_cache_dir` stores its hidden states during the first epoch and
later epochs read them back. Once every input of a batch column is cached, the head's ST module
(`head_module.HeadTrainingModule.preprocess`) also skips the processor (image decoding, tokenization). Three ways to run the same cached epochs, timed side by
side (interleaved, medians of whole `train_head` runs, model loading included) after one epoch
has filled the cache:

- no cache: backbone forward + processor every step;
- cache, processor every step: the batches are still decoded and tokenized, the backbone is skipped;
- cache, keys only: what `train-head` does.

    python benchmarks/bench_head_cache.py [--hidden-size 64 --num-layers 4 --head-layers 3 --epochs 4]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import yaml

from tte_hf.testing import build_tiny_vlm
from tte_hf.training import train_head
from tte_hf.training.hidden_cache import HiddenStateCache
from tte_hf.training.synthetic import write_synthetic_retrieval

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "unified" / "tiny.yaml"


def recipe(vlm: Path, data: dict, out: Path, cache: Path | None, epochs: int, head_layers: int | None = None) -> dict:
    """The tiny recipe on ``data``; ``head_layers`` None keeps the recipe's."""
    cfg = yaml.safe_load(RECIPE.read_text())
    cfg["datasets"][0] |= {
        "path": str(data["data"]),
        "image_root": str(data["image_root"]),
        "query_ecr": str(data["query_ecr"]),
    }
    return cfg | {
        "reasoner_name_or_path": str(vlm),
        "head_num_layers": head_layers or cfg["head_num_layers"],
        "hidden_cache_dir": str(cache) if cache else None,
        "output_dir": str(out),
        "max_steps": -1,
        "num_train_epochs": epochs,
        "logging_steps": 1000,
        "disable_tqdm": True,
    }


def timed(cfg: dict, processor_every_step: bool = False) -> float:
    """Seconds of one `train_head` run; ``processor_every_step`` hides the cache from `preprocess`."""
    never_cached = mock.patch.object(HiddenStateCache, "__contains__", lambda self, key: False)
    start = time.perf_counter()
    with never_cached if processor_every_step else contextlib.nullcontext():
        train_head(cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--head-layers", type=int, default=3)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm = build_tiny_vlm(tmp / "vlm", hidden_size=args.hidden_size, num_layers=args.num_layers)
        data = write_synthetic_retrieval(tmp / "data", num_items=args.items)
        cache = tmp / "cache"
        train_head(recipe(vlm, data, tmp / "fill", cache, 1, args.head_layers))  # epoch 1 fills the cache

        modes = {
            "no cache": lambda: timed(recipe(vlm, data, tmp / "a", None, args.epochs, args.head_layers)),
            "cache, processor every step": lambda: timed(
                recipe(vlm, data, tmp / "b", cache, args.epochs, args.head_layers), processor_every_step=True
            ),
            "cache, keys only (train-head)": lambda: timed(
                recipe(vlm, data, tmp / "c", cache, args.epochs, args.head_layers)
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(args.repeats):  # interleaved, so drift hits every mode alike
            for name, run in modes.items():
                times[name].append(run())

    print(
        f"backbone: hidden {args.hidden_size}, {args.num_layers} layers; MHSA head {args.head_layers} layers; "
        f"{args.items} pairs with hard negatives, batch 8; {args.epochs} cached epochs; "
        f"torch threads {torch.get_num_threads()}"
    )
    base = statistics.median(times["no cache"])
    print(f"{'mode':<32}{'speed-up vs no cache':>22}")
    for name, values in times.items():
        print(f"{name:<32}{base / statistics.median(values):>21.2f}x")
    skip = statistics.median(times["cache, processor every step"]) / statistics.median(
        times["cache, keys only (train-head)"]
    )
    print(f"keys only vs processor every step (both cached): {skip:.2f}x")


if __name__ == "__main__":
    main()
