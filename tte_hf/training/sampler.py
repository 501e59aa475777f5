"""One dataset per batch, datasets interleaved by weight (VLM2Vec-V2's multi-dataset sampling)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


class InterleavedBatchSampler:
    """Yields this process's slice of global batches; every global batch comes from one dataset.

    Per epoch, dataset d contributes ``round(weight_d * full_batches_d)`` global batches (its items
    reshuffled; a weight above 1 repeats items, below 1 leaves some out), and the batches of all
    datasets are shuffled together. Every process builds the same sequence from ``seed`` and takes rows
    ``[rank * batch_size, (rank + 1) * batch_size)`` of each global batch, so the processes of one step
    always work on the same dataset (needed for in-batch negatives across processes).
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_size: int,
        weights: Sequence[float] | None = None,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ):
        self.sizes = list(dataset_sizes)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.sizes)
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.global_batch = batch_size * world_size
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.epoch = 0
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.batches_per_dataset)

    def global_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        batches = []
        for size, offset, count in zip(self.sizes, self.offsets, self.batches_per_dataset):
            order: list[int] = []
            while len(order) < count * self.global_batch:
                order.extend(rng.sample(range(size), size))
            for b in range(count):
                batches.append([offset + i for i in order[b * self.global_batch : (b + 1) * self.global_batch]])
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.batch_size
        for batch in self.global_batches():
            yield batch[start : start + self.batch_size]
