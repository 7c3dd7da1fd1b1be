"""Score a translator against ground truth: translate a test split and compare each output with its true image.

The truth for ``<root>/testA/x.png`` (direction AtoB) is ``<root>/testA_truth/x.png`` (the unpaired layout of
``datasets/tasks.py``) or, failing that, ``<root>/testB/x.png`` when every testA image has a testB partner of the same
name (a paired layout). ``root`` may also be a folder holding ``paired/`` and/or ``unpaired/``. BtoA mirrors this.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.images import list_images, read_image, to_tensor
from ..errors import I2IError
from ..runtime import to_model_range
from . import fid as fidlib
from .image import PSNR_CAP, l1, psnr, ssim

PER_IMAGE = {"psnr": psnr, "ssim": ssim, "l1": l1}
DISTRIBUTION = ("fid", "kid")
METRICS = (*PER_IMAGE, "perceptual", *DISTRIBUTION)
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "l1": False, "perceptual": False, "fid": False, "kid": False}
LABELS = {
    "psnr": f"PSNR (dB on the [0,1] range, mean over images, each capped at {PSNR_CAP:g})",
    "ssim": "SSIM (11x11 Gaussian window, mean over images)",
    "l1": "L1 (mean absolute error on the [0,1] range)",
    "perceptual": "perceptual distance (i2i.losses.perceptual: L1 between frozen-encoder features, layer mean)",
    "fid": fidlib.FID_LABEL,
    "kid": fidlib.KID_LABEL,
    "kid_std": "KID standard deviation over subsets",
    "fd_custom": fidlib.CUSTOM_FD_LABEL,
    "kid_custom": fidlib.CUSTOM_KID_LABEL,
    "kid_custom_std": "kid(custom features) standard deviation over subsets",
}


def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``"psnr,ssim"`` or a sequence of names, checked against :data:`METRICS`."""
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise I2IError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


@dataclass
class TestPairs:
    """Test inputs and their true translations, matched by file name."""

    inputs: list[Path]
    truths: list[Path]
    input_dir: Path
    truth_dir: Path


def find_test_pairs(data_dir: str | Path, direction: str = "AtoB") -> TestPairs:
    """The test split of ``data_dir`` with ground truth for ``direction`` (see the module docstring)."""
    if direction not in ("AtoB", "BtoA"):
        raise I2IError(f"direction must be AtoB or BtoA, got {direction!r}")
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise I2IError(f"data folder not found: {root}")
    src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
    if not (root / f"test{src}").is_dir():
        root = next((root / layout for layout in ("paired", "unpaired") if (root / layout / f"test{src}").is_dir()),
                    root)
    input_dir = root / f"test{src}"
    if input_dir.is_dir():
        inputs = list_images(input_dir)
        keys = [p.relative_to(input_dir).with_suffix("") for p in inputs]
        for truth_dir in (root / f"test{src}_truth", root / f"test{dst}"):
            if truth_dir.is_dir():
                truths = {p.relative_to(truth_dir).with_suffix(""): p for p in list_images(truth_dir)}
                if all(k in truths for k in keys):
                    return TestPairs(inputs, [truths[k] for k in keys], input_dir, truth_dir)
    raise I2IError(f"no ground truth for {input_dir}: expected the test inputs there and their true translations "
                   f"in {root}/test{src}_truth/ or (paired) {root}/test{dst}/, with the same file names")


def _read(path: Path, size: Optional[int]) -> torch.Tensor:
    x = to_model_range(to_tensor(read_image(path)))
    if size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x


def iter_batches(pairs: TestPairs, batch_size: int, size: Optional[int] = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, truths) float batches in [-1, 1] on the CPU; a batch holds images of one size."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for path_x, path_y in zip(pairs.inputs, pairs.truths):
        x, y = _read(path_x, size), _read(path_y, size)
        if x.shape != y.shape:
            raise I2IError(f"{path_x} is {x.shape[2]}x{x.shape[1]} but its truth {path_y} is {y.shape[2]}x"
                           f"{y.shape[1]}; pass a size to resize both")
        if xs and (len(xs) == batch_size or xs[0].shape != x.shape):
            yield torch.stack(xs), torch.stack(ys)
            xs, ys = [], []
        xs.append(x)
        ys.append(y)
    if xs:
        yield torch.stack(xs), torch.stack(ys)


def perceptual_distance(device: torch.device, encoder: str = "vgg16", encoder_weights: Optional[str | Path] = None):
    """Per-image perceptual distance with the training loss's frozen encoder (needs its pretrained weights)."""
    from ..losses.perceptual import PerceptualLoss
    from ..nets.encoders import FrozenEncoder
    loss = PerceptualLoss(FrozenEncoder(encoder, None, encoder_weights)).to(device)

    def distance(output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(o[None], t[None]) for o, t in zip(output, truth)]).float()

    return distance


