"""Class-conditional GAN: the gan recipe with class labels from ``DATA/<class>/*`` folders.

The generator is conditioned through a one-hot class input and class-conditional batch norm (nets/dcgan.py), the
discriminator through a projection head.
The class names (sorted sub-folder names, as the dataset labels them) are saved in the config, so a checkpoint
can be loaded and sampled by class name without the data folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config import TrainConfig
from ..errors import I2IError
from .base import register_mode
from .gan import GAN, GRID, fixed_noise


def class_folders(data: str | Path) -> list[str]:
    """Class names of a class-folder dataset: sorted sub-folders of ``DATA/train`` (when present) or ``DATA``."""
    root = Path(data).expanduser()
    folder = root / "train" if (root / "train").is_dir() else root
    if not data or not folder.is_dir():
        raise I2IError(f"cgan needs its classes: pass --data with one sub-folder per class, or --num-classes "
                       f"(data folder not found: {folder})")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise I2IError(f"no class sub-folders in {folder} (expected {folder}/<class>/*.png)")
    if any("," in name for name in names):
        raise I2IError(f"class folder names may not contain commas: {', '.join(n for n in names if ',' in n)}")
    return names


@register_mode
class CGAN(GAN):
    name = "cgan"
    data_kind = "classes"

    def num_classes(self, cfg: TrainConfig) -> Optional[int]:
        if cfg.num_classes is None:
            names = class_folders(cfg.data)
            cfg.num_classes, cfg.class_names = len(names), ",".join(names)
        if cfg.num_classes < 1:
            raise I2IError(f"num_classes must be at least 1; got {cfg.num_classes}")
        if cfg.class_names is not None and len(cfg.class_names.split(",")) != cfg.num_classes:
            raise I2IError(f"{len(cfg.class_names.split(','))} class names given for {cfg.num_classes} classes")
        return cfg.num_classes

    def upgrade_weights(self, weights):
        """A generator from before the one-hot class input (i2i before 2026-12-01) is this one with zero class
        columns in its input layer: it loads and draws exactly what it drew."""
        upgraded = False
        for tensors in weights.values():
            weight = tensors.get("G.project.weight")
            if weight is not None and weight.shape[1] == self.cfg.latent_dim:
                zeros = weight.new_zeros(len(weight), self.cfg.num_classes)
                tensors["G.project.weight"] = torch.cat([weight, zeros], 1)
                upgraded = True
        return upgraded

    def condition(self, batch):
        return {"labels": batch["label"]}

    def visuals(self, batch, nets):
        """One grid row per class; each column shares one fixed noise vector across the classes."""
        device = next(nets["G"].parameters()).device
        labels = torch.arange(self.cfg.num_classes, device=device)
        noise = fixed_noise(self.cfg.seed, GRID, self.cfg.latent_dim).to(device)
        return [nets["G"](z.expand(len(labels), -1), labels) for z in noise]
