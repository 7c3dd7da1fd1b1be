"""Discriminators: PatchGAN and its multi-scale stack."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import apply_spectral_norm, make_norm, uses_bias


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs then two stride-1 ones; n_layers=3 gives 70x70 receptive fields."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        bias = uses_bias(norm) or spectral_norm
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=bias),
                       make_norm("none" if spectral_norm else norm, out), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        if spectral_norm:
            apply_spectral_norm(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs on the input downsampled by 1, 2, 4, ...; returns one logit map per scale."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False, num_scales: int = 3):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, ndf, n_layers, norm, spectral_norm)
                                    for _ in range(num_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d(x))
        return outputs


def make_discriminator(in_channels: int, ndf: int, n_layers: int, norm: str, spectral_norm: bool,
                       num_scales: int) -> nn.Module:
    """A single PatchGAN when ``num_scales`` is 1, else a multi-scale stack."""
    if num_scales <= 1:
        return PatchDiscriminator(in_channels, ndf, n_layers, norm, spectral_norm)
    return MultiScaleDiscriminator(in_channels, ndf, n_layers, norm, spectral_norm, num_scales)
