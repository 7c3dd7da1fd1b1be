"""The ``i2i`` command line: a thin layer over the library. Each sub-command lives in its own module here and
defines ``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import pkgutil
import re
import sys
import traceback
from typing import NoReturn, Optional, Sequence

from ..errors import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, I2IError, os_error_message


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to read more, not the usage block."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        close = difflib.get_close_matches(choice[1], re.findall(r"'([^']*)'", choice[2]), 1) if choice else []
        if close:
            message += f"; did you mean {close[0]}?"
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Refuse arguments this (sub-)command does not know, suggesting the closest of its flags."""
        flags = [s for s in self._option_string_actions if s.startswith("--")]
        first = next((x.split("=")[0] for x in extras if x.startswith("-")), None)
        close = difflib.get_close_matches(first, flags, 1) if first else []
        self.error(f"unrecognized argument(s): {' '.join(extras)}" + (f"; did you mean {close[0]}?" if close else ""))


def build_parser() -> Parser:
    import torch

    from .. import __version__
    parser = Parser(prog="i2i", description="Image-to-image translation with GANs: train, convert, sample, "
                    "evaluate and export.")
    parser.add_argument("--version", action="version", version=f"i2i {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").add_parser(sub)
    for command_parser in sub.choices.values():
        command_parser.set_defaults(parser=command_parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args, extras = build_parser().parse_known_args(argv)
    if extras:
        args.parser.unrecognized(extras)
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
