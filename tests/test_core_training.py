"""CycleGAN and pix2pix through the one trainer: steps move weights, resume is bit-exact, outputs exist, load works."""
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import i2i
from i2i.cli import main as cli
from i2i.train.checkpoint import list_checkpoints

MODES = [("cyclegan", "unpaired"), ("pix2pix", "paired")]


def weights(run, step):
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "weights.safetensors"))


@pytest.mark.parametrize("mode,layout", MODES)
def test_steps_change_weights_and_stay_finite(tmp_path, example_data, tiny, mode, layout):
    run = i2i.train(mode=mode, data=str(example_data / layout), out=str(tmp_path / "run"), steps=3,
                    **{**tiny, "checkpoint_every": 1, "keep_checkpoints": 5})
    first, last = weights(run, 1), weights(run, 3)
    assert all(torch.isfinite(t).all() for t in last.values())
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], last[k])]
    assert any(k.startswith("nets.G") for k in changed) and any(k.startswith("nets.D") for k in changed)
    log = (run / "log.jsonl").read_text().splitlines()
    assert len(log) == 3 and '"G"' in log[0]
    assert (run / "samples" / "step_00000003.png").is_file() and (run / "config.yaml").is_file()


@pytest.mark.parametrize("mode,layout", MODES)
def test_resume_is_bit_exact(tmp_path, example_data, tiny, mode, layout):
    fields = dict(mode=mode, data=str(example_data / layout), steps=6, **{**tiny, "checkpoint_every": 2,
                                                                          "keep_checkpoints": 5, "workers": 2})
    full = i2i.train(out=str(tmp_path / "full"), **fields)  # 4 steps per epoch: the resume crosses an epoch
    half = tmp_path / "half" / "checkpoints"
    half.mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000002", half / "step_00000002")
    resumed = i2i.train(out=str(tmp_path / "half"), resume=str(tmp_path / "half"), **fields)
    a, b = weights(full, 6), weights(resumed, 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_pruned_to_keep(tmp_path, example_data, tiny):
    run = i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / "r"), steps=4,
                    **{**tiny, "checkpoint_every": 1, "keep_checkpoints": 2})
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003", "step_00000004"]


def test_lr_decays_linearly_to_zero(tmp_path, example_data, tiny):
    run = i2i.train(mode="pix2pix", data=str(example_data / "paired"), out=str(tmp_path / "r"), steps=4,
                    lr_decay=0.5, **tiny)
    import json
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(2e-4) and lrs[1] == pytest.approx(2e-4)
    assert lrs[1] > lrs[2] > lrs[3] > 0  # linear decay over the last half, towards 0 (CycleGAN's rule)


@pytest.mark.parametrize("mode,layout,directions", [("cyclegan", "unpaired", ["AtoB", "BtoA"]),
                                                    ("pix2pix", "paired", ["AtoB"])])
def test_load_and_translate(tmp_path, example_data, tiny, mode, layout, directions):
    run = i2i.train(mode=mode, data=str(example_data / layout), out=str(tmp_path / "r"), steps=1, **tiny)
    for direction in directions:
        model = i2i.load(run, device="cpu", direction=direction)
        assert not model.net.training
        y = model.translate(torch.rand(2, 3, 32, 48) * 2 - 1)
        assert y.shape == (2, 3, 32, 48) and y.abs().max() <= 1
        image = model.translate_image(Image.new("L", (37, 29), 128))
        assert image.size == (37, 29) and image.mode == "RGB"
    with pytest.raises(i2i.I2IError, match="direction"):
        i2i.load(run, device="cpu", direction="sideways")


def test_pix2pix_defaults_follow_the_paper(tmp_path, example_data, tiny):
    run = i2i.train(mode="pix2pix", data=str(example_data / "paired"), out=str(tmp_path / "r"), steps=1, **tiny)
    cfg = i2i.load(run, device="cpu").cfg
    assert (cfg.generator, cfg.norm, cfg.gan_loss, cfg.lambda_l1, cfg.dropout) == ("unet", "batch", "bce", 100.0, 0.5)


def test_cli_train_with_yaml_and_flag_override(tmp_path, example_data):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("mode: cyclegan\nsize: 32\nngf: 8\nndf: 8\nn_blocks: 2\nsteps: 5\nworkers: 0\n"
                   "tensorboard: false\nbatch_size: 2\n")
    out = tmp_path / "run"
    code = cli(["train", "--config", str(cfg), "--data", str(example_data / "unpaired"), "--out", str(out),
                "--steps", "2", "--no-flip", "--precision", "fp32"])
    assert code == 0
    saved = (out / "config.yaml").read_text()
    assert "steps: 2" in saved and "flip: false" in saved and "ngf: 8" in saved
    assert list_checkpoints(out)[-1].name == "step_00000002"
    # resume with more steps continues from step 2
    assert cli(["train", "--resume", str(out), "--steps", "3"]) == 0
    assert list_checkpoints(out)[-1].name == "step_00000003"


def test_cli_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ["--mode", "--data", "--precision", "--compile", "--resume", "--config", "--lambda-cycle", "--seed"]:
        assert flag in text


@pytest.mark.parametrize("argv,message", [
    (["--data", "/nonexistent/folder"], "data folder not found"),
    (["--gan-loss", "nope"], "invalid choice"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    try:
        code = cli(["train", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_gpu_augment_crops_pairs_identically(tmp_path, example_data, tiny):
    from i2i.train.trainer import Trainer
    trainer = Trainer(i2i.TrainConfig(mode="pix2pix", data=str(example_data / "paired"), out=str(tmp_path / "r"),
                                      gpu_augment=True, load_size=40, steps=1, **tiny))
    a = torch.rand(2, 3, 40, 40) * 2 - 1
    out = trainer._augment_on_gpu({"A": a, "B": -a})
    assert out["A"].shape == (2, 3, 32, 32) and torch.equal(out["B"], -out["A"])
    assert trainer.train_step(next(iter(trainer.loader)))["G"].isfinite()
