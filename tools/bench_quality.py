"""Translation quality per mode: train every translation mode on every procedural task for a fixed budget and score
its test translations against the ground truth (PSNR, SSIM, L1), next to the identity baseline (output = input).

    python tools/bench_quality.py --out bench/quality                       # every task and mode, default budget
    python tools/bench_quality.py --tasks dusk,shapes --modes pix2pix,cyclegan --steps 600 --size 32

The default budget depends on the device: on CUDA 64 px, ngf 64, 2000 steps of batch 8; on CPU 32 px, ngf 16,
300 steps of batch 4. Prints a Markdown table and writes OUT/bench_quality.json and OUT/bench_quality.md. A mode that
cannot run here (e.g. ``encoder`` without its pretrained weights) is listed with the reason instead of a score.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
MODES = ("pix2pix", "cyclegan", "unit", "encoder")
BUDGETS = {  # device type -> default training budget
    "cuda": dict(size=64, steps=2000, batch_size=8, ngf=64, ndf=64, n_blocks=6, train_images=512, test_images=64),
    "cpu": dict(size=32, steps=300, batch_size=4, ngf=16, ndf=16, n_blocks=3, train_images=128, test_images=16),
}


def load_tasks():
    spec = importlib.util.spec_from_file_location("i2i_tasks", ROOT / "datasets" / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def available_modes(wanted: list[str]) -> list[str]:
    from i2i.modes.base import MODES as registered, mode_class
    mode_class("pix2pix")  # imports every mode module
    return [m for m in wanted if m in registered]


def train_fields(mode: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    fields = dict(mode=mode, data=str(data), out=str(out), steps=args.steps, size=args.size,
                  batch_size=args.batch_size, ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks, seed=args.seed,
                  device=args.device, workers=args.workers, tensorboard=False, log_every=50,
                  sample_every=args.steps, checkpoint_every=args.steps, keep_checkpoints=1)
    if mode == "unit" and args.size < 128:
        fields["d_scales"] = 1  # its 3-scale default needs >= 128 px
    if mode == "encoder":
        fields.update(encoder=args.encoder, encoder_weights=args.encoder_weights)
    return fields


def run_one(task_root: Path, task: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import i2i
    from i2i.errors import I2IError
    from i2i.metrics.evaluate import evaluate
    from i2i.modes.base import mode_class
    layout = "paired" if mode_class(mode).data_kind == "paired" else "unpaired"
    row: dict[str, Any] = {"task": task, "mode": mode, "layout": layout, "steps": args.steps}
    started = time.perf_counter()
    try:
        run = i2i.train(**train_fields(mode, args, task_root / layout, args.out / "runs" / f"{task}_{mode}"))
    except I2IError as e:
        return {**row, "skipped": str(e)}
    row["train_seconds"] = round(time.perf_counter() - started, 1)
    result = evaluate(run, task_root / layout, metrics=("psnr", "ssim", "l1"), device=args.device, baseline=True)
    row.update(images=result["images"], model=result["metrics"], identity=result["identity"])
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | mode | steps | train s | PSNR | SSIM | L1 | identity PSNR | identity SSIM | identity L1 "
             "| beats identity (PSNR) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "skipped" in r:
            reason = r["skipped"].split(":")[0]  # the full message is in the JSON
            lines.append(f"| {r['task']} | {r['mode']} | - | - | skipped: {reason} | | | | | | |")
            continue
        m, i = r["model"], r["identity"]
        lines.append(f"| {r['task']} | {r['mode']} | {r['steps']} | {r['train_seconds']:.0f} | {m['psnr']:.2f} | "
                     f"{m['ssim']:.3f} | {m['l1']:.3f} | {i['psnr']:.2f} | {i['ssim']:.3f} | {i['l1']:.3f} | "
                     f"{'yes' if m['psnr'] > i['psnr'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/quality"))
    parser.add_argument("--tasks", default="dusk,shapes,edges")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--encoder", default="vgg16", help="encoder mode's frozen encoder")
    parser.add_argument("--encoder-weights", help="local weights file for the encoder mode's encoder")
    for name in BUDGETS["cpu"]:
        parser.add_argument("--" + name.replace("_", "-"), type=int, help="default: per device, see above")
    args = parser.parse_args()
    from i2i.runtime import pick_device
    device = pick_device(args.device)
    for name, value in BUDGETS[device.type if device.type in BUDGETS else "cpu"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    tasks = load_tasks()
    data = args.out / "data" / f"s{args.size}_n{args.train_images}_t{args.test_images}_seed{args.seed}"
    rows = []
    started = time.perf_counter()
    for task in args.tasks.split(","):
        task_root = data / task
        if not (task_root / "paired" / "testB").is_dir():
            tasks.build_task(task, data, args.size, args.train_images, args.test_images, args.seed)
        for mode in available_modes(args.modes.split(",")):
            rows.append(run_one(task_root, task, mode, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    budget = {k: getattr(args, k) for k in BUDGETS["cpu"]}
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "budget": budget, "total_seconds": round(time.perf_counter() - started, 1),
              "command": " ".join(["python", *sys.argv]), "results": rows}
    table = markdown(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench_quality.md").write_text(table + "\n")
    print(f"device {device}, budget {budget}, {report['total_seconds']} s in total")
    print(table)


if __name__ == "__main__":
    main()
