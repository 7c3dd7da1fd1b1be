"""What every mode shares: a registry, the network dict, adversarial terms with regularisers, and the perceptual term."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from ..config import TrainConfig, resolve
from ..errors import I2IError
from ..losses.adversarial import AdversarialLoss, gradient_penalty, r1_penalty
from ..nets.layers import init_weights
from .parts import per_sample_norm

MODES: dict[str, type["Mode"]] = {}


def register_mode(cls: type["Mode"]) -> type["Mode"]:
    """Class decorator: make a mode available to ``create_mode`` and the CLI under ``cls.name``."""
    MODES[cls.name] = cls
    return cls


def mode_class(name: str) -> type["Mode"]:
    from . import load_all_modes
    load_all_modes()
    if name not in MODES:
        raise I2IError(f"unknown mode '{name}'; choose one of: {', '.join(sorted(MODES))}")
    return MODES[name]


# Defaults every mode shares unless its own ``defaults`` say otherwise.
COMMON_DEFAULTS: dict[str, Any] = dict(d_layers=3, flip=True)


def create_mode(cfg: TrainConfig, for_training: bool = True) -> "Mode":
    """Resolve the mode's defaults into ``cfg`` and build the mode with freshly initialised networks.

    ``for_training`` also checks and completes the objective (penalties, constraints); the choices made are in
    ``mode.notes``. Loading a saved, already resolved config for inference skips those checks.
    """
    cls = mode_class(cfg.mode)
    notes: list[str] = []
    resolved = cls.configure(cfg, resolve(cfg, {**COMMON_DEFAULTS, **cls.defaults}), notes)
    if for_training:
        resolved = complete_objective(cls, cfg, resolved, notes)
    mode = cls(resolved)
    mode.notes = notes
    return mode


def complete_objective(cls: type["Mode"], given: TrainConfig, cfg: TrainConfig, notes: list[str]) -> TrainConfig:
    """Check that the adversarial objective is one the papers define, and fill the penalty weights.

    ``given`` is the config as the user gave it (None = not given), ``cfg`` the one with the mode's defaults.
    """
    loss = cfg.gan_loss
    if cfg.label_smoothing and loss not in ("bce", "lsgan"):
        raise I2IError(f"--label-smoothing lowers the real target of bce or lsgan; --gan-loss {loss} has no target "
                       f"to smooth: drop --label-smoothing or use --gan-loss bce/lsgan")
    if cfg.minibatch_std and not cls.minibatch_std:
        raise I2IError(f"--minibatch-std needs a discriminator with a minibatch-std layer (gan, cgan); mode "
                       f"'{cls.name}' has none: drop --minibatch-std")
    constrained = bool(cfg.clip_weights or cfg.spectral_norm)
    if loss == "wgan" and not constrained:
        if cfg.gp_weight is None:
            cfg.gp_weight = 10.0
            notes.append("--gan-loss wgan: the critic gets the WGAN-GP gradient penalty, --gp-weight 10 "
                         "(Gulrajani et al. 2017)")
        elif not cfg.gp_weight:
            raise I2IError("--gan-loss wgan needs a Lipschitz constraint on the critic: --gp-weight 10 (WGAN-GP), "
                           "--clip-weights 0.01 (original WGAN) or --spectral-norm; --gp-weight 0 leaves none")
    cfg.gp_weight = cfg.gp_weight or 0.0
    if (cfg.gp_weight or cfg.r1_gamma) and cfg.d_norm == "batch" and not cfg.spectral_norm:
        if given.d_norm is not None:
            raise I2IError("--d-norm batch mixes the images of a batch, so a gradient penalty (--gp-weight) or R1 "
                           "(--r1-gamma) cannot penalise each image's critic: use --d-norm layer (as WGAN-GP does), "
                           "instance or none")
        cfg.d_norm = "layer"
        notes.append(f"mode '{cls.name}' uses a batch-norm discriminator by default; with a gradient penalty or R1 "
                     "its D uses layer norm instead (as WGAN-GP does), so each image's critic is penalised alone")
    if cfg.clip_weights:
        notes.append(f"--clip-weights {cfg.clip_weights:g}: D's weights are clamped to [-c, c] after each step and D "
                     "is trained with RMSprop, as in Arjovsky et al. 2017 (the paper also uses lr 5e-5 and 5 critic "
                     "steps per generator step; i2i takes one)")
    return cfg


@dataclass
class StepOutput:
    """A phase's result: the loss to backpropagate, detached tensors to log, and outputs for later phases."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class Mode:
    """A training recipe over shared parts. Subclasses set the class attributes and implement ``build``,
    ``generator_step``, ``discriminator_step``, ``visuals`` and (translation modes) ``translator``."""

    name: ClassVar[str]
    data_kind: ClassVar[str]                       # unpaired, paired, single or classes
    defaults: ClassVar[dict[str, Any]] = {}        # values for config fields left at None
    generators: ClassVar[tuple[str, ...]]          # networks stepped by the G optimiser (and kept as EMA)
    discriminators: ClassVar[tuple[str, ...]]      # networks stepped by the D optimiser
    directions: ClassVar[tuple[str, ...]] = ()     # translation directions offered by ``translator``
    visual_names: ClassVar[tuple[str, ...]] = ()   # the sample grid's columns (``visuals``), as headed
    minibatch_std: ClassVar[bool] = False          # whether the discriminator can take a minibatch-std layer

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.nets = nn.ModuleDict(self.build(cfg))
        for net in self.nets.values():
            init_weights(net, cfg.init, cfg.init_gain)
        self.adversarial = AdversarialLoss(cfg.gan_loss or "lsgan", cfg.label_smoothing)
        self.perceptual: Optional[nn.Module] = None
        if cfg.perceptual_weight:
            from ..losses.perceptual import build_perceptual_loss
            self.perceptual = build_perceptual_loss(cfg)
        # Set by the trainer: the fraction of the run done (a device tensor, for schedules such as instance noise),
        # and whether this step's G update was finite (a device bool: a skipped step must not reach image pools).
        self.progress: torch.Tensor | float = 0.0
        self.fakes_accepted: Optional[torch.Tensor] = None
        self.notes: list[str] = []  # choices made while resolving the config, printed by the trainer

    @classmethod
    def configure(cls, given: TrainConfig, cfg: TrainConfig, notes: list[str]) -> TrainConfig:
        """Hook: settings that depend on others (e.g. discriminator scales from the size); ``given`` has the
        fields as the user set them (None = not given). Append a note for each choice made."""
        return cfg

    # --- to implement -------------------------------------------------------------------------------------
    def build(self, cfg: TrainConfig) -> dict[str, nn.Module]:
        raise NotImplementedError

    def generator_step(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    def discriminator_step(self, batch: dict[str, torch.Tensor], fakes: dict[str, torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    def visuals(self, batch: dict[str, torch.Tensor], nets: nn.ModuleDict) -> list[torch.Tensor]:
        """Rows of the sample grid, each a Bx3xHxW batch in [-1, 1], computed with ``nets`` (raw or EMA)."""
        raise NotImplementedError

    def translator(self, direction: str, nets: nn.ModuleDict) -> nn.Module:
        raise I2IError(f"mode '{self.name}' does not translate images")

    # --- shared terms -------------------------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        """Modules that travel with the mode to the device but are neither trained nor saved."""
        return [self.perceptual] if self.perceptual is not None else []

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond weights (e.g. image pools) needed for an exact resume."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def upgrade_weights(self, weights: dict[str, dict[str, torch.Tensor]]) -> bool:
        """Bring a checkpoint's tensors (``nets`` and ``ema`` groups) written by an older i2i to this version's
        networks, in place, where that keeps what they compute; returns whether anything changed."""
        return False

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.instance_noise:
            return x
        return x + self.cfg.instance_noise * (1.0 - self.progress) * torch.randn_like(x)

    def adversarial_g(self, d_name: str, fake: torch.Tensor, **condition: torch.Tensor) -> torch.Tensor:
        """Generator's adversarial term against discriminator ``d_name`` (``condition``: e.g. class labels)."""
        return self.adversarial.generator(self.nets[d_name](self._noisy(fake), **condition))

    def adversarial_d(self, d_name: str, real: torch.Tensor, fake: torch.Tensor,
                      **condition: torch.Tensor) -> torch.Tensor:
        """Discriminator loss on a real and a (detached) fake batch with the configured penalties:
        ``0.5 * (L_real + L_fake + gp_weight * GP + r1_gamma / 2 * R1)``.

        The 0.5 is pix2pix/CycleGAN's halving of D's objective; it scales the whole objective, so the penalty
        weights keep the papers' meaning relative to the adversarial terms. Real and fake go through D in one call
        when D treats samples independently (no batch norm, no minibatch std): the same numbers, half the kernel
        launches. ``condition`` is shared by real and fake. The penalties' double backward runs through the
        uncompiled D (torch.compile cannot differentiate its graph twice).
        """
        net = self.nets[d_name]
        real_in, fake_in = self._noisy(real), self._noisy(fake.detach())
        if per_sample_norm(self.cfg.d_norm) and not self.cfg.minibatch_std:
            doubled = {k: torch.cat([v, v]) for k, v in condition.items()}
            real_logits, fake_logits = _split_logits(net(torch.cat([real_in, fake_in]), **doubled), len(real))
        else:
            real_logits, fake_logits = net(real_in, **condition), net(fake_in, **condition)
        loss = self.adversarial.discriminator(real_logits, fake_logits)

        def d(x: torch.Tensor):
            return net(x, **condition)

        if self.cfg.gp_weight:
            loss = loss + self.cfg.gp_weight * gradient_penalty(d, real, fake)
        if self.cfg.r1_gamma:
            loss = loss + 0.5 * self.cfg.r1_gamma * r1_penalty(d, real)
        return 0.5 * loss

    def perceptual_term(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Weighted frozen-encoder feature distance, or 0 when the constraint is off."""
        if self.perceptual is None:
            return output.new_zeros(())
        return self.cfg.perceptual_weight * self.perceptual(output, reference)


def _split_logits(logits: Any, n: int) -> tuple[Any, Any]:
    """Split D's output on a [real; fake] batch (one map, or a list of maps per scale) into real and fake parts."""
    if isinstance(logits, torch.Tensor):
        return logits[:n], logits[n:]
    return [x[:n] for x in logits], [x[n:] for x in logits]
