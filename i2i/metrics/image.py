"""Per-image full-reference metrics on batches in the model range [-1, 1].

Every metric first maps images to [0, 1] (``(x + 1) / 2``) and returns one value per image (a length-B tensor):

* ``psnr``: 10 log10(1 / MSE) in dB with peak 1 on the [0, 1] range (the same number as peak-to-peak 2 on
  [-1, 1], so Gaussian noise of std s in [-1, 1] gives about 10 log10(4 / s^2)). Identical images have infinite
  PSNR; it is capped at ``PSNR_CAP`` dB so that averages stay finite.
* ``ssim``: mean SSIM map (kornia, 11x11 Gaussian window, sigma 1.5, data range 1, reflect padding).
* ``l1``: mean absolute difference on the [0, 1] range.
"""
from __future__ import annotations

import kornia.metrics
import torch

PSNR_CAP = 100.0


def _unit(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"expected a Bx3xHxW batch, got shape {tuple(x.shape)}")
    return (x.float() + 1.0) / 2.0


def _check(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    return _unit(output), _unit(target.to(output.device))


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (see the module docstring for the range convention and the cap)."""
    output, target = _check(output, target)
    values = torch.stack([kornia.metrics.psnr(o, t, 1.0) for o, t in zip(output, target)])
    return values.clamp(max=PSNR_CAP)


def ssim(output: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM per image (1 for identical images)."""
    output, target = _check(output, target)
    window_size = min(window_size, (min(output.shape[-2:]) - 1) // 2 * 2 + 1)
    return kornia.metrics.ssim(output, target, window_size, max_val=1.0, eps=0.0).flatten(1).mean(1)


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image on the [0, 1] range."""
    output, target = _check(output, target)
    return (output - target).abs().flatten(1).mean(1)
