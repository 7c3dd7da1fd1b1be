"""Image-to-image generators: ResNet (CycleGAN) and U-Net (pix2pix)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ConvBlock, ResidualBlock, make_norm, uses_bias


class ResnetGenerator(nn.Module):
    """7x7 stem, ``n_down`` stride-2 convs, residual blocks, mirrored upsampling, 7x7 tanh head (Johnson et al.)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 n_down: int = 2, norm: str = "instance", padding: str = "reflect", dropout: float = 0.0):
        super().__init__()
        self.stride = 2 ** n_down
        layers: list[nn.Module] = [ConvBlock(in_channels, ngf, 7, norm=norm, padding=padding)]
        ch = ngf
        for _ in range(n_down):
            layers.append(ConvBlock(ch, ch * 2, 3, stride=2, norm=norm, padding="zeros"))
            ch *= 2
        layers += [ResidualBlock(ch, norm, padding, dropout) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers.append(ConvBlock(ch, ch // 2, 3, stride=2, norm=norm, transpose=True))
            ch //= 2
        layers.append(ConvBlock(ch, out_channels, 7, norm="none", activation="tanh", padding=padding))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _UnetLevel(nn.Module):
    """One U-Net level: down conv, the inner levels, up conv, and the skip concatenation."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, norm: str, dropout: float,
                 in_channels: int | None = None, out_channels: int | None = None):
        super().__init__()
        outermost = out_channels is not None
        innermost = sub is None
        bias = uses_bias(norm)
        cin = in_channels if in_channels is not None else outer
        down = [nn.Conv2d(cin, inner, 4, 2, 1, bias=bias)]
        if not outermost:
            down.insert(0, nn.LeakyReLU(0.2, inplace=False))
            if not innermost:
                down.append(make_norm(norm, inner))
        up_in = inner if innermost else inner * 2
        up: list[nn.Module] = [nn.ReLU(inplace=False)]
        if outermost:
            up += [nn.ConvTranspose2d(up_in, out_channels, 4, 2, 1), nn.Tanh()]
        else:
            up += [nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=bias), make_norm(norm, outer)]
            if dropout > 0:
                up.append(nn.Dropout(dropout))
        self.outermost = outermost
        self.down = nn.Sequential(*down)
        self.sub = sub if sub is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.sub(self.down(x)))
        return y if self.outermost else torch.cat([x, y], dim=1)


class UnetGenerator(nn.Module):
    """U-Net with skip connections; depth defaults to log2(size) so the bottleneck is 1x1 (pix2pix's U-Net-256)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, size: int = 256,
                 depth: int | None = None, norm: str = "batch", dropout: float = 0.5):
        super().__init__()
        depth = depth or int(math.log2(size))
        if depth < 2:
            raise ValueError(f"U-Net needs depth >= 2 (image size >= 4), got {depth}")
        self.stride = 2 ** depth
        inner = [ngf * min(2 ** k, 8) for k in range(depth)]  # ngf, 2ngf, 4ngf, 8ngf, 8ngf, ...
        level = None
        for k in reversed(range(1, depth)):
            level_dropout = dropout if 4 <= k < depth - 1 else 0.0  # pix2pix: dropout on the inner 8ngf levels
            level = _UnetLevel(inner[k - 1], inner[k], level, norm, level_dropout)
        self.model = _UnetLevel(ngf, inner[0], level, norm, 0.0, in_channels=in_channels, out_channels=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
