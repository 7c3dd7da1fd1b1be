"""Shared backbones: output shapes at several sizes, factories, init, spectral norm, instance norm."""
import pytest
import torch
import torch.nn.functional as F

from i2i.nets.discriminators import MultiScaleDiscriminator, PatchDiscriminator
from i2i.nets.generators import ResnetGenerator, UnetGenerator
from i2i.nets.layers import InstanceNorm2d, MinibatchStdDev, init_weights, make_activation, make_norm


@pytest.mark.parametrize("size", [32, 64, 96])
def test_resnet_generator_keeps_size(size):
    g = ResnetGenerator(ngf=8, n_blocks=2)
    assert g(torch.randn(2, 3, size, size)).shape == (2, 3, size, size)


def test_resnet_generator_non_square_and_range():
    y = ResnetGenerator(ngf=8, n_blocks=1, n_down=3)(torch.randn(1, 3, 40, 64))
    assert y.shape == (1, 3, 40, 64) and y.abs().max() <= 1


@pytest.mark.parametrize("size", [32, 64, 128])
def test_unet_depth_from_size(size):
    g = UnetGenerator(ngf=8, size=size)
    assert g.stride == size  # bottleneck is 1x1
    assert g(torch.randn(2, 3, size, size)).shape == (2, 3, size, size)


def test_unet_dropout_on_inner_levels_only():
    g = UnetGenerator(ngf=8, size=256, dropout=0.5)
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 3  # pix2pix U-Net-256
    assert not any(isinstance(m, torch.nn.Dropout) for m in UnetGenerator(ngf=8, size=32).modules())


def test_patchgan_70_receptive_field_output_size():
    d = PatchDiscriminator(ndf=8, n_layers=3)
    assert d(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # pix2pix's 70x70 PatchGAN on 256 inputs


def test_multiscale_discriminator_returns_one_map_per_scale():
    outs = MultiScaleDiscriminator(ndf=8, n_layers=2, num_scales=3)(torch.randn(2, 3, 64, 64))
    assert len(outs) == 3 and outs[0].shape[-1] > outs[1].shape[-1] > outs[2].shape[-1]


def test_spectral_norm_option():
    d = PatchDiscriminator(ndf=8, n_layers=2, spectral_norm=True)
    assert any("parametrizations" in name for name, _ in d.named_parameters())
    assert torch.isfinite(d(torch.randn(1, 3, 32, 32))).all()


def test_instance_norm_matches_torch_and_keeps_channels_last():
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    y = InstanceNorm2d(5)(x)
    assert torch.allclose(y, F.instance_norm(x.contiguous()), atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_minibatch_stddev_adds_a_channel():
    assert MinibatchStdDev(4)(torch.randn(8, 3, 4, 4)).shape == (8, 4, 4, 4)


@pytest.mark.parametrize("kind", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights(kind):
    g = init_weights(ResnetGenerator(ngf=8, n_blocks=1), kind, 0.02)
    assert all(torch.isfinite(p).all() for p in g.parameters())


def test_factories_reject_unknown_names():
    for name in ["instance", "batch", "layer", "none"]:
        make_norm(name, 4)
    with pytest.raises(ValueError, match="unknown norm 'groupz'"):
        make_norm("groupz", 4)
    with pytest.raises(ValueError, match="activation"):
        make_activation("swishy")


def test_init_reaches_spectral_normed_weights():
    d = init_weights(PatchDiscriminator(ndf=8, n_layers=2, spectral_norm=True), "normal", 0.02)
    stored = d.model[0].parametrizations.weight.original
    assert abs(float(stored.detach().std()) - 0.02) < 0.005  # PyTorch's default init would give ~0.08


def test_spectral_norm_vectors_match_the_initialised_weights():
    """After init, each spectral-normed weight has spectral norm 1 (stale power-iteration vectors gave 1.1-1.2)."""
    torch.manual_seed(0)
    d = init_weights(PatchDiscriminator(ndf=8, n_layers=2, spectral_norm=True), "normal", 0.02).eval()
    with torch.no_grad():
        norms = [float(torch.linalg.matrix_norm(m.weight.flatten(1), 2)) for m in d.modules()
                 if isinstance(m, torch.nn.Conv2d)]
    assert len(norms) == 4 and all(abs(n - 1) < 1e-3 for n in norms), norms
