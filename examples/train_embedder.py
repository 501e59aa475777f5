"""Train a TTE embedder: contrastive InfoNCE (query -> target, tau 0.02) on queries that carry ECR traces.

    accelerate launch --config_file recipes/accelerate/ddp.yaml examples/train_embedder.py \
        --model Qwen/Qwen2-VL-2B-Instruct --data data/MMEB-train/ImageNet_1K.jsonl \
        --image-root data/MMEB-train/images --ecr ecr/teacher/ImageNet_1K.jsonl --output out/tte-2b

Paper / VLM2Vec-V2 settings: LoRA r16 alpha64 (merged into the saved model), in-batch and hard negatives
gathered over all GPUs, GradCache chunks of 8 for 128 rows per GPU, lr 5e-5 linear, 100 warm-up steps,
5000 steps, bf16. Any recipe key can be overridden after the flags, TRL style: ``--max_steps 1000``.
On a CPU (tiny models): ``--dtype float32 --attn_implementation sdpa --bf16 false --use_cpu true``.
Trains on sentence-transformers' ``SentenceTransformerTrainer``; the output loads with
``SentenceTransformer(path, trust_remote_code=True)`` and ``AutoModel`` (`tte_hf.TTEEmbedderModel`);
``examples/export_and_push.py`` publishes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tte_hf.training import train_embedder

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen2-VL-2B-Instruct", help="Backbone VLM.")
parser.add_argument("--data", default="data/MMEB-train/ImageNet_1K.jsonl", help="MMEB-train JSONL.")
parser.add_argument("--image-root", default="data/MMEB-train/images")
parser.add_argument("--ecr", default="ecr/teacher/ImageNet_1K.jsonl", help="Query traces (JSONL with id, ecr).")
parser.add_argument("--task", default="classification", help="ECR task the traces were written for.")
parser.add_argument("--output", default="out/tte-qwen2vl-2b-embedder")
args, overrides = parser.parse_known_args()

recipe = {
    "model_name_or_path": args.model,
    "dtype": "bfloat16",
    "attn_implementation": "flash_attention_2",
    "use_peft": True,
    "lora_r": 16,
    "lora_alpha": 64,
    "lora_dropout": 0.1,
    "merge_lora": True,
    "datasets": [
        {
            "name": Path(args.data).stem,
            "path": args.data,
            "image_root": args.image_root,
            "task": args.task,
            "query_ecr": args.ecr,
            "hard_negatives": True,
        }
    ],
    "temperature": 0.02,
    "gradcache_chunk_size": 8,
    "per_device_train_batch_size": 128,
    "learning_rate": 5.0e-5,
    "lr_scheduler_type": "linear",
    "warmup_steps": 100,
    "max_steps": 5000,
    "activation_checkpointing": True,
    "bf16": True,
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "output_dir": args.output,
}
trainer = train_embedder(recipe, overrides)
losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
print(
    f"InfoNCE loss {losses[0]:.3f} -> {losses[-1]:.3f} over {trainer.state.global_step} steps; embedder in {args.output}"
)
