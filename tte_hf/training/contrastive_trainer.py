"""`ContrastiveTrainer`: a small `transformers.Trainer` subclass for InfoNCE with GradCache.

Why not `SentenceTransformerTrainer` + `CachedMultipleNegativesRankingLoss`: the TTE
sentence-transformers module is built on another branch, and ST's input pipeline renders its own
chat prompt, while TTE's embedder must read exactly `tte_hf.inputs.embedder_text` (prompt + ECR
trace + end token). ST's multi-dataset samplers are also proportional or round-robin, not weighted,
and do not keep one dataset per step across processes. The Trainer keeps everything else
(optimiser, schedule, accelerate/DDP, checkpoints, resume, logging).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from .grad_cache import grad_cache_step
from .losses import gather_keep_local_grad, info_nce, world_size
from .sampler import InterleavedBatchSampler


@dataclass
class ContrastiveTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the contrastive settings.

    ``temperature``: InfoNCE τ (TTE and VLM2Vec: 0.02). ``gradcache_chunk_size``: inputs per GradCache
    mini-batch (``None`` or ≥ the per-device batch: plain backprop). The contrastive batch is
    ``per_device_train_batch_size`` × processes; embeddings are gathered across processes.
    """

    temperature: float = field(default=0.02, metadata={"help": "InfoNCE temperature."})
    gradcache_chunk_size: int | None = field(default=None, metadata={"help": "GradCache mini-batch size."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the collator needs every field."})

    def __post_init__(self):
        # Before TrainingArguments builds its DeepSpeed plugin: from the same two sources it reads.
        deepspeed = bool(self.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        check_grad_cache_backend(deepspeed, self.gradcache_chunk_size, self.per_device_train_batch_size)
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.gradcache_chunk_size is not None and self.gradcache_chunk_size <= 0:
            raise ValueError(f"gradcache_chunk_size must be a positive int or null, got {self.gradcache_chunk_size}.")


def check_grad_cache_backend(deepspeed: bool | str, chunk_size: int | None, batch_size: int) -> None:
    """Refuse GradCache chunking under DeepSpeed. ``deepspeed``: a flag, or accelerate's
    ``distributed_type`` (``"DEEPSPEED"`` or a `DistributedType`).

    GradCache runs one backward per chunk; accelerate's ``DeepSpeedEngineWrapper.backward`` calls
    ``engine.step()`` inside every backward at an accumulation boundary, so a batch would take one
    optimizer step per chunk, each on a partial gradient.
    """
    if not isinstance(deepspeed, bool):
        deepspeed = str(getattr(deepspeed, "value", deepspeed)).upper() == "DEEPSPEED"
    if deepspeed and chunk_size is not None and chunk_size < batch_size:
        raise ValueError(
            f"GradCache (gradcache_chunk_size={chunk_size} < per_device_train_batch_size={batch_size}) cannot run "
            "under DeepSpeed: accelerate steps the DeepSpeed engine inside every backward, and GradCache runs one "
            "backward per chunk, so each batch would take several optimizer steps on partial gradients. Either set "
            "`gradcache_chunk_size: null` (or >= per_device_train_batch_size) in the recipe, or train without "
            "DeepSpeed: `distributed_type: MULTI_GPU` in the accelerate config (recipes/accelerate/ddp.yaml) and "
            "no `deepspeed` key in the recipe."
        )


class _EpochDataLoader(DataLoader):
    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class ContrastiveTrainer(Trainer):
    """Trains an embedding model whose ``forward(**inputs).embeddings`` are the vectors.

    ``train_dataset`` is a list of `PairExample`; ``dataset_sizes`` / ``dataset_weights`` /
    ``dataset_names`` describe how it concatenates the configured datasets (one dataset per batch).
    ``encode`` overrides how a chunk becomes embeddings (the unified head trainer uses it).
    """

    def __init__(self, *args, dataset_sizes, dataset_weights=None, dataset_names=None, encode=None, **kwargs):
        super().__init__(*args, **kwargs)
        check_grad_cache_backend(
            self.accelerator.distributed_type, self.args.gradcache_chunk_size, self.args.per_device_train_batch_size
        )
        self.dataset_sizes, self.dataset_weights, self.dataset_names = dataset_sizes, dataset_weights, dataset_names
        self._encode_override = encode

    def get_train_dataloader(self) -> DataLoader:
        # Our sampler already gives each process its slice of a one-dataset global batch, so the loader
        # is not re-sharded by accelerate; `_prepare_inputs` moves the tensors to the device.
        sampler = InterleavedBatchSampler(
            self.dataset_sizes,
            self.args.per_device_train_batch_size,
            weights=self.dataset_weights,
            world_size=self.args.world_size,
            rank=self.args.process_index,
            seed=self.args.seed,
            names=self.dataset_names,
        )
        return _EpochDataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def _encode(self, model, chunk) -> torch.Tensor:
        if self._encode_override is not None:
            return self._encode_override(model, chunk)
        with self.compute_loss_context_manager():
            return model(**chunk).embeddings

    def contrastive_loss(self, queries, positives, negatives=None) -> torch.Tensor:
        """Global InfoNCE over every process's rows, times the world size (DDP averages gradients)."""
        negatives = gather_keep_local_grad(negatives) if negatives is not None else None
        loss = info_nce(
            gather_keep_local_grad(queries), gather_keep_local_grad(positives), negatives, self.args.temperature
        )
        return loss * world_size()

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        groups = [inputs["query"], inputs["positive"]] + ([inputs["negative"]] if inputs["negative"] else [])
        scale = 1.0 / self.current_gradient_accumulation_steps

        def backward(tensor):
            self.accelerator.backward(tensor * scale)

        loss = grad_cache_step(
            partial(self._encode, model),
            groups,
            self.contrastive_loss,
            backward=backward,
            no_sync=partial(self.accelerator.no_sync, model),
        )
        return loss / world_size() * scale

    def floating_point_ops(self, inputs) -> int:
        return 0

    def _track_num_input_tokens(self, inputs) -> None:
        return None
