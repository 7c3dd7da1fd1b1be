"""Checkpoints: one folder per step, written atomically, loadable without executing code.

``RUN/checkpoints/step_00001000/`` holds ``weights.safetensors`` (networks and EMA), ``config.yaml`` (the resolved
config: enough to rebuild the model) and ``state.pt`` (optimisers, schedulers, scalers, RNG, pools; loaded with
``weights_only=True``). A folder only gets its final name once every file in it is complete and synced; folders
being written or deleted carry a dot name (``.tmp_step_*_PID``, ``.old_step_*_PID``), are never loaded, and leftovers
of a killed process are removed by the next save (never those of a process still running).

One process trains a run at a time: :class:`RunLock` holds ``RUN/.lock`` while a trainer exists.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import re
import shutil
import socket
import sys
import weakref
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..config import TrainConfig, load_config, save_config
from ..errors import I2IError, os_error_message

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILES = ("weights.safetensors", "config.yaml", "state.pt")
LOCK_FILE = ".lock"
STATE_FIELDS = {"step": int, "optimizers": dict, "schedulers": dict, "scalers": dict, "rng": dict}  # state.pt needs
_STEP_DIR = re.compile(r"^step_(\d{8})$")
_TEMP_DIR = re.compile(r"^\.(tmp|old)_step_\d{8}_(\d+)$")  # the number is the PID of the writing process


def _pid_running(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _unlock(fd: int, path: Path, created_dir: Optional[Path]) -> None:
    """Remove the lock file, then drop the kernel lock; remove the run folder again if the lock created it and it
    stayed empty (a trainer that failed to start leaves nothing behind)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    if created_dir is not None:
        try:
            created_dir.rmdir()
        except OSError:
            pass


class RunLock:
    """One training process per run folder.

    ``RUN/.lock`` names its owner (``PID HOST``) and carries an exclusive ``flock`` that the kernel drops when the
    owner dies, however it dies. A second process finds it held and is refused, naming the owner; a lock file left
    by a dead process is taken over with a warning. Released by :meth:`release`, when the object is garbage
    collected, or at exit.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._release: Optional[weakref.finalize] = None

    @property
    def held(self) -> bool:
        return self._release is not None and self._release.alive

    def acquire(self) -> "RunLock":
        """Take the lock (creating the run folder if needed) or raise :class:`I2IError` naming its owner."""
        created_dir = None if self.run_dir.exists() else self.run_dir
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd, previous = self._lock_file()
        except OSError as e:
            raise I2IError(f"cannot lock the run folder {self.run_dir}: {e.strerror or e}") from None
        if previous:
            print(f"i2i: warning: taking over the lock of {self.run_dir} left by process {previous} (no longer "
                  "running)", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._release = weakref.finalize(self, _unlock, fd, self.path, created_dir)
        return self

    def _lock_file(self) -> tuple[int, str]:
        """Open and ``flock`` the lock file; returns its descriptor and the previous owner written in it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(os.pread(fd, 256, 0))
                os.close(fd)
                raise I2IError(f"run folder {self.run_dir} is being trained by process {owner} (lock file "
                               f"{self.path}); wait for it to finish or stop it, or train into another --out") from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd, _owner(os.pread(fd, 256, 0)) if os.fstat(fd).st_size else ""
            except FileNotFoundError:
                pass
            os.close(fd)  # its owner removed the file while we opened it: lock the new one

    def release(self) -> None:
        """Remove the lock (a no-op when not held)."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _owner(content: bytes) -> str:
    """``PID HOST`` of a lock file as "PID on HOST" (whatever was written, if it is not that)."""
    fields = content.decode(errors="replace").split()
    return f"{fields[0]} on {fields[1]}" if len(fields) == 2 and fields[0].isdigit() else " ".join(fields) or "?"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_synced(path: Path, write: Callable[[Any], Any]) -> None:
    """Create ``path``, fill it with ``write(file)`` and sync it; any write error (a full disk) raises OSError."""
    with open(path, "xb") as f:
        write(f)
        f.flush()
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


def _os_error_in(error: Optional[BaseException]) -> Optional[OSError]:
    """The OSError that ``error`` is or was raised while handling, if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def _kept(run_dir: Path) -> str:
    found = list_checkpoints(run_dir)
    return f"the last checkpoint, {found[-1].name}, is kept" if found else "no checkpoint was written"


