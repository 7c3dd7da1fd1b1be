"""``i2i eval``: translate a test split and score it against its ground truth (PSNR, SSIM, L1, FID, KID)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a translation model against ground-truth test images",
                       description="Translate DATA's test split (testA for AtoB) and compare every output with its "
                       "true translation: DATA/testA_truth/ or, in a paired layout, DATA/testB/ (same file names). "
                       "PSNR, SSIM and L1 are means over images on the [0,1] range.")
    p.add_argument("--checkpoint", required=True, help="run folder (latest checkpoint) or checkpoint folder")
    p.add_argument("--data", required=True, help="dataset folder with a test split and its ground truth")
    p.add_argument("--metrics", default="psnr,ssim,l1",
                   help="comma-separated: psnr, ssim, l1, perceptual, fid, kid (default: psnr,ssim,l1)")
    p.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"), help="default: AtoB")
    p.add_argument("--baseline", action="store_true", help="also score the identity translation (output = input)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--size", type=int, help="resize inputs and truths to SIZE x SIZE (default: native size)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torchvision inception_v3 IMAGENET1K_V1 weights (.pth or .safetensors) for fid/kid "
                   "(default: torchvision's cache; downloaded only with I2I_ALLOW_DOWNLOAD=1)")
    p.add_argument("--encoder", default="vgg16", help="frozen encoder of the perceptual distance (default: vgg16)")
    p.add_argument("--encoder-weights", metavar="PATH", help="local weights file for --encoder (.pth or .safetensors)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..metrics.evaluate import evaluate, format_table
    result = evaluate(args.checkpoint, args.data, args.direction, args.metrics, args.batch_size, args.device,
                      args.baseline, args.size, args.inception_weights, encoder=args.encoder,
                      encoder_weights=args.encoder_weights)
    print(f"{result['mode']} {result['direction']} on {result['images']} images of {result['inputs']} "
          f"(truth: {result['truth']})")
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"i2i: results written to {path}")
    return 0
