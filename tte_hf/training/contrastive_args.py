"""The contrastive settings both contrastive recipes share (embedder and unified head), and the
refusal of GradCache chunking under DeepSpeed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ContrastiveSettings:
    """Mixed into a `TrainingArguments` subclass (listed before it, so its ``__post_init__`` runs first).

    ``temperature``: InfoNCE τ (TTE and VLM2Vec: 0.02). ``gradcache_chunk_size``: inputs per GradCache
    mini-batch (``None`` or ≥ the per-device batch: plain backprop). The contrastive batch is
    ``per_device_train_batch_size`` × processes; embeddings are gathered across processes.
    """

    temperature: float = field(default=0.02, metadata={"help": "InfoNCE temperature."})
    gradcache_chunk_size: int | None = field(default=None, metadata={"help": "GradCache mini-batch size."})

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.gradcache_chunk_size is not None and self.gradcache_chunk_size <= 0:
            raise ValueError(f"gradcache_chunk_size must be a positive int or null, got {self.gradcache_chunk_size}.")
        # Before TrainingArguments builds its DeepSpeed plugin: from the same two sources it reads.
        deepspeed = bool(self.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        check_grad_cache_backend(deepspeed, self.gradcache_chunk_size, self.per_device_train_batch_size)
        super().__post_init__()

    @property
    def uses_grad_cache(self) -> bool:
        """Whether a batch is embedded in several GradCache mini-batches."""
        return self.gradcache_chunk_size is not None and self.gradcache_chunk_size < self.per_device_train_batch_size


def check_grad_cache_backend(deepspeed: bool | str, chunk_size: int | None, batch_size: int) -> None:
    """Refuse GradCache chunking under DeepSpeed. ``deepspeed``: a flag, or accelerate's
    ``distributed_type`` (``"DEEPSPEED"`` or a `DistributedType`).

    GradCache runs one backward per mini-batch for each optimizer step: sentence-transformers'
    `CachedMultipleNegativesRankingLoss` (both contrastive recipes) runs them inside the one loss
    backward, so each parameter's gradient arrives once per mini-batch; ZeRO-2 reduces it in a hook
    and asserts "Gradient computed twice for this partition" (sentence-transformers issue #3173).
    """
    if not isinstance(deepspeed, bool):
        deepspeed = str(getattr(deepspeed, "value", deepspeed)).upper() == "DEEPSPEED"
    if deepspeed and chunk_size is not None and chunk_size < batch_size:
        raise ValueError(
            f"GradCache (gradcache_chunk_size={chunk_size} < per_device_train_batch_size={batch_size}) cannot run "
            "under DeepSpeed: GradCache runs one backward per chunk for each optimizer step, and DeepSpeed "
            "expects one (ZeRO-2 reduces each gradient once per step). Either set `gradcache_chunk_size: null` "
            "(or >= per_device_train_batch_size) in the recipe, "
            "or train without DeepSpeed: `distributed_type: MULTI_GPU` in the accelerate config "
            "(recipes/accelerate/ddp.yaml) and no `deepspeed` key in the recipe."
        )
