"""i2i: image-to-image translation with GANs (CycleGAN, pix2pix, UNIT, perceptual constraint, GAN, cGAN)."""
from .api import Translator, load
from .config import TrainConfig
from .errors import I2IError

__version__ = "0.1.0"
__all__ = ["I2IError", "TrainConfig", "Translator", "load", "train", "__version__"]


def train(config: TrainConfig | None = None, resume=None, **fields):
    """Train from a TrainConfig (or keyword fields); returns the run folder. See ``i2i train --help``."""
    from .config import make_config
    from .train.trainer import train as run_training
    cfg = config if config is not None else make_config(fields)
    return run_training(cfg, resume)
