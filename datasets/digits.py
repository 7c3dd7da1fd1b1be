"""scikit-learn's handwritten digits (1797 images of 8x8 pixels, UCI optical digits) as class folders.

Each image is upsampled with bicubic interpolation to ``size`` pixels and written as an 8-bit grayscale PNG, ink
bright on black as the data holds it (0..16 mapped to 0..255). A stratified split keeps ``test_fraction`` of every
digit apart, so a GAN trained on ``OUT/train`` can be judged on images it never saw:

    OUT/train/<digit>/<index>.png   (<index>: the image's row in sklearn.datasets.load_digits)
    OUT/test/<digit>/<index>.png

``i2i train --mode cgan --data OUT`` (and ``--mode gan``) read ``OUT/train``. The data ships inside scikit-learn,
so nothing is downloaded: ``pip install 'i2i[quality]'``.

Usage: python datasets/digits.py --out data/digits [--size 32] [--test-fraction 0.25] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from i2i.errors import I2IError

INK_MAX = 16  # load_digits pixel values run from 0 to 16


def build(out: str | Path, size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> Path:
    """Write the digits as ``out/{train,test}/<digit>/<index>.png`` at ``size`` px; returns ``out``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise I2IError("the digit set ships with scikit-learn, which is not installed: "
                       "pip install 'i2i[quality]' (or scikit-learn)") from None
    if not 0 < test_fraction < 1:
        raise I2IError(f"test fraction must be between 0 and 1; got {test_fraction}")
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, test = train_test_split(indices, test_size=test_fraction, stratify=digits.target, random_state=seed)
    out = Path(out)
    for split, chosen in (("train", train), ("test", test)):
        for index in chosen:
            folder = out / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.rint(digits.images[index] * (255 / INK_MAX)).astype(np.uint8)
            image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)
            image.save(folder / f"{index:04d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        build(args.out, args.size, args.test_fraction, args.seed)
    except I2IError as e:
        raise SystemExit(f"digits: error: {e}") from None
    print(f"wrote {args.out}/train and {args.out}/test")


if __name__ == "__main__":
    main()
