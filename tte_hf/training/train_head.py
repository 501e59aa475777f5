"""Unified TTE, stage 2: freeze the (SFT-trained) reasoner and train only an embedding head with the
embedder's contrastive loss on the backbone's hidden states.

It trains on `contrastive_trainer.ContrastiveTrainer` (GradCache, InfoNCE), not on
sentence-transformers' trainer like the embedder: the head reads hidden states cached per input on
disk, which ST's collator and GradCache cannot consult (see `contrastive_trainer`).

    tte-hf train-head --config recipes/unified/tiny.yaml
    accelerate launch -m tte_hf.training.train_head --config recipes/unified/qwen2vl_2b.yaml
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .contrastive_trainer import ContrastiveTrainer


@dataclass
class HeadArguments:
    """The head recipe's arguments (plus `ContrastiveTrainingArguments`).

    ``reasoner_name_or_path``: the frozen backbone (a ``...ForConditionalGeneration`` checkpoint).
    ``head_type`` and ``head_*``: see `tte_hf.TTEUnifiedConfig`. ``hidden_cache_dir``: cache the
    frozen hidden states on disk, so epochs after the first skip the backbone and the processor
    (``null``: recompute); runs may share it, entries are keyed by backbone, dtype, processor and
    image content. ``save_full_model``: also write the backbone (default: the head alone,
    referring to ``reasoner_name_or_path``).
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


def train_head(config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None, progress=None):
    """Run the unified-head recipe ``config`` (YAML path or dict; ``argv`` = overrides). Returns the trainer.
    ``progress``: a `TrainerCallback` that replaces the Trainer's console display."""
    from .config import parse_recipe
    from .contrastive_trainer import ContrastiveTrainingArguments

    head_args, training_args = parse_recipe((HeadArguments, ContrastiveTrainingArguments), config, argv)
    return run_head_training(head_args, training_args, progress=progress)


class HeadTrainingModule(nn.Module):
    """The module the Trainer (and DDP) wrap: ``forward(hidden_states, attention_mask, position_ids)``
    runs the head.

    The head's forward must go through the DDP wrapper, or DDP never all-reduces its gradients; the
    frozen backbone pass needs no gradients and calls ``unified`` directly.
    """

    def __init__(self, unified):
        super().__init__()
        self.unified = unified

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.unified.embed_hidden_states(hidden_states, attention_mask, position_ids)


