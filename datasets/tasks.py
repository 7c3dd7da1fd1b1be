"""Procedural benchmark tasks with known ground truth (no download): every test image has its true translation.

Tasks (A -> B):
    shapes  flat-coloured shapes -> the same shapes striped and outlined on a dark background (make_example's look)
    dusk    procedural scenes (gradient sky, soft blobs, shapes) -> the same scene colour-graded to dusk
            (gamma, warm/purple grading, mild sensor noise)
    edges   black-on-white edge maps -> the filled shapes (colour set by the shape's kind, as in edges2shoes)

Each task writes both layouts; scenes come from per-image seeds, so the same arguments always give the same bytes:

    OUT/<task>/unpaired/{trainA,trainB,testA,testB}/*.png  (B images are of other scenes than A images)
    OUT/<task>/unpaired/testA_truth/*.png                 (the true B of each testA image, same file name)
    OUT/<task>/unpaired/testB_truth/*.png                 (the true A of each testB image, for BtoA)
    OUT/<task>/paired/{trainA,trainB,testA,testB}/*.png   (same stems; B is the true translation of A)

The truth folders are read only by evaluation (``i2i eval``), never by training.

Usage: python datasets/tasks.py --task shapes|dusk|edges|all --out data/tasks [--size 64] [--train 256] [--test 32]
       [--seed 0]
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw


def _sibling(name: str):
    """Import a script that lives next to this one (datasets/ is a folder of scripts, not a package)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_i2i_datasets_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_example = _sibling("make_example")
random_shapes, draw_example = _example.random_shapes, _example.draw

# A scene is drawn from a generator seeded by (seed, task, split, index, role); a pair renders one scene twice.
Renderer = Callable[[np.random.Generator, int], tuple[Image.Image, Image.Image]]
SPLITS = {"train": 0, "test": 1}


def _shapes(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    scene = random_shapes(rng, size)
    return draw_example(scene, size, "A"), draw_example(scene, size, "B")


def _gradient_sky(rng: np.random.Generator, size: int) -> np.ndarray:
    top, bottom = rng.uniform(0.35, 1.0, 3), rng.uniform(0.35, 1.0, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def dusk_grade(day: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Day image (HxWx3 floats in [0, 1]) to dusk: gamma 1.8, warm/purple grading, and with ``rng`` Gaussian
    sensor noise of std 0.01."""
    graded = day ** 1.8 * np.array([1.0, 0.72, 0.62]) + np.array([0.05, 0.02, 0.09])
    if rng is not None:
        graded = graded + rng.normal(0.0, 0.01, day.shape)
    return np.clip(graded, 0.0, 1.0)


def _dusk(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    image = _gradient_sky(rng, size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(rng.integers(2, 5)):  # soft blobs
        cy, cx = rng.uniform(0, 1, 2)
        radius = rng.uniform(0.08, 0.3)
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))[..., None] * rng.uniform(0.5, 1.0)
        image = image * (1 - weight) + rng.uniform(0.0, 1.0, 3) * weight
    day = Image.fromarray(np.round(image * 255).astype(np.uint8))
    canvas = ImageDraw.Draw(day)
    for kind, box, _ in random_shapes(rng, size):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = box
        if kind == 0:
            canvas.ellipse(box, fill=colour)
        elif kind == 1:
            canvas.rectangle(box, fill=colour)
        else:
            canvas.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    dusk = dusk_grade(np.asarray(day) / 255.0, rng)
    return day, Image.fromarray(np.round(dusk * 255).astype(np.uint8))


EDGE_PALETTE = np.array([(240, 240, 235), (210, 50, 50), (50, 150, 70), (50, 80, 210)], dtype=np.uint8)


def _edges(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    scene = random_shapes(rng, size)
    regions = Image.new("L", (size, size), 0)  # 0 background, i + 1 for the i-th shape (later ones on top)
    canvas = ImageDraw.Draw(regions)
    kinds = [0]
    for i, (kind, box, _) in enumerate(scene):
        x0, y0, x1, y1 = box
        if kind == 0:
            canvas.ellipse(box, fill=i + 1)
        elif kind == 1:
            canvas.rectangle(box, fill=i + 1)
        else:
            canvas.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=i + 1)
        kinds.append(kind + 1)
    labels = np.asarray(regions)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    frame = np.ones_like(edge)
    frame[1:-1, 1:-1] = False
    edge |= frame & (labels > 0)  # shapes touching the border are closed by it
    for _ in range(max(0, size // 64 - 1)):  # thicker lines on larger images
        edge[:, 1:] |= edge[:, :-1]
        edge[1:, :] |= edge[:-1, :]
    sketch = np.where(edge[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    filled = EDGE_PALETTE[np.array(kinds)[labels]]
    return Image.fromarray(sketch), Image.fromarray(filled)


TASKS: dict[str, Renderer] = {"shapes": _shapes, "dusk": _dusk, "edges": _edges}


def render(task: str, seed: int, split: str, index: int, role: int, size: int) -> tuple[Image.Image, Image.Image]:
    """Scene ``index`` of a split rendered in both domains; ``role`` 1 gives the other scenes of unpaired B."""
    task_id = list(TASKS).index(task)
    rng = np.random.default_rng(np.random.SeedSequence([seed, task_id, SPLITS[split], index, role]))
    return TASKS[task](rng, size)


def build_task(task: str, out: str | Path, size: int = 64, n_train: int = 256, n_test: int = 32,
               seed: int = 0) -> Path:
    """Write ``out/<task>/{unpaired,paired}`` (see the module docstring); returns ``out/<task>``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not 32 <= size <= 1024:
        raise ValueError(f"size must be between 32 and 1024, got {size}")
    root = Path(out) / task
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = f"{i:05d}.png"
            a, b = render(task, seed, split, i, 0, size)
            other_a, other_b = render(task, seed, split, i, 1, size)
            files = {f"paired/{split}A": a, f"paired/{split}B": b,
                     f"unpaired/{split}A": a, f"unpaired/{split}B": other_b}
            if split == "test":
                files.update({"unpaired/testA_truth": b, "unpaired/testB_truth": other_a})
            for folder, image in files.items():
                (root / folder).mkdir(parents=True, exist_ok=True)
                image.save(root / folder / name)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", choices=[*TASKS, "all"])
    parser.add_argument("--out", default="data/tasks")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for task in TASKS if args.task == "all" else [args.task]:
        print(f"wrote {build_task(task, args.out, args.size, args.train, args.test, args.seed)}")


if __name__ == "__main__":
    main()
