"""Batch conversion: mirrored folders, odd inputs, tiling, resuming, bad files and write safety."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import i2i
from i2i.cli import main
from i2i.errors import EXIT_SOME_FAILED
from i2i.convert.folder import TEMP_SUFFIX, translate_folder, write_image
from i2i.convert.tiling import ramp, tile_starts

@pytest.fixture(scope="module")
def run_dir(cyclegan_run) -> Path:
    return cyclegan_run


@pytest.fixture(scope="module")
def translator(run_dir):
    return i2i.load(run_dir, device="cpu")


def _noise(shape, seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def _smooth(height: int, width: int) -> np.ndarray:
    """A smooth colour image (gradients and a blob), closer to a photo than noise."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    blob = np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) * 12)
    rgb = np.stack([x, y, blob], axis=2) * 255
    return rgb.round().astype(np.uint8)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """A nested folder of awkward inputs: odd size, grayscale, RGBA, 16-bit, palette, jpg, webp."""
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(_noise((97, 131, 3))).save(src / "odd.png")
    Image.fromarray(_noise((40, 50), 1)).save(src / "sub" / "gray.png")
    Image.fromarray(_noise((33, 47, 4), 2)).save(src / "sub" / "rgba.png")
    Image.fromarray(_noise((30, 20), 3, np.uint16, 65536)).save(src / "sub" / "deeper" / "deep16.png")
    Image.fromarray(_noise((16, 18, 3), 4)).convert("P").save(src / "palette.png")
    Image.fromarray(_smooth(64, 48)).save(src / "photo.jpg")
    Image.fromarray(_smooth(36, 52)).save(src / "sub" / "pic.webp")
    (src / "notes.txt").write_text("not an image, ignored")
    return src


def _inputs(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix in (".png", ".jpg", ".webp"))


def _temp_files(folder: Path) -> list[Path]:
    return list(folder.rglob(f"*{TEMP_SUFFIX}"))


def test_converts_nested_mixed_folder(translator, mixed, tmp_path):
    assert Image.open(mixed / "sub" / "deeper" / "deep16.png").mode.startswith("I;16")
    dst = tmp_path / "out"
    report = translator.translate_folder(mixed, dst, batch_size=3, workers=2, progress=False)
    assert report.failed == [] and report.skipped == []
    assert len(report.converted) == 7
    for src_file in _inputs(mixed):
        out = dst / src_file.relative_to(mixed).with_suffix(".png")
        assert out in report.converted
        with Image.open(out) as image:
            assert image.mode == "RGB" and image.size == Image.open(src_file).size
            assert np.isfinite(np.asarray(image, dtype=np.float32)).all()
    assert not (dst / "notes.png").exists() and _temp_files(dst) == []


def test_same_format_keeps_extensions(translator, mixed, tmp_path):
    report = translate_folder(translator, mixed / "sub", tmp_path / "out", format="same", workers=0, progress=False)
    assert sorted(p.name for p in report.converted) == ["deep16.png", "gray.png", "pic.webp", "rgba.png"]
    with Image.open(tmp_path / "out" / "pic.webp") as image:
        assert image.format == "WEBP" and image.size == (52, 36)


def test_single_file_and_resize(translator, mixed, tmp_path):
    report = translate_folder(translator, mixed / "odd.png", tmp_path / "out", format="jpg", resize=32,
                              workers=0, progress=False)
    assert report.converted == [tmp_path / "out" / "odd.jpg"]
    with Image.open(report.converted[0]) as image:
        assert image.size == (131, 97) and image.format == "JPEG"


