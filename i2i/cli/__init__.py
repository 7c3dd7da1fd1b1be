"""The ``i2i`` command line: a thin layer over the library. Each sub-command lives in its own module here and
defines ``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from typing import Optional, Sequence

from ..errors import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, I2IError, os_error_message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2i", description="Image-to-image translation with GANs: train, "
                                     "convert, sample, evaluate and export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except I2IError as e:
        print(f"i2i: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # a file or disk problem no check caught (a path that vanished, a full disk, ...)
        print(f"i2i: error: {os_error_message(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("i2i: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # not a known failure: a bug, shown in full
        traceback.print_exc()
        print("i2i: internal error: this is a bug in i2i; please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG
