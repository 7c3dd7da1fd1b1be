"""The run configuration: one typed dataclass, filled from mode defaults, a YAML/JSON file and CLI flags."""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import I2IError


NORMS = ("instance", "instance_affine", "batch", "layer", "none")


def opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A config field with its help text (shown by ``i2i train --help``) and its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Everything a run needs; saved with every checkpoint so a model can be rebuilt from it alone.

    Fields left at None take the mode's default (e.g. pix2pix picks U-Net, batch norm and bce).
    """

    # run
    mode: str = opt("cyclegan", "training recipe", ("cyclegan", "pix2pix", "unit", "encoder", "gan", "cgan"))
    data: str = opt("", "dataset folder (layout depends on the mode, see README)")
    out: str = opt("runs/i2i", "run folder: checkpoints, samples, logs")
    steps: Optional[int] = opt(None, "training steps (default: --epochs worth of steps); on --resume a new total "
                               "stretches the LR schedule to it")
    epochs: Optional[int] = opt(None, "training epochs when --steps is not given (default 200)")
    batch_size: int = opt(1, "images per step (global batch divided across DDP ranks)")
    size: int = opt(256, "training crop size in pixels")
    load_size: Optional[int] = opt(None, "resize before the random crop (default: size * 286 / 256)")
    flip: Optional[bool] = opt(None, "random horizontal flips (default: on for translation modes, off for gan/cgan)")
    gpu_augment: bool = opt(False, "random crop and flip on the GPU with kornia instead of in the workers")
    direction: str = opt("AtoB", "paired data (pix2pix): learn A to B, or B to A as the facades recipe does",
                         ("AtoB", "BtoA"))
    seed: int = opt(0, "random seed (weights, data order, augmentation)")
    deterministic: bool = opt(False, "deterministic algorithms (bit-identical runs on CPU; slower on CUDA)")
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    precision: Optional[str] = opt(None, "training precision (default: bf16 on CUDA, fp32 on CPU)",
                                   ("fp32", "bf16", "fp16"))
    channels_last: Optional[bool] = opt(None, "channels-last memory format (default: on for CUDA)")
    compile: bool = opt(False, "torch.compile the networks")
    cuda_graph: bool = opt(False, "capture the whole training step in a CUDA graph (CUDA only)")
    grad_checkpoint: bool = opt(False, "recompute generator residual blocks in backward (less memory, more time)")
    sync_bn: bool = opt(False, "SyncBatchNorm across DDP ranks for batch-norm models (CUDA only)")
    workers: Optional[int] = opt(None, "DataLoader worker processes (default: CPUs / processes on this machine, "
                                 "at most 8)")
    # networks
    generator: Optional[str] = opt(None, "generator backbone (unit and gan/cgan have their own)", ("resnet", "unet"))
    ngf: int = opt(64, "generator base width")
    n_blocks: int = opt(9, "residual blocks in the ResNet generator / UNIT encoder+decoder")
    n_down: int = opt(2, "stride-2 downsampling steps in ResNet/UNIT generators")
    unit_shared_blocks: int = opt(1, "residual blocks shared by UNIT's two encoders (last) and two decoders (first)")
    unet_depth: Optional[int] = opt(None, "U-Net levels (default: log2(size))")
    norm: Optional[str] = opt(None, "generator normalisation", NORMS)
    dropout: Optional[float] = opt(None, "generator dropout")
    padding: str = opt("reflect", "generator padding", ("reflect", "replicate", "zeros"))
    ndf: int = opt(64, "discriminator base width")
    d_layers: Optional[int] = opt(None, "PatchGAN stride-2 layers (default 3 = 70x70 patches; unit: what --size allows)")
    d_scales: Optional[int] = opt(None, "discriminator scales (1 = single PatchGAN; unit: up to 3, as --size allows)")
    d_norm: Optional[str] = opt(None, "discriminator normalisation", NORMS)
    spectral_norm: bool = opt(False, "spectral normalisation on the discriminator")
    init: str = opt("normal", "weight initialisation", ("normal", "xavier", "kaiming", "orthogonal"))
    init_gain: float = opt(0.02, "init scale")
    latent_dim: int = opt(128, "noise dimension (gan, cgan)")
    minibatch_std: bool = opt(False, "minibatch standard-deviation feature in the discriminator (gan, cgan)")
    num_classes: Optional[int] = opt(None, "number of classes (cgan; default: the class sub-folders of --data)")
    class_names: Optional[str] = opt(None, "comma-separated class names (cgan; filled from --data)")
    # losses
    gan_loss: Optional[str] = opt(None, "adversarial objective", ("bce", "lsgan", "hinge", "wgan"))
    label_smoothing: float = opt(0.0, "one-sided label smoothing of D's real target")
    instance_noise: float = opt(0.0, "std of Gaussian noise added to D inputs (decays linearly to 0)")
    gp_weight: Optional[float] = opt(None, "WGAN-GP weight lambda: D loss + lambda * E[(||grad D(x_hat)|| - 1)^2] "
                                     "(default: 10 with wgan, else 0)")
    r1_gamma: float = opt(0.0, "R1 gamma: D loss + gamma / 2 * E[||grad D(x_real)||^2]")
    clip_weights: Optional[float] = opt(None, "original WGAN weight clipping: clamp D's weights to [-C, C] after each "
                                        "step, D trained with RMSprop (Arjovsky et al. 2017: 0.01)")
    lambda_cycle: float = opt(10.0, "cycle-consistency weight (cyclegan, unit)")
    lambda_identity: float = opt(0.5, "identity weight as a fraction of lambda_cycle (cyclegan)")
    lambda_l1: float = opt(100.0, "L1 weight to the target (pix2pix)")
    lambda_recon: float = opt(10.0, "within-domain reconstruction weight (unit)")
    lambda_kl: float = opt(0.01, "KL weight (unit)")
    lambda_cycle_kl: float = opt(0.01, "cycle KL weight (unit)")
    pool_size: int = opt(50, "image history pool size for D (cyclegan; 0 disables)")
    perceptual_weight: Optional[float] = opt(None, "weight of the frozen-encoder feature loss (0 = off)")
    encoder: str = opt("vgg16", "frozen encoder for the perceptual constraint (torchvision name or efficientnet_lite0)")
    encoder_layers: Optional[str] = opt(None, "comma-separated encoder layers (default per encoder)")
    encoder_weights: Optional[str] = opt(None, "local weights file (.pth or .safetensors) for the encoder")
    # optimisation
    lr: float = opt(2e-4, "Adam learning rate (G and D)")
    beta1: float = opt(0.5, "Adam beta1")
    beta2: float = opt(0.999, "Adam beta2")
    lr_decay: float = opt(0.5, "fraction of the run (at the end) over which the LR decays linearly to 0")
    ema_decay: Optional[float] = opt(None, "generator EMA decay (0 = off)")
    # bookkeeping
    log_every: int = opt(10, "steps between logged losses")
    sample_every: int = opt(500, "steps between sample grids")
    checkpoint_every: int = opt(1000, "steps between checkpoints")
    keep_checkpoints: int = opt(3, "how many recent checkpoints to keep (0 keeps all)")
    max_nonfinite: int = opt(20, "stop after this many consecutive non-finite steps")
    skip_bad_images: bool = opt(True, "report and skip unreadable images when indexing (else fail fast)")
    max_pixels: int = opt(200_000_000, "refuse images with more pixels (decompression-bomb guard)")
    tensorboard: bool = opt(True, "write TensorBoard logs when tensorboard is installed")
    progress: bool = opt(True, "show a progress bar on the terminal")
    eval_every: int = opt(0, "steps between evaluations on the test split's ground truth (0 = off; see i2i eval)")
    eval_metrics: str = opt("psnr,ssim", "comma-separated metrics for --eval-every: psnr, ssim, l1, lpips, fid, kid")
    keep_best: Optional[str] = opt(None, "keep the checkpoint with the best value of this eval metric in RUN/best/",
                                   ("psnr", "ssim", "l1", "lpips", "fid", "kid"))
    fid_weights: Optional[str] = opt(None, "TF-Inception FID weights file for fid/kid in --eval-metrics "
                                     "(default: torch-fidelity's file in torch's hub cache)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
GROUPS = {  # how ``i2i train --help`` groups the fields
    "data": ("data", "size", "load_size", "flip", "direction", "skip_bad_images", "max_pixels"),
    "model": ("mode", "generator", "ngf", "n_blocks", "n_down", "unit_shared_blocks", "unet_depth", "norm", "dropout",
              "padding", "ndf", "d_layers", "d_scales", "d_norm", "spectral_norm", "init", "init_gain", "latent_dim",
              "minibatch_std", "num_classes", "class_names"),
    "objective": ("gan_loss", "label_smoothing", "instance_noise", "gp_weight", "r1_gamma", "clip_weights",
                  "lambda_cycle", "lambda_identity", "lambda_l1", "lambda_recon", "lambda_kl", "lambda_cycle_kl",
                  "pool_size", "perceptual_weight", "encoder", "encoder_layers", "encoder_weights"),
    "optimisation": ("steps", "epochs", "batch_size", "lr", "beta1", "beta2", "lr_decay", "ema_decay", "seed",
                     "deterministic", "max_nonfinite"),
    "output": ("out", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "tensorboard", "progress",
               "eval_every", "eval_metrics", "keep_best", "fid_weights"),
    "speed": ("device", "precision", "channels_last", "compile", "cuda_graph", "grad_checkpoint", "workers",
              "gpu_augment"),
    "distributed": ("sync_bn",),
}
_MINIMUM = {"steps": 1, "epochs": 1, "batch_size": 1, "size": 1, "load_size": 1, "workers": 0, "log_every": 1,
            "sample_every": 1, "checkpoint_every": 1, "keep_checkpoints": 0, "max_nonfinite": 1, "max_pixels": 1,
            "ngf": 1, "ndf": 1, "n_blocks": 0, "n_down": 0, "unit_shared_blocks": 0, "unet_depth": 2, "d_layers": 1,
            "d_scales": 1, "latent_dim": 1, "num_classes": 1, "pool_size": 0, "eval_every": 0, "label_smoothing": 0,
            "instance_noise": 0, "gp_weight": 0, "r1_gamma": 0, "lambda_cycle": 0, "lambda_identity": 0,
            "lambda_l1": 0, "lambda_recon": 0, "lambda_kl": 0, "lambda_cycle_kl": 0, "perceptual_weight": 0}
_RANGES = {  # (allowed, described): checked after _MINIMUM
    **dict.fromkeys(("lr", "init_gain", "clip_weights"), (lambda v: v > 0, "greater than 0")),
    **dict.fromkeys(("beta1", "beta2", "ema_decay", "dropout", "label_smoothing"),
                    (lambda v: 0 <= v < 1, "at least 0 and below 1")),
    "lr_decay": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "device": (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto, cpu, mps, cuda or cuda:N"),
}
_HINTS = typing.get_type_hints(TrainConfig)


def field_type(name: str) -> type:
    """The base Python type of a config field (Optional stripped)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = field_type(name)
    if kind is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if kind is bool and not isinstance(value, bool):
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise I2IError(f"config field '{name}' must be true or false, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise I2IError(f"config field '{name}' must be {kind.__name__}, got {value!r}")
    choices = FIELDS[name].metadata.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, 1)
        raise I2IError(f"config field '{name}' must be one of {', '.join(choices)}; got {value!r}"
                       + (f" (did you mean {close[0]}?)" if close else ""))
    if name in _MINIMUM and value < _MINIMUM[name]:
        raise I2IError(f"config field '{name}' must be at least {_MINIMUM[name]}; got {value!r}")
    allowed, described = _RANGES.get(name, (None, ""))
    if allowed is not None and not allowed(value):
        raise I2IError(f"config field '{name}' must be {described}; got {value!r}")
    return value


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Build a config from a dict, naming any unknown key or badly typed value."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        hints = [f"{k} (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(k, FIELDS, 3))
                 else k for k in unknown]
        raise I2IError(f"unknown config field(s): {'; '.join(hints)}. Run 'i2i train --help' for the fields")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise I2IError(f"config file not found: {path}")
    import yaml
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (ValueError, yaml.YAMLError) as e:
        raise I2IError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                       f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise I2IError(f"config file {path} must hold a mapping of field: value")
    return data


def resolve(cfg: TrainConfig, defaults: dict[str, Any]) -> TrainConfig:
    """Fill the fields left at None with the mode's defaults."""
    filled = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **filled)


def save_config(cfg: TrainConfig, path: Path) -> None:
    import yaml
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: Path) -> TrainConfig:
    return make_config(read_config_file(path))
