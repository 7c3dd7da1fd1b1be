"""FID / KID through torch-fidelity's maths: closed forms, a hand computation, any feature network, offline weights."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2i.errors import I2IError
from i2i.metrics import distribution as dist
from i2i.metrics import fid, fid_from_features, kid, kid_from_features

F64 = dict(dtype=torch.float64)


def gaussian_set(mean: torch.Tensor, variances: torch.Tensor, n: int = 400, seed: int = 0) -> torch.Tensor:
    """n samples whose sample mean and (unbiased) sample covariance are exactly ``mean`` and diag(``variances``)."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), **F64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # sample covariance exactly I
    return x * variances.sqrt() + mean


def test_fid_equals_the_closed_form_between_known_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], **F64), torch.tensor([1.0, 1.0, 0.5], **F64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], **F64), torch.tensor([2.0, 1.0, 0.25], **F64)
    expected = float((mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())  # 7.25 + 2.1716
    a, b = gaussian_set(mu1, s1, seed=0), gaussian_set(mu2, s2, seed=1)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2), **F64))
    assert fid_from_features(a @ rotation, b @ rotation) == pytest.approx(expected, rel=1e-9)  # full covariances
    assert fid_from_features(a, a.clone()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(I2IError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_kid_equals_a_hand_computation():
    """With subsets as large as the sets, every subset is the whole set: KID is the unbiased MMD^2, std 0."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, **F64), torch.randn(5, 3, generator=g, **F64) + 0.5

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    n = 5
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    across = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n ** 2
    mean, std = kid_from_features(x, y, subsets=10, subset_size=1000)
    assert mean == pytest.approx(within - 2 * across, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    same, _ = kid_from_features(*torch.randn(2, 400, 16, generator=g, **F64), subsets=20, subset_size=200)
    assert abs(same) < 0.05
    with pytest.raises(I2IError, match="at least 2"):
        kid_from_features(x[:1], y)


def test_any_feature_network_goes_through_the_same_path():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    real = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    fake = torch.rand(20, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        f_real = net(real.float() / 127.5 - 1).double()  # uint8 images reach the network in [-1, 1]
        f_fake = net(fake).double()
    assert fid(real, fake, features=net, batch_size=7) == pytest.approx(fid_from_features(f_real, f_fake), rel=1e-6)
    mean, std = kid(real, fake.split(6), features=net, subsets=10)  # an iterable of batches works too
    assert (mean, std) == pytest.approx(kid_from_features(f_real, f_fake, subsets=10), rel=1e-6)
    assert math.isfinite(mean) and std > 0
    described = dist.as_feature_net(net).describe()
    assert described == {"network": "custom (Sequential)", "weights": None, "weights_sha256": None}


def test_fid_on_fewer_images_than_features_warns():
    features = torch.randn(10, 16, **F64)
    with pytest.warns(UserWarning, match="FID on 10 images with 16-d features is biased"):
        fid_from_features(features, features + 1)
    assert dist.fid_bias_warning(2048, 2048) is None


def test_missing_fid_weights_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("I2I_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(I2IError) as error:
        dist.inception()
    message = str(error.value)
    assert "\n" not in message and dist.FID_WEIGHTS_FILE in message and "--fid-weights" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message and "I2I_ALLOW_DOWNLOAD=1" in message
    with pytest.raises(I2IError, match="not found"):
        dist.inception(tmp_path / "nope.pth")
    with pytest.raises(I2IError, match="torchvision-inception-weights"):
        dist.torchvision_inception()


def test_weights_that_run_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1)} | {"x": print}, path)  # a pickled global: weights-only refuses it
    with pytest.raises(I2IError, match="cannot read TF-Inception FID weights"):
        dist.inception(path)


@pytest.fixture(scope="session")
def stand_in_fid_weights(tmp_path_factory) -> Path:
    """Random weights of the FID Inception's architecture (its keys and shapes) standing in for the TF weights."""
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fid") / "stand_in_inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict(), path)
    return path


def image_folders(root: Path, n: int = 2) -> tuple[Path, Path]:
    from PIL import Image
    generator = torch.Generator().manual_seed(0)
    folders = (root / "real", root / "fake")
    for shift, folder in enumerate(folders):
        folder.mkdir(parents=True)
        for i in range(n):
            pixels = torch.randint(0, 200, (32, 32, 3), generator=generator, dtype=torch.uint8) + 40 * shift
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return folders


def assert_matches_torch_fidelity_command(weights: Path, tmp_path: Path, with_fid: bool = True) -> None:
    """i2i's KID (and FID) of two folders equal torch-fidelity's own command on the same folders and weights."""
    real, fake = image_folders(tmp_path)
    command = [sys.executable, "-m", "torch_fidelity.fidelity", "--cpu", "--json", "--kid", "--no-cache",
               "--kid-subset-size", "2", "--feature-extractor-weights-path", str(weights),
               "--input1", str(real), "--input2", str(fake)] + (["--fid"] if with_fid else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout[done.stdout.index("{"):])
    assert kid(real, fake, weights=weights) == pytest.approx((theirs["kernel_inception_distance_mean"],
                                                              theirs["kernel_inception_distance_std"]),
                                                             rel=1e-6, abs=1e-9)
    if with_fid:
        with pytest.warns(UserWarning, match="biased"):
            assert fid(real, fake, weights=weights) == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)


def test_fid_network_from_a_weights_file_matches_the_library_command(stand_in_fid_weights, tmp_path):
    """The real weights' code path (file -> torch-fidelity's Inception -> its maths) with stand-in weights. FID's
    maths on 2048-d features (a 2048x2048 eigendecomposition, a minute on a loaded CPU) is checked against the closed
    form above and against the command with the real weights below."""
    net = dist.inception(stand_in_fid_weights)
    assert net.describe() == {"network": "inception-v3-compat (TF 2015-12-05 FID weights, torch-fidelity)",
                              "weights": str(stand_in_fid_weights),
                              "weights_sha256": dist.sha256(stand_in_fid_weights)}
    assert_matches_torch_fidelity_command(stand_in_fid_weights, tmp_path, with_fid=False)


REAL_FID_WEIGHTS = Path(torch.hub.get_dir()) / "checkpoints" / dist.FID_WEIGHTS_FILE


@pytest.mark.skipif(not REAL_FID_WEIGHTS.is_file(), reason=f"needs the TF-Inception FID weights {REAL_FID_WEIGHTS}")
def test_real_fid_weights_match_the_library_command(tmp_path):
    assert_matches_torch_fidelity_command(REAL_FID_WEIGHTS, tmp_path)
