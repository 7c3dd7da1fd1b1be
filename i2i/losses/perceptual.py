"""The perceptual (feature-constancy) constraint: distances between frozen-encoder features of two images."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import I2IError
from ..nets.encoders import FrozenEncoder

DISTANCES = {"l1": F.l1_loss, "l2": F.mse_loss}


class PerceptualLoss(nn.Module):
    """Mean over the encoder's layers of ``distance(phi(output), phi(reference))``.

    Gradients reach ``output`` only: the reference features are computed without a graph and the encoder is frozen.
    """

    def __init__(self, encoder: FrozenEncoder, distance: str = "l1"):
        super().__init__()
        if distance not in DISTANCES:
            raise I2IError(f"unknown perceptual distance '{distance}'; choose one of: {', '.join(DISTANCES)}")
        self.encoder = encoder
        self.distance = DISTANCES[distance]

    def forward(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        features = self.encoder(output)
        with torch.no_grad():
            targets = self.encoder(reference)
        return sum(self.distance(f.float(), t.float()) for f, t in zip(features, targets)) / len(features)


def build_perceptual_loss(cfg: TrainConfig) -> PerceptualLoss:
    """The loss the config describes: ``cfg.encoder`` cut at ``cfg.encoder_layers`` with ``cfg.encoder_weights``."""
    layers = [s.strip() for s in cfg.encoder_layers.split(",") if s.strip()] if cfg.encoder_layers else None
    return PerceptualLoss(FrozenEncoder(cfg.encoder, layers, cfg.encoder_weights))
