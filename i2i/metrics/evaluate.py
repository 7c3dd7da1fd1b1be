"""Score a model: a translator against ground truth, or a gan/cgan sampler against real images.

Translators: translate a test split and compare each output with its true image. The truth for ``<root>/testA/x.png`` (direction AtoB) is ``<root>/testA_truth/x.png`` (the unpaired layout of
``datasets/tasks.py``) or, failing that, ``<root>/testB/x.png`` when every testA image has a testB partner of the same
name (a paired layout). ``root`` may also be a folder holding ``paired/`` and/or ``unpaired/``. BtoA mirrors this.

Samplers (gan, cgan): FID/KID of generated images against a folder of real images (per class for cgan) and the
diversity of the samples (mean pairwise LPIPS). Every result names each metric's network, weights file and its
SHA-256 (``networks``), and carries ``warnings`` (e.g. FID on fewer images than feature dimensions).
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.images import list_images, read_image, to_tensor
from ..errors import I2IError
from ..runtime import to_model_range
from . import distribution
from .image import PSNR_CAP, l1, psnr, ssim
from .lpips_distance import diversity, lpips_model

PER_IMAGE = {"psnr": psnr, "ssim": ssim, "l1": l1}
PAIRED = (*PER_IMAGE, "perceptual", "lpips")
DISTRIBUTION = {"fid": "inception", "kid": "inception", "fid_torchvision": "torchvision",
                "kid_torchvision": "torchvision"}  # metric -> its feature network
METRICS = (*PAIRED, *DISTRIBUTION)
SAMPLE_METRICS = (*DISTRIBUTION, "diversity")  # gan / cgan
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "l1": False, "perceptual": False, "lpips": False, "fid": False,
                    "kid": False, "fid_torchvision": False, "kid_torchvision": False, "diversity": True}
LABELS = {
    "psnr": f"PSNR (dB on the [0,1] range, mean over images, each capped at {PSNR_CAP:g})",
    "ssim": "SSIM (11x11 Gaussian window, mean over images)",
    "l1": "L1 (mean absolute error on the [0,1] range)",
    "perceptual": "perceptual distance (i2i.losses.perceptual: L1 between frozen-encoder features, layer mean)",
    "lpips": "LPIPS (lpips v0.1, AlexNet, mean over images)",
    "fid": "FID (TF Inception 2015-12-05, torch-fidelity)",
    "kid": "KID (TF Inception 2015-12-05, torch-fidelity; mean over subsets)",
    "kid_std": "KID standard deviation over subsets",
    "fid_torchvision": "FID on torchvision Inception-V3 IMAGENET1K_V1 (not comparable to published FID)",
    "kid_torchvision": "KID on torchvision Inception-V3 IMAGENET1K_V1 (not comparable to published KID)",
    "kid_torchvision_std": "KID (torchvision Inception) standard deviation over subsets",
    "fid_custom": "Frechet distance on custom features",
    "kid_custom": "kernel distance (KID maths) on custom features",
    "kid_custom_std": "kernel distance on custom features, standard deviation over subsets",
    "diversity": "diversity (mean pairwise LPIPS among samples of one class)",
}


@dataclass
class Networks:
    """Where each metric's network comes from. ``features`` replaces the FID network (any callable from images in
    [-1, 1] to NxD features); its scores are then reported as ``fid_custom`` / ``kid_custom``, never FID/KID."""

    fid_weights: Optional[str | Path] = None
    torchvision_inception_weights: Optional[str | Path] = None
    lpips_weights: Optional[str | Path] = None
    features: Optional[Callable] = None
    encoder: str = "vgg16"
    encoder_weights: Optional[str | Path] = None

    def feature_nets(self, metrics: Sequence[str], device: torch.device) -> dict[str, distribution.FeatureNet]:
        """The feature networks the distribution metrics among ``metrics`` need, keyed as in :data:`DISTRIBUTION`."""
        nets = {}
        for kind in dict.fromkeys(DISTRIBUTION[m] for m in metrics if m in DISTRIBUTION):
            if kind == "torchvision":
                nets[kind] = distribution.torchvision_inception(self.torchvision_inception_weights, device)
            elif self.features is not None:
                nets[kind] = distribution.as_feature_net(self.features, device=device)
            else:
                nets[kind] = distribution.inception(self.fid_weights, device)
        return nets

    def check(self, metrics: Sequence[str], device: torch.device) -> None:
        """Load every network ``metrics`` need now, so that a missing weights file fails before any work."""
        self.feature_nets(metrics, device)
        if "lpips" in metrics or "diversity" in metrics:
            lpips_model(self.lpips_weights, device)


def metric_key(metric: str, custom: bool) -> str:
    """The reported name: fid/kid on a custom network become fid_custom/kid_custom."""
    return f"{metric}_custom" if custom and DISTRIBUTION.get(metric) == "inception" else metric


def distribution_scores(metrics: Sequence[str], features: dict[str, torch.Tensor],
                        reference: dict[str, torch.Tensor], custom: bool, warnings_out: list[str]) -> dict[str, float]:
    """FID / KID (with its std) of ``features`` against ``reference`` (both keyed by network) for ``metrics``."""
    out: dict[str, float] = {}
    for metric in metrics:
        if metric not in DISTRIBUTION:
            continue
        ours, theirs = features[DISTRIBUTION[metric]], reference[DISTRIBUTION[metric]]
        key = metric_key(metric, custom)
        if metric.startswith("fid"):
            warning = distribution.fid_bias_warning(min(len(ours), len(theirs)), ours.shape[1])
            if warning and f"{key}: {warning}" not in warnings_out:
                warnings_out.append(f"{key}: {warning}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out[key] = distribution.fid_from_features(ours, theirs)
        else:
            out[key], out[f"{key}_std"] = distribution.kid_from_features(ours, theirs)
    return out


def describe_networks(metrics: Sequence[str], nets: dict[str, distribution.FeatureNet], networks: Networks,
                      device: torch.device) -> dict[str, dict[str, Optional[str]]]:
    """For each metric: its network, weights file and the file's SHA-256."""
    described = {}
    for metric in metrics:
        if metric in DISTRIBUTION:
            described[metric_key(metric, networks.features is not None)] = nets[DISTRIBUTION[metric]].describe()
        elif metric in ("lpips", "diversity"):
            described[metric] = lpips_model(networks.lpips_weights, device).describe()
        elif metric == "perceptual":
            described[metric] = {"network": f"{networks.encoder} (i2i.nets.encoders)",
                                 "weights": str(networks.encoder_weights) if networks.encoder_weights else None,
                                 "weights_sha256": distribution.sha256(Path(networks.encoder_weights))
                                 if networks.encoder_weights else None}
    return described


