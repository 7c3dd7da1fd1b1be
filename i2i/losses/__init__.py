"""Loss terms: adversarial objectives, regularisers, perceptual constraint."""
from .adversarial import GAN_LOSSES, AdversarialLoss, gradient_penalty, r1_penalty

__all__ = ["GAN_LOSSES", "AdversarialLoss", "gradient_penalty", "r1_penalty"]
