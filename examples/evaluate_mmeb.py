"""Score a model on MMEB (V1 or V2) from a local mirror: Hit@1 / NDCG@5 per task, means per meta-task and modality.

    python examples/evaluate_mmeb.py --model org/tte-2b --benchmark mmeb-v2 --tasks ImageNet-1K ViDoRe_arxivqa \
        --data-root /data/hf-mirror --image-root /data/MMEB-V2 --output results/

``--data-root`` holds the Hub datasets as ``<repo id>/`` folders (e.g. ``ziyjiang/MMEB_Test_Instruct``),
``--image-root`` MMEB's media (``image-tasks/``, ``video-tasks/``); without ``--data-root`` the datasets
come from the Hub. Query traces are written by the model's own reasoner, or read from ``--ecr`` files
(``generate-ecr`` output with ids ``<task>/<row id>``). Rerunning into ``--output`` resumes. Any
sentence-transformers model can be scored as a baseline; several GPUs: ``accelerate launch`` this script.
"""

from __future__ import annotations

import argparse

from sentence_transformers import SentenceTransformer

from tte_hf.evaluation import evaluate

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="org/tte-2b", help="sentence-transformers model: Hub repo id or folder.")
parser.add_argument("--benchmark", default="mmeb-v2", help="mmeb-v1, mmeb-v2, mmeb-v2-image|video|visdoc.")
parser.add_argument("--tasks", nargs="+", default=["ImageNet-1K", "ViDoRe_arxivqa"], help="Task names (default: two).")
parser.add_argument("--data-root", help="Local mirror of the Hub datasets.")
parser.add_argument("--image-root", default="data/MMEB-V2", help="MMEB's media folder.")
parser.add_argument("--ecr", nargs="*", default=[], help="Precomputed query traces (JSONL: id, ecr).")
parser.add_argument("--output", default="results/tte-2b")
parser.add_argument("--device", default=None, help="cpu, cuda, ...")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--max-new-tokens", type=int, help="Cap on each query's trace (default: the model's setting).")
args = parser.parse_args()

model = SentenceTransformer(args.model, trust_remote_code=True, device=args.device)
if args.max_new_tokens:
    model[0].max_new_tokens = args.max_new_tokens  # a saved module setting, so it keys the cached results too
report = evaluate(
    model,
    args.benchmark,
    args.output,
    tasks=args.tasks,
    batch_size=args.batch_size,
    data_root=args.data_root,
    image_root=args.image_root,
    ecr_files=args.ecr,
    model_id=args.model,
    show_progress_bar=False,
)
for name, task in report["tasks"].items():
    print(f"{name}: {task['metric']} {task['main_score']:.1f} ({task['num_queries']} queries)")
print(f"{report['benchmark']} overall {report['overall']:.1f}; reports in {args.output} (report.json, report.md)")
