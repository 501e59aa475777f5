"""One dataset per batch, datasets interleaved by weight (VLM2Vec-V2's multi-dataset sampling).

`WeightedGlobalBatches` plans the global batches; `WeightedDatasetBatchSampler` hands them to
sentence-transformers' trainer (the embedder's and the unified head's).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler


class WeightedGlobalBatches:
    """The global batches of one epoch; every global batch comes from one dataset.

    Per epoch, dataset d contributes ``round(weight_d * full_batches_d)`` global batches (its items
    reshuffled; a weight above 1 repeats items, below 1 leaves some out), and the batches of all
    datasets are shuffled together. The sequence depends only on the sizes, weights, batch, ``seed``
    and epoch, so every process builds the same one. Indices are into the datasets concatenated.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_size: int,
        weights: Sequence[float] | None = None,
        world_size: int = 1,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ):
        self.sizes = list(dataset_sizes)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.sizes)
        if len(self.weights) != len(self.sizes):
            raise ValueError(f"{len(self.weights)} weights for {len(self.sizes)} datasets.")
        self.batch_size, self.world_size, self.seed = batch_size, world_size, seed
        self.global_batch = batch_size * world_size
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        names = list(names) if names is not None else [str(i) for i in range(len(self.sizes))]
        self.batches_per_dataset = [
            max(0, round(w * (n // self.global_batch))) for n, w in zip(self.sizes, self.weights)
        ]
        for name, size, count in zip(names, self.sizes, self.batches_per_dataset):
            if size < self.global_batch:
                raise ValueError(
                    f"Dataset {name!r} has {size} items, fewer than one global batch "
                    f"({batch_size} per device x {world_size} processes = {self.global_batch}); lower the batch size."
                )
            if count == 0:
                raise ValueError(f"Dataset {name!r} gets no batch with its weight; raise its weight.")

    def __len__(self) -> int:
        return sum(self.batches_per_dataset)

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        batches = []
        for size, offset, count in zip(self.sizes, self.offsets, self.batches_per_dataset):
            order: list[int] = []
            while len(order) < count * self.global_batch:
                order.extend(rng.sample(range(size), size))
            for b in range(count):
                batches.append([offset + i for i in order[b * self.global_batch : (b + 1) * self.global_batch]])
        rng.shuffle(batches)
        return batches


class WeightedDatasetBatchSampler(MultiDatasetDefaultBatchSampler):
    """sentence-transformers' multi-dataset batch sampler with VLM2Vec-V2's weighting: one dataset per
    step, datasets drawn by weight (see `WeightedGlobalBatches`).

    It yields every process's part of a global batch in a row: accelerate's batch-sampler shard
    hands batch ``i`` to process ``i % world_size``, so all processes of a step get the same
    dataset. Give it to the trainer as ``multi_dataset_batch_sampler=functools.partial(
    WeightedDatasetBatchSampler, weights=..., world_size=...)``; the trainer passes the
    concatenated datasets, their batch samplers (only their batch size is used) and the seed.
    """

    def __init__(
        self,
        dataset,
        batch_samplers,
        generator=None,
        seed: int = 0,
        *,
        weights: Sequence[float] | None = None,
        world_size: int = 1,
        names: Sequence[str] | None = None,
    ):
        super().__init__(dataset, batch_samplers, generator=generator, seed=seed)
        sizes = [len(part) for part in dataset.datasets]
        self.plan = WeightedGlobalBatches(sizes, self.batch_size, weights, world_size, seed or 0, names)

    def __len__(self) -> int:
        return len(self.plan) * self.plan.world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.plan.batches(self.epoch):
            for start in range(0, len(batch), self.batch_size):
                yield batch[start : start + self.batch_size]
