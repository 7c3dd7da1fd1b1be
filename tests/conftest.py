"""Shared fixtures: a tiny built-in dataset and tiny network settings so every test runs in seconds on CPU."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """Import a script from the repo (e.g. ``datasets/make_example.py``) as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """The procedural example dataset at 32 px: 8 train and 2 test images per domain, both layouts."""
    out = tmp_path_factory.mktemp("example")
    return load_script("datasets/make_example.py").build(out, size=32, n_train=8, n_test=2, seed=0)


TINY = dict(size=32, ngf=8, ndf=8, n_blocks=2, batch_size=2, workers=0, tensorboard=False, log_every=1,
            sample_every=1000, checkpoint_every=1000, device="cpu", seed=0)


@pytest.fixture
def tiny() -> dict:
    """Config fields for tiny, fast networks and runs."""
    return dict(TINY)


@pytest.fixture(scope="session")
def cyclegan_run(example_data, tmp_path_factory) -> Path:
    """A tiny CycleGAN trained one step, shared by the tests that only need a checkpoint."""
    import i2i
    return i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), steps=1,
                     out=str(tmp_path_factory.mktemp("cyclegan")), **TINY)


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory) -> Path:
    """A random torchvision alexnet's features.* (the part LPIPS uses) standing in for the ImageNet file."""
    from torchvision.models import alexnet
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "alexnet.pth"
    torch.save({k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}, path)
    return path


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
