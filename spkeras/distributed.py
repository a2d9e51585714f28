"""Sharding an evaluation across processes or machines with ``torch.distributed``.

Launched by ``torchrun``, every rank converts the network (deterministically, so identically),
evaluates a contiguous shard of the images, and the per-rank results are merged exactly:
predictions are gathered in image order, spike and operation counts (integers held in float64)
are summed. Poisson input is indexed by global image number, so sharding changes no spike.
Backends: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from .simulate import SimulationRecord


def world(device: str) -> tuple[int, int]:
    """(rank, world size), initialising the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """The [start, stop) image range of one rank: contiguous, sizes differing by at most one."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_rows(local: torch.Tensor, n: int, size: int) -> torch.Tensor:
    """Concatenate every rank's columns (image axis last) in rank order."""
    width = -(-n // size)
    padded = torch.full((*local.shape[:-1], width), -1, dtype=local.dtype)
    padded[..., : local.shape[-1]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    columns = [p[..., : shard(n, r, size)[1] - shard(n, r, size)[0]] for r, p in enumerate(parts)]
    return torch.cat(columns, dim=-1)


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks."""
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def merge(record: SimulationRecord, n: int, size: int) -> SimulationRecord:
    """The record of the whole image set from every rank's record."""
    seconds = torch.tensor([record.seconds], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    share = record.event_conv_share
    if share is not None:
        share_sum = torch.tensor([share], dtype=torch.float64)
        dist.all_reduce(share_sum)
        share = float(share_sum) / size
    return dataclasses.replace(
        record, predictions=gather_rows(record.predictions, n, size), spikes=summed(record.spikes),
        synops=summed(record.synops), seconds=float(seconds),
        exit_steps=gather_rows(record.exit_steps, n, size) if record.exit_steps is not None else None,
        event_conv_share=share,
    )