def parse_metrics(metrics: str | Sequence[str], allowed: Sequence[str] = METRICS) -> tuple[str, ...]:
    """``"psnr,ssim"`` or a sequence of names, checked against ``allowed``."""
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in allowed]
    if unknown or not names:
        raise I2IError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}")
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
    """Running sums of the per-image metrics and the features of each distribution metric's network."""

    def __init__(self, per_image: dict, nets: dict[str, distribution.FeatureNet]):
        self.per_image, self.nets = per_image, nets
        self.sums = {m: 0.0 for m in per_image}
        self.count = 0
        self.features: dict[str, list[torch.Tensor]] = {kind: [] for kind in nets}

    def add(self, output: torch.Tensor, truth: Optional[torch.Tensor] = None) -> None:
        for name, function in self.per_image.items():
            self.sums[name] += float(function(output, truth).sum())
        self.count += output.shape[0]
        for kind, net in self.nets.items():
            self.features[kind].append(net(output))

    def stacked(self) -> dict[str, torch.Tensor]:
        return {kind: torch.cat(parts) for kind, parts in self.features.items()}

    def means(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self.sums.items()}


@torch.no_grad()
def evaluate_translator(translator: Any, pairs: TestPairs, metrics: str | Sequence[str] = ("psnr", "ssim", "l1"),
                        batch_size: int = 8, size: Optional[int] = None, baseline: bool = False,
                        networks: Optional[Networks] = None) -> dict[str, Any]:
    """Translate every test input with ``translator`` (an :class:`i2i.Translator`) and score it against its truth.

    ``baseline`` also scores the inputs themselves (the identity translation); ``networks`` says where each
    metric's network comes from (see :class:`Networks`).
    """
    metrics = parse_metrics(metrics)
    networks = networks or Networks()
    device = translator.device
    nets = networks.feature_nets(metrics, device)
    per_image = {m: PER_IMAGE[m] for m in metrics if m in PER_IMAGE}
    if "perceptual" in metrics:
        per_image["perceptual"] = perceptual_distance(device, networks.encoder, networks.encoder_weights)
    if "lpips" in metrics:
        per_image["lpips"] = lpips_model(networks.lpips_weights, device)
    model, identity, truth = _Scores(per_image, nets), _Scores(per_image, nets), _Scores({}, nets)
    for x, y in iter_batches(pairs, batch_size, size):
        x, y = x.to(device), y.to(device)
        model.add(translator.translate(x).float(), y)
        if baseline:
            identity.add(x, y)
        truth.add(y)
    custom, notes = networks.features is not None, []
    result: dict[str, Any] = {"mode": translator.mode.name, "direction": translator.direction,
                              "inputs": str(pairs.input_dir), "truth": str(pairs.truth_dir), "images": model.count}
    result["metrics"] = {**model.means(), **distribution_scores(metrics, model.stacked(), truth.stacked(), custom,
                                                                notes)}
    if baseline:
        result["identity"] = {**identity.means(), **distribution_scores(metrics, identity.stacked(),
                                                                        truth.stacked(), custom, notes)}
    return finish(result, metrics, nets, networks, device, notes)


