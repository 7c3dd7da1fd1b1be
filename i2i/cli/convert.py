"""``i2i convert``: translate a folder (or one image) with a trained checkpoint."""
from __future__ import annotations

import argparse
import sys

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import EXIT_OK, EXIT_SOME_FAILED


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="translate a folder of images with a trained model",
                       description="Translate every image under --input (sub-folders mirrored, stems kept) into "
                       "--output. Outputs are written atomically; the output folder may not be or lie inside "
                       "the input folder. Inputs that cannot be read or translated, or are not regular files, are "
                       f"listed and skipped (exit code {EXIT_SOME_FAILED}); files in other formats are counted in "
                       "the summary.")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    p.add_argument("--input", required=True, help="image folder (searched recursively) or one image file")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--direction", help="AtoB or BtoA for two-way modes (default: the mode's first direction)")
    p.add_argument("--batch-size", type=int, default=8, help="images (or tiles) per forward pass (default: 8)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: 2)")
    p.add_argument("--format", choices=("png", "jpg", "webp", "same"), default="png",
                   help="output format; same keeps each input's extension (default: png)")
    p.add_argument("--skip-existing", action="store_true", help="leave images whose output exists (resume a run)")
    p.add_argument("--resize", type=int, metavar="N", help="translate at NxN, then resize back to the original size")
    p.add_argument("--tile", type=int, metavar="T",
                   help="translate images larger than T in overlapping TxT tiles (images too big for memory)")
    p.add_argument("--overlap", type=int, default=32, metavar="O",
                   help="pixels shared by neighbouring tiles (default: 32)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels (default: %(default)s)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator weights, not their EMA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import Translator, load
    from ..errors import I2IError
    translator = load(args.checkpoint, device=args.device, precision=args.precision, direction=args.direction,
                      use_ema=not args.no_ema)
    if not isinstance(translator, Translator):
        raise I2IError(f"checkpoint {args.checkpoint} generates from noise; use 'i2i sample' instead")
    report = translator.translate_folder(
        args.input, args.output, batch_size=args.batch_size, workers=args.workers, format=args.format,
        skip_existing=args.skip_existing, resize=args.resize, tile=args.tile, overlap=args.overlap,
        progress=not args.no_progress, max_pixels=args.max_pixels)
    for path, reason in report.failed:
        print(f"i2i: failed: {path}: {reason}", file=sys.stderr)
    print(f"i2i: {report.summary()} -> {args.output}")
    return EXIT_SOME_FAILED if report.failed else EXIT_OK
