"""DCGAN-style networks (Radford et al. 2016) for the noise-to-image modes, optionally class-conditional.

The generator maps a latent vector to a 4x4 map, then doubles it with stride-2 transposed convolutions up to the
image size. Given ``num_classes`` the class enters twice: as a one-hot vector concatenated to the latent vector (the
conditional GAN of Mirza & Osindero 2014), which carries the class from the first step, and through conditional norms
(a parameter-free norm followed by a per-class gain and bias, as in de Vries et al. 2017 / BigGAN), which start as
plain norms and refine it. (A class signal as strong as the noise from the start, e.g. an N(0, 1) embedding of the
latent's size, made the generator drop the noise: one image per class on scikit-learn's digits.) The discriminator
halves the image down to 4x4 and ends in a linear logit; given ``num_classes`` it adds the projection term
``<embed(y), h>`` (Miyato & Koyama 2018).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import I2IError
from .layers import MinibatchStdDev, apply_spectral_norm, make_norm, uses_bias

MIN_SIZE, MAX_SIZE = 32, 256


def resolution_steps(size: int) -> int:
    """Number of 2x steps between 4x4 and ``size``; sizes must be powers of two from 32 to 256."""
    if not (MIN_SIZE <= size <= MAX_SIZE and size & (size - 1) == 0):
        raise I2IError(f"gan/cgan image size must be a power of two from {MIN_SIZE} to {MAX_SIZE}; got {size}")
    return size.bit_length() - 3


class ClassNorm(nn.Module):
    """A norm by name; with ``num_classes`` it is followed by a per-class gain (1 + g_y) and bias b_y."""

    def __init__(self, norm: str, channels: int, num_classes: Optional[int] = None):
        super().__init__()
        conditional = num_classes is not None
        self.norm = nn.BatchNorm2d(channels, affine=False) if conditional and norm == "batch" \
            else make_norm(norm, channels)
        self.gain = nn.Embedding(num_classes, channels) if conditional else None
        self.bias = nn.Embedding(num_classes, channels) if conditional else None
        if conditional:
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm(x)
        if self.gain is None:
            return x
        gain = 1.0 + self.gain(labels)[:, :, None, None]
        return (x * gain + self.bias(labels)[:, :, None, None]).to(x.dtype)


class DCGANGenerator(nn.Module):
    """Latent vector (B x latent_dim) and optional class labels (B,) to B x 3 x size x size images in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, size: int = 64, ngf: int = 64, num_classes: Optional[int] = None,
                 norm: str = "batch"):
        super().__init__()
        steps = resolution_steps(size)
        widths = [ngf * min(8, 2 ** (steps - 1 - i)) for i in range(steps)]  # at 4x4, 8x8, ..., size/2
        self.latent_dim, self.size, self.num_classes = latent_dim, size, num_classes
        bias = uses_bias(norm)
        self.project = nn.Linear(latent_dim + (num_classes or 0), widths[0] * 16, bias=bias)  # [z, one-hot(y)]
        self.norms = nn.ModuleList(ClassNorm(norm, w, num_classes) for w in widths)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
                                 for cin, cout in zip(widths, widths[1:]))
        self.to_rgb = nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (labels is None) != (self.num_classes is None):
            raise ValueError("class labels are required by a conditional generator and refused by an unconditional one")
        if labels is not None:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], 1)
        x = self.project(z).view(z.shape[0], -1, 4, 4)
        for i, norm in enumerate(self.norms):
            if i:
                x = self.ups[i - 1](x)
            x = F.relu(norm(x, labels))
        return torch.tanh(self.to_rgb(x))


class DCGANDiscriminator(nn.Module):
    """Image (and optional labels) to one logit per image: stride-2 4x4 convs down to 4x4, then a linear head.

    ``spectral_norm`` wraps every weight (and replaces ``norm``); ``minibatch_std`` appends the ProGAN batch
    standard-deviation map at 4x4 followed by a 3x3 conv; ``num_classes`` adds the projection term.
    """

    def __init__(self, size: int = 64, ndf: int = 64, num_classes: Optional[int] = None, norm: str = "layer",
                 spectral_norm: bool = False, minibatch_std: bool = False):
        super().__init__()
        steps = resolution_steps(size)
        widths = [ndf * min(8, 2 ** i) for i in range(steps)]  # at size/2, ..., 4x4
        norm = "none" if spectral_norm else norm
        bias = uses_bias(norm) or spectral_norm
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), make_norm(norm, cout), nn.LeakyReLU(0.2, inplace=True)]
        if minibatch_std:
            layers += [MinibatchStdDev(), nn.Conv2d(widths[-1] + 1, widths[-1], 3, 1, 1),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        features = widths[-1] * 16
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes is not None else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (labels is None) != (self.embed is None):
            raise ValueError("class labels are required by a conditional discriminator and refused by an "
                             "unconditional one")
        h = self.features(x).flatten(1)
        logit = self.head(h)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(dim=1, keepdim=True)
        return logit
