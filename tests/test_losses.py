"""Adversarial objectives and regularisers, pinned against hand computations (values and gradients)."""
import math

import pytest
import torch
import torch.nn.functional as F

from i2i.config import make_config
from i2i.losses import GAN_LOSSES, AdversarialLoss, gradient_penalty, r1_penalty
from i2i.losses.adversarial import clip_weights_, critic_value
from i2i.modes.base import create_mode
from i2i.nets.discriminators import MultiScaleDiscriminator, PatchDiscriminator


@pytest.mark.parametrize("kind", GAN_LOSSES)
def test_every_gan_loss_is_finite_with_gradients(kind):
    d = PatchDiscriminator(ndf=8, n_layers=2)
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32, requires_grad=True)
    loss = AdversarialLoss(kind)
    d_loss = loss.discriminator(d(real), d(fake.detach()))
    g_loss = loss.generator(d(fake))
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    g_loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_loss_values_on_known_logits():
    real, fake = torch.full((4,), 3.0), torch.full((4,), -3.0)
    assert AdversarialLoss("lsgan").discriminator(real, fake) == pytest.approx((3 - 1) ** 2 + 3 ** 2)
    assert AdversarialLoss("hinge").discriminator(real, fake) == pytest.approx(0.0)
    assert AdversarialLoss("wgan").discriminator(real, fake) == pytest.approx(-3.0 - 3.0)  # E[D(f)] - E[D(r)]
    softplus3 = math.log1p(math.exp(-3.0))
    assert AdversarialLoss("bce").discriminator(real, fake) == pytest.approx(2 * softplus3, rel=1e-5)
    assert AdversarialLoss("bce").generator(fake) == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-5)
    assert AdversarialLoss("wgan").generator(fake) == pytest.approx(3.0)


def test_multiscale_terms_are_summed_over_scales():
    """UNIT / pix2pixHD: the adversarial terms of the scales add up (each scale averaged over its patches)."""
    loss = AdversarialLoss("lsgan")
    small, large = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 4, 4), -1.0)
    assert loss.generator([small, large]) == pytest.approx((0.5 - 1) ** 2 + (-1 - 1) ** 2)
    assert loss.discriminator([small, large], [small, large]) == pytest.approx(
        (0.5 - 1) ** 2 + 4 + 0.5 ** 2 + 1)
    d = MultiScaleDiscriminator(ndf=4, n_layers=1, num_scales=2)
    with torch.no_grad():
        maps = d(torch.randn(2, 3, 16, 16))
    assert loss.generator(maps) == pytest.approx(float(sum(loss.generator(y) for y in maps)))


def test_label_smoothing_lowers_real_target_and_is_refused_without_a_target():
    logits = torch.full((4,), 10.0)
    assert AdversarialLoss("lsgan", 0.1).discriminator(logits, -logits) == pytest.approx((10 - 0.9) ** 2 + 100)
    for kind in ("hinge", "wgan"):
        with pytest.raises(ValueError, match="label smoothing needs a real target"):
            AdversarialLoss(kind, 0.1)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="bce, lsgan, hinge, wgan"):
        AdversarialLoss("nsgan2")


# --- penalties on the per-image critic ------------------------------------------------------------------------
def linear_patch_critic(w: torch.Tensor, b: float = 0.3):
    """A 1x1-conv PatchGAN: one logit per pixel, D_p(x) = w . x_p + b. Its per-image critic (mean over the N
    patches) has the input gradient w / N at every pixel, so ||grad|| = ||w|| / sqrt(N)."""
    return lambda x: F.conv2d(x, w.view(1, 3, 1, 1), torch.tensor([b]))


