"""Distribution metrics: FID and KID on any feature network, with torch-fidelity's maths.

Public API (images are Nx3xHxW tensors, uint8 in 0..255 or float in i2i's model range [-1, 1], an iterable of
such batches, or a folder of image files)::

    fid(real_images, fake_images, features=None, weights=None, device="cpu", batch_size=64) -> float
    kid(real_images, fake_images, features=None, weights=None, device="cpu", batch_size=64,
        subsets=100, subset_size=1000, seed=2020) -> (mean, std)
    fid_from_features(f1, f2) -> float                        # NxD feature sets
    kid_from_features(f1, f2, subsets, subset_size, seed) -> (mean, std)

``features`` is None for the standard FID network (:func:`inception`: the TF Inception of 2015-12-05 as ported
by torch-fidelity, ``weights`` names its file), a :class:`FeatureNet`, or any callable / ``nn.Module`` from float
images in [-1, 1] (on ``device``) to NxD features, e.g. a digit classifier's penultimate layer::

    from i2i.metrics import kid
    mean, std = kid(real, fake, features=classifier.features)

Every network goes through the same path: batches in, features out (float64 on the CPU), then torch-fidelity's
``fid_statistics_to_metric`` (mean and covariance, trace of the matrix square root from eigenvalues, float64) and
``kid_features_to_metric`` (unbiased MMD^2, kernel (x.y / D + 1)^3, ``subsets`` random subsets of ``subset_size``
drawn from a seeded NumPy generator; the std is over subsets).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import list_images, read_image, to_tensor
from ..errors import I2IError
from ..runtime import to_model_range, to_uint8

FID_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                   "weights-inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = FID_WEIGHTS_URL.rsplit("/", 1)[1]
TORCHVISION_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_FILE = TORCHVISION_INCEPTION_URL.rsplit("/", 1)[1]
KID_SEED = 2020  # torch-fidelity's default, so i2i's KID equals its command's on the same images

Images = Union[torch.Tensor, Iterable[torch.Tensor], str, Path]


def sha256(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FeatureNet:
    """A feature network with what a report says about it: ``name``, and the weights file and its SHA-256."""

    name: str
    network: Callable[[torch.Tensor], torch.Tensor]  # float images in [-1, 1] on ``device`` -> NxD features
    device: torch.device = torch.device("cpu")
    weights: Optional[Path] = None
    weights_sha256: Optional[str] = None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """NxD features (float64, CPU) of images (uint8 0..255 or float in [-1, 1])."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise I2IError(f"expected images of shape Nx3xHxW, got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = to_model_range(images)
        features = self.network(images.to(self.device, torch.float32))
        return features.reshape(features.shape[0], -1).to("cpu", torch.float64)

    def describe(self) -> dict[str, Optional[str]]:
        """``network``, ``weights`` and ``weights_sha256`` for reports."""
        return {"network": self.name, "weights": str(self.weights) if self.weights else None,
                "weights_sha256": self.weights_sha256}


def as_feature_net(features: Union[None, FeatureNet, Callable], weights: Optional[str | Path] = None,
                   device: str | torch.device = "cpu") -> FeatureNet:
    """None -> the standard FID network (:func:`inception`); a callable -> a FeatureNet named after it."""
    if features is None:
        return inception(weights, device)
    if isinstance(features, FeatureNet):
        return features
    if isinstance(features, nn.Module):
        features = features.to(device).eval()
    name = getattr(features, "__qualname__", None) or type(features).__name__
    return FeatureNet(f"custom ({name})", features, torch.device(device))


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise I2IError(f"{what} file not found: {path}")


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict read without running pickled code (.pth through torch's weights-only loader, or .safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError) as e:
        raise I2IError(f"cannot read {what} {path}: {e.__class__.__name__} (expected a state_dict .pth)") from None
    if not isinstance(state, dict):
        raise I2IError(f"{what} {path} must be a state_dict")
    return state


def _cached(file_name: str, url: str, weights: Optional[str | Path], what: str, option: str) -> Path:
    """``weights`` if given, else torch's hub cache; downloaded there only with I2I_ALLOW_DOWNLOAD=1."""
    if weights is not None:
        path = Path(weights).expanduser()
        _check_file(path, what)
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not path.is_file():
        if os.environ.get("I2I_ALLOW_DOWNLOAD") != "1":
            raise I2IError(f"{what} file {path} is missing: download {url} to that path, pass {option} PATH, "
                           f"or set I2I_ALLOW_DOWNLOAD=1 to let i2i download it")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path))
    return path


def fid_weights_path(weights: Optional[str | Path] = None) -> Path:
    """The TF-Inception FID weights file: ``weights``, or torch-fidelity's cache (see :func:`_cached`)."""
    return _cached(FID_WEIGHTS_FILE, FID_WEIGHTS_URL, weights, "TF-Inception FID weights", "--fid-weights")


_NETS: dict[tuple[str, str, str], FeatureNet] = {}


def inception(weights: Optional[str | Path] = None, device: str | torch.device = "cpu") -> FeatureNet:
    """The standard FID network: torch-fidelity's port of the TF Inception (2015-12-05), 2048-d pool features.

    Images are quantised to uint8 (as when saved to PNG) and resized to 299x299 by torch-fidelity's exact port
    of TF1's bilinear resize, as in the original TF FID code. Cached per weights file and device.
    """
    path = fid_weights_path(weights)
    key = ("fid", str(path.resolve()), str(device))
    if key not in _NETS:
        _read_state_dict(path, "TF-Inception FID weights")  # refuses pickled code before torch-fidelity loads it
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                    feature_extractor_weights_path=str(path))
        except RuntimeError as e:
            raise I2IError(f"{path} does not fit torch-fidelity's FID Inception: {str(e).splitlines()[0]}") from None
        extractor = extractor.to(device)
        _NETS[key] = FeatureNet("inception-v3-compat (TF 2015-12-05 FID weights, torch-fidelity)",
                                lambda x: extractor(to_uint8(x))[0], torch.device(device), path, sha256(path))
    return _NETS[key]


