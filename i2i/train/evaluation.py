"""Evaluation during training (``--eval-every N``): score the current generator on the test split's ground truth.

Every N steps (and at the last step) rank 0 translates the test inputs with the EMA generator when there is one,
compares them with their truth (see :func:`i2i.metrics.evaluate.find_test_pairs`), logs ``eval/<metric>`` to
TensorBoard and appends a row to ``RUN/eval.csv``. With ``--keep-best METRIC`` a checkpoint is saved whenever the
metric improves and copied to ``RUN/best/`` (a complete checkpoint folder: ``i2i.load(RUN/best)`` works), together
with ``best/eval.json``. The best value is read back from there when a run resumes.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..api import Translator
from ..errors import I2IError
from ..metrics.evaluate import HIGHER_IS_BETTER, Networks, evaluate_translator, find_test_pairs, parse_metrics
from . import distributed as dist

BEST_DIR = "best"


class PeriodicEval:
    """Built by the trainer when ``eval_every`` is set; checks everything it needs up front so a run fails fast."""

    def __init__(self, trainer: Any):
        cfg = trainer.cfg
        if not trainer.mode.directions:
            raise I2IError(f"--eval-every needs a translation mode; '{cfg.mode}' generates from noise")
        self.metrics = parse_metrics(cfg.eval_metrics)
        if cfg.keep_best and cfg.keep_best not in self.metrics:
            self.metrics += (cfg.keep_best,)
        self.direction = trainer.mode.directions[0]
        self.pairs = find_test_pairs(cfg.data, self.direction)
        self.run_dir = trainer.run_dir
        self.best: Optional[float] = None
        best_json = self.run_dir / BEST_DIR / "eval.json"
        if cfg.keep_best and best_json.is_file():
            self.best = json.loads(best_json.read_text())["metrics"].get(cfg.keep_best)
        self.networks = Networks(fid_weights=cfg.fid_weights, encoder=cfg.encoder,
                                 encoder_weights=cfg.encoder_weights)
        if trainer.rank == 0:
            self.networks.check(self.metrics, trainer.device)  # a missing weights file is reported now, not mid-run

    def __call__(self, trainer: Any) -> Optional[dict[str, float]]:
        """Evaluate (rank 0), log, and keep the best checkpoint; every rank must call this at the same step."""
        key = trainer.cfg.keep_best
        values, improved = None, False
        if trainer.rank == 0:
            values = self.evaluate(trainer)
            self.log(trainer, values)
            improved = key is not None and self.improves(values[key], key)
        if key is not None:
            if dist.active():  # rank 0 decides; the others say "yes" so the minimum is rank 0's answer
                improved = bool(dist.all_ranks(torch.tensor(improved or trainer.rank != 0, device=trainer.device)))
            if improved:
                checkpoint = trainer.save()
                if trainer.rank == 0:
                    self.best = values[key]
                    self.keep(checkpoint, trainer.step, values)
        return values

    def evaluate(self, trainer: Any) -> dict[str, float]:
        nets = trainer.nets if trainer.ema is None else nn.ModuleDict({**trainer.nets, **trainer.ema})
        nets.eval()
        try:
            translator = Translator(trainer.mode, nets, self.direction, trainer.device, trainer.precision)
            result = evaluate_translator(translator, self.pairs, self.metrics, size=trainer.cfg.size,
                                         networks=self.networks)
        finally:
            trainer.nets.train()
        return result["metrics"]

    def improves(self, value: float, key: str) -> bool:
        if self.best is None:
            return True
        return value > self.best if HIGHER_IS_BETTER[key] else value < self.best

    def log(self, trainer: Any, values: dict[str, float]) -> None:
        path = self.run_dir / "eval.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", *values])
            writer.writerow([trainer.step, *(f"{v:.6g}" for v in values.values())])
        tensorboard = getattr(trainer.logger, "writer", None)
        if tensorboard is not None:
            for name, value in values.items():
                tensorboard.add_scalar(f"eval/{name}", value, trainer.step)

    def keep(self, checkpoint: Path, step: int, values: dict[str, float]) -> Path:
        """Copy ``checkpoint`` to RUN/best/: the new copy is complete before it replaces the old one."""
        best = self.run_dir / BEST_DIR
        tmp, old = self.run_dir / f".{BEST_DIR}.tmp", self.run_dir / f".{BEST_DIR}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(checkpoint, tmp)
        (tmp / "eval.json").write_text(json.dumps({"step": step, "checkpoint": checkpoint.name,
                                                    "metrics": values}, indent=2) + "\n")
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        shutil.rmtree(old, ignore_errors=True)
        return best
