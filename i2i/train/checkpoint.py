"""Checkpoints: one folder per step, written atomically, loadable without executing code.

``RUN/checkpoints/step_00001000/`` holds ``weights.safetensors`` (networks and EMA), ``config.yaml`` (the resolved
config: enough to rebuild the model) and ``state.pt`` (optimisers, schedulers, scalers, RNG, pools; loaded with
``weights_only=True``). A folder only gets its final name once every file in it is complete and synced; folders
being written or deleted carry a dot name (``.tmp_step_*``, ``.old_step_*``), are never loaded, and leftovers of a
killed process are removed by the next save.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import TrainConfig, load_config, save_config
from ..errors import I2IError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILES = ("weights.safetensors", "config.yaml", "state.pt")
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _flatten(groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{"nets": {"G.w": t}}`` to ``{"nets.G.w": t}`` with private contiguous CPU copies (shared modules too)."""
    return {f"{group}.{key}": value.detach().to("cpu", copy=True).contiguous()
            for group, tensors in groups.items() for key, value in tensors.items()}


def split_by_prefix(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"G.w": t}`` to ``{"G": {"w": t}}``: the inverse of flattening one level of a state dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        group, _, rest = key.partition(".")
        groups.setdefault(group, {})[rest] = value
    return groups


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run (all files present), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()
                  and all((p / name).is_file() for name in CHECKPOINT_FILES))


def _remove(path: Path) -> None:
    """Delete a folder by first renaming it to a dot name, so a kill mid-delete never leaves a half step folder."""
    doomed = path.with_name(f".old_{path.name}_{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(run_dir: Path, step: int, cfg: TrainConfig, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint folder atomically and prune all but the ``keep`` most recent ones."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    for leftover in folder.glob(".*_step_*"):  # half-written or half-deleted folders of a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = folder / f".tmp_step_{step:08d}_{os.getpid()}"
    tmp.mkdir()
    save_file(_flatten(weights), str(tmp / "weights.safetensors"))
    save_config(cfg, tmp / "config.yaml")
    torch.save(state, tmp / "state.pt")
    for name in CHECKPOINT_FILES:
        _fsync_file(tmp / name)
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _remove(old)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder (its latest checkpoint) or a checkpoint folder itself."""
    path = Path(path).expanduser().resolve()
    if (path / "weights.safetensors").is_file():
        return path
    if path.name == "weights.safetensors" and path.is_file():
        return path.parent
    found = list_checkpoints(path)
    if not found:
        raise I2IError(f"no checkpoint found in {path} (expected {path}/{CHECKPOINT_DIR}/step_XXXXXXXX/)")
    return found[-1]


def load_weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Networks (``nets``) and EMA (``ema``) tensors of a checkpoint; safetensors never runs code."""
    try:
        return split_by_prefix(load_file(str(checkpoint / "weights.safetensors")))
    except (SafetensorError, OSError) as e:
        raise I2IError(f"cannot read {checkpoint / 'weights.safetensors'}: {e}") from None


def load_checkpoint_config(checkpoint: Path) -> TrainConfig:
    return load_config(checkpoint / "config.yaml")


def load_state(checkpoint: Path) -> dict[str, Any]:
    """Training state loaded with ``weights_only=True``: a pickle that would run code is refused."""
    path = checkpoint / "state.pt"
    if not path.is_file():
        raise I2IError(f"cannot resume from {checkpoint}: it has no state.pt (weights-only checkpoints can be "
                       f"loaded with i2i.load but not resumed)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise I2IError(f"refusing to load {path}: not a plain tensor/number state file ({first_line})") from None
