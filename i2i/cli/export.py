"""``i2i export``: a trained generator to TorchScript or ONNX, verified against PyTorch."""
from __future__ import annotations

import argparse

from ..errors import EXIT_OK, EXIT_SOME_FAILED


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained generator to TorchScript or ONNX",
                       description="Export the generator (fp32, input/output Bx3xHxW in [-1, 1], H and W multiples "
                       "of the net's stride, dynamic batch and size) and check it against PyTorch (exit code "
                       f"{EXIT_SOME_FAILED} when they differ beyond the tolerance).")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    p.add_argument("--format", choices=("torchscript", "onnx"), required=True, help="torchscript or onnx")
    p.add_argument("--out", required=True, help="file to write (.pt for TorchScript, .onnx for ONNX)")
    p.add_argument("--direction", help="AtoB or BtoA for two-way modes (default: the mode's first direction)")
    p.add_argument("--size", type=int, help="example input size used for tracing (default: the training size)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator weights, not their EMA")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import Translator, load
    from ..convert.export import export_translator
    from ..errors import I2IError
    translator = load(args.checkpoint, device="cpu", precision="fp32", direction=args.direction,
                      use_ema=not args.no_ema)
    if not isinstance(translator, Translator):
        raise I2IError(f"checkpoint {args.checkpoint} generates from noise; only translation generators export")
    report = export_translator(translator, args.out, args.format, args.size, args.opset)
    print(f"i2i: {report.summary()}")
    return EXIT_OK if report.ok else EXIT_SOME_FAILED
