"""GradCache (Gao et al. 2021): a contrastive batch of any size in the memory of one mini-batch.

1. embed every mini-batch chunk without autograd; 2. compute the loss on the cached embeddings and
its gradient w.r.t. them; 3. re-embed chunk by chunk with autograd and backpropagate the cached
gradient. Dropout masks repeat exactly because each chunk's RNG state is replayed in step 3.

For the unified head's trainer; the embedder uses sentence-transformers'
`CachedMultipleNegativesRankingLoss`, whose GradCache is tied to ST's feature dicts (see `contrastive_trainer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch


class RandomState:
    """Captures the CPU and CUDA RNG states at creation; ``with state:`` replays them."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if self.cuda else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def grad_cache_step(
    encode: Callable[[Any], torch.Tensor],
    groups: Sequence[Sequence[Any]],
    loss_fn: Callable[..., torch.Tensor],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One GradCache forward/backward; returns the (detached) loss.

    ``groups``: one list of input chunks per embedding group (e.g. queries, positives, negatives);
    ``encode(chunk)`` -> embeddings; ``loss_fn(*group_embeddings)`` -> scalar; ``backward(tensor)`` runs
    autograd (e.g. ``accelerator.backward``); ``no_sync()`` suppresses DDP's gradient all-reduce for
    every chunk but the last one.
    """
    if all(len(chunks) == 1 for chunks in groups):  # one chunk per group: plain backprop, one forward
        loss = loss_fn(*(encode(chunks[0]) for chunks in groups))
        backward(loss)
        return loss.detach()
    cached, states = [], []
    with torch.no_grad():
        for chunks in groups:
            group_states, group_reps = [], []
            for chunk in chunks:
                group_states.append(RandomState())
                group_reps.append(encode(chunk))
            states.append(group_states)
            cached.append(torch.cat(group_reps).detach().requires_grad_())
    loss = loss_fn(*cached)
    loss.backward()
    grads = [rep.grad for rep in cached]

    flat = [(g, c) for g, chunks in enumerate(groups) for c in range(len(chunks))]
    offsets = [0] * len(groups)
    for position, (g, c) in enumerate(flat):
        chunk = groups[g][c]
        last = position == len(flat) - 1
        with states[g][c].replay(), contextlib.nullcontext() if last else no_sync():
            reps = encode(chunk)
            grad = grads[g][offsets[g] : offsets[g] + reps.shape[0]]
            offsets[g] += reps.shape[0]
            backward(torch.dot(reps.flatten().float(), grad.flatten().float()))
    return loss.detach()
