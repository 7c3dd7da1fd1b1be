"""Benchmark tasks, ground-truth evaluation (library and ``i2i eval``) and periodic evaluation during training."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_script

import i2i
from i2i.cli import main as cli_main
from i2i.errors import I2IError
from i2i.metrics import psnr
from i2i.metrics.evaluate import Networks, evaluate, evaluate_translator, find_test_pairs, iter_batches
from i2i.modes.base import mode_class

tasks = load_script("datasets/tasks.py")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Every task at 32 px: 4 train and 3 test scenes."""
    out = tmp_path_factory.mktemp("tasks")
    for task in tasks.TASKS:
        tasks.build_task(task, out, size=32, n_train=4, n_test=3, seed=0)
    return out


@pytest.fixture(scope="module")
def pix2pix_run(task_dir, tmp_path_factory) -> Path:
    return i2i.train(mode="pix2pix", data=str(task_dir / "dusk" / "paired"), out=str(tmp_path_factory.mktemp("p2p")),
                     steps=2, size=32, ngf=8, ndf=8, batch_size=2, workers=0, tensorboard=False, device="cpu")


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> Path:
    """Random resnet18 weights standing in for a pretrained encoder (plumbing tests only)."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18
    path = tmp_path_factory.mktemp("encoder") / "resnet18.safetensors"
    torch.manual_seed(0)
    save_file(resnet18().state_dict(), str(path))
    return path


@pytest.mark.parametrize("task", list(tasks.TASKS))
def test_tasks_are_deterministic_and_have_truth(task, task_dir, tmp_path):
    root = task_dir / task
    again = tasks.build_task(task, tmp_path / "again", size=32, n_train=4, n_test=3, seed=0)
    assert files(root) == files(again)  # same seed, same bytes
    other = tasks.build_task(task, tmp_path / "other", size=32, n_train=4, n_test=3, seed=1)
    assert files(root) != files(other)
    names = sorted(p.name for p in (root / "unpaired" / "testA").iterdir())
    assert len(names) == 3
    for folder in ("unpaired/testA_truth", "unpaired/testB_truth", "paired/testB"):
        assert sorted(p.name for p in (root / folder).iterdir()) == names
    # the unpaired truth is the paired B; the unpaired B of training shows other scenes
    assert files(root / "unpaired" / "testA_truth") == files(root / "paired" / "testB")
    assert files(root / "unpaired" / "trainB") != files(root / "paired" / "trainB")
    image = np.asarray(tasks.Image.open(root / "paired" / "trainA" / "00000.png"))
    assert image.shape == (32, 32, 3)


def test_find_test_pairs_picks_the_truth(task_dir):
    root = task_dir / "shapes"
    assert find_test_pairs(root / "unpaired").truth_dir.name == "testA_truth"
    assert find_test_pairs(root / "unpaired", "BtoA").truth_dir.name == "testB_truth"
    assert find_test_pairs(root / "paired").truth_dir == root / "paired" / "testB"
    assert find_test_pairs(root).input_dir == root / "paired" / "testA"  # a task root holding both layouts
    with pytest.raises(I2IError, match="no ground truth"):
        find_test_pairs(root / "unpaired" / "testA_truth")  # no test split in there
    with pytest.raises(I2IError, match="direction"):
        find_test_pairs(root, "AtoC")


def test_a_known_translator_beats_the_identity_baseline(task_dir):
    """The exact dusk grading (without its noise) scores far above identity; PSNR matches a direct computation."""
    pairs = find_test_pairs(task_dir / "dusk" / "unpaired")

    def grade(x: torch.Tensor) -> torch.Tensor:
        day = ((x + 1) / 2).clamp(0, 1).numpy().transpose(0, 2, 3, 1)
        return torch.from_numpy(tasks.dusk_grade(day).transpose(0, 3, 1, 2)).float() * 2 - 1

    translator = SimpleNamespace(device=torch.device("cpu"), direction="AtoB", mode=SimpleNamespace(name="grade"),
                                 translate=grade)
    result = evaluate_translator(translator, pairs, ("psnr", "ssim", "l1"), batch_size=2, baseline=True)
    assert result["images"] == 3 and result["truth"].endswith("testA_truth")
    model, identity = result["metrics"], result["identity"]
    assert model["psnr"] > 35 and model["psnr"] > identity["psnr"] + 15
    assert model["ssim"] > 0.9 > identity["ssim"] and model["l1"] < identity["l1"]
    inputs, truths = zip(*iter_batches(pairs, batch_size=8))
    assert identity["psnr"] == pytest.approx(float(psnr(inputs[0], truths[0]).mean()), rel=1e-5)


def test_custom_features_are_never_called_fid(task_dir, pix2pix_run):
    def colour_stats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    result = evaluate(pix2pix_run, task_dir / "dusk", metrics="psnr,fid,kid", device="cpu",
                      networks=Networks(features=colour_stats))
    assert set(result["metrics"]) == {"psnr", "fid_custom", "kid_custom", "kid_custom_std"}
    assert result["labels"]["fid_custom"] == "Frechet distance on custom features"
    assert result["networks"]["fid_custom"]["network"].startswith("custom (") and "colour_stats" in \
        result["networks"]["kid_custom"]["network"]
    assert result["warnings"] == ["fid_custom: FID on 3 images with 6-d features is biased upward (the covariance is "
                                  "rank-deficient); use at least 6 images, or compare with KID"]
    assert all(math.isfinite(v) for v in result["metrics"].values())
    with pytest.raises(I2IError, match="unknown metric"):
        evaluate(pix2pix_run, task_dir / "dusk", metrics="psnr,diversity")  # a sampler metric


def test_perceptual_distance(task_dir, pix2pix_run, resnet18_weights):
    from i2i.metrics.evaluate import perceptual_distance
    distance = perceptual_distance(torch.device("cpu"), "resnet18", resnet18_weights)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(distance(x, x), torch.zeros(2))
    assert (distance(x, -x) > 0).all()
    result = evaluate(pix2pix_run, task_dir / "dusk", metrics="perceptual", device="cpu", baseline=True,
                      networks=Networks(encoder="resnet18", encoder_weights=resnet18_weights))
    assert math.isfinite(result["metrics"]["perceptual"]) and result["identity"]["perceptual"] > 0
    assert "resnet18" in result["labels"]["perceptual"]
    assert result["networks"]["perceptual"]["weights_sha256"] == hashlib.sha256(resnet18_weights.read_bytes()).hexdigest()


def test_i2i_eval_cli_writes_json_and_csv(task_dir, pix2pix_run, alexnet_weights, tmp_path, capsys):
    out, table = tmp_path / "eval.json", tmp_path / "eval.csv"
    code = cli_main(["eval", "--checkpoint", str(pix2pix_run), "--data", str(task_dir / "dusk" / "paired"),
                     "--metrics", "psnr,ssim,l1,lpips", "--baseline", "--json", str(out), "--csv", str(table),
                     "--device", "cpu", "--lpips-weights", str(alexnet_weights)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "pix2pix" and result["images"] == 3
    assert result["checkpoint"].endswith("step_00000002")
    for scores in (result["metrics"], result["identity"]):
        assert set(scores) == {"psnr", "ssim", "l1", "lpips"} and all(math.isfinite(v) for v in scores.values())
    sha = hashlib.sha256(alexnet_weights.read_bytes()).hexdigest()
    assert result["networks"]["lpips"]["weights_sha256"] == sha
    with open(table) as f:
        rows = {(r["metric"], r["set"]): r for r in csv.DictReader(f)}
    assert float(rows["psnr", "model"]["value"]) == pytest.approx(result["metrics"]["psnr"], rel=1e-6)
    assert float(rows["lpips", "identity (output = input)"]["value"]) == pytest.approx(result["identity"]["lpips"],
                                                                                      rel=1e-6)
    assert rows["lpips", "model"]["weights_sha256"] == sha and rows["lpips", "model"]["images"] == "3"
    printed = capsys.readouterr().out
    assert "| PSNR" in printed and "lpips: lpips v0.1" in printed and sha in printed
    # a wrong direction for pix2pix and FID without its weights are one-line errors
    assert cli_main(["eval", "--checkpoint", str(pix2pix_run), "--data", str(task_dir / "dusk"),
                     "--direction", "BtoA"]) == 2
    assert "translates AtoB" in capsys.readouterr().err


def test_fid_without_weights_is_one_line_from_the_cli(task_dir, pix2pix_run, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), "I2I_ALLOW_DOWNLOAD": "0"}
    done = subprocess.run([sys.executable, "-m", "i2i", "eval", "--checkpoint", str(pix2pix_run), "--data",
                           str(task_dir / "dusk"), "--metrics", "psnr,fid", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "weights-inception-2015-12-05-6726825d.pth" in line and "--fid-weights" in line
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in line


@pytest.fixture(scope="module")
def class_folders(task_dir, tmp_path_factory) -> Path:
    """REAL/<class>/*.png with two classes of three 32 px images (the dusk and edges truths)."""
    import shutil
    root = tmp_path_factory.mktemp("classes")
    for task in ("dusk", "edges"):
        shutil.copytree(task_dir / task / "paired" / "testB", root / task)
    return root


def test_cgan_samples_are_scored_per_class_and_overall(class_folders, alexnet_weights, tiny, tmp_path):
    run = i2i.train(mode="cgan", data=str(class_folders), out=str(tmp_path / "cgan"), steps=1, **tiny)

    def colour_stats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    result = evaluate(run, class_folders, metrics="fid,kid,diversity", samples=4, device="cpu",
                      networks=Networks(features=colour_stats, lpips_weights=alexnet_weights))
    assert result["mode"] == "cgan" and result["images"] == 8 and result["real_images"] == 6
    assert set(result["classes"]) == {"dusk", "edges"}
    keys = {"fid_custom", "kid_custom", "kid_custom_std", "diversity"}
    assert set(result["metrics"]) == keys
    for scores in result["classes"].values():
        assert set(scores["metrics"]) == keys and scores["images"] == 4 and scores["real_images"] == 3
    per_class = [c["metrics"]["diversity"] for c in result["classes"].values()]
    assert result["metrics"]["diversity"] == pytest.approx(sum(per_class) / 2)
    assert all(v > 0 for v in per_class)
    sampler = i2i.load(run, device="cpu")
    images = sampler.sample(4, seed=1, labels=1)  # class "edges" draws seed + its index
    from i2i.metrics.lpips_distance import diversity, lpips_model
    assert result["classes"]["edges"]["metrics"]["diversity"] == pytest.approx(
        diversity(lpips_model(alexnet_weights), images), rel=1e-5)


def test_gan_eval_from_the_cli(class_folders, alexnet_weights, tiny, tmp_path):
    run = i2i.train(mode="gan", data=str(class_folders / "dusk"), out=str(tmp_path / "gan"), steps=1, **tiny)
    table = tmp_path / "gan.csv"
    done = subprocess.run([sys.executable, "-m", "i2i", "eval", "--checkpoint", str(run), "--data",
                           str(class_folders / "dusk"), "--metrics", "diversity", "--samples", "3", "--device", "cpu",
                           "--lpips-weights", str(alexnet_weights), "--csv", str(table)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gan: 3 generated images (seed 0) against 3 real images" in done.stdout
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert [(r["metric"], r["set"], r["images"]) for r in rows] == [("diversity", "model", "3")]
    assert float(rows[0]["value"]) > 0 and rows[0]["network"].startswith("lpips v0.1")


@pytest.mark.parametrize("mode", ["cyclegan", "unit", "encoder"])
def test_eval_works_for_unpaired_modes(mode, task_dir, tiny, tmp_path, resnet18_weights):
    try:
        cls = mode_class(mode)
    except I2IError:
        pytest.skip(f"mode {mode} is not available")
    extra = {"d_scales": 1}  # 32 px is too small for UNIT's 3-scale default
    if mode == "encoder":
        extra.update(encoder="resnet18", encoder_weights=str(resnet18_weights))
    run = i2i.train(mode=mode, data=str(task_dir / "shapes" / "unpaired"), out=str(tmp_path / "run"), steps=1,
                    **tiny, **extra)
    for direction in cls.directions:
        result = evaluate(run, task_dir / "shapes" / "unpaired", direction=direction, device="cpu", baseline=True)
        assert result["direction"] == direction and result["images"] == 3
        assert all(math.isfinite(v) for v in result["metrics"].values())


def test_periodic_eval_writes_csv_and_keeps_best(task_dir, tiny, tmp_path):
    run = i2i.train(mode="pix2pix", data=str(task_dir / "edges" / "paired"), out=str(tmp_path / "run"), steps=3,
                    eval_every=2, eval_metrics="psnr", keep_best="l1", keep_checkpoints=1,
                    **{**tiny, "tensorboard": True})
    with open(run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 3]  # every 2 steps and at the end
    assert set(rows[0]) == {"step", "psnr", "l1"}  # the keep_best metric is always evaluated
    best = json.loads((run / "best" / "eval.json").read_text())
    l1_values = [float(r["l1"]) for r in rows]
    assert best["step"] == [2, 3][int(np.argmin(l1_values))]
    assert best["metrics"]["l1"] == pytest.approx(min(l1_values), rel=1e-4)
    assert (run / "best" / "weights.safetensors").is_file()
    assert not list(run.glob(".best*"))  # no temporary folder left behind
    assert i2i.load(run / "best", device="cpu").translate(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert list((run / "tensorboard").iterdir())


def test_periodic_eval_fails_fast_without_truth(example_data, tiny, tmp_path):
    import shutil
    data = tmp_path / "train_only"
    for folder in ("trainA", "trainB"):
        shutil.copytree(example_data / "paired" / folder, data / folder)
    with pytest.raises(I2IError, match="no ground truth"):
        i2i.train(mode="pix2pix", data=str(data), out=str(tmp_path / "run"), steps=5, eval_every=5, **tiny)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_periodic_fid_checks_its_weights_before_training(task_dir, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("I2I_ALLOW_DOWNLOAD", raising=False)
    data = str(task_dir / "edges" / "paired")
    with pytest.raises(I2IError, match="weights-inception-2015-12-05-6726825d.pth is missing"):
        i2i.train(mode="pix2pix", data=data, out=str(tmp_path / "run"), steps=2, eval_every=1, eval_metrics="fid",
                  **tiny)
    with pytest.raises(I2IError, match="TF-Inception FID weights file not found: .*nope.pth"):
        i2i.train(mode="pix2pix", data=data, out=str(tmp_path / "run2"), steps=2, eval_every=1, keep_best="kid",
                  fid_weights=str(tmp_path / "nope.pth"), **tiny)
    assert not list(tmp_path.glob("run*/checkpoints"))  # refused before training