def _check_finite(flat: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
    """Refuse to save a model that diverged: a NaN or infinite weight or buffer would never recover."""
    bad = [key for key, value in flat.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise I2IError(f"not saving step {step}: non-finite values (NaN/inf) in {len(bad)} weight/buffer tensor(s), "
                       f"e.g. {bad[0]}; training diverged and {_kept(run_dir)}. Resume from it with a lower --lr or "
                       f"--precision fp32")


def save_checkpoint(run_dir: Path, step: int, cfg: TrainConfig, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint folder atomically and prune all but the ``keep`` most recent ones.

    Raises :class:`I2IError` (and writes nothing) when a weight or buffer is not finite or the disk is full."""
    flat = _flatten(weights)
    _check_finite(flat, step, run_dir)
    folder = Path(run_dir) / CHECKPOINT_DIR
    final = folder / f"step_{step:08d}"
    tmp = folder / f".tmp_step_{step:08d}_{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.iterdir():  # half-written or half-deleted folders of a killed process (or this one)
            match = _TEMP_DIR.match(leftover.name)
            if match and (int(match[2]) == os.getpid() or not _pid_running(int(match[2]))):
                shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir()
        # safetensors' own save_file does not report a failed write (seen with ENOSPC): write its bytes ourselves
        _write_synced(tmp / "weights.safetensors", lambda f: f.write(safetensors_bytes(flat)))
        save_config(cfg, tmp / "config.yaml")
        _fsync_file(tmp / "config.yaml")
        _write_synced(tmp / "state.pt", lambda f: torch.save(state, f))
        _fsync_dir(tmp)
    except (OSError, RuntimeError) as e:  # torch.save turns a failed write into a RuntimeError raised from it
        shutil.rmtree(tmp, ignore_errors=True)
        cause = _os_error_in(e)
        if cause is None:
            raise
        raise I2IError(f"cannot save step {step}: {os_error_message(cause, folder)} ({_kept(run_dir)}); once that "
                       f"is fixed, continue with --resume {run_dir}") from None
    if final.exists():  # re-saving the same step
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _remove(old)
    return final


def checkpoint_problem(checkpoint: Path) -> Optional[str]:
    """Why a checkpoint folder is damaged (a file truncated, unreadable or not in its format), or None.

    Cheap checks: the config is parsed, the weights' header and size and the state archive's index are read; the
    tensors themselves are not."""
    weights, state = checkpoint / "weights.safetensors", checkpoint / "state.pt"
    try:
        load_checkpoint_config(checkpoint)
    except (I2IError, OSError, UnicodeDecodeError) as e:
        return f"cannot read {checkpoint / 'config.yaml'}: {e}"
    try:
        with safe_open(str(weights), "pt"):
            pass
    except (SafetensorError, OSError) as e:
        return f"cannot read {weights}: {e}"
    try:
        if state.exists():
            zipfile.ZipFile(state).close()
    except (zipfile.BadZipFile, OSError) as e:
        return f"cannot read {state}: {e}"
    return None


_reported: set[Path] = set()  # damaged checkpoints this process has warned about


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder (its newest undamaged checkpoint) or a checkpoint folder itself.

    Damaged newer checkpoints (see :func:`checkpoint_problem`) are skipped with a warning (once per process)."""
    path = Path(path).expanduser().resolve()
    if (path / "weights.safetensors").is_file():
        return path
    if path.name == "weights.safetensors" and path.is_file():
        return path.parent
    found = list_checkpoints(path)
    if not found:
        raise I2IError(f"no checkpoint found in {path} (expected {path}/{CHECKPOINT_DIR}/step_XXXXXXXX/)")
    damaged: list[tuple[Path, str]] = []
    for checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            for skipped, why in damaged:
                if skipped not in _reported:
                    _reported.add(skipped)
                    print(f"i2i: warning: skipping damaged checkpoint {skipped.name} ({why}); using "
                          f"{checkpoint.name}", file=sys.stderr)
            return checkpoint
        damaged.append((checkpoint, problem))
    older = f"; so are the {len(found) - 1} older ones" if len(found) > 1 else ""
    raise I2IError(f"no usable checkpoint in {path}: {found[-1].name} is damaged ({damaged[0][1]}){older}")


def load_weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Networks (``nets``) and EMA (``ema``) tensors of a checkpoint; safetensors never runs code."""
    try:
        return split_by_prefix(load_file(str(checkpoint / "weights.safetensors")))
    except (SafetensorError, OSError) as e:
        raise I2IError(f"cannot read {checkpoint / 'weights.safetensors'}: {e}") from None


def load_matching(module: nn.Module, tensors: dict[str, torch.Tensor], checkpoint: Path) -> None:
    """``module.load_state_dict(tensors)``, or an :class:`I2IError` naming what does not match the model that the
    checkpoint's config.yaml builds."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in tensors]
    unknown = [key for key in tensors if key not in expected]
    reshaped = [f"{key}: {tuple(tensors[key].shape)} in the file, {tuple(value.shape)} in the model"
                for key, value in expected.items() if key in tensors and tensors[key].shape != value.shape]
    problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in (
        (missing, "tensor(s) missing"), (unknown, "not in the model"), (reshaped, "of another shape")) if keys]
    if problems:
        raise I2IError(f"{checkpoint}: weights.safetensors does not match the model of its config.yaml: "
                       f"{'; '.join(problems)}; were files of different runs mixed?")
    module.load_state_dict(tensors)


def load_checkpoint_config(checkpoint: Path) -> TrainConfig:
    return load_config(checkpoint / "config.yaml")


def load_state(checkpoint: Path) -> dict[str, Any]:
    """Training state loaded with ``weights_only=True``: a pickle that would run code is refused."""
    path = checkpoint / "state.pt"
    if not path.is_file():
        raise I2IError(f"cannot resume from {checkpoint}: it has no state.pt (weights-only checkpoints can be "
                       f"loaded with i2i.load but not resumed)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise I2IError(f"refusing to load {path}: not a plain tensor/number state file ({first_line})") from None
    if not isinstance(state, dict):
        raise I2IError(f"refusing to resume from {path}: not an i2i training state (a {type(state).__name__})")
    problems = [f"'{key}' is missing" if key not in state else f"'{key}' is a {type(state[key]).__name__}, not "
                f"{kind.__name__}" for key, kind in STATE_FIELDS.items() if not _is(state.get(key), kind)]
    if problems:
        raise I2IError(f"refusing to resume from {path}: not an i2i training state ({'; '.join(problems)})")
    return state


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))
