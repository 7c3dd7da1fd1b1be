"""Building blocks shared by every network: norm/activation/padding factories, conv and residual blocks, init."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class InstanceNorm2d(nn.Module):
    """Instance norm in two interchangeable forms: written with ``var_mean`` (keeps channels-last, fuses with its
    neighbours under torch.compile) or, when ``fused``, torch's single ``F.instance_norm`` kernel (fewer eager kernel
    launches; its output is put back in channels-last when the input was). Both keep statistics in fp32 and return
    the input's dtype; see :func:`use_fused_instance_norm`."""

    def __init__(self, channels: int, affine: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.fused = False
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            y = F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
            return y.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else y
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
        y = ((x.float() - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1).to(y.dtype) + self.bias.view(1, -1, 1, 1).to(y.dtype)
        return y


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def use_fused_instance_norm(module: nn.Module, enabled: bool) -> int:
    """Switch every :class:`InstanceNorm2d` in ``module`` to torch's fused kernel (eager mode) or back to the
    ``var_mean`` form (torch.compile); returns how many it found."""
    norms = [m for m in module.modules() if isinstance(m, InstanceNorm2d)]
    for norm in norms:
        norm.fused = enabled
    return len(norms)


class LayerNorm2d(nn.Module):
    """Layer norm over (C, H, W) per sample with a per-channel affine, as used by MUNIT/UNIT decoders."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x.float(), dim=(1, 2, 3), keepdim=True, unbiased=False)
        y = ((x.float() - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        return y * self.weight.view(1, -1, 1, 1).to(y.dtype) + self.bias.view(1, -1, 1, 1).to(y.dtype)


NORMS = {
    "instance": lambda c: InstanceNorm2d(c),
    "instance_affine": lambda c: InstanceNorm2d(c, affine=True),
    "batch": lambda c: nn.BatchNorm2d(c),
    "layer": lambda c: LayerNorm2d(c),
    "none": lambda c: nn.Identity(),
}
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": lambda: nn.Tanh(),
    "silu": lambda: nn.SiLU(inplace=True),
    "none": lambda: nn.Identity(),
}
PADDINGS = ("reflect", "replicate", "zeros")


def _choice(table, name: str, kind: str):
    if name not in table:
        raise ValueError(f"unknown {kind} '{name}'; choose one of: {', '.join(table)}")
    return table[name]


def make_norm(name: str, channels: int) -> nn.Module:
    """A normalisation layer by name: instance, instance_affine, batch, layer or none."""
    return _choice(NORMS, name, "norm")(channels)


def make_activation(name: str) -> nn.Module:
    """An activation by name: relu, lrelu, tanh, silu or none."""
    return _choice(ACTIVATIONS, name, "activation")()


def uses_bias(norm: str) -> bool:
    """Convolutions before a norm with its own shift (or mean removal) need no bias."""
    return norm in ("none", "instance", "layer")


class ConvBlock(nn.Sequential):
    """Padding, convolution, norm, activation: the unit every backbone is built from."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: str = "instance",
                 activation: str = "relu", padding: str = "reflect", transpose: bool = False):
        pad = kernel // 2
        layers: list[nn.Module] = []
        if transpose:
            layers.append(nn.ConvTranspose2d(cin, cout, kernel, stride, padding=pad, output_padding=stride - 1,
                                             bias=uses_bias(norm)))
        else:
            if padding not in PADDINGS:
                raise ValueError(f"unknown padding '{padding}'; choose one of: {', '.join(PADDINGS)}")
            if padding != "zeros" and pad:
                layers.append(nn.ReflectionPad2d(pad) if padding == "reflect" else nn.ReplicationPad2d(pad))
                pad = 0
            layers.append(nn.Conv2d(cin, cout, kernel, stride, padding=pad, bias=uses_bias(norm)))
        layers += [make_norm(norm, cout), make_activation(activation)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv blocks with an identity shortcut (CycleGAN/UNIT style), optional dropout between them."""

    def __init__(self, channels: int, norm: str = "instance", padding: str = "reflect", dropout: float = 0.0,
                 activation: str = "relu"):
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm, activation=activation, padding=padding),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            ConvBlock(channels, channels, 3, norm=norm, activation="none", padding=padding),
        )

        self.grad_checkpoint = False  # recompute the body in backward instead of storing its activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpoint and torch.is_grad_enabled():
            return x + checkpoint(self.body, x, use_reentrant=False)  # dropout masks are replayed exactly
        return x + self.body(x)


def set_grad_checkpoint(module: nn.Module, enabled: bool) -> int:
    """Switch gradient checkpointing on every residual block of ``module``; returns how many blocks it found."""
    blocks = [m for m in module.modules() if isinstance(m, ResidualBlock)]
    for block in blocks:
        block.grad_checkpoint = enabled
    return len(blocks)


class MinibatchStdDev(nn.Module):
    """Appends the mean standard deviation over groups of the batch as one extra feature map (ProGAN)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        y = x.float().reshape(g, -1, c, h, w)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # one value per group member set
        std = std.view(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, std], dim=1)


def init_weights(module: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights: normal(0, gain), xavier, kaiming or orthogonal; norm scales at N(1, gain)."""
    inits = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain),
    }
    init = _choice(inits, kind, "init")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if nn.utils.parametrize.is_parametrized(m, "weight"):
                _init_spectral_normed(m, init)
            else:
                init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d,)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


SPECTRAL_NORM_INIT_ITERATIONS = 100


def _init_spectral_normed(m: nn.Module, init) -> None:
    """Initialise a spectral-normed layer's stored weight, then set up spectral norm afresh on it, so its
    power-iteration vectors match the new weight (the first steps then see a spectral norm of 1)."""
    nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    init(m.weight)
    nn.utils.parametrizations.spectral_norm(m)
    with torch.no_grad():  # each read of .weight in train mode runs one more power iteration: converge them
        for _ in range(SPECTRAL_NORM_INIT_ITERATIONS):
            m.weight


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every conv/linear weight of a module with spectral normalisation (Miyato et al. 2018)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear, nn.Embedding)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module
