"""Student reasoner SFT: distil a teacher's ECR traces into a small VLM with TRL's `SFTTrainer`.

Assistant-only loss through a ``{% generation %}``-marked chat template, vision tower frozen, full
fine-tune or LoRA (TRL's `ModelConfig` ``use_peft``). ``recipes/sft_reasoner.py`` is the script.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"
ECR_TRAINING_TEMPLATE = CHAT_TEMPLATES / "qwen2_vl_ecr_training.jinja"
_QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")
#: LoRA on the language model only: the vision tower stays as it is.
LANGUAGE_MODEL_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class ReasonerArguments:
    """This package's SFT arguments (next to TRL's `ScriptArguments`, `SFTConfig`, `ModelConfig`).

    ``datasets``: list of dicts, each a `tte_hf.training.data.DatasetSpec` (``name``, ``path``,
    ``image_root``, ``task``, ``query_ecr`` / ``target_ecr``, ...). ``side``: which input the traces
    describe. ``freeze_vision_tower``: keep the vision encoder (and its merger) fixed, as the paper does.
    """

    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "Training datasets (YAML)."})
    side: str = field(default="query", metadata={"help": "query | target: which side's ECR to learn."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder."})


def build_sft_dataset(reasoner_args: ReasonerArguments):
    """A `datasets.Dataset` of TRL vision SFT rows from every configured dataset (images decoded lazily)."""
    from datasets import Dataset, Image, List

    from .data import DatasetSpec
    from .sft_data import sft_rows

    if not reasoner_args.datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, query_ecr, ...).")
    rows = []
    for index, raw in enumerate(reasoner_args.datasets):
        rows.extend(sft_rows(DatasetSpec.from_dict(raw, index), side=reasoner_args.side))
    dataset = Dataset.from_list(rows)
    return dataset.cast_column("images", List(Image()))


def export_sft_dataset(
    config: str | os.PathLike | dict[str, Any], output: str | os.PathLike, argv: list[str] | None = None
) -> Path:
    """Write the recipe's SFT rows (images embedded) as one Parquet file that TRL's own CLI loads:
    ``datasets: [{path: parquet, data_files: OUTPUT}]`` in a ``trl sft`` config."""
    from trl import ModelConfig, ScriptArguments, SFTConfig

    from .config import parse_recipe

    *_, reasoner_args = parse_recipe((ScriptArguments, SFTConfig, ModelConfig, ReasonerArguments), config, argv)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    build_sft_dataset(reasoner_args).to_parquet(str(output))
    return output


def freeze_vision(model) -> int:
    """Freeze the vision tower of a (possibly PEFT-wrapped) VLM; returns how many tensors were frozen."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    visual = getattr(getattr(base, "model", base), "visual", None)
    if visual is None:
        raise ValueError(f"{type(base).__name__} has no `model.visual`; cannot freeze its vision tower.")
    params = list(visual.parameters())
    for param in params:
        param.requires_grad_(False)
    return len(params)


def train_reasoner(
    config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None, progress=None
):
    """Run the SFT recipe ``config`` (YAML path or dict; ``argv`` = CLI overrides). Returns the trainer.
    ``progress``: a `TrainerCallback` that replaces the Trainer's console display."""
    from trl import ModelConfig, ScriptArguments, SFTConfig

    from .config import parse_recipe

    script_args, training_args, model_args, reasoner_args = parse_recipe(
        (ScriptArguments, SFTConfig, ModelConfig, ReasonerArguments), config, argv
    )
    return run_sft(script_args, training_args, model_args, reasoner_args, progress=progress)


def load_policy(model_args, freeze_vision_tower: bool, trust_remote_code: bool = False):
    """The reasoner VLM to train (vision tower frozen when asked) and TRL's PEFT config for it (LoRA on
    the language model only unless the recipe names target modules; ``None`` for a full fine-tune)."""
    import torch
    from transformers import AutoModelForImageTextToText
    from trl import get_peft_config

    if model_args.attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "attn_implementation: flash_attention_2 needs flash-attn: `pip install 'tte-hf[flash]'` "
                "(CUDA only), or set attn_implementation: sdpa."
            ) from err
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    if freeze_vision_tower:
        freeze_vision(model)
    peft_config = get_peft_config(model_args)
    if peft_config is not None and peft_config.target_modules is None:
        peft_config.target_modules = LANGUAGE_MODEL_LORA_TARGETS
    return model, peft_config


def run_sft(script_args, training_args, model_args, reasoner_args, progress=None):
    from transformers import AutoProcessor
    from trl import SFTTrainer

    from .config import use_progress

    if reasoner_args.side not in ("query", "target"):
        raise ValueError(f"side must be 'query' or 'target', got {reasoner_args.side!r}.")
    if not model_args.model_name_or_path:
        raise ValueError("The recipe needs `model_name_or_path` (the student VLM).")
    train_dataset = build_sft_dataset(reasoner_args)  # validates everything before the model loads
    model, peft_config = load_policy(model_args, reasoner_args.freeze_vision_tower, training_args.trust_remote_code)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    inference_template = processor.chat_template
    if training_args.assistant_only_loss and training_args.chat_template_path is None:
        if model.config.model_type in _QWEN_VL_TYPES:
            training_args.chat_template_path = str(ECR_TRAINING_TEMPLATE)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    if reasoner_args.freeze_vision_tower:
        freeze_vision(trainer.model)
    use_progress(trainer, progress)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        # SFTTrainer swapped in the training template; the checkpoint ships the inference one.
        training_template, processor.chat_template = processor.chat_template, inference_template
        processor.save_pretrained(training_args.output_dir)
        processor.chat_template = training_template
    trainer.accelerator.print(f"Saved the student reasoner to {training_args.output_dir}.")
    return trainer
