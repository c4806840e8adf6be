"""Layer-parallel work over torch.distributed ranks: each rank owns every `world`-th layer (and window).

Under `torchrun --nproc_per_node N -m ponder convert ...` the ranks share one work directory: they capture
disjoint calibration windows into it, calibrate disjoint layers into per-layer checkpoints, wait for each other,
and then every rank loads all checkpoints, so each ends with the whole converted model (rank 0 saves it); the
greedy allocation's per-layer loss measurements are split the same way and summed. The
per-layer fits are seeded and read only their own layer's inputs, so N ranks give the tensors one process gives.
Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a single rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ponder.errors import PonderError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The rank that shows progress and writes shared outputs."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether this rank does item `index` (a layer or a window) of a layer-parallel job."""
        return index % self.size == self.rank

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over the ranks (each filled its own entries, zeros elsewhere)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        """Leave the process group (torchrun warns about groups left open at exit)."""
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()
"""One process, no torchrun."""


def world() -> World:
    """This process's rank in the torchrun job, joining its process group (gloo: CPU-only) on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    if not dist.is_available():
        raise PonderError("WORLD_SIZE is set but this PyTorch has no torch.distributed: run without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return World(dist.get_rank(), dist.get_world_size())
