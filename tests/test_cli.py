"""The command line and API explain every mistake in one line, and a run folder holds one run (issue 13).

Refusals go through the real CLI (a subprocess, or ``main`` in this process where the refusal comes before any
training) and check the exit code, the one-line message, that no traceback is printed and that an existing run is
byte-for-byte unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import i2i
from i2i.cli import main as cli
from i2i.errors import EXIT_ERROR, EXIT_OK
from i2i.train.checkpoint import RunLock, list_checkpoints
from i2i.train.logging import column_header
from i2i.train.trainer import linear_decay

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
TINY_FLAGS = ["--size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-size", "2", "--workers", "0",
              "--no-tensorboard", "--device", "cpu", "--no-progress", "--log-every", "1"]


def i2i_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2i", *args], env=ENV, capture_output=True, text=True, timeout=300)


def i2i_here(capsys, *args: str) -> tuple[int, str, str]:
    """``main`` in this process (for refusals that come before any training): exit code, stdout, stderr."""
    try:
        code = cli(list(args))
    except SystemExit as e:  # argparse's errors, --help and --version
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *parts: str) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == EXIT_ERROR and len(lines) == 1 and "Traceback" not in err, err
    assert all(part in lines[0] for part in parts), lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under a folder with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(cyclegan_run, tmp_path) -> Path:
    """A private copy of the shared one-step CycleGAN run (8 images, batch 2: 4 steps per epoch)."""
    return Path(shutil.copytree(cyclegan_run, tmp_path / "run"))


def test_a_run_folder_holds_one_run(run, example_data, tmp_path):
    """Point 1: a new run into a folder holding one is refused; --overwrite moves it aside, never while it trains."""
    before = snapshot(run)
    again = i2i_process("train", "--data", str(example_data / "unpaired"), "--out", str(run), "--steps", "1",
                        *TINY_FLAGS)
    assert_one_line_error(again.returncode, again.stderr, f"--out {run} already holds a run", f"--resume {run}",
                          "--overwrite")
    with RunLock(run):  # another process trains it
        locked = i2i_process("train", "--data", str(example_data / "unpaired"), "--out", str(run), "--overwrite",
                             *TINY_FLAGS)
    assert_one_line_error(locked.returncode, locked.stderr, f"run folder {run} is being trained by process")
    assert snapshot(run) == before
    i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(run), steps=1, overwrite=True,
              size=32, ngf=4, ndf=8, n_blocks=2, batch_size=2, workers=0, tensorboard=False, device="cpu",
              progress=False)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert snapshot(aside) == before
    assert i2i.load(run, device="cpu").cfg.ngf == 4 and i2i.load(aside, device="cpu").cfg.ngf == 8


def test_resume_from_a_checkpoint_folder_never_writes_into_it(run, tmp_path, capsys):
    """Point 2: --resume RUN/checkpoints/step_X continues RUN (or branches into a new --out) and leaves the
    checkpoint as it was; an older checkpoint does not continue into its run."""
    first = run / "checkpoints" / "step_00000001"
    kept = snapshot(first)
    assert i2i_here(capsys, "train", "--resume", str(first), "--steps", "2", "--no-progress")[0] == 0
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    assert snapshot(first) == kept
    before = snapshot(run)
    code, _, err = i2i_here(capsys, "train", "--resume", str(first), "--steps", "3")
    assert_one_line_error(code, err, "step_00000001 is not the latest checkpoint", f"--resume {run}", "new --out")
    assert snapshot(run) == before
    branch = tmp_path / "branch"
    assert i2i_here(capsys, "train", "--resume", str(first), "--out", str(branch), "--steps", "2",
                    "--no-progress")[0] == 0
    assert [p.name for p in list_checkpoints(branch)] == ["step_00000002"] and snapshot(run) == before


def test_resume_refuses_a_new_model_stretches_the_schedule_and_knows_when_it_is_done(run, capsys):
    """Point 3: architecture flags on --resume are refused before loading, naming fields and values; a larger
    --steps says the LR schedule is stretched (and it is); --steps at the current step has nothing to do."""
    before = snapshot(run)
    code, _, err = i2i_here(capsys, "train", "--resume", str(run), "--ngf", "16", "--norm", "batch")
    assert_one_line_error(code, err, "with a different model", "ngf 8 -> 16", "norm instance -> batch")
    code, _, err = i2i_here(capsys, "train", "--resume", str(run), "--steps", "1")
    assert code == EXIT_OK and "is at step 1 and --steps is 1: nothing to do" in err
    assert snapshot(run) == before
    code, _, err = i2i_here(capsys, "train", "--resume", str(run), "--steps", "4", "--no-progress")
    assert code == EXIT_OK and "LR schedule is recomputed for steps 1 -> 4" in err, err
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    factor = linear_decay(4, 0.5)  # the stretched schedule: constant for 2 steps, then linear decay to 0
    assert [row["lr"] for row in rows[1:]] == pytest.approx([2e-4 * factor(s) for s in (1, 2, 3)])


def test_resume_takes_lr_and_betas_from_the_command_line(run, capsys):
    """--lr / --beta1 on --resume are used from the first resumed step (the optimiser state holds the old ones),
    and the start says so; without them a resumed run keeps the checkpoint's."""
    from i2i.train.start import plan_start
    from i2i.train.trainer import Trainer
    factor = linear_decay(4, 0.5)
    for flags, lr, betas in (({}, 2e-4, (0.5, 0.999)), ({"lr": 1e-4, "beta1": 0.9}, 1e-4, (0.9, 0.999))):
        start = plan_start({"steps": 4, **flags}, resume=run)
        trainer = Trainer(start.cfg, resume=start.checkpoint)
        trainer.run_lock.release()
        for optimizer in trainer.optimizers.values():
            for group in optimizer.param_groups:
                assert (group["lr"], group["betas"]) == (pytest.approx(lr * factor(1)), betas)
    assert "the optimisers continue from step 1 with lr 0.0002 -> 0.0001, beta1 0.5 -> 0.9" in start.notes[-1]
    code, _, err = i2i_here(capsys, "train", "--resume", str(run), "--steps", "3", "--lr", "1e-4", "--no-progress")
    assert code == EXIT_OK and "i2i: note: the optimisers continue from step 1 with lr 0.0002 -> 0.0001" in err, err
    assert "i2i: note: the LR schedule is recomputed for steps 1 -> 3" in err


