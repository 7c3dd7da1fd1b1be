"""``i2i train``: every TrainConfig field is a flag; a YAML/JSON file fills what flags don't give."""
from __future__ import annotations

import argparse
import os

from ..config import FIELDS, field_type, make_config, read_config_file


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a folder of images",
                       description="Train a model. Fields left unset take the mode's defaults (see README).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML or JSON file of config fields (flags override it)")
    p.add_argument("--resume", metavar="RUNDIR", help="continue the run in RUNDIR from its latest checkpoint")
    p.add_argument("--strict", dest="skip_bad_images", action="store_false", default=argparse.SUPPRESS,
                   help="fail on the first unreadable image instead of skipping it (= --no-skip-bad-images)")
    for name, f in FIELDS.items():
        kind = field_type(name)
        flag = "--" + name.replace("_", "-")
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=f.metadata["help"] + f" (default: {f.default})")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            p.add_argument(flag, type=kind, choices=f.metadata.get("choices"), **kwargs)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import config_from_run, train
    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    values = read_config_file(args.config) if args.config else {}
    if args.resume:
        saved = config_from_run(args.resume).to_dict()
        values = {**saved, **values, "out": str(args.resume)}
    cfg = make_config({**values, **flags})
    run_dir = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per torchrun process
        print(f"i2i: run saved in {run_dir}")
    return 0
