"""Translation quality per mode: train every translation mode on every procedural task for a fixed budget and score
its test translations against the ground truth (PSNR, SSIM, L1), next to the identity baseline (output = input).

    python tools/bench_quality.py --out bench/quality                       # every task and mode, default budget
    python tools/bench_quality.py --tasks dusk,shapes --modes pix2pix,cyclegan --steps 600 --size 32

The default budget depends on the device: on CUDA 64 px, ngf 64, 2000 steps of batch 8; on CPU 32 px, ngf 16,
300 steps of batch 4. Prints a Markdown table and writes OUT/bench_quality.json and OUT/bench_quality.md. A mode that
cannot run here (e.g. ``encoder`` without its pretrained weights) is listed with the reason instead of a score.

The ``digits`` command benchmarks the noise-to-image modes on a real digit set (needs ``pip install 'i2i[quality]'``):

    python tools/bench_quality.py digits --out bench/digits --steps 3000 --batch-size 64 [--flip-control]

It writes scikit-learn's digits at 32 px (datasets/digits.py: OUT/data/{train,test}/<digit>/*.png), trains a small
CNN classifier on the real training images and reports its test accuracy, trains ``cgan`` and ``gan`` on the
training images through the ``i2i train`` CLI with default settings (only size, steps, batch size and seed given,
plus ``--train-args``), then scores: the cgan's class accuracy (the classifier's verdict on samples of each requested
class; target >= 0.97) and both modes' KID against the real test images on the classifier's penultimate features
(standardised with the real training images' mean and std), next to a freshly initialised generator's KID (gan
target: at most a third; for cgan it shows whether each class is drawn in its variety or collapsed to one image).
``--flip-control`` adds a cgan run with ``--flip``. Writes OUT/digits.json, OUT/digits.md and sample grids in
OUT/grids/.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
MODES = ("pix2pix", "cyclegan", "unit", "encoder")
BUDGETS = {  # device type -> default training budget
    "cuda": dict(size=64, steps=2000, batch_size=8, ngf=64, ndf=64, n_blocks=6, train_images=512, test_images=64),
    "cpu": dict(size=32, steps=300, batch_size=4, ngf=16, ndf=16, n_blocks=3, train_images=128, test_images=16),
}


def load_script(name: str):
    """A script from datasets/ (a folder of scripts, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"i2i_{name}", ROOT / "datasets" / f"{name}.py")
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


# --- digits: the noise-to-image modes on a real digit set --------------------------------------------------------
DIGIT_SIZE = 32
CLASS_ACCURACY_TARGET = 0.97  # cgan: the classifier recognises at least this share of samples as the asked class
KID_RATIO_TARGET = 1 / 3      # gan: KID at most this fraction of an untrained generator's


