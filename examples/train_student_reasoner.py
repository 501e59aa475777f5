"""Distil a teacher's ECR traces into a small student reasoner (TTE-s) with TRL's `SFTTrainer`.

    accelerate launch --config_file recipes/accelerate/zero1.yaml examples/train_student_reasoner.py \
        --model Qwen/Qwen2-VL-2B-Instruct --data data/MMEB-train/OK-VQA.jsonl \
        --image-root data/MMEB-train/images --ecr ecr/teacher/OK-VQA.jsonl --output out/tte-s-2b

The traces come from ``examples/generate_ecr_with_teacher.py`` (joined to the rows by id). Paper settings:
full fine-tune with the vision tower frozen, loss on the trace and its end token only, lr 2e-5, batch 128
(4 per GPU x 4 accumulation x 8 GPUs), bf16, flash-attention. Any recipe key can be overridden after the
flags, TRL style: ``--learning_rate 1e-5 --use_peft true --lora_r 16``. On a CPU (tiny models):
``--dtype float32 --attn_implementation sdpa --bf16 false --use_cpu true --max_steps 4``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tte_hf.training import train_reasoner

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen2-VL-2B-Instruct", help="The student VLM.")
parser.add_argument("--data", default="data/MMEB-train/OK-VQA.jsonl", help="MMEB-train JSONL.")
parser.add_argument("--image-root", default="data/MMEB-train/images")
parser.add_argument("--ecr", default="ecr/teacher/OK-VQA.jsonl", help="The teacher's traces (JSONL with id, ecr).")
parser.add_argument("--task", default="vqa", help="ECR task prompt: vqa, classification, retrieval, grounding, ...")
parser.add_argument("--output", default="out/tte-s-qwen2vl-2b-reasoner")
args, overrides = parser.parse_known_args()

recipe = {
    "model_name_or_path": args.model,
    "dtype": "bfloat16",
    "attn_implementation": "flash_attention_2",
    "datasets": [
        {
            "name": Path(args.data).stem,
            "path": args.data,
            "image_root": args.image_root,
            "task": args.task,
            "query_ecr": args.ecr,
        }
    ],
    "freeze_vision_tower": True,
    "assistant_only_loss": True,  # loss on the trace + <|im_end|> only
    "max_length": None,  # never cut image tokens or the end token
    "learning_rate": 2.0e-5,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "activation_checkpointing": True,
    "bf16": True,
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "output_dir": args.output,
}
trainer = train_reasoner(recipe, overrides)
losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
print(f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} over {trainer.state.global_step} steps; student in {args.output}")