def test_tiled_agrees_with_untiled(translator, tmp_path):
    """Tiles (48 px, 16 shared) with shared norm statistics vs one pass over the whole 80x100 image.

    Tolerances in 8-bit levels: equal when one tile covers the image; a mean difference under 8 levels (3%)
    when the thumbnail for the statistics is the full image (batch of tiles >= image; measured 4.1), under 16
    when it is downscaled (batch of one tile; measured 10.0). The residue is the net's view of padding at tile
    borders (and of a smaller image for the statistics); this barely trained net has a wide receptive field."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(80, 100)).save(src / "img.png")
    outputs = {}
    for name, options in {"whole": {}, "one_tile": dict(tile=128, overlap=16),
                          "tiled": dict(tile=48, overlap=16, batch_size=4),
                          "tiled_thumb": dict(tile=48, overlap=16, batch_size=1)}.items():
        report = translate_folder(translator, src, tmp_path / name, workers=0, progress=False, **options)
        assert report.failed == []
        outputs[name] = np.asarray(Image.open(report.converted[0]), dtype=np.float32)
        assert outputs[name].shape == (80, 100, 3)
    assert np.array_equal(outputs["one_tile"], outputs["whole"])
    assert np.abs(outputs["tiled"] - outputs["whole"]).mean() < 8
    assert np.abs(outputs["tiled_thumb"] - outputs["whole"]).mean() < 16
    norms = [m for m in translator.net.modules() if "forward" in m.__dict__]
    assert norms == []  # the shared-statistics forwards are removed again


def test_tile_layout_covers_and_blends():
    assert tile_starts(100, 48, 16) == [0, 32, 52]
    assert tile_starts(40, 48, 16) == [0]
    total = torch.zeros(100)
    for start in tile_starts(100, 48, 16):
        weight = ramp(48, start, 100, 16)
        assert weight.min() > 0
        total[start:start + 48] += weight
    assert total.min() > 0.5 and total[:16].eq(1).all() and total[-16:].eq(1).all()


def test_skip_existing_converts_only_missing(translator, mixed, tmp_path):
    dst = tmp_path / "out"
    first = translate_folder(translator, mixed, dst, workers=0, progress=False)
    missing = dst / "sub" / "gray.png"
    missing.unlink()
    kept = {p: p.stat().st_mtime_ns for p in first.converted if p != missing}
    second = translate_folder(translator, mixed, dst, workers=0, progress=False, skip_existing=True)
    assert second.converted == [missing] and missing.exists()
    assert len(second.skipped) == len(first.converted) - 1
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in kept.items())


def test_corrupt_files_are_listed_and_cli_fails(run_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(32, 32)).save(src / "good.png")
    (src / "broken.jpg").write_bytes(b"not an image at all")
    (src / "empty.png").write_bytes(b"")
    data = (src / "good.png").read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    code = main(["convert", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--workers", "1", "--no-progress"])
    assert code == EXIT_SOME_FAILED == 3
    err = capsys.readouterr().err
    for name in ("broken.jpg", "empty.png", "truncated.png"):
        assert name in err
        assert not (tmp_path / "out" / name).with_suffix(".png").exists()
    assert (tmp_path / "out" / "good.png").exists()
    report = translate_folder(i2i.load(run_dir, device="cpu"), src, tmp_path / "again", workers=0, progress=False)
    assert sorted(p.name for p, _ in report.failed) == ["broken.jpg", "empty.png", "truncated.png"]
    assert all("unreadable" in reason for _, reason in report.failed)


def test_refuses_output_equal_to_or_inside_input(translator, run_dir, mixed, capsys):
    for dst in (mixed, mixed / "sub" / "out"):
        with pytest.raises(i2i.I2IError, match="input folder"):
            translate_folder(translator, mixed, dst, progress=False)
    code = main(["convert", "--checkpoint", str(run_dir), "--input", str(mixed), "--output", str(mixed),
                 "--device", "cpu"])
    assert code == 2 and "is the input folder" in capsys.readouterr().err
    assert not (mixed / "sub" / "out").exists()


def test_never_overwrites_an_input(translator, mixed, tmp_path):
    before = (mixed / "odd.png").read_bytes()
    report = translate_folder(translator, mixed / "odd.png", mixed, format="same", workers=0, progress=False)
    assert report.converted == [] and "overwrite an input" in report.failed[0][1]
    assert (mixed / "odd.png").read_bytes() == before
    # input inside output is allowed: outputs go to OUTPUT/<path relative to INPUT>
    report = translate_folder(translator, mixed / "sub", mixed, format="jpg", workers=0, progress=False)
    assert report.failed == [] and (mixed / "gray.jpg").exists() and (mixed / "deeper" / "deep16.jpg").exists()


def test_collisions_and_symlinks_are_refused(translator, tmp_path):
    src, dst, outside = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    Image.fromarray(_smooth(16, 16)).save(src / "a.png")
    Image.fromarray(_smooth(16, 16)).save(src / "a.jpg")
    Image.fromarray(_smooth(16, 16)).save(src / "sub" / "b.png")
    Image.fromarray(_smooth(16, 16)).save(src / "c.png")
    dst.mkdir()
    (dst / "sub").symlink_to(outside, target_is_directory=True)
    (dst / "c.png").symlink_to(outside / "target.png")
    report = translate_folder(translator, src, dst, workers=0, progress=False)
    reasons = {p.name: r for p, r in report.failed}
    assert report.converted == [dst / "a.png"]
    assert "also the output of" in reasons["a.png"]  # a.jpg and a.png both map to a.png; the first wins
    assert "outside the output folder" in reasons["b.png"]
    assert "symbolic link" in reasons["c.png"]
    assert list(outside.iterdir()) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.png"
    write_image(_smooth(8, 8), target)
    before = target.read_bytes()

    def killed_midway(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed_midway)
    for path in (target, tmp_path / "out" / "new.png"):
        with pytest.raises(KeyboardInterrupt):
            write_image(_smooth(8, 8), path)
    assert target.read_bytes() == before  # the old image is intact
    assert not (tmp_path / "out" / "new.png").exists() and _temp_files(tmp_path) == []


def test_failed_write_is_reported(translator, mixed, tmp_path, monkeypatch):
    def disk_full(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    report = translate_folder(translator, mixed, tmp_path / "out", workers=0, progress=False)
    assert report.converted == [] and len(report.failed) == 7
    assert all(f"no space left on device at {tmp_path / 'out'}" in reason for _, reason in report.failed)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_bad_options_are_clear(translator, mixed, tmp_path):
    with pytest.raises(i2i.I2IError, match="format must be one of"):
        translate_folder(translator, mixed, tmp_path / "o", format="gif")
    with pytest.raises(i2i.I2IError, match="overlap"):
        translate_folder(translator, mixed, tmp_path / "o", tile=32, overlap=32)
    with pytest.raises(i2i.I2IError, match="input not found"):
        translate_folder(translator, tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(i2i.I2IError, match="no images"):
        translate_folder(translator, tmp_path / "empty", tmp_path / "o")
    (tmp_path / "empty" / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(i2i.I2IError, match=r"no images .* \(only files in other formats: .gif 1\)"):
        translate_folder(translator, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(i2i.I2IError, match="tile must be at least 8 pixels"):  # 4 is the stride, 8 the smallest input
        translate_folder(translator, mixed, tmp_path / "o", tile=4, overlap=0)


def test_translate_image_keeps_size(translator):
    image = Image.fromarray(_noise((97, 131, 4)), "RGBA")
    out = translator.translate_image(image)
    assert out.size == (131, 97) and out.mode == "RGB"
    batch = translator.translate(torch.rand(2, 3, 30, 41) * 2 - 1)
    assert batch.shape == (2, 3, 30, 41) and batch.abs().max() <= 1


def test_load_pix2pix(example_data, tmp_path, tiny):
    run = i2i.train(mode="pix2pix", data=str(example_data / "paired"), steps=1, out=str(tmp_path / "p2p"), **tiny)
    translator = i2i.load(run, device="cpu")
    assert translator.direction == "AtoB" and translator.stride == 32
    out = translator.translate_image(Image.fromarray(_smooth(45, 70)))
    assert out.size == (70, 45)
    report = translator.translate_folder(example_data / "paired" / "testA", tmp_path / "out", workers=0,
                                         progress=False)
    assert len(report.converted) == 2 and report.failed == []



def test_tiny_images_are_padded_for_the_net(translator, tmp_path):
    """1 to 4 px sides (4x4 pads to nothing at stride 4, yet the resnet's reflection padding needs 8) convert at their
    size, in a batch and tiled (a thin 3x100 image in 16 px tiles); the others are untouched by their presence."""
    src = tmp_path / "in"
    src.mkdir()
    sizes = {"one.png": (1, 1), "two_by_three.png": (2, 3), "four.png": (4, 4), "thin.png": (3, 100),
             "normal.png": (32, 32)}
    for name, (height, width) in sizes.items():
        Image.fromarray(_smooth(height, width)).save(src / name)
    for options in ({}, {"tile": 16, "overlap": 4}):
        dst = tmp_path / f"out{len(options)}"
        report = translate_folder(translator, src, dst, workers=0, progress=False, **options)
        assert report.failed == [] and len(report.converted) == 5
        for name, (height, width) in sizes.items():
            assert Image.open(dst / name).size == (width, height)
    alone = translate_folder(translator, src / "normal.png", tmp_path / "alone", workers=0, progress=False)
    expected = np.asarray(Image.open(tmp_path / "out0" / "normal.png"))
    assert np.array_equal(np.asarray(Image.open(alone.converted[0])), expected)


def test_an_image_the_net_refuses_fails_alone(translator, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name, side in (("a.png", 16), ("b.png", 4), ("c.png", 24)):
        Image.fromarray(_smooth(side, side)).save(src / name)
    translate = translator.translate

    def refuses_8px(x):  # b.png, padded to 8 px (the size probe sends zeros)
        if x.shape[-1] == 8 and x.ne(0).any():
            raise RuntimeError("Padding size should be less than the corresponding input dimension\nmore")
        return translate(x)

    monkeypatch.setattr(translator, "translate", refuses_8px)
    report = translate_folder(translator, src, tmp_path / "out", workers=0, progress=False, batch_size=1)
    assert sorted(p.name for p in report.converted) == ["a.png", "c.png"]
    assert report.failed == [(src / "b.png", "cannot translate this 4x4 image: Padding size should be less than the "
                                             "corresponding input dimension")]


def test_special_files_are_skipped_and_other_formats_counted(run_dir, tmp_path):
    """A FIFO, a device and a socket named like images would block or fail the reader: skipped and named (the CLI
    must not hang: it runs under a timeout); a GIF and a text file are counted in the summary; exit code 3."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(16, 16)).save(src / "good.png")
    os.mkfifo(src / "fifo.png")
    (src / "device.jpg").symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(src / "socket.webp"))
    Image.fromarray(_smooth(16, 16)).save(src / "anim.gif")
    (src / "notes.txt").write_text("notes")
    (src / ".hidden").write_text("not counted")
    try:
        done = subprocess.run([sys.executable, "-m", "i2i", "convert", "--checkpoint", str(run_dir), "--input",
                               str(src), "--output", str(tmp_path / "out"), "--device", "cpu", "--workers", "1",
                               "--no-progress"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        server.close()
    assert done.returncode == EXIT_SOME_FAILED, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for name, kind in (("fifo.png", "a named pipe (FIFO)"), ("device.jpg", "a character device"),
                       ("socket.webp", "a socket")):
        assert f"i2i: failed: {src / name}: {src / name} is {kind}, not an image file: skipped" in done.stderr
    assert "converted 1, skipped 0 (already done), failed 3 in " in done.stdout
    assert "; ignored 2 file(s) in other formats: .gif 1, .txt 1 -> " in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
