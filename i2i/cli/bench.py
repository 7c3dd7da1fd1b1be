"""``i2i bench``: training throughput per mode and setting (the logic lives in :mod:`i2i.bench`)."""
from __future__ import annotations

import argparse

from .train import shown


class DefaultsFormatter(argparse.HelpFormatter):
    """Each option's default after its help, as a person writes it (on/off, 1,4,16), unless the help already
    explains the default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.default in (None, [], argparse.SUPPRESS)
                or "default" in text or "(not given" in text or "; not given" in text):
            return text
        return f"{text} (default: {shown(action.default).replace('%', '%%')})"


def add_parser(sub) -> None:
    from .. import bench
    p = sub.add_parser("bench", help="measure training speed (img/s, memory, data wait, TFLOP/s)",
                       description=bench.__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    bench.add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import run_from_args
    return run_from_args(args)