@pytest.mark.parametrize("args,parts", [
    (["--size", "30"], ["--size 30 does not fit the cyclegan generator", "multiple of 4", "28 or 32"]),
    (["--mode", "pix2pix", "--size", "24"], ["--size 24 does not fit the pix2pix generator", "multiple of 16"]),
    (["--norm", "instanse"], ["invalid choice: 'instanse'", "did you mean instance?"]),
    (["--lr", "-1"], ["'lr' must be greater than 0; got -1.0"]),
    (["--beta1", "1.5"], ["'beta1' must be at least 0 and below 1"]),
    (["--stpes", "5"], ["i2i train: error: unrecognized argument(s): --stpes 5; did you mean --steps?"]),
    (["--mode", "cyclegn"], ["i2i train: error: argument --mode: invalid choice", "did you mean cyclegan?"]),
    (["--out", "{data}/run"], ["lies inside --data", "choose an --out outside the dataset"]),
    (["--batch-size", "64"], ["is fewer than one batch of 64"]),  # found by the trainer, under the run lock
])
def test_bad_values_are_one_line_before_any_folder(capsys, example_data, tmp_path, args, parts):
    """Point 4: bad values, misspelled flags and bad paths: one line, nothing created."""
    data = tmp_path / "data"
    shutil.copytree(example_data / "unpaired", data)
    before = snapshot(tmp_path)
    args = [arg.format(data=data) for arg in args]
    code, out, err = i2i_here(capsys, "train", "--data", str(data), "--out", str(tmp_path / "out"), *TINY_FLAGS,
                              *args)
    assert_one_line_error(code, err, *parts)
    assert "usage:" not in err + out and snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["data"]


def test_help_teaches_and_version(capsys, cyclegan_run):
    """Point 5: grouped help ending with examples, mode defaults, no duplicate defaults; --version; the saved run
    config names the precision and device used."""
    from i2i.config import FIELDS, GROUPS
    assert sorted(name for names in GROUPS.values() for name in names) == sorted(FIELDS)  # each field: one flag
    code, text, _ = i2i_here(capsys, "train", "--help")
    assert code == 0
    for title in ("data:", "model (mode and networks):", "objective (losses and regularisers):", "optimisation:",
                  "output (run folder, logs, checkpoints):", "speed:", "distributed"):
        assert f"\n{title}" in text
    assert text.rstrip().splitlines()[-1].startswith("--overwrite (the old run")
    assert "examples:\n  i2i train --mode cyclegan" in text
    flat = " ".join(text.split())
    assert "(default: cyclegan, encoder: resnet; pix2pix: unet)" in flat  # --generator: per mode
    assert "(default: None)" not in flat and "(default: True)" not in flat and "--no-progress" in flat
    assert all(line.count("(default") <= 1 for line in flat.split("--"))
    code, version, _ = i2i_here(capsys, "--version")
    assert code == 0 and version.strip() == f"i2i {i2i.__version__} (torch {torch.__version__})"
    code, bench, _ = i2i_here(capsys, "bench", "--help")
    assert code == 0 and "(default: 1,4,16)" in bench and "(default: [" not in bench and "None" not in bench
    saved = (cyclegan_run / "config.yaml").read_text()
    assert "\ndevice: cpu\n" in saved and "\nprecision: fp32\n" in saved


