"""Build the small procedural example dataset used by the quick start and tests (no download).

Domain A: flat-coloured shapes on a light background. Domain B: the same shapes, striped and outlined, on a dark
background. Writes both layouts:

    OUT/unpaired/{trainA,trainB,testA,testB}/*.png   (B images of train are of other shapes than A)
    OUT/paired/{trainA,trainB,testA,testB}/*.png     (same stems, B is the true translation of A)

Usage: python datasets/make_example.py --out data/example [--size 64] [--train 64] [--test 8] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def random_shapes(rng: np.random.Generator, size: int) -> list[tuple]:
    """A few shapes: (kind, box, colour index)."""
    shapes = []
    for _ in range(rng.integers(1, 4)):
        w = int(rng.integers(size // 5, size // 2))
        x, y = (int(v) for v in rng.integers(0, size - w, 2))
        shapes.append((int(rng.integers(0, 3)), (x, y, x + w, y + w), int(rng.integers(0, 3))))
    return shapes


def draw(shapes: list[tuple], size: int, domain: str) -> Image.Image:
    """Render shapes in domain A (flat) or B (striped, outlined, dark background)."""
    palette_a = [(220, 60, 60), (60, 160, 60), (60, 90, 220)]
    palette_b = [(250, 200, 40), (40, 220, 220), (230, 90, 230)]
    image = Image.new("RGB", (size, size), (235, 235, 225) if domain == "A" else (30, 30, 50))
    canvas = ImageDraw.Draw(image)
    for kind, box, colour in shapes:
        fill = palette_a[colour] if domain == "A" else palette_b[colour]
        outline = None if domain == "A" else (255, 255, 255)
        width = 0 if domain == "A" else max(1, size // 32)
        x0, y0, x1, y1 = box
        if kind == 0:
            canvas.ellipse(box, fill=fill, outline=outline, width=width)
        elif kind == 1:
            canvas.rectangle(box, fill=fill, outline=outline, width=width)
        else:
            canvas.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=outline, width=width)
    if domain == "B":  # stripes over the shapes only
        pixels = np.asarray(image).copy()
        background = np.all(pixels == (30, 30, 50), axis=2)
        stripes = (np.add.outer(np.arange(size), np.arange(size)) // max(2, size // 16)) % 2 == 0
        pixels[stripes & ~background] = (pixels[stripes & ~background] * 0.6).astype(np.uint8)
        image = Image.fromarray(pixels)
    return image


def build(out: str | Path, size: int = 64, n_train: int = 64, n_test: int = 8, seed: int = 0) -> Path:
    """Write the example dataset to ``out``; the same arguments always give the same bytes."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            shapes, other = random_shapes(rng, size), random_shapes(rng, size)
            name = f"{i:05d}.png"
            for layout, b_shapes in (("paired", shapes), ("unpaired", other if split == "train" else shapes)):
                for domain, s in (("A", shapes), ("B", b_shapes)):
                    folder = out / layout / f"{split}{domain}"
                    folder.mkdir(parents=True, exist_ok=True)
                    draw(s, size, domain).save(folder / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/example")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {build(args.out, args.size, args.train, args.test, args.seed)}")


if __name__ == "__main__":
    main()
