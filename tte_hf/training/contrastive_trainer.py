"""What the two contrastive recipes (embedder, unified head) share on sentence-transformers' trainer:
the arguments, the loss and VLM2Vec-V2's weighted one-dataset-per-step sampling."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from sentence_transformers import SentenceTransformerTrainingArguments

from .contrastive_args import ContrastiveSettings


@dataclass
class ContrastiveTrainingArguments(ContrastiveSettings, SentenceTransformerTrainingArguments):
    """`SentenceTransformerTrainingArguments` plus ``temperature`` and ``gradcache_chunk_size`` (see
    `ContrastiveSettings`; GradCache chunking is refused under DeepSpeed before anything loads)."""


def contrastive_loss(model, training_args, normalize: bool = True):
    """`CachedMultipleNegativesRankingLoss` (GradCache mini-batches of ``gradcache_chunk_size``) or, with
    one mini-batch per batch, `MultipleNegativesRankingLoss` (one forward, the same loss and gradient);
    scale = 1/τ, embeddings (and hard negatives) gathered across processes when there are several.
    Unnormalised embeddings score by dot product."""
    from sentence_transformers import util
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    kwargs = {
        "scale": 1.0 / training_args.temperature,
        "similarity_fct": util.cos_sim if normalize else util.dot_score,
        "gather_across_devices": training_args.world_size > 1,
    }
    if training_args.uses_grad_cache:
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=training_args.gradcache_chunk_size, **kwargs)
    return MultipleNegativesRankingLoss(model, **kwargs)


def use_weighted_sampling(training_args, weights: list[float], names: list[str], instructions: dict[str, Any]) -> None:
    """One dataset per step, datasets drawn by weight (`sampler.WeightedDatasetBatchSampler`); each
    dataset's instruction is the ST prompt of all its columns (``None``: no instruction)."""
    from .sampler import WeightedDatasetBatchSampler

    training_args.multi_dataset_batch_sampler = partial(
        WeightedDatasetBatchSampler, weights=weights, world_size=training_args.world_size, names=names
    )
    training_args.prompts = instructions if any(instructions.values()) else None
