"""Sampling from noise-to-image checkpoints (gan, cgan): ``i2i.load(run).sample(16)``.

Noise is ``torch.randn(n, latent_dim)`` from a CPU ``torch.Generator`` seeded with ``seed``, so a seed gives the
same images on every device and never touches the global RNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn

from .errors import I2IError
from .modes.base import Mode
from .modes.gan import fixed_noise
from .runtime import autocast, to_uint8

Labels = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (R x D) at fractions ``t`` (S,): R x S x D."""
    a, b, t = a[:, None], b[:, None], t[None, :, None]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)[..., None]
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(1e-6)
    return torch.where(sin > 1e-6, spherical, (1 - t) * a + t * b)


class Sampler:
    """A trained generator (the EMA copy when the run kept one) that turns seeds and class labels into images.

    ``batch_size`` bounds how many images go through the generator at once.
    """

    batch_size: int = 64

    def __init__(self, mode: Mode, nets: nn.ModuleDict, device: torch.device, precision: str):
        self.mode, self.nets, self.device, self.precision = mode, nets, device, precision
        self.generator = nets["G"]
        self.latent_dim: int = self.generator.latent_dim
        self.num_classes: Optional[int] = self.generator.num_classes

    @property
    def cfg(self):
        return self.mode.cfg

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (empty for an unconditional model)."""
        if self.num_classes is None:
            return []
        names = self.cfg.class_names
        return names.split(",") if names else [str(i) for i in range(self.num_classes)]

    def class_index(self, name: Union[int, str]) -> int:
        """A label from a class name (or an index, checked)."""
        names = self.class_names
        if not names:
            raise I2IError(f"this '{self.mode.name}' model is unconditional: it takes no class")
        if isinstance(name, str) and name in names:
            return names.index(name)
        if isinstance(name, str) and name.isdigit():
            name = int(name)
        if isinstance(name, int) and 0 <= name < len(names):
            return name
        raise I2IError(f"unknown class {name!r}; valid classes: {', '.join(names)}")

    def labels(self, labels: Labels, n: int) -> Optional[torch.Tensor]:
        """The n labels used for ``labels``: one class (name or index) for all, one per image, or (None) the
        classes in turn 0, 1, ..., C-1, 0, ...; None for an unconditional model."""
        if self.num_classes is None:
            if labels is not None:
                raise I2IError(f"this '{self.mode.name}' model is unconditional: it takes no class")
            return None
        if labels is None:
            return torch.arange(n) % self.num_classes
        if isinstance(labels, (int, str)):
            return torch.full((n,), self.class_index(labels), dtype=torch.long)
        values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
        if len(values) != n:
            raise I2IError(f"{len(values)} labels given for {n} images")
        return torch.tensor([self.class_index(v) for v in values], dtype=torch.long)

    def noise(self, n: int, seed: Optional[int] = None) -> torch.Tensor:
        """n latent vectors (CPU) from ``seed``, or from a fresh random seed when None."""
        return fixed_noise(torch.Generator().seed() if seed is None else seed, n, self.latent_dim)

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images (on the device, float in [-1, 1]) for given latents and labels, in batches of ``batch_size``."""
        batch_size, images = self.batch_size, []
        for start in range(0, z.shape[0], batch_size):
            condition = {} if labels is None else {"labels": labels[start:start + batch_size].to(self.device)}
            with autocast(self.device, self.precision):
                images.append(self.generator(z[start:start + batch_size].to(self.device), **condition).float())
        return torch.cat(images).clamp(-1, 1)

    def sample(self, n: int, seed: Optional[int] = None, labels: Labels = None) -> torch.Tensor:
        """n images (n x 3 x H x W in [-1, 1]); ``labels`` as in :meth:`labels` (cgan only)."""
        if n < 1:
            raise I2IError(f"number of samples must be at least 1; got {n}")
        return self.generate(self.noise(n, seed), self.labels(labels, n))

    def class_grid(self, n: int, seed: Optional[int] = None) -> torch.Tensor:
        """n images per class, class after class (C*n images), each class drawn from the same n latents."""
        if self.num_classes is None:
            raise I2IError(f"this '{self.mode.name}' model is unconditional: it has no classes")
        if n < 1:
            raise I2IError(f"number of samples per class must be at least 1; got {n}")
        z = self.noise(n, seed).repeat(self.num_classes, 1)
        return self.generate(z, torch.arange(self.num_classes).repeat_interleave(n))

    def interpolate(self, steps: int = 8, seed: Optional[int] = None, rows: int = 1,
                    labels: Labels = None) -> torch.Tensor:
        """``rows`` spherical interpolations between two random latents, ``steps`` images each (rows*steps images,
        row after row); ``labels`` gives each row's class (cgan)."""
        if steps < 2 or rows < 1:
            raise I2IError(f"interpolation needs at least 2 steps and 1 row; got {steps} steps, {rows} rows")
        ends = self.noise(2 * rows, seed)
        z = slerp(ends[:rows], ends[rows:], torch.linspace(0, 1, steps)).flatten(0, 1)
        row_labels = self.labels(labels, rows)
        return self.generate(z, None if row_labels is None else row_labels.repeat_interleave(steps))

    @staticmethod
    def save(images: torch.Tensor, out: str | Path, nrow: Optional[int] = None) -> list[Path]:
        """Write images as one grid PNG (``out`` ends with .png; ``nrow`` per row, default square-ish) or as
        numbered PNG files in the folder ``out``. Returns the written paths."""
        from torchvision.utils import make_grid
        out = Path(out).expanduser()
        pixels = to_uint8(images.detach().cpu())
        if out.suffix.lower() == ".png":
            nrow = nrow or math.ceil(math.sqrt(len(pixels)))
            grid = make_grid(pixels, nrow=nrow, padding=2)
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid.permute(1, 2, 0).numpy()).save(out)
            return [out]
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, image in enumerate(pixels):
            paths.append(out / f"{i:05d}.png")
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
        return paths