def finish(result: dict[str, Any], metrics: Sequence[str], nets: dict[str, distribution.FeatureNet],
           networks: Networks, device: torch.device, notes: list[str]) -> dict[str, Any]:
    """Add ``labels``, ``networks`` (name, weights file and SHA-256 per metric) and ``warnings`` to a result."""
    result["labels"] = {k: LABELS[k] for k in result["metrics"]}
    if "perceptual" in result["labels"]:
        result["labels"]["perceptual"] += f", encoder {networks.encoder}"
    result["networks"] = describe_networks(metrics, nets, networks, device)
    result["warnings"] = notes
    return result


def _real_features(paths: Sequence[Path], nets: dict[str, distribution.FeatureNet], size: int,
                   batch_size: int) -> dict[str, torch.Tensor]:
    """Features of real image files (resized to ``size``), read in batches so a large folder never sits in memory."""
    scores = _Scores({}, nets)
    for start in range(0, len(paths), batch_size):
        scores.add(torch.stack([_read(p, size) for p in paths[start:start + batch_size]]))
    return scores.stacked()


@torch.no_grad()
def evaluate_sampler(sampler: Any, real_dir: str | Path, metrics: str | Sequence[str] = ("fid", "kid", "diversity"),
                     samples: int = 1000, seed: int = 0, batch_size: int = 64, diversity_images: int = 50,
                     networks: Optional[Networks] = None) -> dict[str, Any]:
    """Score a gan/cgan sampler: FID/KID of ``samples`` generated images against the real images under
    ``real_dir`` and the diversity (mean pairwise LPIPS of up to ``diversity_images`` samples).

    For cgan, ``samples`` are drawn per class and compared with ``real_dir/<class name>/``; ``metrics`` holds the
    scores over all classes (diversity: the mean of the per-class values) and ``classes`` those of each class.
    """
    metrics = parse_metrics(metrics, SAMPLE_METRICS)
    if samples < 2:
        raise I2IError(f"--samples must be at least 2; got {samples}")
    networks = networks or Networks()
    device, size = sampler.device, sampler.cfg.size
    nets = networks.feature_nets(metrics, device)
    lpips = lpips_model(networks.lpips_weights, device) if "diversity" in metrics else None
    root = Path(real_dir).expanduser()
    names = sampler.class_names or [None]
    real_paths = {name: list_images(root if name is None else root / name) for name in names}
    custom, notes = networks.features is not None, []
    generated, real, per_class = _Scores({}, nets), _Scores({}, nets), {}
    for index, name in enumerate(names):
        images = sampler.sample(samples, seed + index, None if name is None else index)
        fake = _Scores({}, nets)
        for batch in images.split(batch_size):
            fake.add(batch)
            generated.add(batch)
        reals = _real_features(real_paths[name], nets, size, batch_size)
        for kind, value in reals.items():
            real.features[kind].append(value)
        scores = distribution_scores(metrics, fake.stacked(), reals, custom, notes)
        if lpips is not None:
            scores["diversity"] = diversity(lpips, images, diversity_images)
        per_class[name] = {"scores": scores, "generated": samples, "real": len(real_paths[name])}
    overall = distribution_scores(metrics, generated.stacked(), real.stacked(), custom, notes)
    if lpips is not None:
        overall["diversity"] = sum(c["scores"]["diversity"] for c in per_class.values()) / len(per_class)
    result: dict[str, Any] = {"mode": sampler.mode.name, "real": str(root), "images": generated.count,
                              "real_images": sum(c["real"] for c in per_class.values()), "seed": seed,
                              "metrics": overall}
    if sampler.class_names:
        result["classes"] = {name: {"metrics": c["scores"], "images": c["generated"], "real_images": c["real"]}
                             for name, c in per_class.items()}
    return finish(result, metrics, nets, networks, device, notes)


