"""Where a demo's models go wrong on the held-out riddles: per model, the errors split by what the
top-1 candidate got wrong (colour, object, both) and whether it is a composition seen in training,
next to whether the student's trace for that query was right.

    python benchmarks/demo_errors.py tte-demo            # a finished `tte-hf demo` folder

The query vectors are the evaluation's own (``eval/<model>/tasks/<task>/query-*.safetensors``); the
candidates are re-embedded with each model's document side. The student's traces are regenerated
greedily (what `think=True` writes). A unified head that misreads correct traces shows up as
"trace right, wrong answer" errors that its student embedder does not make.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file

TASK = "held-out-compositions"
MODELS = {  # eval folder -> saved model folder (None: not a sentence-transformers folder of the demo)
    "tte-student-always": "tte-student",
    "tte-unified-always": "tte-unified",
}


def query_vectors(folder: Path) -> torch.Tensor:
    files = sorted((folder / "tasks" / TASK).glob("query-*.safetensors"))
    return torch.cat([load_file(f)["embeddings"] for f in files])


def top1(model, queries: torch.Tensor, rows: list[dict]) -> list[str]:
    texts = sorted({t for row in rows for t in row["tgt_text"]})
    docs = torch.as_tensor(model.encode_document([{"text": t} for t in texts], batch_size=64))
    index = {t: i for i, t in enumerate(texts)}
    picks = []
    for vector, row in zip(queries, rows):
        candidates = docs[[index[t] for t in row["tgt_text"]]]
        picks.append(row["tgt_text"][int((candidates @ vector).argmax())])
    return picks


def student_traces(demo: Path, rows: list[dict]) -> list[str]:
    from PIL import Image

    from tte_hf.models.tte.reasoner_base import ReasoningRequest
    from tte_hf.models.tte.reasoner_transformers import TransformersReasoner

    reasoner = TransformersReasoner(str(demo / "models" / "student"), max_new_tokens=64, do_sample=False, batch_size=64)
    requests = [
        ReasoningRequest(
            text=r["qry_text"],
            instruction=r["qry_inst"],
            images=(Image.open(demo / "data" / r["qry_img_path"]).convert("RGB"),),
            task="vqa",
        )
        for r in rows
    ]
    return reasoner.generate(requests)


def per_answer(rows: list[dict], gold: dict, right: list[bool]) -> str:
    """``answer right/total`` per held-out composition."""
    counts = Counter((gold[row["id"]]["answer"], ok) for row, ok in zip(rows, right))
    answers = sorted({answer for answer, _ in counts})
    return ", ".join(f"{a} {counts[a, True]}/{counts[a, True] + counts[a, False]}" for a in answers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    args = parser.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    rows = [json.loads(line) for line in open(args.demo / "data" / "test.jsonl")]
    scenes = [json.loads(line) for line in open(args.demo / "data" / "scenes.jsonl")]
    trained = {(s["colour"], s["object"]) for s in scenes if s["split"] == "train"}
    gold = {s["id"]: s for s in scenes if s["split"] == "test" and "-plain-" not in s["id"]}
    traces = student_traces(args.demo, rows)
    trace_ok = [
        f"is {gold[r['id']]['colour']}." in t and f" {gold[r['id']]['object']}." in t for r, t in zip(rows, traces)
    ]
    print(
        f"student traces right: {sum(trace_ok)}/{len(rows)}; per held-out composition: {per_answer(rows, gold, trace_ok)}"
    )
    for eval_name, model_name in MODELS.items():
        model = SentenceTransformer(str(args.demo / "models" / model_name), trust_remote_code=True, device="cpu")
        picks = top1(model, query_vectors(args.demo / "eval" / eval_name), rows)
        kinds = Counter()
        for row, pick, ok in zip(rows, picks, trace_ok):
            scene = gold[row["id"]]
            _, colour, obj = pick.split(" ", 2)
            if pick == scene["answer"]:
                kinds["right" + ("" if ok else " (trace wrong)")] += 1
                continue
            what = {(True, False): "colour", (False, True): "object", (True, True): "both"}[
                (colour != scene["colour"], obj != scene["object"])
            ]
            kinds[
                f"wrong {what}, trace {'right' if ok else 'wrong'}, {'train' if (colour, obj) in trained else 'unseen'} pair"
            ] += 1
        print(f"\n{eval_name}:")
        for kind, n in sorted(kinds.items()):
            print(f"  {n:4d}  {kind}")
        hits = [pick == gold[row["id"]]["answer"] for row, pick in zip(rows, picks)]
        print(f"  per held-out composition: {per_answer(rows, gold, hits)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
