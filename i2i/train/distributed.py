"""torch.distributed glue: torchrun's environment, DDP wrapping, and the few collectives the loop needs."""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import nn


def init() -> tuple[int, int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns (rank, world_size, local_rank)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        tdist.init_process_group("nccl" if use_cuda else "gloo")
    return tdist.get_rank(), tdist.get_world_size(), local_rank


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around one network (batch norm layers synchronised across ranks)."""
    net = nn.SyncBatchNorm.convert_sync_batchnorm(net) if device.type == "cuda" else net
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                               broadcast_buffers=False)


def all_true(flag: torch.Tensor) -> bool:
    """Whether a boolean tensor is true on every rank (one host sync)."""
    if active():
        flag = flag.to(torch.int32)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MIN)
    return bool(flag)


def barrier() -> None:
    if active():
        tdist.barrier()
