"""The objective as a user configures it: WGAN always constrained, penalties on per-image critics, refused
combinations in one line, UNIT sized from --size, constant LR, compile with penalties, gan/cgan without flips."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import i2i
from i2i.config import make_config
from i2i.modes.base import create_mode

TINY_FLAGS = ["--size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-size", "2", "--workers", "0",
              "--device", "cpu", "--no-tensorboard", "--sample-every", "1000", "--log-every", "1"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2i", *args], capture_output=True, text=True, timeout=600)


def refused(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("i2i: error:")]
    assert len(lines) == 1 and all(p in lines[0] for p in phrases), result.stderr


def mode_for(**fields):
    return create_mode(make_config(dict(size=32, ngf=4, ndf=4, n_blocks=1, **fields)))


@pytest.mark.parametrize("mode", ["cyclegan", "pix2pix", "unit", "encoder", "gan", "cgan"])
def test_wgan_gets_a_gradient_penalty_unless_constrained_otherwise(mode):
    extra = {"num_classes": 2} if mode == "cgan" else {"perceptual_weight": 0.0} if mode == "encoder" else {}
    m = create_mode(make_config(dict(mode=mode, gan_loss="wgan", size=32, ngf=4, ndf=4, n_blocks=2, **extra)))
    assert m.cfg.gp_weight == 10.0 and any("--gp-weight 10" in n for n in m.notes)
    for other in (dict(spectral_norm=True), dict(clip_weights=0.01)):
        m = create_mode(make_config(dict(mode=mode, gan_loss="wgan", size=32, ngf=4, ndf=4, n_blocks=2, **extra,
                                         **other)))
        assert m.cfg.gp_weight == 0.0
    assert mode_for(mode="cyclegan").cfg.gp_weight == 0.0  # other losses: no penalty unless asked


def test_explicit_zero_penalty_with_wgan_is_refused(tmp_path, example_data):
    result = cli("train", "--mode", "cyclegan", "--data", str(example_data / "unpaired"), "--out",
                 str(tmp_path / "r"), "--gan-loss", "wgan", "--gp-weight", "0", "--steps", "1", *TINY_FLAGS)
    refused(result, "--gan-loss wgan needs a Lipschitz constraint", "--clip-weights 0.01")


def test_penalty_with_batch_norm_d_switches_default_and_refuses_explicit():
    m = mode_for(mode="pix2pix", gp_weight=10.0)
    assert m.cfg.d_norm == "layer" and any("layer norm" in n for n in m.notes)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.nets["D"].modules())
    with pytest.raises(i2i.I2IError, match="--d-norm batch mixes the images"):
        mode_for(mode="pix2pix", r1_gamma=1.0, d_norm="batch")
    assert mode_for(mode="pix2pix").cfg.d_norm == "batch"  # no penalty: the paper's batch norm


@pytest.mark.parametrize("fields,phrase", [(dict(gan_loss="hinge", label_smoothing=0.1), "--label-smoothing"),
                                           (dict(gan_loss="wgan", label_smoothing=0.1), "--label-smoothing"),
                                           (dict(minibatch_std=True), "--minibatch-std")])
def test_options_a_mode_would_ignore_are_refused(fields, phrase):
    with pytest.raises(i2i.I2IError, match=phrase):
        mode_for(mode="cyclegan", **fields)


def test_weight_clipping_uses_rmsprop_and_keeps_d_inside_the_box(tmp_path, example_data, tiny):
    from i2i.train.trainer import Trainer
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "gan_loss": "wgan", "clip_weights": 0.01, "steps": 2, "lr": 0.05})
    trainer = Trainer(cfg)
    assert isinstance(trainer.optimizers["D"], torch.optim.RMSprop)
    assert isinstance(trainer.optimizers["G"], torch.optim.Adam)
    trainer.fit()
    d_weights = [p for n in ("D_A", "D_B") for p in trainer.nets[n].parameters()]
    assert max(float(p.detach().abs().max()) for p in d_weights) <= 0.01 + 1e-7


def test_unit_at_32_px_trains_with_defaults_and_says_what_it_chose(tmp_path, example_data):
    run = tmp_path / "unit"
    result = cli("train", "--mode", "unit", "--data", str(example_data / "unpaired"), "--out", str(run),
                 "--steps", "3", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "the discriminator has 1 scale(s) of a 3-layer PatchGAN" in result.stderr
    cfg = i2i.load(run).cfg
    assert (cfg.d_scales, cfg.d_layers) == (1, 3)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor([r["G"], r["D"]])).all() for r in rows)


def test_constant_lr_with_no_decay(tmp_path, example_data, tiny):
    run = i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / "r"), steps=4,
                    lr_decay=0.0, **tiny)
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs == [pytest.approx(2e-4)] * 4


def test_compile_with_gradient_penalty_and_r1(tmp_path, example_data, tiny, monkeypatch):
    """The penalties' double backward runs through the uncompiled D. AOTAutograd (which refused it with "donated
    buffers" before) is kept, inductor's code generation is not: aot_eager makes the test fast."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="aot_eager"))
    run = i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / "r"), steps=2,
                    compile=True, gp_weight=10.0, r1_gamma=1.0, **tiny)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["nonfinite_steps"] == 0 for r in rows)


@pytest.mark.parametrize("mode,flip", [("gan", False), ("cgan", False), ("cyclegan", True), ("pix2pix", True)])
def test_flips_are_off_for_gan_modes_and_on_for_translation(mode, flip):
    extra = {"num_classes": 2} if mode == "cgan" else {}
    assert mode_for(mode=mode, **extra).cfg.flip is flip
    assert mode_for(mode=mode, flip=not flip, **extra).cfg.flip is (not flip)
