"""``i2i bench``: training throughput per mode and setting (the logic lives in :mod:`i2i.bench`)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from .. import bench
    p = sub.add_parser("bench", help="measure training speed (img/s, memory, data wait, TFLOP/s)",
                       description=bench.__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import run_from_args
    return run_from_args(args)