class _Scores:
    """Running sums of the per-image metrics and the features for the distribution metrics."""

    def __init__(self, metrics: Sequence[str], per_image: dict):
        self.metrics = metrics
        self.per_image = per_image
        self.sums = {m: 0.0 for m in per_image}
        self.count = 0
        self.features: list[torch.Tensor] = []

    def add(self, output: torch.Tensor, truth: torch.Tensor, extractor) -> None:
        for name, function in self.per_image.items():
            self.sums[name] += float(function(output, truth).sum())
        self.count += output.shape[0]
        if extractor is not None:
            self.features.append(extractor(output).float())

    def result(self, truth_features: Optional[torch.Tensor], custom: bool) -> dict[str, float]:
        out = {name: total / self.count for name, total in self.sums.items()}
        if truth_features is not None:
            features = torch.cat(self.features)
            if "fid" in self.metrics:
                out["fd_custom" if custom else "fid"] = fidlib.frechet_distance_features(features, truth_features)
            if "kid" in self.metrics:
                key = "kid_custom" if custom else "kid"
                out[key], out[f"{key}_std"] = fidlib.kernel_distance(features, truth_features)
        return out


@torch.no_grad()
def evaluate_translator(translator: Any, pairs: TestPairs, metrics: str | Sequence[str] = ("psnr", "ssim", "l1"),
                        batch_size: int = 8, size: Optional[int] = None, baseline: bool = False,
                        inception_weights: Optional[str | Path] = None,
                        feature_extractor: Optional[fidlib.FeatureExtractor] = None, encoder: str = "vgg16",
                        encoder_weights: Optional[str | Path] = None) -> dict[str, Any]:
    """Translate every test input with ``translator`` (an :class:`i2i.Translator`) and score it against its truth.

    ``baseline`` also scores the inputs themselves (the identity translation). ``feature_extractor`` replaces the
    Inception network for fid/kid (its scores are then reported as ``fd_custom`` / ``kid_custom``). ``encoder`` and
    ``encoder_weights`` choose the frozen encoder of the perceptual distance.
    """
    metrics = parse_metrics(metrics)
    device = translator.device
    extractor = None
    if any(m in DISTRIBUTION for m in metrics):
        extractor = feature_extractor or fidlib.inception_features(device, inception_weights)
    per_image = {m: PER_IMAGE[m] for m in metrics if m in PER_IMAGE}
    if "perceptual" in metrics:
        per_image["perceptual"] = perceptual_distance(device, encoder, encoder_weights)
    model, identity = _Scores(metrics, per_image), _Scores(metrics, per_image)
    truth_features = [] if extractor is not None else None
    for x, y in iter_batches(pairs, batch_size, size):
        x, y = x.to(device), y.to(device)
        model.add(translator.translate(x).float(), y, extractor)
        if baseline:
            identity.add(x, y, extractor)
        if extractor is not None:
            truth_features.append(extractor(y).float())
    truth_features = torch.cat(truth_features) if truth_features is not None else None
    custom = feature_extractor is not None
    result: dict[str, Any] = {"mode": translator.mode.name, "direction": translator.direction,
                              "inputs": str(pairs.input_dir), "truth": str(pairs.truth_dir), "images": model.count,
                              "metrics": model.result(truth_features, custom)}
    if baseline:
        result["identity"] = identity.result(truth_features, custom)
    result["labels"] = {k: LABELS[k] for k in result["metrics"]}
    if "perceptual" in result["labels"]:
        result["labels"]["perceptual"] += f", encoder {encoder}"
    return result


def evaluate(translator_or_checkpoint: Any, data_dir: str | Path, direction: str = "AtoB",
             metrics: str | Sequence[str] = ("psnr", "ssim", "l1"), batch_size: int = 8, device: str = "auto",
             baseline: bool = False, size: Optional[int] = None, inception_weights: Optional[str | Path] = None,
             feature_extractor: Optional[fidlib.FeatureExtractor] = None, encoder: str = "vgg16",
             encoder_weights: Optional[str | Path] = None) -> dict[str, Any]:
    """Score a translator (or a run/checkpoint folder) on ``data_dir``'s test split against its ground truth.

    Returns ``{"metrics": {...}, "identity": {...} (with baseline), "labels": {...}, "images": n, ...}``; PSNR,
    SSIM and L1 are means over images computed on the [0, 1] range (see :mod:`i2i.metrics.image`).
    """
    metrics = parse_metrics(metrics)
    pairs = find_test_pairs(data_dir, direction)
    translator = translator_or_checkpoint
    checkpoint = None
    if isinstance(translator_or_checkpoint, (str, Path)):
        from ..api import Translator, load
        from ..train.checkpoint import find_checkpoint
        checkpoint = find_checkpoint(translator_or_checkpoint)
        translator = load(checkpoint, device=device, direction=direction)
        if not isinstance(translator, Translator):
            raise I2IError(f"{checkpoint} holds a model that generates from noise; i2i eval scores translators")
    elif translator.direction != direction:
        raise I2IError(f"the translator runs {translator.direction} but direction {direction} was asked for")
    result = evaluate_translator(translator, pairs, metrics, batch_size, size, baseline, inception_weights,
                                 feature_extractor, encoder, encoder_weights)
    if checkpoint is not None:
        result["checkpoint"] = str(checkpoint)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a result: one row per metric, model and (when present) identity columns."""
    columns = ["model"] + (["identity (output = input)"] if "identity" in result else [])
    lines = [f"| metric | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    for key, value in result["metrics"].items():
        cells = [f"{value:.4g}"] + ([f"{result['identity'][key]:.4g}"] if "identity" in result else [])
        lines.append(f"| {LABELS[key]} | {' | '.join(cells)} |")
    return "\n".join(lines)
