"""Distribution metrics: Inception-V3 pool features, the Frechet distance (FID) and the kernel inception distance.

The feature extractor is torchvision's ``inception_v3`` with its IMAGENET1K_V1 weights (2048-d pool features of
299x299 bilinear resizes). Those are not the TF "2015-12-05" weights that pytorch-fid and the original FID use, so
the numbers are labelled as such and are comparable only with other numbers from this extractor. The weights file is
taken from ``weights`` (a .pth state_dict or .safetensors), else torchvision's cache; it is downloaded only when
``I2I_ALLOW_DOWNLOAD=1``.

Any other extractor (a callable from images in [-1, 1] to NxD features) can be passed instead; its scores are then
labelled ``frechet_distance(custom features)`` / ``kid(custom features)``, never FID/KID.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import I2IError

INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
FID_LABEL = "FID (torchvision Inception-V3 IMAGENET1K_V1 weights; not comparable to pytorch-fid/TF-FID numbers)"
KID_LABEL = ("KID (torchvision Inception-V3 IMAGENET1K_V1 pool features, cubic polynomial kernel, unbiased; "
             "not comparable to pytorch-fid/TF numbers)")
CUSTOM_FD_LABEL = "frechet_distance(custom features)"
CUSTOM_KID_LABEL = "kid(custom features)"

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def cached_inception_path() -> Path:
    """Where torchvision keeps the IMAGENET1K_V1 Inception-V3 weights once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError) as e:
        raise I2IError(f"cannot read Inception weights {path}: {e.__class__.__name__}") from None
    if not isinstance(state, dict):
        raise I2IError(f"Inception weights {path} must be a state_dict (.pth) or a .safetensors file")
    return state


def inception_state_dict(weights: Optional[str | Path] = None) -> dict[str, torch.Tensor]:
    """The IMAGENET1K_V1 state dict from ``weights``, the torchvision cache, or (I2I_ALLOW_DOWNLOAD=1) the web."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise I2IError(f"Inception weights file not found: {path}")
    else:
        path = cached_inception_path()
        if not path.is_file():
            if os.environ.get("I2I_ALLOW_DOWNLOAD") != "1":
                raise I2IError(f"FID/KID need the Inception-V3 weights file {path}, which is missing. Download "
                               f"{INCEPTION_URL} to that path, pass --inception-weights PATH, or set "
                               f"I2I_ALLOW_DOWNLOAD=1 to let i2i download it")
            return torch.hub.load_state_dict_from_url(INCEPTION_URL, map_location="cpu", check_hash=True)
    state = _read_state_dict(path)
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] == 1008:
        raise I2IError(f"{path} looks like the pytorch-fid 'pt_inception-2015-12-05' weights, which i2i does not "
                       f"support (they need pytorch-fid's modified Inception blocks); use torchvision's "
                       f"{INCEPTION_FILE} instead, or pytorch-fid itself for comparable FID numbers")
    return state


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] (any size) -> 2048-d Inception-V3 pool features (float32)."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        from torchvision.models import inception_v3
        # transform_input=False: the ported Google weights expect inputs in [-1, 1], which is our model range.
        net = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
        try:
            net.load_state_dict(state_dict)
        except RuntimeError as e:
            raise I2IError(f"the Inception weights do not fit torchvision's inception_v3: "
                           f"{str(e).splitlines()[0]}") from None
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float().clamp(-1, 1), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x).float()


_EXTRACTORS: dict[tuple[str, str], InceptionFeatures] = {}


def inception_features(device: torch.device, weights: Optional[str | Path] = None) -> InceptionFeatures:
    """The (cached) Inception feature extractor on ``device``."""
    key = (str(weights or cached_inception_path()), str(device))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = InceptionFeatures(inception_state_dict(weights)).to(device)
    return _EXTRACTORS[key]


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of NxD features, in float64."""
    if features.shape[0] < 2:
        raise I2IError("the Frechet distance needs at least 2 images per set")
    features = features.detach().to("cpu", torch.float64)
    return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), computed in float64 without scipy."""
    mu1, mu2, sigma1, sigma2 = (t.double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance.clamp(min=0))


def frechet_distance_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Frechet distance between two NxD feature sets (Gaussian fits)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def kernel_distance(features1: torch.Tensor, features2: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over random subsets; returns (mean, std).

    Runs in float64 on CUDA when the features are there (quick for the default 100 subsets of 1000), else on CPU."""
    device = features1.device if features1.device.type == "cuda" else torch.device("cpu")
    x, y = features1.to(device, torch.float64), features2.to(device, torch.float64)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise I2IError("KID needs at least 2 images per set")
    generator = torch.Generator().manual_seed(seed)
    dim = x.shape[1]
    estimates = []
    for _ in range(subsets):
        a = x[torch.randperm(x.shape[0], generator=generator)[:m].to(x.device)]
        b = y[torch.randperm(y.shape[0], generator=generator)[:m].to(y.device)]
        k_aa, k_bb, k_ab = ((p @ q.T / dim + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
        within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
        estimates.append(within - 2 * k_ab.mean())
    values = torch.stack(estimates)
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0
