"""``i2i eval``: score a translation model against ground truth, or a gan/cgan model against real images."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model: translations against ground truth, samples against real images",
                       description="Translation modes: translate DATA's test split (testA for AtoB) and compare every "
                       "output with its true translation: DATA/testA_truth/ or, in a paired layout, DATA/testB/ (same "
                       "file names). gan/cgan: generate --samples images (per class for cgan) and compare them with "
                       "the real images in DATA (DATA/<class>/ for cgan).")
    p.add_argument("--checkpoint", required=True, help="run folder (latest checkpoint) or checkpoint folder")
    p.add_argument("--data", required=True, help="dataset folder: a test split with ground truth, or real images")
    p.add_argument("--metrics", help="comma-separated. Translators: psnr, ssim, l1, perceptual, lpips, fid, kid, "
                   "fid_torchvision, kid_torchvision (default: psnr,ssim,l1). gan/cgan: fid, kid, fid_torchvision, "
                   "kid_torchvision, diversity (default: fid,kid,diversity)")
    p.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"), help="default: AtoB")
    p.add_argument("--baseline", action="store_true", help="also score the identity translation (output = input)")
    p.add_argument("--samples", type=int, default=1000, help="gan/cgan: images to generate (per class for cgan; "
                   "default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="gan/cgan: noise seed (default: 0)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.add_argument("--csv", metavar="OUT.csv", help="write the results as CSV (metric, set, value, images, network, "
                   "weights, weights_sha256)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--size", type=int, help="resize inputs and truths to SIZE x SIZE (default: native size)")
    p.add_argument("--fid-weights", metavar="PATH", help="TF-Inception FID weights for fid/kid "
                   "(weights-inception-2015-12-05-6726825d.pth; default: torch-fidelity's file in torch's hub cache; "
                   "downloaded only with I2I_ALLOW_DOWNLOAD=1)")
    p.add_argument("--torchvision-inception-weights", metavar="PATH", help="torchvision inception_v3 IMAGENET1K_V1 "
                   "weights for fid_torchvision/kid_torchvision (default: torchvision's cache)")
    p.add_argument("--lpips-weights", metavar="PATH", help="torchvision alexnet weights for the LPIPS trunk "
                   "(default: torchvision's cache, alexnet-owt-7be5be79.pth)")
    p.add_argument("--encoder", default="vgg16", help="frozen encoder of the perceptual distance (default: vgg16)")
    p.add_argument("--encoder-weights", metavar="PATH", help="local weights file for --encoder (.pth or .safetensors)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..metrics.evaluate import Networks, evaluate, format_table, write_csv
    networks = Networks(args.fid_weights, args.torchvision_inception_weights, args.lpips_weights,
                        encoder=args.encoder, encoder_weights=args.encoder_weights)
    result = evaluate(args.checkpoint, args.data, args.direction, args.metrics, args.batch_size, args.device,
                      args.baseline, args.size, networks, args.samples, args.seed)
    if "truth" in result:
        print(f"{result['mode']} {result['direction']} on {result['images']} images of {result['inputs']} "
              f"(truth: {result['truth']})")
    else:
        print(f"{result['mode']}: {result['images']} generated images (seed {result['seed']}) against "
              f"{result['real_images']} real images in {result['real']}")
    print(format_table(result))
    for name, network in result["networks"].items():
        print(f"{name}: {network['network']}" + (f", weights {network['weights']} (sha256 "
                                                 f"{network['weights_sha256']})" if network["weights"] else ""))
    for warning in result["warnings"]:
        print(f"i2i: warning: {warning}", file=sys.stderr)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"i2i: results written to {path}")
    if args.csv:
        print(f"i2i: results written to {write_csv(result, args.csv)}")
    return 0
