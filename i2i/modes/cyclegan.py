"""CycleGAN (Zhu et al. 2017): two generators, two PatchGANs, cycle and identity L1, image history pools."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..train.pool import ImagePool
from .base import Mode, StepOutput, register_mode
from .parts import build_discriminator, build_generator, per_sample_norm, run_batched


@register_mode
class CycleGAN(Mode):
    name = "cyclegan"
    data_kind = "unpaired"
    defaults = dict(generator="resnet", norm="instance", d_norm="instance", dropout=0.0, gan_loss="lsgan",
                    d_scales=1, ema_decay=0.0, perceptual_weight=0.0)
    generators = ("G_AB", "G_BA")
    discriminators = ("D_A", "D_B")
    directions = ("AtoB", "BtoA")
    visual_names = ("input A", "output B", "reconstr. A", "input B", "output A", "reconstr. B")

    def build(self, cfg):
        self.pools = {"A": ImagePool(cfg.pool_size), "B": ImagePool(cfg.pool_size)}
        return {"G_AB": build_generator(cfg), "G_BA": build_generator(cfg),
                "D_A": build_discriminator(cfg), "D_B": build_discriminator(cfg)}

    def generator_step(self, batch):
        cfg, nets = self.cfg, self.nets
        real_a, real_b = batch["A"], batch["B"]
        identity = cfg.lambda_identity > 0
        batchable = per_sample_norm(cfg.norm)
        # G_AB sees A (translation) and, for the identity term, B: one call when the norm is per-sample.
        fake_b, *idt_b = run_batched(nets["G_AB"], [real_a] + ([real_b] if identity else []), batchable)
        fake_a, *idt_a = run_batched(nets["G_BA"], [real_b] + ([real_a] if identity else []), batchable)
        rec_a, rec_b = nets["G_BA"](fake_b), nets["G_AB"](fake_a)
        logs = {
            "G_adv_A": self.adversarial_g("D_A", fake_a),
            "G_adv_B": self.adversarial_g("D_B", fake_b),
            "cycle_A": F.l1_loss(rec_a, real_a) * cfg.lambda_cycle,
            "cycle_B": F.l1_loss(rec_b, real_b) * cfg.lambda_cycle,
        }
        if identity:
            weight = cfg.lambda_cycle * cfg.lambda_identity
            logs["idt_A"] = F.l1_loss(idt_a[0], real_a) * weight
            logs["idt_B"] = F.l1_loss(idt_b[0], real_b) * weight
        if self.perceptual is not None:
            logs["perceptual"] = self.perceptual_term(fake_b, real_a) + self.perceptual_term(fake_a, real_b)
        loss = sum(logs.values())
        return StepOutput(loss, logs, {"fake_A": fake_a.detach(), "fake_B": fake_b.detach()})

    def discriminator_step(self, batch, fakes):
        fake_a = self.pools["A"].query(fakes["fake_A"], accept=self.fakes_accepted)
        fake_b = self.pools["B"].query(fakes["fake_B"], accept=self.fakes_accepted)
        logs = {"D_A": self.adversarial_d("D_A", batch["A"], fake_a),
                "D_B": self.adversarial_d("D_B", batch["B"], fake_b)}
        return StepOutput(logs["D_A"] + logs["D_B"], logs)

    def visuals(self, batch, nets):
        fake_b, fake_a = nets["G_AB"](batch["A"]), nets["G_BA"](batch["B"])
        return [batch["A"], fake_b, nets["G_BA"](fake_b), batch["B"], fake_a, nets["G_AB"](fake_a)]

    def translator(self, direction, nets) -> nn.Module:
        return nets["G_AB"] if direction == "AtoB" else nets["G_BA"]

    def extra_state(self):
        return {f"pool_{k}": pool.state_dict() for k, pool in self.pools.items()}

    def load_extra_state(self, state):
        device = next(self.nets.parameters()).device
        for k, pool in self.pools.items():
            if f"pool_{k}" in state:
                pool.load_state_dict(state[f"pool_{k}"], device)
