"""``i2i sample``: images from a gan/cgan checkpoint, as PNG files in a folder or as one grid PNG."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from ..errors import I2IError


def at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value
    parse.__name__ = "integer"  # argparse names the type in "invalid integer value: 'x'"
    return parse


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images from a gan or cgan checkpoint",
                       description="Generate images from noise with a gan/cgan checkpoint (EMA weights when kept). "
                       "--out ending in .png writes one grid, anything else a folder of numbered PNG files.")
    p.add_argument("--checkpoint", required=True, help="run folder (latest checkpoint) or checkpoint folder")
    p.add_argument("--out", required=True, help="output folder, or a .png file for one grid")
    p.add_argument("--n", type=at_least(1), default=None,
                   help="images (default 64); per class with --class all and rows with --interpolate (default 8)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: a random one, printed)")
    p.add_argument("--class", dest="cls", default=None, metavar="NAME",
                   help="cgan: generate this class (name or index), or 'all' for one row / sub-folder per class")
    p.add_argument("--interpolate", type=at_least(2), default=None, metavar="STEPS",
                   help="latent interpolations (slerp) of STEPS images each, one per row")
    p.add_argument("--batch-size", type=at_least(1), default=64, help="images per generator call (default 64)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"),
                   help="default: bf16 on CUDA, fp32 on CPU")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import load
    from ..sampling import Sampler
    model = load(args.checkpoint, args.device, args.precision)
    if not isinstance(model, Sampler):
        raise I2IError(f"{args.checkpoint} holds a '{model.mode.name}' model, which translates images rather than "
                       "generating them; use i2i convert")
    model.batch_size = args.batch_size
    if args.cls is not None and not model.class_names:
        raise I2IError(f"this '{model.mode.name}' model is unconditional; drop --class")
    every_class = args.cls == "all"
    if args.cls is not None and not every_class:
        model.class_index(args.cls)  # an unknown class is refused before anything is printed or drawn
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2 ** 31)
        print(f"i2i: seed {args.seed} (pass --seed {args.seed} to get these images again)")
    grid = Path(args.out).suffix.lower() == ".png"
    nrow = None
    if args.interpolate is not None:
        rows = model.num_classes if every_class else args.n or 8
        labels = list(range(rows)) if every_class else args.cls
        images, nrow = model.interpolate(args.interpolate, args.seed, rows, labels), args.interpolate
    elif every_class:
        n = args.n or 8
        images, nrow = model.class_grid(n, args.seed), n
        if not grid:  # one sub-folder per class
            for name, chunk in zip(model.class_names, images.split(n)):
                Sampler.save(chunk, Path(args.out) / name)
            print(f"i2i: wrote {n} image(s) for each of {len(model.class_names)} classes to {args.out}")
            return 0
    else:
        images = model.sample(args.n or 64, args.seed, args.cls)
    paths = Sampler.save(images, args.out, nrow)
    print(f"i2i: wrote {len(images)} image(s) to {paths[0] if grid else args.out}")
    return 0
