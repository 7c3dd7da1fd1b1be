"""UNIT's networks (Liu, Breuel, Kautz 2017): per-domain VAE encoders and decoders around a shared latent space.

The two encoders end in the same residual block objects and the two decoders start with the same ones; this weight
sharing is what ties the domains to one latent code.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBlock, ResidualBlock


def residual_stack(channels: int, n_blocks: int, norm: str, padding: str) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels, norm, padding) for _ in range(n_blocks)])


class UnitEncoder(nn.Module):
    """7x7 stem, ``n_down`` stride-2 convs, ``n_blocks`` private residual blocks, then the ``shared`` ones.

    Returns the latent mean (the VAE's variance is fixed to 1, as in UNIT).
    """

    def __init__(self, in_channels: int = 3, ngf: int = 64, n_down: int = 2, n_blocks: int = 3,
                 norm: str = "instance", padding: str = "reflect", shared: nn.Module | None = None):
        super().__init__()
        self.stride = 2 ** n_down
        layers: list[nn.Module] = [ConvBlock(in_channels, ngf, 7, norm=norm, padding=padding)]
        ch = ngf
        for _ in range(n_down):
            layers.append(ConvBlock(ch, ch * 2, 3, stride=2, norm=norm, padding=padding))
            ch *= 2
        self.private = nn.Sequential(*layers, residual_stack(ch, n_blocks, norm, padding))
        self.shared = shared if shared is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.private(x))


class UnitDecoder(nn.Module):
    """The ``shared`` residual blocks, ``n_blocks`` private ones, ``n_down`` x (nearest upsample, 5x5 conv, layer
    norm), 7x7 tanh head (UNIT/MUNIT's decoder)."""

    def __init__(self, out_channels: int = 3, ngf: int = 64, n_down: int = 2, n_blocks: int = 3,
                 norm: str = "instance", padding: str = "reflect", shared: nn.Module | None = None):
        super().__init__()
        self.stride = 2 ** n_down
        ch = ngf * 2 ** n_down
        self.shared = shared if shared is not None else nn.Identity()
        layers: list[nn.Module] = [residual_stack(ch, n_blocks, norm, padding)]
        for _ in range(n_down):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       ConvBlock(ch, ch // 2, 5, norm="layer", padding=padding)]
            ch //= 2
        layers.append(ConvBlock(ch, out_channels, 7, norm="none", activation="tanh", padding=padding))
        self.private = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.private(self.shared(z))


class UnitTranslator(nn.Module):
    """One direction of a trained UNIT: the source encoder's latent mean (no noise) through the target decoder."""

    def __init__(self, encoder: UnitEncoder, decoder: UnitDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.stride = encoder.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def unit_networks(ngf: int = 64, n_blocks: int = 8, n_down: int = 2, shared_blocks: int = 1, norm: str = "instance",
                  padding: str = "reflect") -> tuple[UnitEncoder, UnitEncoder, UnitDecoder, UnitDecoder]:
    """Encoders (A, B) and decoders (A, B) with ``n_blocks`` residual blocks per encoder+decoder pair.

    The encoders get ceil(n_blocks / 2) blocks, the decoders the rest; the last ``shared_blocks`` of the encoders are
    one module object, and so are the first ``shared_blocks`` of the decoders.
    """
    enc_blocks, dec_blocks = n_blocks - n_blocks // 2, n_blocks // 2
    if not 1 <= shared_blocks <= dec_blocks:
        raise ValueError(f"UNIT shares 1..{dec_blocks} residual blocks with n_blocks={n_blocks} "
                         f"(half of them per encoder/decoder); got {shared_blocks}")
    ch = ngf * 2 ** n_down
    shared_enc = residual_stack(ch, shared_blocks, norm, padding)
    shared_dec = residual_stack(ch, shared_blocks, norm, padding)
    encoders = [UnitEncoder(3, ngf, n_down, enc_blocks - shared_blocks, norm, padding, shared_enc) for _ in "AB"]
    decoders = [UnitDecoder(3, ngf, n_down, dec_blocks - shared_blocks, norm, padding, shared_dec) for _ in "AB"]
    return encoders[0], encoders[1], decoders[0], decoders[1]