def test_data_the_user_did_not_mean(tmp_path, example_data, capsys):
    """Point 6 through the trainer's dataset: mismatched pairs, odd side-by-side widths, both layouts: one warning
    line each, naming the files; --direction BtoA learns B -> A."""
    root = tmp_path / "paired"
    shutil.copytree(example_data / "paired", root)
    Image.new("RGB", (40, 32)).save(root / "trainB" / "00001.png")
    (root / "train").mkdir()
    Image.new("RGB", (65, 32)).save(root / "train" / "odd.png")
    from i2i.data import make_dataset
    make_dataset("paired", root, "train", 32, 32)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("i2i: warning:")] == [
        f"i2i: warning: {root} holds both paired layouts: trainA/ + trainB/ (used) and side-by-side train/ "
        "(ignored); move one away",
        f"i2i: warning: 1 pair(s) in {root} differ in size, so B is resized to A: trainA/00001.png 32x32 vs "
        "trainB/00001.png 40x32"]
    shutil.rmtree(root / "trainA")
    make_dataset("paired", root, "train", 32, 32)
    assert capsys.readouterr().err == (f"i2i: warning: 1 side-by-side image(s) in {root / 'train'} have an odd "
                                       "width, so their last pixel column is dropped: train/odd.png (65x32)\n")
    from i2i.modes.base import create_mode
    mode = create_mode(i2i.TrainConfig(mode="pix2pix", direction="BtoA", size=32, ngf=4, ndf=4))
    a, b = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
    source, target = mode.pair({"A": a, "B": b})
    assert mode.directions == ("BtoA",) and source is b and target is a


def test_translate_takes_images_and_refuses_pixel_tensors(cyclegan_run, example_data, tmp_path, capsys):
    """Point 7: tensors are model input in [-1, 1]; numpy, PIL and paths are images; i2i.Sampler is exported;
    i2i sample refuses --n 0 and prints the seed it drew."""
    translator = i2i.load(cyclegan_run, device="cpu")
    path = example_data / "unpaired" / "testA" / "00000.png"
    pixels = np.array(Image.open(path).convert("RGB"))
    with pytest.raises(i2i.I2IError, match=r"float tensors in \[-1, 1\]; got torch.uint8"):
        translator.translate(torch.from_numpy(pixels).permute(2, 0, 1))
    with pytest.raises(i2i.I2IError, match=r"tensors in \[-1, 1\]; got values from 0 to 255"):
        translator.translate(torch.zeros(3, 8, 8).index_fill_(0, torch.tensor([1]), 255.0))
    from_array, from_path = translator.translate(pixels), translator.translate(path)
    assert from_array.dtype == np.uint8 and from_array.shape == pixels.shape
    assert np.array_equal(from_array, np.asarray(from_path))
    assert np.array_equal(from_array, np.asarray(translator.translate(Image.open(path))))
    from i2i.sampling import Sampler
    assert i2i.Sampler is Sampler
    gan = i2i.train(mode="gan", data=str(example_data / "unpaired" / "trainA"), out=str(tmp_path / "gan"), steps=1,
                    size=32, ngf=4, ndf=4, batch_size=2, workers=0, tensorboard=False, device="cpu", progress=False)
    capsys.readouterr()
    assert_one_line_error(*i2i_here(capsys, "sample", "--checkpoint", str(gan), "--n", "0", "--out", "x")[::2],
                          "argument --n: must be at least 1; got 0")
    code, out, _ = i2i_here(capsys, "sample", "--checkpoint", str(gan), "--n", "2", "--out", str(tmp_path / "a.png"))
    seed = int(out.split("seed ")[1].split()[0])
    i2i_here(capsys, "sample", "--checkpoint", str(gan), "--n", "2", "--out", str(tmp_path / "b.png"), "--seed",
             str(seed))
    assert code == 0 and (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_log_rows_and_headed_sample_grid(cyclegan_run):
    """Point 8: log rows carry wall time, epoch and images/s; the sample grid has a header naming its columns."""
    (row,) = [json.loads(line) for line in (cyclegan_run / "log.jsonl").read_text().splitlines()]
    assert row["epoch"] == 0.25 and row["images_per_s"] > 0 and abs(row["time"] - os.path.getmtime(
        cyclegan_run / "log.jsonl")) < 60
    grid = np.asarray(Image.open(cyclegan_run / "samples" / "step_00000001.png").convert("L"))
    header = column_header(("input A", "output B", "reconstr. A", "input B", "output A", "reconstr. B"), 32)
    assert grid.shape == (header.shape[1] + 2 + 2 * 34, 2 + 6 * 34) == (header.shape[1] + 70, header.shape[2])
    assert np.allclose(grid[:header.shape[1]] / 255, header[0].numpy(), atol=1 / 255)  # the grid starts with it
    for column in range(6):  # light text in every column's band of the header, nothing in the padding between
        band = header[:, :, 2 + column * 34: 2 + column * 34 + 32]
        assert band.amax() > 0.5 and header[:, :, column * 34: column * 34 + 2].amax() == 0
