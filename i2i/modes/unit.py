"""UNIT (Liu, Breuel, Kautz 2017): two VAE-GANs whose encoders and decoders share their inner blocks, so both
domains map to one latent space; translation is encode in one domain, decode in the other."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import I2IError
from ..nets.unit import UnitTranslator, unit_networks
from .base import Mode, StepOutput, register_mode
from .parts import build_discriminator, per_sample_norm, run_batched, smallest_input


def kl_term(mu: torch.Tensor) -> torch.Tensor:
    """KL to N(0, I) of a unit-variance Gaussian with mean ``mu``, up to constants (UNIT's ``__compute_kl``)."""
    return mu.float().pow(2).mean()


def sample_latent(mu: torch.Tensor) -> torch.Tensor:
    """The reparameterised latent of UNIT's fixed-variance VAE: ``mu + N(0, I)``."""
    return mu + torch.randn_like(mu)


@register_mode
class Unit(Mode):
    name = "unit"
    data_kind = "unpaired"
    # d_scales and d_layers: chosen in ``configure`` from --size (3 scales of a 3-layer PatchGAN from 96 px up).
    defaults = dict(norm="instance", d_norm="none", dropout=0.0, gan_loss="lsgan", ema_decay=0.0,
                    perceptual_weight=0.0)
    generators = ("E_A", "E_B", "G_A", "G_B")
    discriminators = ("D_A", "D_B")
    directions = ("AtoB", "BtoA")
    visual_names = ("input A", "output B", "reconstr. A", "input B", "output A", "reconstr. B")
    max_scales = 3  # the UNIT code's multi-scale discriminator

    @classmethod
    def configure(cls, given, cfg, notes):
        """Unless given, pick the most D scales (up to 3) and, below 24 px, the deepest PatchGAN the size allows."""
        if given.d_scales is not None:
            return cfg
        if given.d_layers is None:
            cfg.d_layers = max([1] + [n for n in (1, 2, 3) if smallest_input(n) <= cfg.size])
        cfg.d_scales = max([1] + [s for s in range(1, cls.max_scales + 1)
                                  if cfg.size // 2 ** (s - 1) >= smallest_input(cfg.d_layers)])
        if cfg.d_scales < cls.max_scales or cfg.d_layers != 3:
            notes.append(f"unit at --size {cfg.size}: the discriminator has {cfg.d_scales} scale(s) of a "
                         f"{cfg.d_layers}-layer PatchGAN ({cls.max_scales} scales of 3 layers need --size "
                         f"{smallest_input(3) * 2 ** (cls.max_scales - 1)}); set --d-scales/--d-layers to choose")
        return cfg

    def build(self, cfg):
        try:
            e_a, e_b, g_a, g_b = unit_networks(cfg.ngf, cfg.n_blocks, cfg.n_down, cfg.unit_shared_blocks, cfg.norm,
                                               cfg.padding)
        except ValueError:
            raise I2IError(f"--unit-shared-blocks must be between 1 and n_blocks // 2 = {cfg.n_blocks // 2} "
                           f"(--n-blocks {cfg.n_blocks} is split between encoder and decoder); "
                           f"got {cfg.unit_shared_blocks}") from None
        return {"E_A": e_a, "E_B": e_b, "G_A": g_a, "G_B": g_b,
                "D_A": build_discriminator(cfg), "D_B": build_discriminator(cfg)}

    def generator_step(self, batch):
        cfg, nets = self.cfg, self.nets
        x_a, x_b = batch["A"], batch["B"]
        batchable = per_sample_norm(cfg.norm)
        mu_a, mu_b = nets["E_A"](x_a), nets["E_B"](x_b)
        z_a, z_b = sample_latent(mu_a), sample_latent(mu_b)
        # Each decoder reconstructs its own domain and translates from the other: one call when the norm allows.
        x_aa, x_ba = run_batched(nets["G_A"], [z_a, z_b], batchable)
        x_bb, x_ab = run_batched(nets["G_B"], [z_b, z_a], batchable)
        logs = {
            "G_adv_A": self.adversarial_g("D_A", x_ba),
            "G_adv_B": self.adversarial_g("D_B", x_ab),
            "recon_A": F.l1_loss(x_aa, x_a) * cfg.lambda_recon,
            "recon_B": F.l1_loss(x_bb, x_b) * cfg.lambda_recon,
            "kl_A": kl_term(mu_a) * cfg.lambda_kl,
            "kl_B": kl_term(mu_b) * cfg.lambda_kl,
        }
        if cfg.lambda_cycle or cfg.lambda_cycle_kl:
            mu_ab, mu_ba = nets["E_B"](x_ab), nets["E_A"](x_ba)
            x_aba, x_bab = nets["G_A"](sample_latent(mu_ab)), nets["G_B"](sample_latent(mu_ba))
            logs["cycle_A"] = F.l1_loss(x_aba, x_a) * cfg.lambda_cycle
            logs["cycle_B"] = F.l1_loss(x_bab, x_b) * cfg.lambda_cycle
            logs["cycle_kl_A"] = kl_term(mu_ab) * cfg.lambda_cycle_kl
            logs["cycle_kl_B"] = kl_term(mu_ba) * cfg.lambda_cycle_kl
        if self.perceptual is not None:
            logs["perceptual"] = self.perceptual_term(x_ab, x_a) + self.perceptual_term(x_ba, x_b)
        return StepOutput(sum(logs.values()), logs, {"fake_A": x_ba.detach(), "fake_B": x_ab.detach()})

    def discriminator_step(self, batch, fakes):
        logs = {"D_A": self.adversarial_d("D_A", batch["A"], fakes["fake_A"]),
                "D_B": self.adversarial_d("D_B", batch["B"], fakes["fake_B"])}
        return StepOutput(logs["D_A"] + logs["D_B"], logs)

    def visuals(self, batch, nets):
        ab, ba = self.translator("AtoB", nets), self.translator("BtoA", nets)
        fake_b, fake_a = ab(batch["A"]), ba(batch["B"])
        return [batch["A"], fake_b, ba(fake_b), batch["B"], fake_a, ab(fake_a)]

    def translator(self, direction, nets) -> nn.Module:
        if direction == "AtoB":
            return UnitTranslator(nets["E_A"], nets["G_B"])
        return UnitTranslator(nets["E_B"], nets["G_A"])
