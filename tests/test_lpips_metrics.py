"""LPIPS (the lpips package) with its AlexNet trunk from a named file: a hand computation, diversity, offline rules."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from i2i.errors import I2IError
from i2i.metrics import lpips_distance


def test_lpips_equals_a_hand_computation(alexnet_weights):
    """sum over AlexNet's five ReLU outputs of the spatial mean of sum_c w_c (unit-normalised feature difference)^2,
    on inputs shifted and scaled as lpips does, with the linear weights the package ships."""
    import lpips
    from torchvision.models import alexnet
    model = lpips_distance.lpips_model(alexnet_weights)
    trunk = alexnet()
    trunk.load_state_dict(torch.load(alexnet_weights), strict=False)
    linear = torch.load(Path(inspect.getfile(lpips)).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu")
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def relu_outputs(x):
        outputs, h = [], (x - shift) / scale
        for index, layer in enumerate(trunk.features[:12]):
            h = layer(h)
            if index in (1, 4, 7, 9, 11):
                outputs.append(h)
        return outputs

    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = sum(
            (linear[f"lin{i}.model.1.weight"] * (fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
                                                 - fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)).square()
             ).sum(1).mean((1, 2))
            for i, (fa, fb) in enumerate(zip(relu_outputs(a), relu_outputs(b))))
    assert torch.allclose(model(a, b), expected, rtol=1e-4)
    assert torch.equal(model(a, a), torch.zeros(2))
    assert model.describe()["weights_sha256"] == lpips_distance.sha256(alexnet_weights)


def test_diversity_is_the_mean_over_pairs(alexnet_weights):
    model = lpips_distance.lpips_model(alexnet_weights)
    torch.manual_seed(2)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    expected = sum(float(model(images[i:i + 1], images[j:j + 1])) for i, j in pairs) / len(pairs)
    assert lpips_distance.diversity(model, images, batch_size=4) == pytest.approx(expected, rel=1e-5)
    assert lpips_distance.diversity(model, images[:1].repeat(3, 1, 1, 1)) == 0.0  # mode collapse
    with pytest.raises(I2IError, match="at least 2"):
        lpips_distance.diversity(model, images[:1])


def test_lpips_weights_offline_and_wrong_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("I2I_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(I2IError) as error:
        lpips_distance.lpips_model()
    message = str(error.value)
    assert "\n" not in message and lpips_distance.ALEXNET_FILE in message and "--lpips-weights" in message
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(I2IError, match="not a torchvision alexnet"):
        lpips_distance.lpips_model(tmp_path / "other.pth")