def evaluate(translator_or_checkpoint: Any, data_dir: str | Path, direction: str = "AtoB",
             metrics: Optional[str | Sequence[str]] = None, batch_size: int = 8, device: str = "auto",
             baseline: bool = False, size: Optional[int] = None, networks: Optional[Networks] = None,
             samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score a translator, a sampler, or a run/checkpoint folder holding either, on ``data_dir``.

    Translators: ``data_dir``'s test split against its ground truth (default metrics psnr, ssim, l1); returns
    ``{"metrics": {...}, "identity": {...} (with baseline), "labels", "networks", "warnings", "images", ...}``.
    gan/cgan samplers: ``samples`` generated images against the real images in ``data_dir`` (default metrics fid,
    kid, diversity; see :func:`evaluate_sampler`).
    """
    model = translator_or_checkpoint
    checkpoint = None
    if isinstance(model, (str, Path)):
        from ..api import load
        from ..train.checkpoint import find_checkpoint
        checkpoint = find_checkpoint(model)
        model = load(checkpoint, device=device, direction=direction)
    if not hasattr(model, "translate"):
        result = evaluate_sampler(model, data_dir, metrics or ("fid", "kid", "diversity"), samples, seed,
                                  networks=networks)
    else:
        if model.direction != direction:
            raise I2IError(f"the translator runs {model.direction} but direction {direction} was asked for")
        result = evaluate_translator(model, find_test_pairs(data_dir, direction), metrics or ("psnr", "ssim", "l1"),
                                     batch_size, size, baseline, networks)
    if checkpoint is not None:
        result["checkpoint"] = str(checkpoint)
    return result


def columns(result: dict[str, Any]) -> dict[str, tuple[dict[str, float], int]]:
    """The result's score columns: name -> (scores, image count)."""
    out = {"model": (result["metrics"], result["images"])}
    if "identity" in result:
        out["identity (output = input)"] = (result["identity"], result["images"])
    if "classes" in result:
        out = {"all classes": out["model"],
               **{f"class {name}": (c["metrics"], c["images"]) for name, c in result["classes"].items()}}
    return out


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a result: one row per metric, one column per score set."""
    sets = columns(result)
    lines = [f"| metric | {' | '.join(sets)} |", "|---|" + "---:|" * len(sets)]
    for key in result["metrics"]:
        cells = [f"{scores[key]:.4g}" for scores, _ in sets.values()]
        lines.append(f"| {LABELS[key]} | {' | '.join(cells)} |")
    return "\n".join(lines)


def write_csv(result: dict[str, Any], path: str | Path) -> Path:
    """One row per metric and score set: metric, set, value, images, network, weights, weights_sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "set", "value", "images", "network", "weights", "weights_sha256"])
        for name, (scores, images) in columns(result).items():
            for key, value in scores.items():
                network = result["networks"].get(key.removesuffix("_std"), {})
                writer.writerow([key, name, f"{value:.8g}", images, network.get("network", ""),
                                 network.get("weights") or "", network.get("weights_sha256") or ""])
    return path
