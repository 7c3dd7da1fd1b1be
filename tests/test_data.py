"""Folder layouts, paired alignment, formats and clear data errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import make_dataset, read_image
from i2i.errors import I2IError


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def gradient_image(h, w):
    """An image whose pixel values encode their position, so any crop/flip is detectable."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=2).astype(np.uint8)


def test_paired_transforms_keep_a_and_b_aligned(tmp_path):
    for i in range(3):
        img = gradient_image(48, 48)
        save(tmp_path / "trainA" / f"{i}.png", img)
        save(tmp_path / "trainB" / f"{i}.png", 255 - img)  # B is a pixel-wise function of A
    ds = make_dataset("paired", tmp_path, "train", size=32, load_size=40)
    for seed in range(10):
        item = ds[(seed % 3, seed)]
        assert item["A"].shape == item["B"].shape == (3, 32, 32)
        assert (255 - item["A"].int() - item["B"].int()).abs().max() <= 1  # equal up to resize rounding


def test_side_by_side_ab_layout(tmp_path):
    a, b = gradient_image(32, 32), np.zeros((32, 32, 3), np.uint8)
    save(tmp_path / "train" / "x.jpg", np.concatenate([a, b], axis=1))
    item = make_dataset("paired", tmp_path, "train", size=32, load_size=32, flip=False)[(0, 0)]
    assert item["A"].float().mean() > 50 and item["B"].float().mean() < 5


def test_missing_partner_is_named(tmp_path):
    save(tmp_path / "trainA" / "cat.png", gradient_image(8, 8))
    save(tmp_path / "trainA" / "dog.png", gradient_image(8, 8))
    save(tmp_path / "trainB" / "cat.png", gradient_image(8, 8))
    with pytest.raises(I2IError, match="dog.png"):
        make_dataset("paired", tmp_path, "train", 8, 8)


def test_unpaired_augmentation_is_reproducible_per_key(example_data):
    ds = make_dataset("unpaired", example_data / "unpaired", "train", 32, 36)
    assert torch.equal(ds[(3, 123)]["B"], ds[(3, 123)]["B"])
    assert ds[(0, 1)]["A"].dtype == torch.uint8


@pytest.mark.parametrize("layout,kind,message", [
    ("missing", "unpaired", "data folder not found"),
    ("empty", "unpaired", "folder not found"),
    ("noimages", "single", "no images"),
])
def test_clear_errors_for_bad_folders(tmp_path, layout, kind, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noimages").mkdir()
    (tmp_path / "noimages" / "readme.txt").write_text("hi")
    with pytest.raises(I2IError, match=message):
        make_dataset(kind, tmp_path / layout, "train", 8, 8)


def test_unreadable_image_named_or_skipped(tmp_path):
    save(tmp_path / "trainA" / "good.png", gradient_image(8, 8))
    (tmp_path / "trainA" / "bad.png").write_bytes(b"not an image")
    save(tmp_path / "trainB" / "good.png", gradient_image(8, 8))
    assert len(make_dataset("unpaired", tmp_path, "train", 8, 8).files_a) == 1
    with pytest.raises(I2IError, match="bad.png"):
        make_dataset("unpaired", tmp_path, "train", 8, 8, skip_bad=False)


@pytest.mark.parametrize("mode,array", [
    ("L", np.full((5, 7), 100, np.uint8)),
    ("RGBA", np.full((5, 7, 4), 100, np.uint8)),
    ("I;16", np.full((5, 7), 65535, np.uint16)),
])
def test_formats_decode_to_rgb8(tmp_path, mode, array):
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)  # uint16 arrays become 16-bit PNGs
    out = read_image(path)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.max() == 255


def test_palette_and_other_formats(tmp_path):
    for ext in ("webp", "bmp", "tif", "jpg"):
        Image.fromarray(gradient_image(9, 11)).save(tmp_path / f"x.{ext}")
        assert read_image(tmp_path / f"x.{ext}").shape == (9, 11, 3)
    Image.fromarray(gradient_image(9, 11)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (9, 11, 3)
