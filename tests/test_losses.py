"""Adversarial objectives and regularisers: finite, with gradients, correct signs."""
import pytest
import torch

from i2i.losses import GAN_LOSSES, AdversarialLoss, gradient_penalty, r1_penalty
from i2i.nets.discriminators import PatchDiscriminator


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
    assert AdversarialLoss("lsgan").discriminator(real, fake) == pytest.approx(0.5 * (4 + 9))
    assert AdversarialLoss("hinge").discriminator(real, fake) == pytest.approx(0.0)
    assert AdversarialLoss("wgan").discriminator(real, fake) == pytest.approx(-3.0)
    # a confident D makes the non-saturating G loss large
    assert AdversarialLoss("bce").generator(fake) > AdversarialLoss("bce").generator(real)


def test_multiscale_logits_are_averaged():
    loss = AdversarialLoss("lsgan")
    single = loss.generator(torch.zeros(3))
    assert loss.generator([torch.zeros(3), torch.zeros(5)]) == pytest.approx(float(single))


def test_label_smoothing_lowers_real_target():
    logits = torch.full((4,), 10.0)
    assert AdversarialLoss("bce", 0.1).discriminator(logits, -logits) > AdversarialLoss("bce").discriminator(
        logits, -logits)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="bce, lsgan, hinge, wgan"):
        AdversarialLoss("nsgan2")


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
    assert gradient_penalty(critic, torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)) == pytest.approx(0, abs=1e-8)
