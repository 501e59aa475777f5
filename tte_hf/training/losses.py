"""InfoNCE (query -> target) over embeddings gathered from every process, as VLM2Vec trains.

For the unified head's trainer; the embedder trains with sentence-transformers' ranking losses
(why the head does not: see `contrastive_trainer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, temperature: float):
    """Mean cross-entropy of ``queries @ [positives; negatives].T / temperature``, row i's target at i.

    Every other positive is an in-batch negative; ``negatives`` (hard negatives, one per row) are added
    as extra columns. Embeddings are expected L2-normalised (cosine similarity).
    """
    targets = positives if negatives is None else torch.cat([positives, negatives])
    logits = queries.float() @ targets.float().T / temperature
    labels = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, labels)


def gather_keep_local_grad(local: torch.Tensor) -> torch.Tensor:
    """All processes' rows (rank order), with autograd through this process's own rows only.

    Each process then computes the *global* loss and backpropagates it into its own rows, which gives
    it exactly d(global loss)/d(its rows); the caller scales by the world size because DDP averages.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1
