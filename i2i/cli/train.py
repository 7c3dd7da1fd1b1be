"""``i2i train``: every TrainConfig field is a flag; a YAML/JSON file fills what flags don't give."""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..config import FIELDS, GROUPS, field_type, read_config_file

USAGE = """i2i train --data DIR [--mode MODE] [--out RUN] [options]
       i2i train --resume RUN [options]"""

GROUP_TITLES = {
    "data": "data", "model": "model (mode and networks)", "objective": "objective (losses and regularisers)",
    "optimisation": "optimisation", "output": "output (run folder, logs, checkpoints)", "speed": "speed",
    "distributed": "distributed (launch with torchrun; --batch-size is the global batch)",
}

EXAMPLES = """examples:
  i2i train --mode cyclegan --data data/horse2zebra --out runs/h2z
  i2i train --mode pix2pix --data data/facades --direction BtoA --out runs/facades --epochs 200
  i2i train --config cfg.yaml --batch-size 16 --precision bf16 --compile     (flags override the file)
  i2i train --resume runs/h2z                                    (continue where it stopped)
  i2i train --resume runs/h2z/checkpoints/step_00010000 --out runs/h2z-b     (branch from one checkpoint)
  torchrun --nproc-per-node 4 -m i2i train --mode cyclegan --data DIR --batch-size 16

A run folder holds one run: an --out that already holds one is refused unless you --resume it or pass
--overwrite (the old run is moved aside, never deleted)."""


def shown(value: Any) -> str:
    """A default as a person writes it: on/off, 0.0002, resnet, 1,4,16."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(shown, value))
    return str(value)


def _mode_defaults() -> dict[str, dict[str, Any]]:
    """Each mode's defaults for the fields left at None, in the order ``--mode`` lists the modes."""
    from ..modes import load_all_modes
    from ..modes.base import COMMON_DEFAULTS, MODES
    load_all_modes()
    return {name: {**COMMON_DEFAULTS, **MODES[name].defaults} for name in FIELDS["mode"].metadata["choices"]}


def field_help(name: str, mode_defaults: dict[str, dict[str, Any]]) -> str:
    """A field's help text with its default: the value, or the value per mode when it depends on the mode."""
    f = FIELDS[name]
    text = f.metadata["help"]
    if "default" in text:  # the text explains its own default
        pass
    elif f.default not in (None, ""):
        text += f" (default: {shown(f.default)})"
    else:
        by_value: dict[str, list[str]] = {}
        for mode, defaults in mode_defaults.items():
            if name in defaults:
                by_value.setdefault(shown(defaults[name]), []).append(mode)
        if len(by_value) == 1 and len(next(iter(by_value.values()))) == len(mode_defaults):
            text += f" (default: {next(iter(by_value))})"
        elif by_value:
            text += " (default: " + "; ".join(f"{', '.join(modes)}: {value}" for value, modes in by_value.items()) + ")"
    return text.replace("%", "%%")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a folder of images", usage=USAGE, epilog=EXAMPLES,
                       description="Train a model. Every option is also a key of a YAML/JSON --config file; options "
                       "left unset take the mode's defaults (shown per mode below).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (flags given here override it)")
    groups = {key: p.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    groups["output"].add_argument(
        "--resume", metavar="RUN", help="continue RUN from its latest checkpoint, or from a checkpoint folder "
        "RUN/checkpoints/step_X (into RUN when it is the latest, else into a new --out). Model options must stay "
        "as saved; a new --steps stretches the LR schedule to the new total")
    groups["output"].add_argument(
        "--overwrite", action="store_true", help="start a new run in an --out that holds one: the old run is first "
        "moved aside to OUT.replaced-DATE-TIME (refused while a process trains it)")
    groups["data"].add_argument("--strict", dest="skip_bad_images", action="store_false", default=argparse.SUPPRESS,
                                help="fail on the first unreadable image instead of skipping it "
                                "(= --no-skip-bad-images)")
    mode_defaults = _mode_defaults()
    for group, names in GROUPS.items():
        for name in names:
            kind = field_type(name)
            flag = "--" + name.replace("_", "-")
            kwargs = dict(dest=name, default=argparse.SUPPRESS, help=field_help(name, mode_defaults))
            if kind is bool:
                groups[group].add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                groups[group].add_argument(flag, type=kind, choices=FIELDS[name].metadata.get("choices"), **kwargs)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train
    values = read_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    run_dir = train({**values, **flags}, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per torchrun process
        print(f"i2i: run saved in {run_dir}")
    return 0