def test_gradient_penalty_of_a_patch_critic_by_hand():
    w = torch.tensor([3.0, -4.0, 12.0], requires_grad=True)  # ||w|| = 13
    n = 4 * 4
    gp = gradient_penalty(linear_patch_critic(w), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    norm = 13 / math.sqrt(n)
    assert float(gp.detach()) == pytest.approx((norm - 1) ** 2, rel=1e-5)
    gp.backward()
    expected = 2 * (norm - 1) * w.detach() / (13 * math.sqrt(n))  # d/dw (||w||/sqrt(N) - 1)^2
    assert torch.allclose(w.grad, expected, rtol=1e-5)


def test_r1_of_a_patch_critic_by_hand():
    w = torch.tensor([1.0, 2.0, 2.0], requires_grad=True)  # ||w|| = 3
    n = 8 * 8
    r1 = r1_penalty(linear_patch_critic(w), torch.randn(3, 3, 8, 8))
    assert float(r1.detach()) == pytest.approx(9 / n, rel=1e-5)  # ||grad||^2 = N * ||w / N||^2
    r1.backward()
    assert torch.allclose(w.grad, 2 * w.detach() / n, rtol=1e-5)


def test_penalties_of_a_multiscale_critic_by_hand():
    """Two scales (the second on every other pixel): their critics add, so their input gradients add."""
    w1, w2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    d1, d2 = linear_patch_critic(w1), linear_patch_critic(w2)
    critic = lambda x: [d1(x), d2(x[..., ::2, ::2])]  # noqa: E731
    n1, n2 = 8 * 8, 4 * 4
    # pixels seen by both scales: grad w1/n1 + w2/n2; the other n1 - n2 pixels: w1/n1
    squared = (n1 - n2) * (1 / n1) ** 2 + n2 * ((1 / n1) ** 2 + (2 / n2) ** 2)
    x = torch.randn(2, 3, 8, 8)
    assert float(r1_penalty(critic, x).detach()) == pytest.approx(squared, rel=1e-5)
    assert float(gradient_penalty(critic, x, torch.randn(2, 3, 8, 8)).detach()) == pytest.approx((math.sqrt(squared) - 1) ** 2,
                                                                                  rel=1e-5)


def test_r1_on_a_patchgan_equals_r1_on_its_per_image_mean():
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=8, n_layers=2, norm="none")
    x = torch.randn(3, 3, 32, 32)
    mean_critic = lambda y: d(y).mean(dim=(1, 2, 3))  # noqa: E731
    assert float(r1_penalty(d, x).detach()) == pytest.approx(float(r1_penalty(mean_critic, x).detach()), rel=1e-5)
    assert torch.allclose(critic_value(d(x)), mean_critic(x))


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
def test_penalties_finite_with_gradients_under_autocast(precision):
    d = PatchDiscriminator(ndf=8, n_layers=2)
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32):
        penalty = gradient_penalty(d, real, fake) + r1_penalty(d, real)
    assert torch.isfinite(penalty)
    penalty.backward()
    weight_grads = [p.grad for p in d.parameters() if p.dim() > 1]  # biases do not change input gradients
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in weight_grads)


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    critic = lambda x: x.flatten(1).sum(1) / (x[0].numel() ** 0.5)  # noqa: E731  |grad| = 1 everywhere
    gp = gradient_penalty(critic, torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4))
    assert float(gp.detach()) == pytest.approx(0, abs=1e-8)


def test_clip_weights_clamps_every_weight():
    d = PatchDiscriminator(ndf=4, n_layers=1)
    clip_weights_(list(d.parameters()), 0.01)
    assert max(float(p.detach().abs().max()) for p in d.parameters()) <= 0.01


# --- the mode's D objective -----------------------------------------------------------------------------------
def tiny_mode(**fields):
    return create_mode(make_config(dict(mode="cyclegan", size=16, ngf=4, ndf=4, n_blocks=1, d_layers=1,
                                        **fields)))


@pytest.mark.parametrize("gan_loss,gp,r1", [("wgan", 10.0, 0.0), ("bce", 0.0, 10.0), ("lsgan", 10.0, 2.0)])
def test_mode_d_loss_is_half_of_adversarial_plus_weighted_penalties(gan_loss, gp, r1):
    """D loss = 0.5 * (L_real + L_fake + lambda * GP + gamma / 2 * R1): the papers' weights, halved as a whole."""
    mode = tiny_mode(gan_loss=gan_loss, gp_weight=gp, r1_gamma=r1)
    d = mode.nets["D_A"]
    real, fake = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    torch.manual_seed(1)
    got = mode.adversarial_d("D_A", real, fake).detach()
    torch.manual_seed(1)
    expected = mode.adversarial.discriminator(d(real), d(fake))
    if gp:
        expected = expected + gp * gradient_penalty(d, real, fake)
    if r1:
        expected = expected + r1 / 2 * r1_penalty(d, real)
    assert float(got) == pytest.approx(float(0.5 * expected.detach()), rel=1e-5)


def test_wgan_gp_critic_reaches_the_expected_gap():
    """Real and fake are point masses at +c and -c per pixel, W1 = 2c sqrt(d) apart. Along the segment between
    them the critic's slope k trades the gap k * W1 against lambda * (k - 1)^2, so its optimum is
    k = 1 + W1 / (2 lambda) and the gap W1 * k. (With the penalty on the summed patch logits the gap stayed near
    W1 / patches.)"""
    torch.manual_seed(0)
    mode = tiny_mode(gan_loss="wgan", gp_weight=10.0, d_norm="none")
    d = mode.nets["D_A"]
    real, fake = torch.full((4, 3, 8, 8), 0.25), torch.full((4, 3, 8, 8), -0.25)
    w1 = 0.5 * math.sqrt(3 * 8 * 8)
    optimum = w1 * (1 + w1 / (2 * 10.0))
    optimizer = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.9))
    for _ in range(300):
        optimizer.zero_grad()
        mode.adversarial_d("D_A", real, fake).backward()
        optimizer.step()
    with torch.no_grad():
        gap = float(critic_value(d(real)).mean() - critic_value(d(fake)).mean())
    assert 0.8 * optimum < gap < 1.05 * optimum, (gap, optimum)
