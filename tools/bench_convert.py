"""Throughput of ``translate_folder`` (decode, translate, encode, write) versus the bare generator forward.

For each size, N random JPEGs are written to a temporary folder and converted to PNG with translate_folder;
the same generator then runs on random tensors already on the device (same batch size and precision).
The ratio shows how much of the device's speed the file pipeline keeps. Prints a Markdown table and writes JSON.

    python tools/bench_convert.py                          # GPU if available: 256 and 1024 px, N=256
    python tools/bench_convert.py --checkpoint runs/x      # a trained model instead of a fresh ResNet generator
    python tools/bench_convert.py --device cpu --ngf 16 --n 8
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from i2i.api import Translator, load
from i2i.config import make_config
from i2i.modes.base import create_mode
from i2i.runtime import autocast, default_precision, pick_device


def make_translator(args: argparse.Namespace) -> Translator:
    if args.checkpoint:
        return load(args.checkpoint, device=args.device, precision=args.precision)
    device = pick_device(args.device)
    mode = create_mode(make_config(dict(mode="cyclegan", ngf=args.ngf, n_blocks=args.n_blocks, device=str(device))))
    nets = nn.ModuleDict(dict(mode.nets.items())).to(device).eval().requires_grad_(False)
    return Translator(mode, nets, None, device, default_precision(device, args.precision))


def write_inputs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """N smooth random colour images with grain, saved as JPEG (closer to photos than white noise)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size),
                                                                                        Image.Resampling.BICUBIC)
        grain = rng.normal(0, 8, (size, size, 3))
        Image.fromarray(np.clip(np.asarray(base) + grain, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg",
                                                                                         quality=90)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def forward_rate(translator: Translator, n: int, size: int, batch_size: int) -> float:
    """Images/s of the generator alone on device-resident random batches."""
    device = translator.device
    x = torch.rand(batch_size, 3, size, size, device=device) * 2 - 1
    with autocast(device, translator.precision):
        for _ in range(2):
            translator.net(x)
        sync(device)
        steps = math.ceil(n / batch_size)
        start = time.perf_counter()
        for _ in range(steps):
            translator.net(x)
        sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="run or checkpoint folder (default: a fresh cyclegan ResNet generator)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=9)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--n", type=int, help="images per size (default: 256 on GPU, 8 on CPU)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--format", default="png", choices=("png", "jpg", "webp"))
    p.add_argument("--json", default="bench_convert.json", help="where to write the results")
    args = p.parse_args()
    translator = make_translator(args)
    device = translator.device
    n = args.n or (256 if device.type == "cuda" else 8)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="i2i-bench-") as tmp:
            src, dst = Path(tmp, "in"), Path(tmp, "out")
            src.mkdir()
            write_inputs(src, n, size)
            with torch.inference_mode():  # warm-up (cuDNN autotuning, allocator) outside the timing
                translator.translate(torch.zeros(args.batch_size, 3, size, size, device=device))
            sync(device)
            report = translator.translate_folder(src, dst, batch_size=args.batch_size, workers=args.workers,
                                                 format=args.format, progress=False)
            if report.failed:
                raise SystemExit(f"conversion failed: {report.failed[:3]}")
            forward = forward_rate(translator, n, size, args.batch_size)
        rows.append(dict(size=size, images=n, batch_size=args.batch_size, precision=translator.precision,
                         folder_images_per_s=report.images_per_second, forward_images_per_s=forward,
                         ratio=report.images_per_second / forward))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device_name}; torch {torch.__version__}; ResNet generator ngf={translator.cfg.ngf} "
          f"n_blocks={translator.cfg.n_blocks}; workers={args.workers}; output {args.format}\n")
    print("| size | images | batch | precision | translate_folder img/s | generator forward img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['images']} | {r['batch_size']} | {r['precision']} | "
              f"{r['folder_images_per_s']:.2f} | {r['forward_images_per_s']:.2f} | {r['ratio']:.2f} |")
    result = dict(device=device_name, torch=torch.__version__, python=platform.python_version(),
                  ngf=translator.cfg.ngf, n_blocks=translator.cfg.n_blocks, workers=args.workers,
                  format=args.format, rows=rows)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
