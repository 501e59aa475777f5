"""Contrastive training of the TTE embedder on sentence-transformers' own trainer.

`SentenceTransformerTrainer` + `CachedMultipleNegativesRankingLoss` (GradCache; scale = 1/τ, in-batch
and hard negatives gathered across processes), VLM2Vec-V2's weighted one-dataset-per-step sampling
(`contrastive_trainer`, shared with the unified head), LoRA or full fine-tune. The model is the TTE ST model
(`TTETransformer` + lasttoken Pooling + Normalize) around a `TTEEmbedderModel`, so the output folder
is a sentence-transformers model with ST's model card that `AutoModel` also loads.

accelerate launch -m tte_hf.training.train_embedder --config recipes/embedder/qwen2vl_2b.yaml
tte-hf train-embedder --config recipes/embedder/tiny.yaml
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

LANGUAGE_MODEL_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class EmbedderArguments:
    """The embedder recipe's own arguments (model and LoRA settings come from TRL's `ModelConfig`).

    ``datasets``: list of `tte_hf.training.data.DatasetSpec` dicts (``name``, ``path``, ``image_root``,
    ``weight``, ``task``, ``instruction``, ``query_ecr``, ``target_ecr``, ``hard_negatives``,
    ``max_examples``). ``merge_lora``: save a merged full model (loads with `TTEEmbedderModel` /
    `AutoModel`) instead of the adapter alone.
    """

    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "Training datasets (YAML)."})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise embeddings."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision encoder fixed."})
    merge_lora: bool = field(default=True, metadata={"help": "Merge LoRA into the saved model."})


def load_training_pairs(datasets: list[dict[str, Any]], traces: str = "ecr"):
    """Validate and load every dataset: (examples, sizes, weights, names). ``traces``: see `load_pairs`."""
    from .data import DatasetSpec, load_pairs

    if not datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, ...).")
    specs = [DatasetSpec.from_dict(raw, i) for i, raw in enumerate(datasets)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Dataset names must be unique, got {names}.")
    examples, sizes = [], []
    for spec in specs:
        pairs = load_pairs(spec, traces)
        examples.extend(pairs)
        sizes.append(len(pairs))
    return examples, sizes, [s.weight for s in specs], names


def train_embedder(
    config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None, progress=None
):
    """Run the embedder recipe ``config`` (YAML path or dict; ``argv`` = CLI overrides). Returns the
    `SentenceTransformerTrainer`; ``trainer.model`` is the trained `SentenceTransformer`.
    ``progress``: a `TrainerCallback` that replaces the Trainer's console display."""
    from trl import ModelConfig

    from .config import parse_recipe
    from .contrastive_trainer import ContrastiveTrainingArguments

    model_args, embedder_args, training_args = parse_recipe(
        (ModelConfig, EmbedderArguments, ContrastiveTrainingArguments), config, argv
    )
    return run_embedder_training(model_args, embedder_args, training_args, progress=progress)


def _lora_config(model_args):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or LANGUAGE_MODEL_LORA_TARGETS,
        use_dora=model_args.use_dora,
        use_rslora=model_args.use_rslora,
        init_lora_weights="gaussian",
        bias="none",
    )


def build_embedder_model(model_args, embedder_args):
    """The TTE sentence-transformers model around a `TTEEmbedderModel` of ``model_name_or_path``,
    vision tower frozen and LoRA added as the recipe says.

    LoRA goes through `peft.get_peft_model` rather than ST's ``add_adapter`` (transformers' adapter
    injection): the recipe saves a merged model by default, which needs PEFT's ``merge_and_unload``.
    """
    import torch

    from ..models.tte.configuration_tte import TTEEmbedderConfig
    from ..models.tte.modeling_tte import TTEEmbedderModel
    from ..sentence_transformers import build_sentence_transformer

    model_kwargs = {}
    if model_args.dtype not in (None, "auto"):
        model_kwargs["dtype"] = getattr(torch, model_args.dtype)
    if model_args.attn_implementation:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    # Traces come with the data (query_ecr / target_ecr): the model itself reasons about nothing.
    model = build_sentence_transformer(model_args.model_name_or_path, model_kwargs=model_kwargs)
    module = model[0]
    backbone = module.model
    # The backbone ST loaded becomes a TTEEmbedderModel in place (no second load): saved, the folder's
    # config.json is the TTE one, so AutoModel and SentenceTransformer both read the same weights.
    config = TTEEmbedderConfig(backbone_config=backbone.config, normalize=embedder_args.normalize)
    module.model = TTEEmbedderModel(config, backbone=backbone)
    if not embedder_args.normalize:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(modules=[module, model[1]])
    if embedder_args.freeze_vision_tower:
        backbone.visual.requires_grad_(False)
    if model_args.use_peft:
        from peft import get_peft_model

        module.model = get_peft_model(module.model, _lora_config(model_args))
    return model


def run_embedder_training(model_args, embedder_args, training_args, progress=None):
    from .config import use_progress
    from .contrastive_trainer import contrastive_loss, use_weighted_sampling
    from .embedder_trainer import EmbedderTrainer
    from .pair_dataset import pairs_dataset

    if not model_args.model_name_or_path:
        raise ValueError("The recipe needs `model_name_or_path` (the backbone VLM).")
    # Validates every file, row and trace before any model load.
    examples, sizes, weights, names = load_training_pairs(embedder_args.datasets)
    train_dataset, instructions = pairs_dataset(examples, sizes, names)
    use_weighted_sampling(training_args, weights, names, instructions)
    if training_args.activation_checkpointing and not training_args.activation_checkpointing_kwargs:
        # Non-reentrant: works with frozen inputs (LoRA) and with GradCache's second forward.
        training_args.activation_checkpointing_kwargs = {"use_reentrant": False}

    model = build_embedder_model(model_args, embedder_args)
    trainer = EmbedderTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        loss=contrastive_loss(model, training_args, embedder_args.normalize),
    )
    use_progress(trainer, progress)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_embedder(trainer, training_args.output_dir, merge_lora=embedder_args.merge_lora)
    return trainer


def save_embedder(trainer, output_dir: str, merge_lora: bool = True) -> None:
    """Save the trained ST model (main process only): ``SentenceTransformer(output_dir,
    trust_remote_code=True)`` and ``AutoModel.from_pretrained(output_dir)`` load it. With LoRA and
    ``merge_lora``, the merged model goes to ``output_dir`` and the adapter to ``output_dir/adapter``;
    without ``merge_lora``, ``output_dir`` holds the adapter alone (load it with `peft.PeftModel` on
    ``TTEEmbedderModel.from_backbone``)."""
    trainer.accelerator.wait_for_everyone()
    trainer.save_state()  # trainer_state.json: the loss log next to the model
    if not trainer.accelerator.is_main_process:
        return
    model = trainer.model
    module = model[0]
    if hasattr(module.model, "merge_and_unload") and merge_lora:
        module.model.save_pretrained(os.path.join(output_dir, "adapter"))  # to resume or re-merge later
        module.model = module.model.merge_and_unload()  # the trainer's model is merged from here on
    model.save(output_dir)
    print(f"Saved the embedder to {output_dir}.")


def main(argv: list[str] | None = None) -> int:
    from .config import finish_run

    argv = list(sys.argv[1:] if argv is None else argv)
    finish_run(train_embedder(None, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
