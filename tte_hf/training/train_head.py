"""Unified TTE, stage 2: freeze the (SFT-trained) reasoner and train only an embedding head with the
embedder's contrastive loss on the backbone's hidden states.

It trains on sentence-transformers' trainer and loss, like the embedder (`contrastive_trainer`): the
model is a `SentenceTransformer` whose one module (`head_module.HeadTrainingModule`) reads the frozen
hidden states from an on-disk cache or the backbone and runs the head.

    tte-hf train-head --config recipes/unified/tiny.yaml
    accelerate launch -m tte_hf.training.train_head --config recipes/unified/qwen2vl_2b.yaml
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainer


@dataclass
class HeadArguments:
    """The head recipe's arguments (plus `contrastive_trainer.ContrastiveTrainingArguments`).

    ``reasoner_name_or_path``: the frozen backbone (a ``...ForConditionalGeneration`` checkpoint).
    ``head_type`` and ``head_*``: see `tte_hf.TTEUnifiedConfig`. ``hidden_cache_dir``: cache the
    frozen hidden states on disk, so epochs after the first skip the backbone and the processor
    (``null``: recompute); runs may share it, entries are keyed by backbone, dtype, processor and
    image content. ``save_full_model``: also write the backbone (default: the head alone,
    referring to ``reasoner_name_or_path``). ``eval_datasets``: rows the head does not train on (e.g.
    tasks or compositions held out of ``datasets``), scored by the training loss at each evaluation
    (``eval_strategy``); with ``load_best_model_at_end`` the saved head is the checkpoint that scored
    best there, by their loss unless ``metric_for_best_model`` says otherwise.
    """

    reasoner_name_or_path: str | None = field(default=None, metadata={"help": "Frozen reasoner checkpoint."})
    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "Training datasets (YAML)."})
    head_type: str = field(default="mhsa", metadata={"help": "attention_pooler | latent_attention | qformer | mhsa"})
    head_num_layers: int = field(default=8, metadata={"help": "QFormer blocks / copied MHSA layers."})
    head_num_queries: int = field(default=16, metadata={"help": "Learned queries / latents."})
    head_num_heads: int = field(default=8, metadata={"help": "Attention heads of the pooler heads."})
    embedding_dim: int | None = field(default=None, metadata={"help": "Output size (null: hidden size)."})
    dtype: str | None = field(default=None, metadata={"help": "Backbone dtype (float32, bfloat16, ...)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa | eager | flash_attention_2"})
    hidden_cache_dir: str | None = field(default=None, metadata={"help": "On-disk cache of frozen hidden states."})
    save_full_model: bool = field(default=False, metadata={"help": "Save backbone + head, not the head alone."})
    eval_datasets: list[dict[str, Any]] = field(
        default_factory=list, metadata={"help": "Held-out datasets (YAML) scored at each evaluation."}
    )


def train_head(config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None, progress=None):
    """Run the unified-head recipe ``config`` (YAML path or dict; ``argv`` = overrides). Returns the trainer.
    ``progress``: a `TrainerCallback` that replaces the Trainer's console display."""
    from .config import parse_recipe
    from .contrastive_trainer import ContrastiveTrainingArguments

    head_args, training_args = parse_recipe((HeadArguments, ContrastiveTrainingArguments), config, argv)
    return run_head_training(head_args, training_args, progress=progress)


