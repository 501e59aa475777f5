"""Write a teacher's Embedding-Centric Reasoning (ECR) traces for an MMEB-train subset, resumably.

The teacher behind any OpenAI-compatible server (``vllm serve``, a hosted API):

    vllm serve Qwen/Qwen2.5-VL-72B-Instruct --tensor-parallel-size 8 --port 8000   # on the GPU node
    python examples/generate_ecr_with_teacher.py --base-url http://gpu-node:8000/v1 \
        --input data/MMEB-train/OK-VQA.jsonl --image-root data/MMEB-train/images --output ecr/OK-VQA.jsonl

or in this process on vLLM (``pip install 'tte-hf[vllm]'``): ``--backend vllm --tensor-parallel-size 8``.
The key, if the server wants one, is read from ``$OPENAI_API_KEY``. Re-running the same command after a
crash continues where it stopped. The JSONL rows (``id``, ``ecr``, ``thought``, ``final``, ``raw``) are
what the training recipes join to MMEB-train by id.
"""

from __future__ import annotations

import argparse
import json

from tte_hf.models.tte.ecr import parse_ecr
from tte_hf.reasoning import generate_ecr

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--backend", choices=["openai", "vllm"], default="openai")
parser.add_argument("--model", default="Qwen/Qwen2.5-VL-72B-Instruct", help="Served model name / checkpoint.")
parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="OpenAI-compatible endpoint.")
parser.add_argument("--tensor-parallel-size", type=int, default=8, help="vLLM backend only.")
parser.add_argument(
    "--input", default="data/MMEB-train/OK-VQA.jsonl", help="MMEB-train JSONL (qry, qry_image_path, ...)."
)
parser.add_argument("--image-root", default="data/MMEB-train/images")
parser.add_argument("--dataset-name", default="OK-VQA", help="MMEB-train subset: picks the ECR task prompt.")
parser.add_argument("--output", default="ecr/teacher/OK-VQA.jsonl")
parser.add_argument("--max-new-tokens", type=int, default=512)
parser.add_argument("--max-items", type=int, default=None, help="Only the first N rows (a trial run).")
args = parser.parse_args()

reasoner = {"backend": args.backend, "model": args.model, "max_new_tokens": args.max_new_tokens}
if args.backend == "openai":
    reasoner |= {"base_url": args.base_url, "max_concurrency": 64}
else:
    reasoner |= {"tensor_parallel_size": args.tensor_parallel_size}
result = generate_ecr(
    {
        "input": args.input,
        "input_format": "mmeb",
        "image_root": args.image_root,
        "dataset_name": args.dataset_name,
        "sides": ["query"],
        "output": args.output,
        "max_items": args.max_items,
        "reasoner": reasoner,
        "progress": False,
    }
)
print(f"{result.written} traces written ({result.already_done} already done) to {result.output}")
with open(result.output, encoding="utf-8") as handle:
    first = json.loads(handle.readline())
trace = parse_ecr(first["raw"])
print(f"{first['id']}: thought={trace.thought!r} final={trace.final!r}")
