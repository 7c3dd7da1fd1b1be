"""pix2pix (Isola et al. 2017): U-Net generator, PatchGAN on (input, output) pairs, L1 to the target."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Mode, StepOutput, register_mode
from .parts import build_discriminator, build_generator


@register_mode
class Pix2Pix(Mode):
    name = "pix2pix"
    data_kind = "paired"
    defaults = dict(generator="unet", norm="batch", d_norm="batch", dropout=0.5, gan_loss="bce", d_scales=1,
                    ema_decay=0.0, perceptual_weight=0.0)
    generators = ("G",)
    discriminators = ("D",)
    directions = ("AtoB",)
    visual_names = ("input", "output", "target")

    def build(self, cfg):
        self.directions = (cfg.direction,)  # --direction BtoA learns B -> A from the same pairs
        return {"G": build_generator(cfg), "D": build_discriminator(cfg, in_channels=6)}

    def pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of each pair, as --direction orders them."""
        return (batch["A"], batch["B"]) if self.cfg.direction == "AtoB" else (batch["B"], batch["A"])

    def generator_step(self, batch):
        real_a, real_b = self.pair(batch)
        fake_b = self.nets["G"](real_a)
        logs = {"G_adv": self.adversarial_g("D", torch.cat([real_a, fake_b], 1)),
                "L1": F.l1_loss(fake_b, real_b) * self.cfg.lambda_l1}
        if self.perceptual is not None:
            logs["perceptual"] = self.perceptual_term(fake_b, real_b)
        return StepOutput(sum(logs.values()), logs, {"fake_B": fake_b.detach()})

    def discriminator_step(self, batch, fakes):
        real_a, real_b = self.pair(batch)
        loss = self.adversarial_d("D", torch.cat([real_a, real_b], 1), torch.cat([real_a, fakes["fake_B"]], 1))
        return StepOutput(loss, {"D": loss})

    def visuals(self, batch, nets):
        source, target = self.pair(batch)
        return [source, nets["G"](source), target]

    def translator(self, direction, nets) -> nn.Module:
        return nets["G"]
