"""Adversarial objectives and discriminator regularisers."""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]
GAN_LOSSES = ("bce", "lsgan", "hinge", "wgan")


def _scales(logits: Logits) -> list[torch.Tensor]:
    """Multi-scale discriminators return a list of logit maps; a single map is a list of one."""
    return [logits] if isinstance(logits, torch.Tensor) else list(logits)


class AdversarialLoss:
    """One GAN objective: ``bce`` (non-saturating), ``lsgan``, ``hinge`` or ``wgan``.

    Each logit map is averaged over its batch and patches; the terms of a multi-scale D are summed over the scales
    (as the UNIT and pix2pixHD code do). ``label_smoothing`` lowers the real target of bce/lsgan from 1 to 1 - s
    (one-sided, Salimans et al. 2016); hinge and wgan have no target to smooth.
    """

    def __init__(self, kind: str = "lsgan", label_smoothing: float = 0.0):
        if kind not in GAN_LOSSES:
            raise ValueError(f"unknown gan_loss '{kind}'; choose one of: {', '.join(GAN_LOSSES)}")
        if label_smoothing and kind not in ("bce", "lsgan"):
            raise ValueError(f"label smoothing needs a real target (bce or lsgan); gan_loss '{kind}' has none")
        self.kind = kind
        self.real_target = 1.0 - label_smoothing

    def _term(self, logits: torch.Tensor, real: bool, for_generator: bool) -> torch.Tensor:
        x = logits.float()
        target = self.real_target if real and not for_generator else 1.0 if real else 0.0
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))
        if self.kind == "lsgan":
            return F.mse_loss(x, torch.full_like(x, target))
        if for_generator:
            return -x.mean()
        if self.kind == "hinge":
            return F.relu(1.0 - x).mean() if real else F.relu(1.0 + x).mean()
        return -x.mean() if real else x.mean()  # wgan critic

    def _over_scales(self, logits: Logits, real: bool, for_generator: bool) -> torch.Tensor:
        return sum(self._term(x, real, for_generator) for x in _scales(logits))

    def discriminator(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """D's adversarial objective: the real term plus the fake term (e.g. E[D(fake)] - E[D(real)] for wgan)."""
        return self._over_scales(real_logits, True, False) + self._over_scales(fake_logits, False, False)

    def generator(self, fake_logits: Logits) -> torch.Tensor:
        """G loss: make D call the fakes real (non-saturating for bce)."""
        return self._over_scales(fake_logits, True, True)


def critic_value(logits: Logits) -> torch.Tensor:
    """The per-image critic value the adversarial loss sees: each map's mean over its patches, summed over scales."""
    return sum(x.float().reshape(x.shape[0], -1).mean(dim=1) for x in _scales(logits))


def _input_gradients(discriminator: Callable[[torch.Tensor], Logits], x: torch.Tensor) -> torch.Tensor:
    """Per-image gradient of the critic value with respect to D's input, computed in fp32 outside autocast.

    Exact per image when D treats the samples of a batch independently (no batch norm).
    """
    x = x.detach().float().requires_grad_(True)
    with torch.autocast(x.device.type, enabled=False):
        out = critic_value(discriminator(x)).sum()
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    return grad


@torch.compiler.disable  # a double backward: torch.compile cannot differentiate its graph twice, so it runs eagerly
def gradient_penalty(discriminator: Callable[[torch.Tensor], Logits], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on random real/fake interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = alpha * real.detach().float() + (1 - alpha) * fake.detach().float()
    grad = _input_gradients(discriminator, mixed)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


@torch.compiler.disable  # a double backward, run eagerly (see gradient_penalty)
def r1_penalty(discriminator: Callable[[torch.Tensor], Logits], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x_real)||^2]; multiply by gamma / 2."""
    grad = _input_gradients(discriminator, real)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


@torch.no_grad()
def clip_weights_(params: Sequence[torch.Tensor], c: float) -> None:
    """The original WGAN's Lipschitz constraint (Arjovsky et al. 2017): clamp every critic weight to [-c, c]."""
    torch._foreach_clamp_min_(list(params), -c)
    torch._foreach_clamp_max_(list(params), c)
