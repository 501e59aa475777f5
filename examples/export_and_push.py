"""Publish a trained TTE checkpoint: a drop-in Hub repo (safetensors, remote code, sentence-transformers
files, model card with eval results), optionally a vLLM pooling export, then one upload to the Hub.

    huggingface-cli login   # or HF_TOKEN
    python examples/export_and_push.py --checkpoint out/tte-qwen2vl-2b-embedder --output hub/tte-2b \
        --repo-id my-org/tte-2b --reasoner my-org/tte-reasoner-2b --eval-report results/tte-2b/report.json

The reasoner is referenced by repo id (the one ``examples/train_student_reasoner.py`` trained, pushed
the same way with ``--checkpoint out/tte-s-...``); a unified model reasons with itself (no ``--reasoner``).
The repo then loads with ``SentenceTransformer(repo_id, trust_remote_code=True)`` and ``AutoModel`` alike.
``--vllm`` also writes ``<output>-vllm`` for ``vllm serve ... --runner pooling``; ``--no-push`` stops
after the export.
"""

from __future__ import annotations

import argparse

from tte_hf.hub import CardInfo, export_model, export_vllm, push_folder

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--checkpoint", default="out/tte-qwen2vl-2b-embedder", help="Trained embedder / unified / reasoner."
)
parser.add_argument("--output", default="hub/tte-2b", help="Export folder (must not exist or be empty).")
parser.add_argument("--repo-id", default="my-org/tte-2b")
parser.add_argument("--reasoner", help="Reasoner repo id the embedder calls at query time (not for unified models).")
parser.add_argument("--base-model", default="Qwen/Qwen2-VL-2B-Instruct")
parser.add_argument("--dataset", nargs="*", default=["TIGER-Lab/MMEB-train"])
parser.add_argument("--eval-report", help="report.json of examples/evaluate_mmeb.py: becomes the card's model-index.")
parser.add_argument("--vllm", action="store_true", help="Also export a plain Qwen2-VL for vLLM's pooling runner.")
parser.add_argument("--private", action="store_true")
parser.add_argument("--no-push", action="store_true")
args = parser.parse_args()

card = CardInfo(repo_id=args.repo_id, base_model=args.base_model, datasets=args.dataset, eval_report=args.eval_report)
folder = export_model(args.checkpoint, args.output, reasoner=args.reasoner, card=card)
print(f"Exported {args.checkpoint} to {folder}: {sorted(p.name for p in folder.iterdir())}")
if args.vllm:
    print(f"vLLM export: {export_vllm(args.checkpoint, f'{args.output}-vllm')}")
if not args.no_push:
    commit = push_folder(folder, args.repo_id, private=args.private or None)
    print(f"Pushed to {commit.commit_url}")