class DigitClassifier(nn.Module):
    """Three conv blocks and a hidden layer; :meth:`features` (the hidden layer) is the KID feature network."""

    def __init__(self, num_classes: int, width: int = 32, hidden: int = 128):
        super().__init__()
        blocks: list[nn.Module] = []
        for cin, cout in ((3, width), (width, 2 * width), (2 * width, 4 * width)):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(4 * width * 16, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def read_class_folders(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``root/<class>/*`` as images in [-1, 1] (N x 3 x H x W), labels (N,) and the sorted class names."""
    from i2i.data.images import list_images, read_image, to_tensor
    from i2i.runtime import to_model_range
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        for path in list_images(root / name):
            images.append(to_tensor(read_image(path)))
            labels.append(label)
    return to_model_range(torch.stack(images)), torch.tensor(labels), names


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int, seed: int,
                     device: torch.device) -> DigitClassifier:
    """Adam (lr 1e-3), batch 64, cross-entropy, no augmentation (a mirrored digit must stay a wrong digit)."""
    torch.manual_seed(seed)
    model = DigitClassifier(num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.utils.data.TensorDataset(images, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def digit_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, args: argparse.Namespace,
                     device: torch.device) -> tuple[DigitClassifier, Optional[float]]:
    """The classifier of the real training images and its training seconds; it is kept in OUT/classifier.pt and
    reloaded (seconds None) with ``--reuse``."""
    path = args.out / "classifier.pt"
    if args.reuse and path.is_file():
        model = DigitClassifier(num_classes).to(device)
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.eval().requires_grad_(False), None
    started = time.perf_counter()
    model = train_classifier(images, labels, num_classes, args.classifier_epochs, args.seed, device)
    torch.save(model.state_dict(), path)
    return model, round(time.perf_counter() - started, 1)


@torch.inference_mode()
def in_batches(function, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """``function`` over ``images`` in batches on ``device``; the results concatenated on the CPU."""
    return torch.cat([function(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def class_spread(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the per-pixel std across that class's images: near 0 when a class collapses to one
    image, near the real images' value when it is drawn in their variety."""
    return round(float(torch.stack([images[labels == k].std(0).mean() for k in labels.unique()]).mean()), 4)


def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Share of ``images`` whose predicted class is ``labels``."""
    predicted = in_batches(classifier, images, device).argmax(1)
    return float((predicted == labels).float().mean())


def classifier_kid(features, images1: torch.Tensor, images2: torch.Tensor,
                   device: torch.device) -> tuple[float, float]:
    """KID (mean, std over subsets) between two image sets on the feature function ``features``."""
    from i2i.metrics import kid
    return kid(images1, images2, features=features, device=device, batch_size=256)


def standardised_features(classifier: DigitClassifier, real: torch.Tensor, device: torch.device):
    """The classifier's penultimate features, standardised per dimension with the mean and std of ``real``'s.

    KID's kernel (x.y/d + 1)^3 expects features of order one, as Inception's are; the raw ReLU features have norms
    near 100, where the kernel reaches 1e5 and the unbiased estimate swings by hundreds between subsets."""
    reference = in_batches(classifier.features, real, device)
    mean, std = reference.mean(0).to(device), reference.std(0).clamp_min(1e-6).to(device)
    return lambda images: (classifier.features(images) - mean) / std


def train_digits_run(name: str, mode: str, flags: list[str], data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run through the ``i2i train`` CLI (output in OUT/logs/NAME.log); reuse a finished one with
    ``--reuse``. Returns the run folder, its exact command and its training time."""
    run = args.out / "runs" / name
    record = run / "bench_train.json"
    if args.reuse and record.is_file():
        return json.loads(record.read_text())
    flags = [*shlex.split(args.train_args), *flags]
    command = ["i2i", "train", "--mode", mode, "--data", str(data), "--out", str(run), "--size", str(DIGIT_SIZE),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed), *flags]
    log = args.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run([sys.executable, "-m", "i2i", *command[1:]], stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"bench_quality: '{shlex.join(command)}' failed (exit {done.returncode}); see {log}")
    result = {"run": str(run), "command": shlex.join(command), "flags": shlex.join(flags),
              "train_seconds": round(time.perf_counter() - started, 1)}
    record.write_text(json.dumps(result, indent=2) + "\n")
    return result


def git_state() -> str:
    """The commit the code ran from, with ``-dirty`` when the working tree had uncommitted changes."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def untrained_sampler(run: Path, device: torch.device):
    """A sampler over a freshly initialised generator with the run's config and seed (eval mode, as sampled)."""
    from i2i.modes.base import create_mode
    from i2i.sampling import Sampler
    from i2i.train.checkpoint import find_checkpoint, load_checkpoint_config
    cfg = load_checkpoint_config(find_checkpoint(run))
    torch.manual_seed(cfg.seed)
    mode = create_mode(cfg)
    return Sampler(mode, mode.nets.to(device).eval().requires_grad_(False), device, "fp32")


def generated(sampler, n: int, seed: int) -> torch.Tensor:
    """n samples: for a class-conditional generator n // classes of each class, else n unconditional ones."""
    if sampler.cfg.num_classes:
        return sampler.class_grid(n // sampler.cfg.num_classes, seed=seed)
    return sampler.sample(n, seed=seed)


def score_run(name: str, run: Path, classifier: DigitClassifier, features, real: torch.Tensor, names: list[str],
              n: int, seed: int, device: torch.device, grids: Path) -> dict[str, Any]:
    """KID of n samples against ``real`` next to an untrained generator's, and what the classifier sees in the
    samples: for cgan the class accuracy (overall and per class), else the share of each predicted class. Saves
    the sample grids: cgan one row per class (10 samples each), gan 8x8 of the trained and untrained G."""
    import i2i
    samplers = {"trained": i2i.load(run, device=str(device)), "untrained": untrained_sampler(run, device)}
    images = {key: generated(sampler, n, seed).cpu() for key, sampler in samplers.items()}
    scores: dict[str, Any] = {"samples": n}
    for key in samplers:
        scores[f"kid_{key}"], scores[f"kid_{key}_std"] = classifier_kid(features, images[key], real, device)
    scores["kid_ratio"] = round(scores["kid_trained"] / scores["kid_untrained"], 4)
    trained = samplers["trained"]
    predicted = in_batches(classifier, images["trained"], device).argmax(1)
    if trained.cfg.num_classes:
        asked = torch.tensor([names.index(c) for c in trained.class_names])
        asked = asked.repeat_interleave(len(predicted) // len(names))
        hits = (predicted == asked).float()
        scores["class_accuracy"] = round(float(hits.mean()), 4)
        scores["per_class"] = {c: round(float(hits[asked == names.index(c)].mean()), 4) for c in trained.class_names}
        scores["class_spread"] = class_spread(images["trained"], asked)
        trained.save(trained.class_grid(10, seed=seed), grids / f"{name}.png", nrow=10)
    else:
        counts = torch.bincount(predicted, minlength=len(names))
        scores["predicted_classes"] = dict(zip(names, (counts / n).round(decimals=3).tolist()))
        for key, sampler in samplers.items():
            sampler.save(images[key][:64], grids / f"{name}_{key}.png", nrow=8)
    return scores


def digits_markdown(report: dict[str, Any]) -> str:
    c = report["classifier"]
    lines = ["| run | training flags | steps x batch | train s | measure | value | target | met |",
             "|---|---|---|---:|---|---:|---|---|",
             f"| classifier | {c['epochs']} epochs on the real train images | - | "
             f"{'reused' if c['train_seconds'] is None else round(c['train_seconds'])} | "
             f"test accuracy (mirrored test images) | {c['test_accuracy']:.3f} ({c['mirrored_test_accuracy']:.3f}) "
             f"| - | - |",
             f"| real train images | - | - | - | KID vs real test | {report['kid_real_train']:.4f} | - | - |"]
    for r in report["runs"]:
        flags = f"{r['flags'] or 'defaults'} (flip {'on' if r['flip'] else 'off'})"
        head = f"| {r['name']} | {flags} | {r['steps']} x {r['batch_size']} | {r['train_seconds']:.0f} |"
        if "class_accuracy" in r:
            target = f">= {CLASS_ACCURACY_TARGET}" if r["name"] == "cgan" else "-"
            met = ("yes" if r["class_accuracy"] >= CLASS_ACCURACY_TARGET else "no") if r["name"] == "cgan" else "-"
            lines.append(f"{head} class accuracy | {r['class_accuracy']:.3f} | {target} | {met} |")
            lines.append(f"{head} pixel std within a class (real test images) | {r['class_spread']:.3f} "
                         f"({report['class_spread_real_test']:.3f}) | - | - |")
        target, met = ("ratio <= 1/3", "yes" if r["kid_ratio"] <= KID_RATIO_TARGET else "no") \
            if r["name"] == "gan" else ("-", "-")
        lines.append(f"{head} KID vs real test (untrained G; ratio) | {r['kid_trained']:.4f} "
                     f"({r['kid_untrained']:.4f}; {r['kid_ratio']:.3f}) | {target} | {met} |")
    return "\n".join(lines)


def digits_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_quality.py digits",
                                     description="gan and cgan on scikit-learn's digits at 32 px")
    parser.add_argument("--out", type=Path, default=Path("bench/digits"))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="device for the classifier and the scoring")
    parser.add_argument("--modes", default="cgan,gan")
    parser.add_argument("--flip-control", action="store_true", help="also train cgan with --flip")
    parser.add_argument("--train-args", default="", help="extra i2i train flags for every run, e.g. '--workers 0'")
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--samples", type=int, default=1000, help="generated images scored per run")
    parser.add_argument("--reuse", action="store_true",
                        help="score the finished runs in OUT/runs with the kept classifier instead of retraining")
    args = parser.parse_args(argv)
    from i2i.errors import I2IError
    from i2i.runtime import pick_device
    from i2i.train.checkpoint import find_checkpoint, load_checkpoint_config
    device = pick_device(args.device)
    data = args.out / "data"
    started = time.perf_counter()
    try:
        if not (data / "test").is_dir():
            load_script("digits").build(data, size=DIGIT_SIZE, seed=args.seed)
    except I2IError as e:
        raise SystemExit(f"bench_quality: error: {e}") from None
    import sklearn
    train_images, train_labels, names = read_class_folders(data / "train")
    test_images, test_labels, _ = read_class_folders(data / "test")
    classifier, classifier_seconds = digit_classifier(train_images, train_labels, len(names), args, device)
    report: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": str(device),
        "torch": torch.__version__, "sklearn": sklearn.__version__, "threads": torch.get_num_threads(),
        "command": shlex.join(["python", *sys.argv]), "git": git_state(),
        "train_images": len(train_images), "test_images": len(test_images),
        "classifier": {"epochs": args.classifier_epochs, "train_seconds": classifier_seconds,
                       "test_accuracy": accuracy(classifier, test_images, test_labels, device),
                       "mirrored_test_accuracy": accuracy(classifier, test_images.flip(-1), test_labels, device)},
        "runs": []}
    features = standardised_features(classifier, train_images, device)
    report["kid_real_train"] = classifier_kid(features, train_images, test_images, device)[0]
    report["class_spread_real_test"] = class_spread(test_images, test_labels)
    print(json.dumps(report["classifier"]), file=sys.stderr, flush=True)
    plan = [(mode, mode, []) for mode in args.modes.split(",")]
    if args.flip_control:
        plan.append(("cgan_flip", "cgan", ["--flip"]))
    grids = args.out / "grids"
    for name, mode, flags in plan:
        row: dict[str, Any] = {"name": name, "mode": mode, "steps": args.steps, "batch_size": args.batch_size,
                               **train_digits_run(name, mode, flags, data, args)}
        run = Path(row["run"])
        row["flip"] = load_checkpoint_config(find_checkpoint(run)).flip  # as the run resolved it
        row.update(score_run(name, run, classifier, features, test_images, names, args.samples, args.seed, device,
                             grids))
        report["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    table = digits_markdown(report)
    (args.out / "digits.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "digits.md").write_text(table + "\n")
    print(f"device {device}, {report['total_seconds']} s in total")
    print(table)


def main() -> None:
    if sys.argv[1:2] == ["digits"]:
        return digits_main(sys.argv[2:])
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
    tasks = load_script("tasks")
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
