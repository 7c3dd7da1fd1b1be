"""torch.distributed glue: torchrun's environment, DDP wrapping, and the few collectives the loop needs.

Launch with ``torchrun --nproc_per_node N -m i2i train ...``: every rank builds the same networks (same seed),
DDP averages the gradients of the networks a phase trains, and only rank 0 writes logs, samples and checkpoints.
NCCL is used when the run is on CUDA, gloo on CPU.
"""
from __future__ import annotations

import inspect
import os
import sys
from typing import Iterable

import torch
import torch.distributed as tdist
from torch import nn

from ..errors import I2IError


# PyTorch >= 2.14 renamed ``broadcast_buffers`` (per-forward buffer sync) to ``forward_sync_buffers``.
_DDP_HAS_FORWARD_SYNC = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters


def init(device: str = "auto") -> tuple[int, int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns (rank, world_size, local_rank)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        tdist.init_process_group("nccl" if use_cuda else "gloo")
    return tdist.get_rank(), tdist.get_world_size(), local_rank


def shutdown() -> None:
    """Leave the process group (end of a torchrun run); a no-op otherwise."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def convert_sync_batchnorm(nets: nn.Module, device: torch.device) -> int:
    """Replace batch norm layers by SyncBatchNorm in place (parameters and buffers are kept); returns how many.

    Batch statistics are then computed over the global batch, as a single process would. CUDA only (PyTorch's
    SyncBatchNorm has no CPU kernel).
    """
    count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in nets.modules())
    if count and device.type != "cuda":
        raise I2IError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on CPU)")
    if count:
        nn.SyncBatchNorm.convert_sync_batchnorm(nets)  # a container root is converted in place
    return count


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around one network. Buffers are not broadcast: batch-norm running statistics stay
    per rank unless ``sync_bn`` made them SyncBatchNorm (rank 0's are the ones saved)."""
    no_buffer_sync = {"forward_sync_buffers" if _DDP_HAS_FORWARD_SYNC else "broadcast_buffers": False}
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                               **no_buffer_sync)


def all_ranks(flag: torch.Tensor) -> torch.Tensor:
    """A device bool, true where ``flag`` is true on every rank (an all-reduce on the device; no host sync)."""
    if not active():
        return flag
    value = flag.to(torch.int32)
    tdist.all_reduce(value, op=tdist.ReduceOp.MIN)
    return value.bool()


def any_true(flag: bool, device: torch.device) -> bool:
    """Whether a host flag is set on any rank (e.g. a stop signal that reached only some processes)."""
    if not active():
        return flag
    value = torch.tensor(int(flag), device=device)
    tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
    return bool(value)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors over ranks (for logging); every rank must pass the same keys."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    tdist.all_reduce(stacked)
    return dict(zip(values, (stacked / tdist.get_world_size()).unbind()))


def checksum(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """A float64 fingerprint of tensors: per tensor its sum and its sum of absolute values."""
    rows = [torch.stack([t.detach().double().sum(), t.detach().double().abs().sum()]) for t in tensors]
    return torch.stack(rows).flatten().cpu() if rows else torch.zeros(0, dtype=torch.float64)


def replica_checksums(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Every rank's :func:`checksum` as rows of a (world_size, n) tensor; rank 0 warns when replicas differ."""
    local = checksum(tensors)
    if not active():
        return local.unsqueeze(0)
    local = local.to(device)
    rows = [torch.empty_like(local) for _ in range(tdist.get_world_size())]
    tdist.all_gather(rows, local)
    table = torch.stack(rows).cpu()
    if tdist.get_rank() == 0 and not bool((table == table[0]).all()):
        print("i2i: warning: the DDP replicas' weights differ between ranks", file=sys.stderr)
    return table


def barrier() -> None:
    if active():
        tdist.barrier()
