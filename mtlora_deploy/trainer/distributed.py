"""torchrun / DistributedDataParallel plumbing: the process group, rank-0 writes, metric all-reduce."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks this rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(tensors: list[torch.Tensor], context: DistContext) -> list[torch.Tensor]:
    """Sum tensors across ranks (metric states are sums by design); no-op on one process."""
    if not context.enabled:
        return tensors
    out = []
    for tensor in tensors:
        work = tensor.to(context.device if context.device.type == "cuda" else "cpu").clone()
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        out.append(work.to(tensor.device))
    return out


def broadcast_buffers(module: torch.nn.Module, context: DistContext) -> None:
    """Make every rank's buffers (BatchNorm running stats) rank 0's, as DDP does before each forward.

    Called before validation and checkpoints so replicas are identical there, not one local update apart.
    """
    if context.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
