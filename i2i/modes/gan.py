"""Unconditional GAN: a DCGAN generator learns a folder of images from noise; EMA generator for sampling."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..nets.dcgan import DCGANDiscriminator, DCGANGenerator
from .base import Mode, StepOutput, register_mode

GRID = 8  # the sample grid shows GRID columns of fixed noise vectors


def fixed_noise(seed: int, *shape: int) -> torch.Tensor:
    """Standard normal noise from a local generator (the global RNG, and so training, is untouched)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@register_mode
class GAN(Mode):
    """Noise to image. Subclasses add conditioning through ``num_classes``, ``condition`` and ``visuals``."""

    name = "gan"
    data_kind = "single"
    # No flips: a GAN learns the images as given (mirrored digits or letters are not in the data); StyleGAN2-ADA's
    # --mirror is off by default too. Turn --flip on for data whose mirror images are as real as the originals.
    defaults = dict(norm="batch", d_norm="layer", gan_loss="bce", ema_decay=0.999, dropout=0.0, d_scales=1,
                    perceptual_weight=0.0, flip=False)
    generators = ("G",)
    discriminators = ("D",)
    directions = ()
    minibatch_std = True

    def build(self, cfg: TrainConfig) -> dict[str, nn.Module]:
        # Whole images rather than 286->256 crops: a GAN should learn the images as they are framed.
        cfg.load_size = cfg.load_size or cfg.size
        classes = self.num_classes(cfg)
        return {"G": DCGANGenerator(cfg.latent_dim, cfg.size, cfg.ngf, classes, cfg.norm),
                "D": DCGANDiscriminator(cfg.size, cfg.ndf, classes, cfg.d_norm, cfg.spectral_norm, cfg.minibatch_std)}

    def num_classes(self, cfg: TrainConfig) -> Optional[int]:
        """Class count the networks are conditioned on (None: unconditional)."""
        return None

    def condition(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keyword arguments that condition G and D on a batch (fakes take the real batch's labels)."""
        return {}

    def generator_step(self, batch):
        condition = self.condition(batch)
        real = batch["B"]
        z = torch.randn(real.shape[0], self.cfg.latent_dim, device=real.device)
        fake = self.nets["G"](z, **condition)
        loss = self.adversarial_g("D", fake, **condition)
        return StepOutput(loss, {"G_adv": loss}, {"fake": fake.detach()})

    def discriminator_step(self, batch, fakes):
        loss = self.adversarial_d("D", batch["B"], fakes["fake"], **self.condition(batch))
        return StepOutput(loss, {"D": loss})

    def visuals(self, batch, nets):
        """A GRID x GRID grid of samples from fixed noise."""
        device = next(nets["G"].parameters()).device
        noise = fixed_noise(self.cfg.seed, GRID, GRID, self.cfg.latent_dim).to(device)
        return [nets["G"](z) for z in noise]
