"""The processes of a data-parallel evaluation, as `accelerate launch` or `torchrun` started them.

A plain ``python`` / ``tte-hf eval`` run is one process and touches no distributed code. Under a
launcher (``WORLD_SIZE`` > 1) accelerate's `PartialState` joins the process group (NCCL on GPUs,
gloo on CPUs) and gives this process's rank and device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Processes:
    """This process's place among the evaluation's processes."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the launcher's device for this rank; None: the model's own choice

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world_size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def close(self) -> None:
        """Leave the process group once every process is done (a rank exiting with its group alive
        can abort at shutdown and fail the launch)."""
        if self.world_size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()
            PartialState().destroy_process_group()

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value``, on every process (a picklable object)."""
        if self.world_size == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def share(self, items: list) -> list:
        """This process's share of ``items``: every ``world_size``-th one from its rank on.

        Round-robin rather than accelerate's contiguous `split_between_processes`: neighbouring chunks
        cost alike (one task, one side), so interleaving balances the load across processes.
        """
        return items[self.rank :: self.world_size]


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun / accelerate launch (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def current_processes(cpu: bool = False) -> Processes:
    """This process's rank, the number of processes and the device (one process when not launched).

    ``cpu`` (or a machine without an accelerator) joins over gloo on CPUs: accelerate only forms a
    CPU process group when asked to, and would otherwise leave every process alone with all the work.
    """
    if launched_world_size() <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=cpu or not torch.accelerator.is_available())
    if state.num_processes != launched_world_size():
        raise RuntimeError(
            f"Launched with WORLD_SIZE={launched_world_size()} but accelerate formed a group of {state.num_processes} "
            f"({state.distributed_type}); check the launcher's settings."
        )
    return Processes(rank=state.process_index, world_size=state.num_processes, device=str(state.device))
