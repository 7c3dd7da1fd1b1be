"""Evaluation metrics: PSNR / SSIM / L1 against ground truth, FID / KID on any feature network, LPIPS, ``evaluate``.

``fid(real, fake, features=None)`` and ``kid(real, fake, features=None)`` score two image sets (see
:mod:`i2i.metrics.distribution` for the signatures); ``features`` may be any network from images to NxD features.
"""
from .distribution import FeatureNet, fid, fid_from_features, inception, kid, kid_from_features
from .image import PSNR_CAP, l1, psnr, ssim

__all__ = ["PSNR_CAP", "FeatureNet", "evaluate", "fid", "fid_from_features", "inception", "kid", "kid_from_features",
           "l1", "psnr", "ssim"]


def evaluate(*args, **kwargs):
    """See :func:`i2i.metrics.evaluate.evaluate`."""
    from .evaluate import evaluate as run
    return run(*args, **kwargs)
