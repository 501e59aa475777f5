"""Peak memory of one contrastive training step of the embedder recipe's loss: GradCache
(sentence-transformers' CachedMultipleNegativesRankingLoss) at batch 64 (mini-batch 8) vs plain batch 8.

Each configuration runs in its own process (a fresh allocator and peak counter) on the same tiny
random Qwen2-VL and the same synthetic image->text pairs with hard negatives. Reported: the peak
memory the step adds on top of the loaded model ("step peak") and the step time. On CUDA the peak
is `torch.cuda.max_memory_allocated`; on CPU the process's peak RSS above its RSS before the step
(large blocks mmapped, so RSS follows use). A "batch" of n pairs embeds 3n sequences (query,
positive, hard negative); plain backprop keeps all 3n in autograd at once, GradCache one chunk.

    python benchmarks/bench_training.py [--hidden-size 256] [--num-layers 4] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {  # name: (contrastive batch, GradCache chunk size or None)
    "plain batch 8": (8, None),
    "GradCache batch 64 / mini-batch 8": (64, 8),
    "plain batch 64": (64, None),
}


def _peak_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_bytes(device: str) -> int:
    import os

    import torch

    if device == "cuda":
        return torch.cuda.memory_allocated()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(model_dir: str, data_dir: str, batch: int, chunk: int | None, device: str, steps: int) -> dict:
    """Steps of the embedder recipe's loss (`contrastive_trainer.contrastive_loss`: sentence-transformers'
    CachedMultipleNegativesRankingLoss with ``chunk``, else MultipleNegativesRankingLoss) on one batch."""
    from types import SimpleNamespace

    import torch

    from tte_hf.training.contrastive_trainer import contrastive_loss
    from tte_hf.training.data import DatasetSpec, load_pairs
    from tte_hf.training.pair_dataset import pairs_dataset
    from tte_hf.training.train_embedder import build_embedder_model

    torch.manual_seed(0)
    dtype = "bfloat16" if device == "cuda" else None
    model_args = SimpleNamespace(model_name_or_path=model_dir, dtype=dtype, attn_implementation=None, use_peft=False)
    model = build_embedder_model(model_args, SimpleNamespace(normalize=True, freeze_vision_tower=True))
    model = model.to(device).train()
    spec = {"name": "s", "path": f"{data_dir}/train.jsonl", "image_root": data_dir, "hard_negatives": True}
    pairs = load_pairs(DatasetSpec.from_dict(spec, 0))[:batch]
    rows = pairs_dataset(pairs, [len(pairs)], ["s"])[0]["s"]
    features = [
        {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in model.preprocess(rows[column]).items()}
        for column in ("anchor", "positive", "negative")
    ]
    args = SimpleNamespace(
        temperature=0.02, gradcache_chunk_size=chunk, uses_grad_cache=chunk is not None, world_size=1
    )
    loss_fn = contrastive_loss(model, args)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _current_bytes(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss_fn([dict(f) for f in features], None).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=False)
    peak = _peak_bytes(device)
    return {"step_peak_mb": (peak - before) / 2**20, "total_peak_mb": peak / 2**20, "step_s": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=64)  # build_tiny_vlm's RoPE fits 64
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--_worker", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker is not None:
        print(json.dumps(worker(**args._worker)))
        return

    import torch

    from tte_hf.testing import build_tiny_vlm
    from tte_hf.training.synthetic import write_synthetic_retrieval

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_vlm(
            Path(tmp) / "vlm", hidden_size=args.hidden_size, num_layers=args.num_layers, max_pixels=28 * 28 * 64
        )
        data_dir = write_synthetic_retrieval(Path(tmp) / "data", num_items=64)["image_root"]
        results = {}
        for name, (batch, chunk) in CONFIGS.items():
            job = {"model_dir": str(model_dir), "data_dir": str(data_dir), "batch": batch, "chunk": chunk}
            job |= {"device": device, "steps": args.steps}
            # glibc: serve every allocation above 64 KiB by mmap and return it on free, so the CPU
            # process's peak RSS follows the peak of memory in use rather than of its free lists.
            env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(
                [sys.executable, __file__, "--_worker", json.dumps(job)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["plain batch 8"]
    print(f"device={device} hidden={args.hidden_size} layers={args.num_layers} (images 56x56, hard negatives)")
    print(f"{'configuration':36s} {'step peak MB':>13s} {'x plain 8':>10s} {'total peak MB':>14s} {'step s':>8s}")
    for name, r in results.items():
        ratio = r["step_peak_mb"] / base["step_peak_mb"]
        print(f"{name:36s} {r['step_peak_mb']:13.1f} {ratio:10.2f} {r['total_peak_mb']:14.1f} {r['step_s']:8.3f}")
    gc = results["GradCache batch 64 / mini-batch 8"]
    print(f"GradCache-64 / plain-8 step peak: {gc['step_peak_mb'] / base['step_peak_mb']:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
