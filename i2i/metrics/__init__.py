"""Evaluation metrics: PSNR / SSIM / L1 against ground truth, FID / KID from Inception features, and ``evaluate``."""
from .image import PSNR_CAP, l1, psnr, ssim

__all__ = ["PSNR_CAP", "evaluate", "l1", "psnr", "ssim"]


def evaluate(*args, **kwargs):
    """See :func:`i2i.metrics.evaluate.evaluate`."""
    from .evaluate import evaluate as run
    return run(*args, **kwargs)