class HeadTrainer(SentenceTransformerTrainer):
    """`SentenceTransformerTrainer` whose checkpoints hold the head alone (`TTEUnifiedModel.save_head`),
    not the frozen backbone, and whose batches may hold a column's cache keys alone."""

    def collect_features(self, inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
        # ST finds a column's features by an ``input_ids``/``pixel_values`` key, which a fully cached
        # column lacks; every column of this module carries ``cache_keys`` (in column order).
        prefixes = [name[: -len("cache_keys")] for name in inputs if name.endswith("_cache_keys")]
        features = [{k[len(p) :]: v for k, v in inputs.items() if k.startswith(p)} for p in prefixes]
        return features, inputs.get("label")

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        self.model[0].unified.save_head(output_dir)
        self.model[0].processor.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_best_model(self) -> None:
        # sentence-transformers' version logs a failed load and goes on with the last weights, which
        # would then be saved as if they were the best checkpoint's.
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def _load_from_checkpoint(self, checkpoint_path: str, model=None) -> None:
        from safetensors.torch import load_file

        from ..models.tte.modeling_tte import HEAD_WEIGHTS_NAME

        path = os.path.join(checkpoint_path, HEAD_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{checkpoint_path} has no {HEAD_WEIGHTS_NAME}; not a head checkpoint.")
        self.model[0].unified.head.load_state_dict(load_file(path))


def build_head_model(head_args, cache_dir: str | None = None):
    """The `SentenceTransformer` to train: a fresh head on the frozen reasoner, its hidden states cached
    under ``cache_dir`` (``None``: no cache)."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoProcessor

    from ..models.tte.modeling_tte import TTEUnifiedModel
    from .head_module import HeadTrainingModule
    from .hidden_cache import HiddenStateCache, cache_fingerprint

    load_kwargs = {}
    if head_args.dtype not in (None, "auto"):
        load_kwargs["dtype"] = getattr(torch, head_args.dtype)
    if head_args.attn_implementation:
        load_kwargs["attn_implementation"] = head_args.attn_implementation
    head_kwargs = {
        "head_num_layers": head_args.head_num_layers,
        "head_num_queries": head_args.head_num_queries,
        "head_num_heads": head_args.head_num_heads,
        "embedding_dim": head_args.embedding_dim,
    }
    unified = TTEUnifiedModel.from_backbone(
        head_args.reasoner_name_or_path, head_type=head_args.head_type, head_kwargs=head_kwargs, **load_kwargs
    )
    unified.head.float()  # the head trains in fp32 whatever the frozen backbone's dtype
    processor = AutoProcessor.from_pretrained(head_args.reasoner_name_or_path)
    cache = None
    if cache_dir:
        cache = HiddenStateCache(cache_dir, cache_fingerprint(unified, processor, head_args.reasoner_name_or_path))
    return SentenceTransformer(modules=[HeadTrainingModule(unified, processor, cache)])


def held_out_pairs(datasets: list[dict[str, Any]], train_names: list[str], training_args):
    """The recipe's ``eval_datasets`` as the trainer's ``eval_dataset`` (``None`` without any) and their
    instructions (see `select_on_held_out_loss`)."""
    from .pair_dataset import pairs_dataset
    from .train_embedder import load_training_pairs

    if not datasets:
        return None, {}
    examples, sizes, _, names = load_training_pairs(datasets, traces="raw")
    if clash := sorted(set(names) & set(train_names)):
        raise ValueError(
            f"eval_datasets and datasets share the name(s) {clash}: a dataset's name picks its instruction, "
            "so give the held-out ones names of their own."
        )
    select_on_held_out_loss(training_args, names)
    return pairs_dataset(examples, sizes, names, token_ids=True)


def select_on_held_out_loss(training_args, names: list[str]) -> None:
    """``load_best_model_at_end`` without a metric: select on the one held-out dataset's loss."""
    if not training_args.load_best_model_at_end or training_args.metric_for_best_model not in (None, "loss"):
        return
    if len(names) > 1:
        raise ValueError(
            f"load_best_model_at_end with {len(names)} eval_datasets: name the score to select on, e.g. "
            f"metric_for_best_model: {names[0]}_loss."
        )
    training_args.metric_for_best_model = f"{names[0]}_loss"  # lower is better, as for "loss"


def run_head_training(head_args, training_args, progress=None):
    from .config import use_progress
    from .contrastive_trainer import contrastive_loss, use_weighted_sampling
    from .pair_dataset import pairs_dataset
    from .train_embedder import load_training_pairs

    if not head_args.reasoner_name_or_path:
        raise ValueError("The recipe needs `reasoner_name_or_path` (the frozen reasoner).")
    # The head reads the reasoner's raw output (and its generated ids), not the parsed `ecr`: at query
    # time `generate_and_embed` embeds exactly the tokens the backbone generated, so training does too.
    examples, sizes, weights, names = load_training_pairs(head_args.datasets, traces="raw")  # before any model
    train_dataset, instructions = pairs_dataset(examples, sizes, names, token_ids=True)
    eval_dataset, eval_instructions = held_out_pairs(head_args.eval_datasets, names, training_args)
    use_weighted_sampling(training_args, weights, names, {**instructions, **eval_instructions})

    model = build_head_model(head_args, head_args.hidden_cache_dir)
    trainer = HeadTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=contrastive_loss(model, training_args),
    )
    use_progress(trainer, progress)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.wait_for_everyone()
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        module = model[0]
        if head_args.save_full_model:
            module.unified.save_pretrained(training_args.output_dir)
        else:
            module.unified.save_head(training_args.output_dir)
        module.processor.save_pretrained(training_args.output_dir)
        print(f"Saved the unified model's head to {training_args.output_dir}.")
    return trainer


def main(argv: list[str] | None = None) -> int:
    from .config import finish_run

    finish_run(train_head(None, list(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
