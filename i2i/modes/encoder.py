"""One-sided translation with a perceptual constraint: G maps A to B, a PatchGAN judges B, and the distance between
frozen pretrained-encoder features of x and G(x) is the only tie between input and output (no cycle, no pairs)."""
from __future__ import annotations

from torch import nn

from ..errors import I2IError
from .base import Mode, StepOutput, register_mode
from .parts import build_discriminator, build_generator


@register_mode
class EncoderConstrained(Mode):
    name = "encoder"
    data_kind = "unpaired"
    # perceptual_weight 1: the layer-averaged L1 feature distance between unrelated images is a few units (2-6 with
    # EfficientNet-Lite0 on the example data), a few times the LSGAN generator term (0.25-1): content constancy is
    # the stronger pull, as in DTN's f-constancy, while the GAN can still restyle. Raise it to keep more structure.
    defaults = dict(generator="resnet", norm="instance", d_norm="instance", dropout=0.0, gan_loss="lsgan", d_scales=1,
                    ema_decay=0.0, perceptual_weight=1.0)
    generators = ("G",)
    discriminators = ("D",)
    directions = ("AtoB",)
    visual_names = ("input A", "output B", "a real B")

    def build(self, cfg):
        return {"G": build_generator(cfg), "D": build_discriminator(cfg)}

    def generator_step(self, batch):
        if self.perceptual is None:  # checked here, not in build: inference rebuilds the mode without the encoder
            raise I2IError("mode 'encoder' needs the perceptual constraint: --perceptual-weight must be > 0 "
                           "(it is the only tie between input and output)")
        real_a = batch["A"]
        fake_b = self.nets["G"](real_a)
        logs = {"G_adv": self.adversarial_g("D", fake_b), "perceptual": self.perceptual_term(fake_b, real_a)}
        return StepOutput(sum(logs.values()), logs, {"fake_B": fake_b.detach()})

    def discriminator_step(self, batch, fakes):
        loss = self.adversarial_d("D", batch["B"], fakes["fake_B"])
        return StepOutput(loss, {"D": loss})

    def visuals(self, batch, nets):
        return [batch["A"], nets["G"](batch["A"]), batch["B"]]

    def translator(self, direction, nets) -> nn.Module:
        return nets["G"]
