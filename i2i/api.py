"""Library entry points: ``i2i.load(checkpoint)`` returns a ready model for inference."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data.images import read_image, to_rgb8, to_tensor
from .errors import I2IError
from .modes.base import Mode, create_mode
from .runtime import autocast, default_precision, pick_device, to_model_range, to_uint8
from .train.checkpoint import find_checkpoint, load_checkpoint_config, load_matching, load_weights


def load_mode(path: str | Path, device: torch.device, use_ema: bool = True) -> tuple[Mode, nn.ModuleDict]:
    """Rebuild a checkpoint's mode from its saved config; returns it and its inference networks (EMA if kept)."""
    checkpoint = find_checkpoint(path)
    cfg = load_checkpoint_config(checkpoint)
    cfg.perceptual_weight = 0.0  # the frozen encoder is a training-only term
    mode = create_mode(cfg, for_training=False)
    weights = load_weights(checkpoint)
    mode.upgrade_weights(weights)
    load_matching(mode.nets, weights.get("nets", {}), checkpoint)
    nets = dict(mode.nets.items())
    if use_ema and "ema" in weights:  # the EMA copies of the generators replace their raw weights
        load_matching(nn.ModuleDict({name: nets[name] for name in mode.generators}), weights["ema"], checkpoint)
    inference = nn.ModuleDict(nets).to(device).eval().requires_grad_(False)
    return mode, inference


def network_stride(net: nn.Module) -> int:
    """Input sizes must be multiples of this for the generator to return the same size."""
    return int(getattr(net, "stride", 1))


class Translator:
    """A trained generator for one direction: tensors, PIL images or whole folders in, translations out."""

    def __init__(self, mode: Mode, nets: nn.ModuleDict, direction: Optional[str], device: torch.device,
                 precision: str):
        if not mode.directions:
            raise I2IError(f"a '{mode.name}' checkpoint generates from noise; use i2i.load(...).sample(n) instead")
        direction = direction or mode.directions[0]
        if direction not in mode.directions:
            raise I2IError(f"mode '{mode.name}' translates {', '.join(mode.directions)}; got direction {direction!r}")
        self.mode, self.direction, self.device, self.precision = mode, direction, device, precision
        self.nets = nets
        self.net = mode.translator(direction, nets)
        self.stride = network_stride(self.net)

    @property
    def cfg(self):
        return self.mode.cfg

    @torch.inference_mode()
    def translate(self, x: Union[torch.Tensor, Image.Image, np.ndarray, str, Path]) -> Any:
        """Translate at native size and give back the same kind: a tensor is model input (float, Bx3xHxW or 3xHxW,
        in [-1, 1]); a PIL image, or a numpy HxWx3 uint8 array, is an image; a path is read as an image (a PIL
        image comes back)."""
        if isinstance(x, (str, Path)):
            return self.translate_image(Image.fromarray(read_image(x)))
        if isinstance(x, np.ndarray):
            if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
                raise I2IError(f"translate() takes numpy images as HxWx3 uint8 arrays; got {x.dtype} of shape "
                               f"{x.shape}")
            return np.asarray(self.translate_image(Image.fromarray(x)))
        if isinstance(x, Image.Image):
            return self.translate_image(x)
        if not isinstance(x, torch.Tensor):
            raise I2IError(f"translate() takes a tensor, a PIL image, a numpy array or a path; got {type(x).__name__}")
        if not x.is_floating_point():
            raise I2IError(f"translate() takes float tensors in [-1, 1]; got {x.dtype} (use x.float() / 127.5 - 1 "
                           f"for 0..255 images, or pass a PIL image or a numpy HxWx3 uint8 array)")
        single = x.dim() == 3
        x = x.unsqueeze(0) if single else x
        if x.dim() != 4 or x.shape[1] != 3 or not x.numel():
            raise I2IError(f"expected images of shape Bx3xHxW in [-1, 1], got {tuple(x.shape)}")
        low, high = torch.aminmax(x)
        if low < -1.001 or high > 1.001:
            raise I2IError(f"translate() takes tensors in [-1, 1]; got values from {low:.4g} to {high:.4g} (use "
                           f"x / 127.5 - 1 for 0..255 images, x * 2 - 1 for 0..1)")
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        x = x.to(self.device, torch.float32)
        if pad_h or pad_w:  # mirror the border (no hard edge for the net to see); replicate when too small
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < height and pad_w < width else "replicate")
        with autocast(self.device, self.precision):
            y = self.net(x)
        y = y[..., :height, :width].float().clamp(-1, 1)
        return y[0] if single else y

    def translate_image(self, image: Image.Image) -> Image.Image:
        """Translate a PIL image (any mode) at its native size; returns an RGB PIL image."""
        x = to_model_range(to_tensor(to_rgb8(image)))
        y = to_uint8(self.translate(x)).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(y)

    def translate_folder(self, src: str | Path, dst: str | Path, **options: Any):
        """Translate every image under ``src`` into ``dst`` (see ``i2i convert --help`` for the options)."""
        from .convert.folder import translate_folder
        return translate_folder(self, src, dst, **options)


def load(path: str | Path, device: str = "auto", precision: Optional[str] = None, direction: Optional[str] = None,
         use_ema: bool = True) -> Any:
    """Load a run folder or checkpoint folder for inference.

    Translation modes return a :class:`Translator`; noise-to-image modes (gan, cgan) return a sampler.
    """
    torch_device = pick_device(device)
    mode, nets = load_mode(path, torch_device, use_ema)
    precision = default_precision(torch_device, precision)
    if not mode.directions:
        from .sampling import Sampler
        return Sampler(mode, nets, torch_device, precision)
    return Translator(mode, nets, direction, torch_device, precision)
