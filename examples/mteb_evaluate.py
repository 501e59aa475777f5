"""Score a TTE model on MTEB tasks (image and any-to-any ones included) with mteb's own evaluation.

    pip install 'tte-hf[mteb]'
    python examples/mteb_evaluate.py org/tte-2b CIRRIT2IRetrieval CIFAR10 [--think false] [--output results/]

Queries are reasoned about first (the model's setting); ``--think`` overrides it for every call.
"""

from __future__ import annotations

import argparse

import mteb

from tte_hf.mteb_model import TTEMtebModel

THINK = {"true": True, "false": False, "auto": "auto", "default": None}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", help="TTE sentence-transformers model: local folder or Hub repo id.")
parser.add_argument("tasks", nargs="+", help="mteb task names.")
parser.add_argument("--think", choices=list(THINK), default="default")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--output", help="mteb result cache folder (default: mteb's own).")
args = parser.parse_args()

model = TTEMtebModel(args.model, think=THINK[args.think])
cache = {"cache": mteb.ResultCache(args.output)} if args.output else {}
results = mteb.evaluate(model, mteb.get_tasks(tasks=args.tasks), encode_kwargs={"batch_size": args.batch_size}, **cache)
for task in results.task_results:
    print(f"{task.task_name}: {task.get_score():.4f}")
