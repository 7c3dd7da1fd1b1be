"""Translating images larger than memory: overlapping tiles blended with feathered weights.

Two things keep seams invisible:

* every tile's weight rises smoothly (raised cosine) from ~0 to 1 over ``overlap`` pixels on the sides it
  shares with a neighbour, so each output pixel is a smooth weighted mean of the tiles covering it (the tile
  borders, where the net saw padding instead of context, count least);
* per-sample normalisation layers (instance / layer norm) use statistics taken once from the whole image at
  thumbnail size instead of each tile's own, so all tiles share one colour balance ("thumbnail instance
  normalisation", Chen et al., AAAI 2022). The thumbnail has at most as many pixels as one batch of tiles
  (so it fits wherever the tiles fit); batch norm (eval) and norm-free nets need no reference pass.

The output is accumulated in one float buffer on the translator's device: an 8000x6000 image needs
8000*6000*3*4 B = 576 MB for it, plus the uint8 input (kept on the CPU) and one batch of tiles.
"""
from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..nets.layers import InstanceNorm2d, LayerNorm2d
from ..runtime import to_model_range


@torch.inference_mode()
def smallest_side(translator, limit: int = 64) -> int:
    """The smallest multiple of the net's stride it can translate: reflection padding needs a few pixels at the
    net's coarsest scale, so a 4x4 image may be too small for it (found by trying sizes, once per conversion)."""
    for side in range(translator.stride, limit * translator.stride + 1, translator.stride):
        try:
            translator.translate(torch.zeros(1, 3, side, side, device=translator.device))
        except RuntimeError:  # e.g. "Padding size should be less than the corresponding input dimension"
            continue
        return side
    raise RuntimeError(f"the generator translates no image of up to {limit * translator.stride} pixels")


def translate_at_least(translator, x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Translate a batch in [-1, 1], first padding sides under ``minimum`` pixels (edge pixels repeated) and
    cropping the result back."""
    height, width = x.shape[-2:]
    grow_h, grow_w = max(0, minimum - height), max(0, minimum - width)
    if grow_h or grow_w:
        x = F.pad(x, (0, grow_w, 0, grow_h), mode="replicate")
    return translator.translate(x)[..., :height, :width]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` shared pixels."""
    if length <= tile:
        return [0]
    step = tile - overlap
    return list(range(0, length - tile, step)) + [length - tile]


def ramp(length: int, start: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile at ``start``: a raised-cosine rise over ``overlap`` pixels at inner edges."""
    weight = torch.ones(length)
    n = min(overlap, length)
    if n == 0:
        return weight
    rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float32) + 0.5) / n)
    if start > 0:
        weight[:n] = rise
    if start + length < total:
        weight[-n:] = torch.minimum(weight[-n:], rise.flip(0))
    return weight


def _norm_dims(module: nn.Module) -> Optional[tuple[int, ...]]:
    """Reduction dims of a per-sample normalisation layer (None for anything else)."""
    if isinstance(module, InstanceNorm2d):
        return (2, 3)
    if isinstance(module, LayerNorm2d):
        return (1, 2, 3)
    if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats:
        return (2, 3)
    return None


def _capture(stats: dict, dims: tuple[int, ...], module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    var, mean = torch.var_mean(inputs[0].float(), dim=dims, keepdim=True, unbiased=False)
    stats[module] = (mean, var)


def _normalise_with(module: nn.Module, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    y = ((x.float() - mean) * torch.rsqrt(var + module.eps)).to(x.dtype)
    if module.weight is not None:
        y = y * module.weight.view(1, -1, 1, 1).to(y.dtype) + module.bias.view(1, -1, 1, 1).to(y.dtype)
    return y


@contextlib.contextmanager
def shared_norm_statistics(net: nn.Module, reference_pass: Callable[[], object]) -> Iterator[None]:
    """Within the block, the per-sample norms of ``net`` reuse the statistics they saw during
    ``reference_pass()`` (a forward of the whole image at thumbnail size) instead of computing their own."""
    norms = {m: dims for m in net.modules() if (dims := _norm_dims(m)) is not None}
    if not norms:
        yield
        return
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [m.register_forward_hook(partial(_capture, stats, dims)) for m, dims in norms.items()]
    try:
        reference_pass()
    finally:
        for handle in handles:
            handle.remove()
    try:
        for m, (mean, var) in stats.items():
            m.forward = partial(_normalise_with, m, mean, var)  # instance attribute shadows the class method
        yield
    finally:
        for m in stats:
            m.__dict__.pop("forward", None)


def thumbnail(image: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """A 3xHxW uint8 image shrunk (area-averaged) to at most ``max_pixels`` pixels, aspect kept."""
    height, width = image.shape[-2:]
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(size, Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)


@torch.inference_mode()
def translate_tiled(translator, image: torch.Tensor, tile: int, overlap: int, batch_size: int = 4,
                    minimum: int = 1) -> torch.Tensor:
    """Translate a 3xHxW uint8 image tile by tile; returns the 3xHxW float result in [-1, 1] on the device.

    ``tile`` is rounded down to a multiple of the net's stride; neighbouring tiles share ``overlap`` pixels; tiles
    (of a thin image) and the thumbnail are padded to at least ``minimum`` pixels (see :func:`smallest_side`).
    """
    stride = translator.stride
    tile = max(stride, tile // stride * stride)
    overlap = min(overlap, tile - stride)
    height, width = image.shape[-2:]
    th, tw = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    device = translator.device
    out = torch.zeros(3, height, width, device=device)
    total_y, total_x = torch.zeros(height), torch.zeros(width)
    for y in ys:
        total_y[y:y + th] += ramp(th, y, height, overlap)
    for x in xs:
        total_x[x:x + tw] += ramp(tw, x, width, overlap)
    small = to_model_range(thumbnail(image, batch_size * tile * tile).to(device))
    positions = [(y, x) for y in ys for x in xs]
    with shared_norm_statistics(translator.net, lambda: translate_at_least(translator, small, minimum)):
        for i in range(0, len(positions), batch_size):
            chunk = positions[i:i + batch_size]
            tiles = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk]).to(device, non_blocking=True)
            result = translate_at_least(translator, to_model_range(tiles), minimum)
            for (y, x), r in zip(chunk, result):
                weight = torch.outer(ramp(th, y, height, overlap), ramp(tw, x, width, overlap)).to(device)
                out[:, y:y + th, x:x + tw].addcmul_(r, weight)
    return out.div_(total_y.view(1, -1, 1).to(device)).div_(total_x.view(1, 1, -1).to(device))
