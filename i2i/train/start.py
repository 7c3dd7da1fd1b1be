"""Everything checked before a run starts: the config, the model it builds, the run folder and a resumed checkpoint.

:func:`plan_start` only reads, so a refused start creates, moves and changes nothing; ``i2i train`` and
``i2i.train`` both go through it. A run folder holds one run: a new run never writes into a folder holding another.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..config import TrainConfig, make_config
from ..errors import I2IError
from ..modes.base import create_mode
from .checkpoint import (CHECKPOINT_DIR, RunLock, find_checkpoint, list_checkpoints, load_checkpoint_config,
                         load_state)

# fields that change the networks' shapes or function: a checkpoint resumes only with its own values
ARCHITECTURE = ("mode", "size", "generator", "ngf", "n_blocks", "n_down", "unit_shared_blocks", "unet_depth", "norm",
                "padding", "ndf", "d_layers", "d_scales", "d_norm", "spectral_norm", "latent_dim", "minibatch_std",
                "num_classes", "class_names")
SCHEDULE = ("steps", "epochs", "lr_decay")  # fields the LR schedule is computed from
OPTIMISER = ("lr", "beta1", "beta2")  # fields a resumed run takes from its command line, not its checkpoint
RUN_ENTRIES = ("config.yaml", "log.jsonl", CHECKPOINT_DIR)  # any of these marks a folder as holding a run


@dataclass
class RunStart:
    """A checked start: the complete config (absolute ``data`` and ``out``) and the checkpoint to resume, if any."""

    cfg: TrainConfig
    checkpoint: Optional[Path] = None
    step: int = 0  # the checkpoint's step
    nothing_to_do: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)  # for the user once the checkpoint has loaded

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)


def holds_run(folder: Path) -> bool:
    """Whether a folder holds (part of) a run: its config, log or checkpoints."""
    return any((folder / entry).exists() for entry in RUN_ENTRIES)


def run_of(checkpoint: Path) -> Optional[Path]:
    """The run folder a checkpoint folder belongs to (``RUN/checkpoints/step_X``), or None for a loose one."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else None


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint, from its folder name (``step_00001000``) or else from its state."""
    match = re.fullmatch(r"step_(\d+)", checkpoint.name)
    return int(match[1]) if match else int(load_state(checkpoint)["step"])


def say(message: str) -> None:
    """``i2i: message`` on stderr, once per run (not per torchrun process)."""
    if os.environ.get("RANK", "0") == "0":  # once per run, not per torchrun process
        print(f"i2i: {message}", file=sys.stderr)


def _built_config(cfg: TrainConfig) -> TrainConfig:
    """Build the model without memory (meta device) to check its settings fit together, e.g. the size against the
    generator's stride; returns the config with the mode's defaults filled in. The frozen perceptual encoder is not
    part of the trained model and is left out here."""
    with torch.device("meta"):
        mode = create_mode(dataclasses.replace(cfg, perceptual_weight=0.0))
    stride = max(int(getattr(mode.nets[name], "stride", 1)) for name in mode.generators)
    if cfg.size % stride:
        lower, upper = cfg.size // stride * stride, (cfg.size // stride + 1) * stride
        sizes = f"{lower} or {upper}" if lower else str(upper)
        unet = ", or a smaller --unet-depth" if mode.cfg.generator == "unet" and mode.cfg.mode == "pix2pix" else ""
        raise I2IError(f"--size {cfg.size} does not fit the {cfg.mode} generator, whose stride-2 steps need a "
                       f"multiple of {stride}: use --size {sizes}{unet}")
    return dataclasses.replace(mode.cfg, perceptual_weight=cfg.perceptual_weight)


def _changes(saved: TrainConfig, cfg: TrainConfig, names: tuple[str, ...]) -> list[str]:
    """``name old -> new`` for each field that differs (fields left at None in ``cfg`` do not count)."""
    return [f"{name} {getattr(saved, name)} -> {getattr(cfg, name)}" for name in names
            if getattr(cfg, name) is not None and getattr(cfg, name) != getattr(saved, name)]


def _check_out(cfg: TrainConfig, overwrite: bool) -> None:
    out, data = Path(cfg.out), Path(cfg.data)
    if out == data or data in out.parents:
        raise I2IError(f"--out {out} lies inside --data {data}: its sample images would become training images; "
                       "choose an --out outside the dataset")
    if overwrite and out in data.parents:
        raise I2IError(f"--overwrite would move {out} aside with the dataset {data} inside it; choose another --out")
    inside = next((f for f in (out, *out.parents) if (f / "weights.safetensors").is_file()), None)
    if inside is not None:
        raise I2IError(f"--out {out} lies inside the checkpoint folder {inside}, which is never written to; "
                       "choose another --out")


def _refuse_existing_run(out: Path) -> None:
    found = list_checkpoints(out)
    held = f"a run (latest checkpoint: {found[-1].name})" if found else "a run with no checkpoint"
    raise I2IError(f"--out {out} already holds {held}: continue it with --resume {out}, start over with "
                   "--overwrite (the old run is moved aside), or choose another --out")


def plan_start(config: TrainConfig | dict[str, Any], resume: Optional[str | Path] = None,
               overwrite: bool = False) -> RunStart:
    """Check a start and return it, or raise :class:`I2IError` in one line; reads only.

    ``config`` as a dict names only the fields to set: when resuming, the others come from the checkpoint's config
    and ``out`` defaults to the checkpoint's run folder.
    """
    checkpoint = saved = None
    if resume is not None:
        checkpoint = find_checkpoint(resume)
        saved = load_checkpoint_config(checkpoint)
    if isinstance(config, TrainConfig):
        cfg = config
    else:
        base = {**saved.to_dict(), "out": str(run_of(checkpoint) or saved.out)} if saved else {}
        cfg = make_config({**base, **config})
    if not cfg.data:
        raise I2IError("no dataset given: pass --data DIR")
    cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).expanduser().resolve()),  # saved configs work from
                              out=str(Path(cfg.out).expanduser().resolve()))       # any working directory
    if not Path(cfg.data).is_dir():
        raise I2IError(f"data folder not found: {cfg.data}")
    if cfg.load_size is not None and cfg.load_size < cfg.size:
        raise I2IError(f"--load-size {cfg.load_size} is below --size {cfg.size}: the random crop needs a larger image")
    if cfg.keep_best and not cfg.eval_every:
        raise I2IError("--keep-best needs --eval-every N (the steps between the evaluations it compares)")
    _check_out(cfg, overwrite)
    built = _built_config(cfg)
    out = Path(cfg.out)
    if checkpoint is None:
        if holds_run(out) and not overwrite:
            _refuse_existing_run(out)
        return RunStart(cfg)

    changed = _changes(saved, built, ARCHITECTURE)
    if changed:
        raise I2IError(f"cannot resume {checkpoint} with a different model ({', '.join(changed)}): a checkpoint "
                       "continues only with the model it was trained with; drop these options, or train a new run")
    step = checkpoint_step(checkpoint)
    if out == run_of(checkpoint):
        if overwrite:
            raise I2IError(f"--overwrite would move aside the run {out} that --resume continues; drop --overwrite")
        latest = checkpoint if Path(resume).expanduser().resolve() == out else find_checkpoint(out)
        if latest != checkpoint:
            raise I2IError(f"{checkpoint.name} is not the latest checkpoint of {out} ({latest.name} is): continue "
                           f"the run with --resume {out}, or branch from {checkpoint.name} into a new --out")
    elif holds_run(out) and not overwrite:
        _refuse_existing_run(out)
    if cfg.steps is not None and cfg.steps <= step:
        say(f"{checkpoint} is at step {step} and --steps is {cfg.steps}: nothing to do (pass a larger --steps to "
             "train longer)")
        return RunStart(cfg, checkpoint, step, nothing_to_do=True)
    stretched, retuned = _changes(saved, cfg, SCHEDULE), _changes(saved, cfg, OPTIMISER)
    notes = [f"note: the LR schedule is recomputed for {', '.join(stretched)}: from step {step} on it is stretched "
             "to the new length and differs from the original run's"] if stretched else []
    if retuned:
        notes.append(f"note: the optimisers continue from step {step} with {', '.join(retuned)}")
    return RunStart(cfg, checkpoint, step, notes=notes)


def move_aside(run_dir: Path) -> Optional[Path]:
    """For ``--overwrite``: rename a folder holding a run to ``RUN.replaced-DATE-TIME`` (never deleted), under its
    run lock so a folder being trained is refused. Returns the new name, or None when there was no run."""
    if not holds_run(run_dir):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    lock = RunLock(run_dir).acquire()
    try:
        os.replace(run_dir, aside)
    finally:
        lock.release()
    (aside / lock.path.name).unlink(missing_ok=True)
    say(f"--overwrite: moved the old run in {run_dir} to {aside}")
    return aside
