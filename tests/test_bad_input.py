"""Bad input: broken and awkward image files, datasets containing them, and config errors that name the field."""
from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest
import torch
from bad_images import write_corpus
from PIL import Image

import i2i
import i2i.cli.export
from i2i.cli import main as cli
from i2i.config import make_config
from i2i.data import ImageReadError, make_dataset, read_image
from i2i.data.datasets import index_images
from i2i.data.images import check_image
from i2i.errors import EXIT_BUG, EXIT_ERROR


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_each_bad_file_gives_a_clear_error_naming_it(corpus):
    for name, (path, expected) in corpus.items():
        if expected == "bad_header":
            with pytest.raises(ImageReadError, match=str(path)):
                check_image(path)
        if expected in ("bad_header", "bad_decode"):
            with pytest.raises(ImageReadError, match=str(path)):
                read_image(path)
    with pytest.raises(ImageReadError, match=r"100000x100000 pixels, above the limit .*--max-pixels"):
        check_image(corpus["bomb.png"][0])
    with pytest.raises(ImageReadError, match="above the limit of 100"):  # a small image under a tiny limit
        read_image(corpus["rgba.png"][0], max_pixels=100)


def test_awkward_formats_decode_to_rgb8(corpus):
    for name, (path, expected) in corpus.items():
        if isinstance(expected, tuple):
            image = read_image(path)
            assert image.shape == (*expected, 3) and image.dtype == np.uint8, name
    rotated = read_image(corpus["exif_rotated.jpg"][0])  # stored 30 wide x 10 high, EXIF says rotate 90
    assert rotated.shape == (30, 10, 3)
    gray16 = read_image(corpus["gray16.png"][0])  # 16-bit values scaled to 8 bit, not clipped
    assert gray16[..., 0].max() == round((18 * 22 - 1) * 150 / 65535 * 255) and (gray16[0, 1] == 1).all()
    palette = Image.open(corpus["palette_transparent.png"][0]).convert("RGBA")
    assert np.array_equal(read_image(corpus["palette_transparent.png"][0]), np.asarray(palette)[..., :3])
    assert tuple(read_image(corpus["one_pixel.png"][0])[0, 0]) == (200, 10, 10)


def test_decoding_never_leaks_file_handles(corpus):
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(30):
        for path, _expected in corpus.values():
            try:
                read_image(path)
            except ImageReadError:
                pass
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before


def test_indexer_skips_and_reports_or_fails_fast(corpus, capsys):
    folder = next(iter(corpus.values()))[0].parent
    kept = index_images(folder, skip_bad=True, max_pixels=200_000_000)
    bad = sorted(name for name, (_, expected) in corpus.items() if expected == "bad_header")
    assert sorted(p.name for p in kept) == sorted(set(corpus) - set(bad))
    err = capsys.readouterr().err
    assert all(str(folder / name) in err for name in bad)
    assert f"skipped {len(bad)} unreadable image(s) in {folder}" in err
    with pytest.raises(ImageReadError, match=str(folder / "bomb.png")):  # the first bad file, by sorted name
        index_images(folder, skip_bad=False, max_pixels=200_000_000)


def test_file_failing_at_load_time_is_skipped_once(corpus, tmp_path, capsys):
    folder = tmp_path / "single"
    folder.mkdir()
    shutil.copy(corpus["truncated.png"][0], folder / "a_truncated.png")
    shutil.copy(corpus["rgba.png"][0], folder / "b_good.png")
    dataset = make_dataset("single", folder, "train", 8, 10)
    assert len(dataset) == 2  # the header check passes
    items = [dataset[(0, seed)] for seed in range(5)]  # index 0 is the truncated file: the next one stands in
    assert all(item["B"].shape == (3, 8, 8) for item in items)
    assert capsys.readouterr().err.count("a_truncated.png") == 1  # reported once, then remembered
    strict = make_dataset("single", folder, "train", 8, 10, skip_bad=False)
    with pytest.raises(ImageReadError, match="a_truncated.png"):
        strict[(0, 0)]


