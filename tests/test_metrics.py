"""Metrics: PSNR/SSIM/L1 conventions, Frechet distance and KID against closed forms, Inception weight handling."""
from __future__ import annotations

import math

import pytest
import torch

from i2i.errors import I2IError
from i2i.metrics import PSNR_CAP, l1, psnr, ssim
from i2i.metrics import fid as fidlib


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


def test_frechet_distance_closed_form():
    f64 = dict(dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], **f64), torch.tensor([1.0, 1.0, 0.5], **f64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], **f64), torch.tensor([2.0, 1.0, 0.25], **f64)
    expected = float((mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    got = fidlib.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert fidlib.frechet_distance(mu1, torch.diag(s1), mu1, torch.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_scipy_on_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(0)
    a, b = torch.randn(5, 5, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    root = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace()) - 2 * float(root.trace())
    assert fidlib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_of_feature_sets():
    torch.manual_seed(0)
    features = torch.randn(500, 8)
    assert fidlib.frechet_distance_features(features, features.clone()) == pytest.approx(0.0, abs=1e-8)
    shifted = torch.randn(20000, 8) * 2 + 1  # N(1, 4 I) against N(0, I): 8 * 1 + 8 * (1 + 4 - 2 * 2) = 16
    assert fidlib.frechet_distance_features(torch.randn(20000, 8), shifted) == pytest.approx(16.0, rel=0.05)
    with pytest.raises(I2IError, match="at least 2"):
        fidlib.frechet_distance_features(features[:1], features)


def test_kid_is_near_zero_for_one_distribution_and_positive_across_two():
    torch.manual_seed(0)
    x, y, z = torch.randn(400, 16), torch.randn(400, 16), torch.randn(400, 16) + 1.0
    same, same_std = fidlib.kernel_distance(x, y, subsets=20, subset_size=200)
    different, _ = fidlib.kernel_distance(x, z, subsets=20, subset_size=200)
    assert abs(same) < 0.05 and same_std >= 0
    assert different > 1.0 and different > 20 * abs(same)


def test_missing_inception_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("I2I_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(I2IError, match=fidlib.INCEPTION_FILE) as error:
        fidlib.inception_state_dict()
    assert str(tmp_path / "torch_home") in str(error.value) and "--inception-weights" in str(error.value)
    with pytest.raises(I2IError, match="not found"):
        fidlib.inception_state_dict(tmp_path / "nope.pth")


def test_pytorch_fid_weights_are_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "pt_inception-2015-12-05.safetensors"
    save_file({"fc.weight": torch.zeros(1008, 1)}, str(path))
    with pytest.raises(I2IError, match="pt_inception"):
        fidlib.inception_state_dict(path)


def test_inception_features_from_a_local_file(tmp_path):
    """Plumbing only (random weights; such features are never reported as FID): file -> Nx2048 pool features."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    path = tmp_path / "inception.safetensors"
    save_file(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), str(path))
    extractor = fidlib.InceptionFeatures(fidlib.inception_state_dict(path))
    features = extractor(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
