"""Device, precision and RNG helpers shared by training, conversion and evaluation."""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Optional

import numpy as np
import torch

from .errors import I2IError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA (this process's local rank) when available, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise I2IError(f"device '{name}' requested but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def data_workers(requested: Optional[int], local_processes: Optional[int] = None) -> int:
    """DataLoader workers per process: as requested, else the CPUs this process may use shared by the training
    processes on this machine (``LOCAL_WORLD_SIZE`` under torchrun), at most 8."""
    if requested is not None:
        return requested
    local_processes = local_processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus // max(1, local_processes))


def default_precision(device: torch.device, precision: str | None) -> str:
    """bf16 on CUDA, fp32 on CPU, unless chosen."""
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    if precision not in DTYPES:
        raise I2IError(f"precision must be one of {', '.join(DTYPES)}; got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16; a no-op for fp32. ``cache=False`` for a step captured in a CUDA graph."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision], cache_enabled=cache)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) to floats in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] to uint8 (0..255), rounded."""
    return images.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the training step can touch, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