def test_unpaired_fallback_draws_another_b_image(corpus, tmp_path):
    for side, files in (("trainA", ["rgba.png", "gray.png"]), ("trainB", ["truncated.jpg", "cmyk.jpg"])):
        (tmp_path / side).mkdir()
        for name in files:
            shutil.copy(corpus[name][0], tmp_path / side / name)
    dataset = make_dataset("unpaired", tmp_path, "train", 8, 10)
    for seed in range(20):  # about half the seeds first draw the truncated B image
        assert dataset[(seed % 2, seed)]["B"].shape == (3, 8, 8)


def test_training_survives_a_folder_of_bad_files(corpus, example_data, tmp_path, tiny, capfd):
    data = tmp_path / "data"
    for side in ("trainA", "trainB"):
        shutil.copytree(example_data / "unpaired" / side, data / side)
        for name, (path, _) in corpus.items():
            shutil.copy(path, data / side / f"zz_{name}")  # sorted after the good images
    run = i2i.train(mode="cyclegan", data=str(data), out=str(tmp_path / "run"), steps=8,
                    **{**tiny, "workers": 2, "batch_size": 4})
    weights = i2i.load(run, device="cpu").net.state_dict().values()
    assert all(torch.isfinite(t).all() for t in weights if t.is_floating_point())
    err = capfd.readouterr().err  # includes what the worker processes printed
    assert "skipped 3 unreadable image(s)" in err and "zz_bomb.png" in err and "zz_truncated.png" in err
    code = cli(["train", "--data", str(data), "--out", str(tmp_path / "strict"), "--steps", "1", "--workers", "0",
                "--size", "32", "--ngf", "8", "--ndf", "8", "--device", "cpu", "--strict"])
    assert code == 2 and "zz_bomb.png" in capfd.readouterr().err
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("values,message", [
    ({"sise": 32}, r"unknown config field\(s\): sise \(did you mean size"),
    ({"size": "big"}, "config field 'size' must be int, got 'big'"),
    ({"precision": "fp8"}, "config field 'precision' must be one of fp32, bf16, fp16; got 'fp8'"),
    ({"flip": "maybe"}, "config field 'flip' must be true or false"),
    ({"checkpoint_every": 0}, "config field 'checkpoint_every' must be at least 1; got 0"),
    ({"workers": -1}, "config field 'workers' must be at least 0"),
])
def test_config_errors_name_the_field_and_allowed_values(values, message):
    with pytest.raises(i2i.I2IError, match=message):
        make_config(values)


def test_cli_and_config_file_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--precision", "fp8"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp8' (choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train", "--size", "big"])
    assert "argument --size: invalid int value: 'big'" in capsys.readouterr().err
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("mode: cyclegan\nlamda_cycle: 5\n")
    assert cli(["train", "--config", str(bad_key), "--data", str(tmp_path)]) == 2
    assert "unknown config field(s): lamda_cycle (did you mean lambda_cycle" in capsys.readouterr().err
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text("gan_loss: wasserstein\n")
    assert cli(["train", "--config", str(bad_value)]) == 2
    assert "'gan_loss' must be one of bce, lsgan, hinge, wgan" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("size: [32\n")
    assert cli(["train", "--config", str(broken)]) == 2
    assert f"config file {broken} is not valid YAML" in capsys.readouterr().err
    assert cli(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_os_errors_are_one_line_and_bugs_show_their_traceback(monkeypatch, tmp_path, capsys):
    """An OSError no check caught (here a full disk) is one line, exit 2; any other exception is a bug: traceback and
    a line saying so, exit 1."""
    argv = ["export", "--checkpoint", "run", "--format", "onnx", "--out", "g.onnx"]

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "g.onnx"))

    monkeypatch.setattr(i2i.cli.export, "run", disk_full)
    assert cli(argv) == EXIT_ERROR == 2
    assert capsys.readouterr().err == f"i2i: error: no space left on device at {tmp_path / 'g.onnx'}\n"

    def bug(args):
        raise ValueError("boom")

    monkeypatch.setattr(i2i.cli.export, "run", bug)
    assert cli(argv) == EXIT_BUG == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: boom" in err
    assert err.endswith("i2i: internal error: this is a bug in i2i; please report it with the traceback above\n")
