"""Builders and helpers that modes share: the configured generator and discriminator, batched calls."""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import I2IError
from ..nets.discriminators import make_discriminator
from ..nets.generators import ResnetGenerator, UnetGenerator


def build_generator(cfg: TrainConfig, in_channels: int = 3, out_channels: int = 3) -> nn.Module:
    """The image-to-image generator the config names (resnet or unet)."""
    if cfg.generator == "resnet":
        return ResnetGenerator(in_channels, out_channels, cfg.ngf, cfg.n_blocks, cfg.n_down, cfg.norm, cfg.padding,
                               cfg.dropout or 0.0)
    if cfg.generator == "unet":
        return UnetGenerator(in_channels, out_channels, cfg.ngf, cfg.size, cfg.unet_depth, cfg.norm,
                             cfg.dropout or 0.0)
    raise I2IError(f"unknown generator '{cfg.generator}'; choose resnet or unet")


def smallest_input(d_layers: int) -> int:
    """The smallest image side a PatchGAN with ``d_layers`` stride-2 layers can judge (one patch at least)."""
    return 3 * 2 ** d_layers


def build_discriminator(cfg: TrainConfig, in_channels: int = 3) -> nn.Module:
    """The PatchGAN (or multi-scale PatchGAN) the config names; refuses sizes too small for its coarsest scale."""
    scales = cfg.d_scales or 1
    coarsest, needed = cfg.size // 2 ** (scales - 1), smallest_input(cfg.d_layers)
    if coarsest < needed:
        raise I2IError(f"--size {cfg.size} is too small for a discriminator with --d-layers {cfg.d_layers} and "
                       f"--d-scales {scales}: its coarsest scale sees {coarsest} px but needs at least {needed}; "
                       f"lower --d-layers or --d-scales, or raise --size")
    return make_discriminator(in_channels, cfg.ndf, cfg.d_layers, cfg.d_norm, cfg.spectral_norm, cfg.d_scales or 1)


def per_sample_norm(norm: str | None) -> bool:
    """Whether a network with this norm treats batch entries independently (so calls can be concatenated)."""
    return norm in ("instance", "instance_affine", "layer", "none")


def run_batched(net: nn.Module, inputs: list[torch.Tensor], batchable: bool) -> list[torch.Tensor]:
    """``[net(x) for x in inputs]``, done as one call on the concatenation when that is exact."""
    if not batchable or len(inputs) == 1:
        return [net(x) for x in inputs]
    return list(net(torch.cat(inputs)).split([x.shape[0] for x in inputs]))
