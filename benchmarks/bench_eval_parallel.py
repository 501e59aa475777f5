"""Data-parallel `tte-hf eval`: the same tasks on 1 and on 2 processes (torchrun, gloo, CPU).

Tiny random Qwen2-VL (sentence-transformers Transformer + last-token pooling), two MMEB-format tasks:
image classification (N image queries, 8 label candidates each) and text-to-image retrieval (N text
queries, 8 image candidates each). Each run is a fresh `torchrun --nproc_per_node K -m
tte_hf.evaluation` into its own folder, one thread per process; the wall time includes start-up
(imports, model load), so it is what a user waits for; a rerun into the finished folder measures that
fixed cost, and the difference is the embedding and scoring the processes share. Reports must be equal.
Run: PYTHONPATH=. python benchmarks/bench_eval_parallel.py [--queries 512] [--hidden 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from tte_hf.testing import build_tiny_vlm

ROOT = Path(__file__).resolve().parents[1]


def build_tasks(root: Path, n: int) -> Path:
    labels = [f"label {i}" for i in range(8)]
    cls, ret = [], []
    for i in range(n):
        Image.new("RGB", (56, 56), ((37 * i) % 255, (91 * i) % 255, (53 * i) % 255)).save(root / f"{i}.png")
        gold = labels[i % 8]
        cls.append({"qry_inst": "Represent the given image for classification", "qry_text": "",
                    "qry_img_path": f"{i}.png", "tgt_text": [gold] + [x for x in labels if x != gold]})  # fmt: skip
        others = [f"{(i + k) % n}.png" for k in range(1, 8)]
        ret.append({"qry_inst": "Find an image that matches the caption:", "qry_text": f"picture number {i}",
                    "tgt_inst": "Represent the given image.", "tgt_text": [""] * 8, "tgt_img_path": [f"{i}.png", *others]})  # fmt: skip
    for name, rows in (("cls", cls), ("ret", ret)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = [
        {"name": "bench-cls", "modality": "image", "meta_task": "CLS", "data_files": "cls.jsonl", "image_root": "."},
        {"name": "bench-t2i", "modality": "image", "meta_task": "RET", "data_files": "ret.jsonl", "image_root": "."},
    ]  # fmt: skip
    (root / "tasks.json").write_text(json.dumps(spec))
    return root / "tasks.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes: int, model: Path, tasks: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "tte_hf.evaluation",
           "--model", str(model), "--tasks-file", str(tasks), "--output", str(out),
           "--batch-size", "8", "--chunk-size", "8", "--device", "cpu", "--no-chart"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm = build_tiny_vlm(tmp / "vlm", hidden_size=args.hidden)
        transformer = Transformer(str(vlm))
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
        SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(tmp / "model"))
        (tmp / "data").mkdir()
        tasks = build_tasks(tmp / "data", args.queries)
        load_before = os.getloadavg()
        times: dict[int, list[float]] = {1: [], 2: []}
        fixed: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for k in (1, 2):
                times[k].append(run(k, tmp / "model", tasks, tmp / f"out-{k}-{r}"))
                # Rerun into the finished folder: start-up, model load, report, no embedding.
                fixed[k].append(run(k, tmp / "model", tasks, tmp / f"out-{k}-{r}"))
        load_after = os.getloadavg()
        reports = {k: json.loads((tmp / f"out-{k}-0" / "report.json").read_text())["tasks"] for k in (1, 2)}
    assert reports[1] == reports[2], "1 and 2 processes must give the same report"
    best = {k: min(v) for k, v in times.items()}
    work = {k: min(t - f for t, f in zip(times[k], fixed[k])) for k in times}
    print(
        f"{args.queries} queries x 8 candidates x 2 tasks, tiny Qwen2-VL (hidden {args.hidden}), CPU, 1 thread/process"
    )
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs")
    print(f"1 process    {best[1]:7.1f} s   1.00x   (runs: {', '.join(f'{t:.1f}' for t in times[1])})")
    print(f"2 processes  {best[2]:7.1f} s   {best[1] / best[2]:.2f}x faster   (runs: {', '.join(f'{t:.1f}' for t in times[2])})")  # fmt: skip
    print(f"embedding + scoring only (wall minus a rerun into the finished folder): 1 process {work[1]:.1f} s, "
          f"2 processes {work[2]:.1f} s, {work[1] / work[2]:.2f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
