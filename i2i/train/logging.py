"""Run outputs: a JSONL log of scalars, TensorBoard (when installed) and PNG sample grids."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image


class RunLogger:
    """Writes ``log.jsonl``, ``samples/step_XXXXXXXX.png`` and TensorBoard events into the run folder."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self.writer = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def samples(self, step: int, rows: list[torch.Tensor]) -> Path:
        """One grid row per image, one column per visual (e.g. input | translation | reconstruction)."""
        stacked = torch.stack([r.float().cpu() for r in rows], dim=1)  # B x K x C x H x W
        grid = make_grid(stacked.flatten(0, 1), nrow=len(rows), normalize=True, value_range=(-1, 1), padding=2)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        if self.writer is not None:
            self.writer.add_image("samples", grid, step)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