class HeadTrainer(ContrastiveTrainer):
    """Checkpoints hold the head alone (`TTEUnifiedModel.save_head`), not the frozen backbone."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        self.accelerator.unwrap_model(self.model).unified.save_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        from ..models.tte.modeling_tte import HEAD_WEIGHTS_NAME

        path = os.path.join(resume_from_checkpoint, HEAD_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{resume_from_checkpoint} has no {HEAD_WEIGHTS_NAME}; not a head checkpoint.")
        (model or self.model).unified.head.load_state_dict(load_file(path))


class UnifiedEncoder:
    """(head module, chunk) -> embeddings: the frozen backbone's hidden states (cached when a cache is
    given), then the head through ``head_module`` (a `HeadTrainingModule`, possibly DDP-wrapped)."""

    def __init__(self, cache=None):
        self.cache = cache
        # GradCache embeds each chunk twice (without, then with autograd); the frozen backbone's
        # output is the same both times, so the first pass leaves it here for the second to take.
        self._pending: dict[str, torch.Tensor] = {}

    def hidden_states(self, head_module, chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chunk's frozen hidden states (right-padded), their mask and their RoPE positions."""
        keys = chunk["keys"]
        inputs = {k: v for k, v in chunk.items() if k != "keys"}
        first_pass = not torch.is_grad_enabled()
        rows = [self._pending.pop(k, None) for k in keys]
        if self.cache is not None:
            rows = [row if row is not None else self.cache.get(k) for row, k in zip(rows, keys)]
        if any(row is None for row in rows):
            if "attention_mask" not in inputs:  # the collator skipped the processor: all were cached
                missing = next(key for key, row in zip(keys, rows) if row is None)
                raise RuntimeError(
                    f"The hidden-state cache lost entry {missing} during training ({self.cache.directory}). "
                    "Do not clear `hidden_cache_dir` while a run uses it; rerun to rebuild the missing entries."
                )
            unified = getattr(head_module, "module", head_module).unified  # past a DDP wrapper
            with torch.no_grad():
                out = unified(**inputs)
            mask = inputs["attention_mask"].bool()
            rows = [(out.last_hidden_state[i][mask[i]], out.position_ids[:, i][:, mask[i]]) for i in range(len(keys))]
            if self.cache is not None:
                for key, row in zip(keys, rows):
                    self.cache.put(key, *row)
        if first_pass:
            self._pending.update(zip(keys, rows))
        device = inputs["attention_mask"].device if inputs else next(head_module.parameters()).device
        length = max(hidden.shape[0] for hidden, _ in rows)
        first_hidden, first_positions = rows[0]
        padded = first_hidden.new_zeros(len(rows), length, first_hidden.shape[-1])
        positions = first_positions.new_zeros(first_positions.shape[0], len(rows), length)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        for i, (hidden, row_positions) in enumerate(rows):  # right padding; the heads handle either side
            padded[i, : hidden.shape[0]] = hidden
            positions[:, i, : hidden.shape[0]] = row_positions
            mask[i, : hidden.shape[0]] = 1
        return padded.to(device), mask, positions.to(device)

    def __call__(self, head_module, chunk) -> torch.Tensor:
        hidden, mask, positions = self.hidden_states(head_module, chunk)
        return head_module(hidden, mask, positions)


def run_head_training(head_args, training_args, progress=None):
    from transformers import AutoProcessor

    from ..models.tte.modeling_tte import TTEUnifiedModel
    from .collator import ContrastiveCollator
    from .config import use_progress
    from .hidden_cache import HiddenStateCache, cache_fingerprint
    from .train_embedder import load_training_pairs

    if not head_args.reasoner_name_or_path:
        raise ValueError("The recipe needs `reasoner_name_or_path` (the frozen reasoner).")
    # The head reads the reasoner's raw output (and its generated ids), not the parsed `ecr`: at query
    # time `generate_and_embed` embeds exactly the tokens the backbone generated, so training does too.
    examples, sizes, weights, names = load_training_pairs(head_args.datasets, traces="raw")  # before any model

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
    model = TTEUnifiedModel.from_backbone(
        head_args.reasoner_name_or_path, head_type=head_args.head_type, head_kwargs=head_kwargs, **load_kwargs
    )
    model.head.float()  # the head trains in fp32 whatever the frozen backbone's dtype
    processor = AutoProcessor.from_pretrained(head_args.reasoner_name_or_path)
    cache = None
    if head_args.hidden_cache_dir:
        fingerprint = cache_fingerprint(model, processor, head_args.reasoner_name_or_path)
        cache = HiddenStateCache(head_args.hidden_cache_dir, fingerprint)
    trainer = HeadTrainer(
        model=HeadTrainingModule(model),
        args=training_args,
        train_dataset=examples,
        data_collator=ContrastiveCollator(
            processor,
            training_args.gradcache_chunk_size,
            with_keys=True,
            is_cached=cache.__contains__ if cache is not None else None,
            token_traces=True,
        ),
        processing_class=processor,
        dataset_sizes=sizes,
        dataset_weights=weights,
        dataset_names=names,
        encode=UnifiedEncoder(cache),
    )
    use_progress(trainer, progress)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.wait_for_everyone()
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model).unified
        if head_args.save_full_model:
            unwrapped.save_pretrained(training_args.output_dir)
        else:
            unwrapped.save_head(training_args.output_dir)
        processor.save_pretrained(training_args.output_dir)
        print(f"Saved the unified model's head to {training_args.output_dir}.")
    return trainer


def main(argv: list[str] | None = None) -> int:
    from .config import finish_run

    finish_run(train_head(None, list(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
