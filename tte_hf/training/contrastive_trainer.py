"""`ContrastiveTrainer`: a small `transformers.Trainer` subclass for InfoNCE with GradCache, used by
the unified head (`train_head`); the separate embedder trains on sentence-transformers' own trainer.

Why the head does not train on `SentenceTransformerTrainer` + `CachedMultipleNegativesRankingLoss`:
the trained module is the head alone, on the hidden states of a frozen reasoner that are computed
once and read back from a content-keyed on-disk cache (`hidden_cache`). A batch whose inputs are all
cached must skip the processor and the backbone, and a GradCache chunk must carry its inputs' cache
keys; ST's collator runs the model's ``preprocess`` on every column and its GradCache slices only the
tensors of a batch, so the cache could not be consulted per chunk. The Trainer keeps everything else
(optimiser, schedule, accelerate/DDP, checkpoints, resume, logging).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from .contrastive_args import ContrastiveSettings, check_grad_cache_backend
from .grad_cache import grad_cache_step
from .losses import gather_keep_local_grad, info_nce, world_size
from .sampler import InterleavedBatchSampler


@dataclass
class ContrastiveTrainingArguments(ContrastiveSettings, TrainingArguments):
    """`TrainingArguments` plus the contrastive settings (see `ContrastiveSettings`)."""

    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the collator needs every field."})


class _EpochDataLoader(DataLoader):
    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class ContrastiveTrainer(Trainer):
    """Trains a contrastive model on pair examples with GradCache (the unified head).

    ``train_dataset`` is a list of `PairExample`; ``dataset_sizes`` / ``dataset_weights`` /
    ``dataset_names`` describe how it concatenates the configured datasets (one dataset per batch).
    ``encode(model, chunk)`` turns a collated chunk into embeddings.
    """

    def __init__(
        self,
        *args,
        dataset_sizes,
        encode: Callable[[torch.nn.Module, dict], torch.Tensor],
        dataset_weights=None,
        dataset_names=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_grad_cache_backend(
            self.accelerator.distributed_type, self.args.gradcache_chunk_size, self.args.per_device_train_batch_size
        )
        self.dataset_sizes, self.dataset_weights, self.dataset_names = dataset_sizes, dataset_weights, dataset_names
        self._encode_chunk = encode

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
        with self.compute_loss_context_manager():
            return self._encode_chunk(model, chunk)

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
