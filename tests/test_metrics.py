"""Metrics: PSNR/SSIM/L1 conventions and the torchvision Inception variant (FID/KID: test_distribution_metrics.py)."""
from __future__ import annotations

import math

import pytest
import torch

from i2i.errors import I2IError
from i2i.metrics import PSNR_CAP, l1, psnr, ssim
from i2i.metrics import distribution


def test_identical_images_score_perfectly():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(psnr(x, x), torch.full((3,), PSNR_CAP))  # infinite PSNR is capped (documented)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    assert torch.equal(l1(x, x), torch.zeros(3))


def test_psnr_of_gaussian_noise_matches_formula():
    """Images in [-1, 1] with noise of std s: MSE s^2 over a peak-to-peak range of 2, PSNR = 10 log10(4 / s^2)."""
    torch.manual_seed(0)
    clean = torch.zeros(4, 3, 64, 64)  # mid grey, so the noise never reaches the range limits
    for sigma in (0.02, 0.1):
        noisy = clean + sigma * torch.randn_like(clean)
        values = psnr(noisy, clean)
        assert values.shape == (4,)
        assert torch.allclose(values, torch.full((4,), 10 * math.log10(4 / sigma ** 2)), atol=0.15)
        assert torch.allclose(l1(noisy, clean), torch.full((4,), sigma / 2 * math.sqrt(2 / math.pi)), rtol=0.03)


def test_ssim_falls_with_noise_and_checks_shapes():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mild, strong = (ssim(x + s * torch.randn_like(x), x) for s in (0.05, 0.5))
    assert (mild < 1).all() and (strong < mild).all() and (strong > -1).all()
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, x[:, :, :16])


def test_torchvision_inception_features_from_a_local_file(tmp_path):
    """Plumbing only (random weights): file -> Nx2048 pool features under its own, clearly different name."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    path = tmp_path / "inception.safetensors"
    save_file(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), str(path))
    net = distribution.torchvision_inception(path)
    features = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert net.describe() == {"network": "torchvision inception_v3 IMAGENET1K_V1 (not the FID network)",
                              "weights": str(path), "weights_sha256": distribution.sha256(path)}
    with pytest.raises(I2IError, match="does not fit torchvision's inception_v3"):
        save_file({"fc.weight": torch.zeros(1008, 1)}, str(tmp_path / "other.safetensors"))
        distribution.torchvision_inception(tmp_path / "other.safetensors")
