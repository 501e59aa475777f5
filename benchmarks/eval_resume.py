"""What resuming `tte-hf eval` saves: a fresh run vs. reruns into the same output folder.

Tiny random Qwen2-VL (sentence-transformers Transformer + last-token pooling), one image
classification task in MMEB format (N queries, 8 label candidates each). Timings side by side:
  fresh           encode everything, score, report
  cached-embeds   score.json removed: embeddings come from the chunk files, only scoring + report
  finished        every task finished: report only
Run: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_resume.py [--queries 32]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from PIL import Image

from tte_hf.evaluation import TaskSpec, evaluate
from tte_hf.testing import build_tiny_vlm


def build_task(root: Path, n_queries: int) -> TaskSpec:
    labels = [f"label {i}" for i in range(8)]
    rows = []
    for i in range(n_queries):
        Image.new("RGB", (56, 56), ((37 * i) % 255, (91 * i) % 255, (53 * i) % 255)).save(root / f"{i}.png")
        gold = labels[i % 8]
        rows.append({"qry_inst": "Represent the given image for classification", "qry_text": "",
                     "qry_img_path": f"{i}.png", "tgt_text": [gold] + [x for x in labels if x != gold]})  # fmt: skip
    (root / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskSpec(name="bench-cls", modality="image", meta_task="CLS", data_files=str(root / "cls.jsonl"), image_root=str(root))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=32)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm = build_tiny_vlm(tmp / "vlm")
        transformer = Transformer(str(vlm))
        model = SentenceTransformer(modules=[transformer, Pooling(64, pooling_mode="lasttoken"), Normalize()], device="cpu")  # fmt: skip
        (tmp / "data").mkdir()
        task = build_task(tmp / "data", args.queries)
        out = tmp / "out"
        run = dict(batch_size=8, chunk_size=16, show_progress_bar=False)

        start = time.perf_counter()
        fresh = evaluate(model, [task], out, **run)
        t_fresh = time.perf_counter() - start
        (out / "tasks" / "bench-cls" / "score.json").unlink()
        start = time.perf_counter()
        cached = evaluate(model, [task], out, **run)
        t_cached = time.perf_counter() - start
        start = time.perf_counter()
        finished = evaluate(model, [task], out, **run)
        t_finished = time.perf_counter() - start
    assert fresh["tasks"] == cached["tasks"] == finished["tasks"]
    print(f"{args.queries} queries x 8 candidates, tiny Qwen2-VL, CPU")
    print(f"fresh run        {t_fresh:7.3f} s   1.00x")
    print(f"cached embeds    {t_cached:7.3f} s   {t_fresh / t_cached:5.1f}x faster")
    print(f"finished task    {t_finished:7.3f} s   {t_fresh / t_finished:5.1f}x faster")


if __name__ == "__main__":
    main()
