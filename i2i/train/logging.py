"""Run outputs: a JSONL log of scalars, TensorBoard (when installed) and PNG sample grids."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid, save_image

GRID_PADDING = 2


def column_header(names: Sequence[str], cell: int, padding: int = GRID_PADDING) -> torch.Tensor:
    """A strip (3 x h x W floats in [0, 1]) naming each column of a grid of ``cell``-pixel images: white text on
    the grid's black, one label per column, clipped to its column."""
    size = max(8, min(16, cell // 12))
    font = ImageFont.load_default(size=size)
    while size > 8 and max(font.getlength(name) for name in names) > cell - 4:
        size -= 1
        font = ImageFont.load_default(size=size)
    height = size + 6
    strip = Image.new("RGB", (padding + len(names) * (cell + padding), height))
    for column, name in enumerate(names):
        label = Image.new("RGB", (cell, height))
        x = max(0.0, (cell - font.getlength(name)) / 2)
        ImageDraw.Draw(label).text((x, 3), name, fill=(255, 255, 255), font=font)
        strip.paste(label, (padding + column * (cell + padding), 0))
    return torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255


class RunLogger:
    """Writes ``log.jsonl``, ``samples/step_XXXXXXXX.png`` and TensorBoard events into the run folder.

    ``columns`` names the sample grid's columns (drawn as a header row); ``images_per_step`` (the global batch)
    gives each log row its throughput, counted from ``start_step`` (where a resumed run starts) at creation.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, columns: Sequence[str] = (),
                 images_per_step: int = 1, start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.columns = tuple(columns)
        self.images_per_step = images_per_step
        self.last_row = (start_step, time.time())  # step and time of the previous row (or of the start)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self.writer = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Append a row: the step, ``values``, the wall time (Unix seconds) and the images per second since the
        previous row (the first row of a process counts from the logger's creation, so it includes start-up)."""
        now = time.time()
        last_step, last_time = self.last_row
        rate = (step - last_step) * self.images_per_step / max(now - last_time, 1e-9)
        self.last_row = (step, now)
        row = {"step": step, **values, "time": round(now, 3), "images_per_s": round(rate, 3)}
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in {**values, "images_per_s": rate}.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def samples(self, step: int, rows: list[torch.Tensor]) -> Path:
        """One grid row per image, one column per visual (e.g. input | output | reconstruction), under a header
        naming the columns when ``columns`` does."""
        stacked = torch.stack([r.float().cpu() for r in rows], dim=1)  # B x K x C x H x W
        grid = make_grid(stacked.flatten(0, 1), nrow=len(rows), normalize=True, value_range=(-1, 1),
                         padding=GRID_PADDING)
        if len(self.columns) == len(rows):
            grid = torch.cat([column_header(self.columns, stacked.shape[-1]), grid], dim=1)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        if self.writer is not None:
            self.writer.add_image("samples", grid, step)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