def torchvision_inception(weights: Optional[str | Path] = None, device: str | torch.device = "cpu") -> FeatureNet:
    """torchvision's ``inception_v3`` IMAGENET1K_V1 pool features (2048-d, 299x299 bilinear resize of [-1, 1]).

    Not the FID network: its scores are reported as ``fid_torchvision`` / ``kid_torchvision`` and are comparable
    only with each other.
    """
    path = _cached(TORCHVISION_INCEPTION_FILE, TORCHVISION_INCEPTION_URL, weights,
                   "torchvision Inception-V3 weights", "--torchvision-inception-weights")
    key = ("torchvision", str(path.resolve()), str(device))
    if key not in _NETS:
        from torchvision.models import inception_v3
        net = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
        try:
            net.load_state_dict(_read_state_dict(path, "torchvision Inception-V3 weights"))
        except RuntimeError as e:
            raise I2IError(f"{path} does not fit torchvision's inception_v3: {str(e).splitlines()[0]}") from None
        net.fc = nn.Identity()
        net = net.eval().requires_grad_(False).to(device)

        def pool_features(x: torch.Tensor) -> torch.Tensor:
            # transform_input=False: the ported Google weights take inputs in [-1, 1], i2i's model range
            return net(F.interpolate(x.clamp(-1, 1), size=(299, 299), mode="bilinear", align_corners=False))

        _NETS[key] = FeatureNet("torchvision inception_v3 IMAGENET1K_V1 (not the FID network)", pool_features,
                                torch.device(device), path, sha256(path))
    return _NETS[key]


def folder_batches(folder: str | Path, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """The image files under ``folder`` (sorted by path) as uint8 batches; a batch holds images of one size."""
    batch: list[torch.Tensor] = []
    for path in list_images(folder):
        image = to_tensor(read_image(path))
        if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    yield torch.stack(batch)


def extract(net: FeatureNet, images: Images, batch_size: int = 64) -> torch.Tensor:
    """NxD features (float64, CPU) of a tensor of images (in batches of ``batch_size``), of an iterable of batches,
    or of the image files in a folder."""
    if isinstance(images, (str, Path)):
        images = folder_batches(images, batch_size)
    elif isinstance(images, torch.Tensor):
        images = images.split(batch_size)
    parts = [net(batch) for batch in images]
    if not parts:
        raise I2IError("no images to compute features of")
    return torch.cat(parts)


def fid_bias_warning(images: int, dim: int) -> Optional[str]:
    """The warning for FID on fewer images than feature dimensions (a rank-deficient covariance), else None."""
    if images >= dim:
        return None
    return (f"FID on {images} images with {dim}-d features is biased upward (the covariance is rank-deficient); "
            f"use at least {dim} images, or compare with KID")


def fid_from_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two NxD feature sets (torch-fidelity's maths); warns when biased."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    if min(len(features1), len(features2)) < 2:
        raise I2IError("FID needs at least 2 images per set")
    warning = fid_bias_warning(min(len(features1), len(features2)), features1.shape[1])
    if warning:
        warnings.warn(warning, stacklevel=2)
    statistics = [fid_features_to_statistics(f.detach().to("cpu", torch.float64)) for f in (features1, features2)]
    return float(fid_statistics_to_metric(*statistics, verbose=False)[KEY_METRIC_FID])


def kid_from_features(features1: torch.Tensor, features2: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                      seed: int = KID_SEED) -> tuple[float, float]:
    """KID (mean, std over subsets) of two NxD feature sets (torch-fidelity's maths); subsets shrink to the sets."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise I2IError("KID needs at least 2 images per set")
    result = kid_features_to_metric(features1.detach().to("cpu", torch.float64),
                                    features2.detach().to("cpu", torch.float64), kid_subsets=subsets,
                                    kid_subset_size=size, rng_seed=seed, verbose=False)
    return float(result[KEY_METRIC_KID_MEAN]), float(result[KEY_METRIC_KID_STD])


def fid(real_images: Images, fake_images: Images, features: Union[None, FeatureNet, Callable] = None,
        weights: Optional[str | Path] = None, device: str | torch.device = "cpu", batch_size: int = 64) -> float:
    """FID between two image sets on ``features`` (default: the standard TF-Inception FID network)."""
    net = as_feature_net(features, weights, device)
    return fid_from_features(extract(net, real_images, batch_size), extract(net, fake_images, batch_size))


def kid(real_images: Images, fake_images: Images, features: Union[None, FeatureNet, Callable] = None,
        weights: Optional[str | Path] = None, device: str | torch.device = "cpu", batch_size: int = 64,
        subsets: int = 100, subset_size: int = 1000, seed: int = KID_SEED) -> tuple[float, float]:
    """KID (mean, std over subsets) between two image sets on ``features`` (default: the TF-Inception network)."""
    net = as_feature_net(features, weights, device)
    return kid_from_features(extract(net, real_images, batch_size), extract(net, fake_images, batch_size),
                             subsets, subset_size, seed)
