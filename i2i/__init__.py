"""i2i: image-to-image translation with GANs (CycleGAN, pix2pix, UNIT, perceptual constraint, GAN, cGAN)."""
from .api import Translator, load
from .config import TrainConfig
from .errors import I2IError
from .sampling import Sampler

__version__ = "0.1.0"
__all__ = ["I2IError", "Sampler", "TrainConfig", "Translator", "load", "train", "__version__"]


def train(config: TrainConfig | None = None, resume=None, overwrite: bool = False, **fields):
    """Train from a TrainConfig or keyword fields; returns the run folder. See ``i2i train --help``.

    ``resume``: a run folder or checkpoint folder to continue (keyword fields then change only what they name).
    ``overwrite``: move an old run in ``out`` aside first (else a folder holding a run is refused).
    """
    from .train.trainer import train as run_training
    return run_training(config if config is not None else fields, resume, overwrite)
