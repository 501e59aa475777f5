"""The unified TTE model (TTE-u): freeze a student reasoner, train only an embedding head on its hidden
states, then let the one model write the ECR trace and embed from the hidden states of that same pass.

    accelerate launch --config_file recipes/accelerate/ddp.yaml examples/unified_model.py \
        --reasoner out/tte-s-qwen2vl-2b-reasoner --data data/MMEB-train/ImageNet_1K.jsonl \
        --image-root data/MMEB-train/images --ecr ecr/student/ImageNet_1K.jsonl --output out/tte-u-2b \
        --images cat.jpg --documents "a tabby cat" "a golden retriever"

The reasoner comes from ``examples/train_student_reasoner.py``; the traces should be its own (``generate-ecr``
with the transformers backend records their token ids), since the head learns to embed exactly what the
reasoner generates. Head: the MHSA design (the backbone's last 8 layers, copied). Recipe keys can be
overridden after the flags (``--max_steps 500``); on a CPU: ``--dtype float32 --attn_implementation sdpa
--bf16 false --use_cpu true``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.training import train_head

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--reasoner", default="out/tte-s-qwen2vl-2b-reasoner", help="The SFT-trained student (frozen).")
parser.add_argument("--data", default="data/MMEB-train/ImageNet_1K.jsonl", help="MMEB-train JSONL.")
parser.add_argument("--image-root", default="data/MMEB-train/images")
parser.add_argument("--ecr", default="ecr/student/ImageNet_1K.jsonl", help="The reasoner's own traces (id, raw).")
parser.add_argument("--task", default="classification", help="ECR task prompt of the data and the queries.")
parser.add_argument("--head-num-layers", type=int, default=8, help="Backbone layers the MHSA head copies.")
parser.add_argument("--output", default="out/tte-u-qwen2vl-2b")
parser.add_argument("--question", default="What is shown in this image?", help="Query text (with each --images).")
parser.add_argument("--images", nargs="*", default=[], help="Query images.")
parser.add_argument("--documents", nargs="+", default=["a tabby cat", "a golden retriever"])
parser.add_argument("--max-new-tokens", type=int, default=256, help="Cap on each generated trace.")
parser.add_argument("--results", help="Write vectors, scores and traces to this JSON file.")
args, overrides = parser.parse_known_args()

recipe = {
    "reasoner_name_or_path": args.reasoner,
    "dtype": "bfloat16",
    "attn_implementation": "flash_attention_2",
    "head_type": "mhsa",
    "head_num_layers": args.head_num_layers,
    "datasets": [
        {
            "name": Path(args.data).stem,
            "path": args.data,
            "image_root": args.image_root,
            "task": args.task,
            "query_ecr": args.ecr,
        }
    ],
    "temperature": 0.02,
    "per_device_train_batch_size": 128,
    "gradcache_chunk_size": 32,
    "learning_rate": 1.0e-4,
    "lr_scheduler_type": "linear",
    "warmup_steps": 100,
    "max_steps": 5000,
    "bf16": True,
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "output_dir": args.output,
}
trainer = train_head(recipe, overrides)  # saves the head alone; its config names the reasoner
losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
print(f"Head loss {losses[0]:.3f} -> {losses[-1]:.3f} over {trainer.state.global_step} steps; model in {args.output}")

# One model: generate_and_embed under the hood, the traces kept for inspection.
model = build_sentence_transformer(args.output, reasoning_task=args.task, max_new_tokens=args.max_new_tokens)
queries = [{"text": args.question, "image": image} for image in args.images] or [args.question]
q = model.encode_query(queries, convert_to_tensor=True)
traces = model.get_reasoning(queries)  # cached by encode_query: no second generation
d = model.encode_document(args.documents, convert_to_tensor=True)
scores = model.similarity(q, d)
for query, trace, row in zip(args.images or [args.question], traces, scores.tolist()):
    print(f"{query}: ECR {trace!r}; scores {[round(s, 3) for s in row]}")
if args.results:
    with open(args.results, "w", encoding="utf-8") as handle:
        json.dump({"query": q.tolist(), "document": d.tolist(), "scores": scores.tolist(), "reasoning": traces}, handle)
