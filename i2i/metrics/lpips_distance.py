"""LPIPS (the ``lpips`` package, v0.1, AlexNet trunk): a paired perceptual distance, and sample diversity.

The linear calibration layers ship inside the ``lpips`` package. The AlexNet trunk is torchvision's ImageNet
``alexnet`` (its ``features.*`` weights), read from a named file or from torchvision's cache, like the FID weights:
downloaded only with ``I2I_ALLOW_DOWNLOAD=1``. Images are in i2i's model range [-1, 1], which is what LPIPS takes.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import I2IError
from .distribution import _cached, _read_state_dict, sha256

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = ALEXNET_URL.rsplit("/", 1)[1]
NETWORK = "lpips v0.1 (alex: torchvision AlexNet ImageNet trunk + the package's linear layers)"


@dataclass
class LPIPS:
    """A loaded LPIPS model with its backbone file for reports."""

    model: nn.Module
    device: torch.device
    weights: Path
    weights_sha256: str

    @torch.inference_mode()
    def __call__(self, images1: torch.Tensor, images2: torch.Tensor) -> torch.Tensor:
        """Per-pair distances (length B, float32) of two Bx3xHxW batches in [-1, 1]."""
        return self.model(images1.to(self.device, torch.float32), images2.to(self.device, torch.float32)).flatten()

    def describe(self) -> dict[str, Optional[str]]:
        return {"network": NETWORK, "weights": str(self.weights), "weights_sha256": self.weights_sha256}


SLICE_BOUNDS = (0, 2, 5, 8, 10, 12)  # lpips' AlexNet slices: torchvision features[0:2], [2:5], ..., [10:12]


def _alexnet_trunk(weights: Path) -> dict[str, torch.Tensor]:
    """torchvision alexnet ``features.I.*`` tensors renamed to lpips' ``net.sliceK.I.*``."""
    slice_of = {str(i): k + 1 for k in range(5) for i in range(SLICE_BOUNDS[k], SLICE_BOUNDS[k + 1])}
    state = _read_state_dict(weights, "LPIPS AlexNet weights")
    return {f"net.slice{slice_of[key.split('.')[1]]}.{key.removeprefix('features.')}": value
            for key, value in state.items() if key.startswith("features.") and key.split(".")[1] in slice_of}


_MODELS: dict[tuple[str, str], LPIPS] = {}


def lpips_model(weights: Optional[str | Path] = None, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS with the AlexNet trunk from ``weights`` (a torchvision alexnet state_dict) or torchvision's cache."""
    path = _cached(ALEXNET_FILE, ALEXNET_URL, weights, "LPIPS AlexNet weights", "--lpips-weights")
    key = (str(path.resolve()), str(device))
    if key not in _MODELS:
        import lpips
        with warnings.catch_warnings():  # lpips builds its random trunk through torchvision's deprecated argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        trunk = _alexnet_trunk(path)
        expected = {k for k in model.state_dict() if k.startswith("net.")}
        if set(trunk) != expected or any(trunk[k].shape != model.state_dict()[k].shape for k in trunk):
            raise I2IError(f"{path} is not a torchvision alexnet state_dict (the LPIPS trunk needs its features.*)")
        model.load_state_dict(trunk, strict=False)
        _MODELS[key] = LPIPS(model.eval().requires_grad_(False).to(device), torch.device(device), path, sha256(path))
    return _MODELS[key]


def diversity(model: LPIPS, images: torch.Tensor, max_images: int = 50, batch_size: int = 64) -> float:
    """Mean LPIPS over all pairs of the first ``max_images`` images (the mode-collapse papers' diversity)."""
    images = images[:max_images]
    pairs = list(itertools.combinations(range(len(images)), 2))
    if not pairs:
        raise I2IError("diversity needs at least 2 images")
    total = 0.0
    for start in range(0, len(pairs), batch_size):
        first, second = zip(*pairs[start:start + batch_size])
        total += float(model(images[list(first)], images[list(second)]).sum())
    return total / len(pairs)
