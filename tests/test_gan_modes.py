"""gan and cgan modes, the DCGAN networks, the Sampler and ``i2i sample``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

import i2i
from i2i.cli import main
from i2i.config import make_config
from i2i.errors import I2IError
from i2i.modes.base import create_mode
from i2i.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from i2i.nets.layers import MinibatchStdDev, init_weights
from i2i.runtime import autocast
from i2i.sampling import slerp
from i2i.train.checkpoint import find_checkpoint

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def class_data(tmp_path_factory) -> Path:
    """DATA/<class>/*.png: four 32 px drawings of one shape per class."""
    root = tmp_path_factory.mktemp("classes")
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(4):
            image = Image.new("RGB", (32, 32), (230, 230, 220))
            canvas = ImageDraw.Draw(image)
            box, colour = (4 + i, 6, 24 + i, 26), (200, 40 * i, 60 * label)
            if name == "circle":
                canvas.ellipse(box, fill=colour)
            elif name == "square":
                canvas.rectangle(box, fill=colour)
            else:
                canvas.polygon([(14 + i, 6), (24 + i, 26), (4 + i, 26)], fill=colour)
            image.save(root / name / f"{i}.png")
    return root


@pytest.fixture
def single_data(example_data) -> Path:
    return example_data / "unpaired" / "trainA"


def train(tmp_path: Path, tiny: dict, mode: str, data: Path, steps: int = 3, **fields) -> Path:
    return i2i.train(**{**tiny, "mode": mode, "data": str(data), "out": str(tmp_path / "run"), "steps": steps,
                        **fields})


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def assert_finite_logs(run: Path, steps: int) -> None:
    rows = logged(run)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert rows[-1]["nonfinite_steps"] == 0


# --- networks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_shapes(size):
    g = DCGANGenerator(latent_dim=16, size=size, ngf=4, num_classes=3)
    d = DCGANDiscriminator(size=size, ndf=4, num_classes=3, minibatch_std=True)
    labels = torch.tensor([0, 2])
    images = g(torch.randn(2, 16), labels)
    assert images.shape == (2, 3, size, size) and images.abs().max() <= 1
    assert d(images, labels).shape == (2, 1)


@pytest.mark.parametrize("size", [16, 48, 512])
def test_dcgan_refuses_bad_sizes(size):
    with pytest.raises(I2IError, match="power of two from 32 to 256"):
        DCGANGenerator(size=size)


def test_conditioning_is_checked_and_projection_uses_the_label():
    d = DCGANDiscriminator(size=32, ndf=4, num_classes=3)
    torch.nn.init.normal_(d.embed.weight)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="labels"):
        d(x)
    with pytest.raises(ValueError, match="labels"):
        DCGANGenerator(latent_dim=8, size=32, ngf=4)(torch.randn(2, 8), torch.tensor([0, 1]))


def test_conditional_generator_sees_the_class_from_the_first_step():
    """The one-hot class enters G's input layer, so a freshly initialised G already draws each class differently
    (the class gains of its norms start at zero and add nothing yet) and the class columns get a gradient."""
    torch.manual_seed(0)
    g = init_weights(DCGANGenerator(latent_dim=8, size=32, ngf=4, num_classes=3))
    assert g.project.in_features == 8 + 3
    z = torch.randn(1, 8).expand(4, 8)
    images = g(z, torch.tensor([0, 0, 1, 2]))
    assert torch.equal(images[0], images[1])
    assert (images[1] - images[2]).abs().max() > 1e-3 and (images[2] - images[3]).abs().max() > 1e-3
    images.sum().backward()
    class_columns = g.project.weight.grad[:, 8:]
    assert class_columns.abs().sum(0).min() > 0  # every class column learns
    assert all(norm.gain.weight.abs().max() == 0 for norm in g.norms)


def test_cgan_checkpoint_from_before_the_class_input_samples_as_before_and_refuses_to_resume(
        tmp_path, tiny, class_data, capsys):
    """A generator without the one-hot input equals this one with zero class columns: it loads and draws exactly
    that; continuing its training (whose optimiser state has the old shapes) is refused in one line."""
    run = train(tmp_path, tiny, "cgan", class_data, steps=1)
    weights = find_checkpoint(run) / "weights.safetensors"
    tensors = load_file(weights)
    latent = i2i.load(run).cfg.latent_dim
    for key in ("nets.G.project.weight", "ema.G.project.weight"):
        tensors[key][:, latent:] = 0
    save_file(tensors, weights)
    expected = i2i.load(run).sample(4, seed=1, labels=[0, 1, 2, 1])
    save_file({k: v[:, :latent].contiguous() if k.endswith("G.project.weight") else v for k, v in tensors.items()},
              weights)  # as an older i2i wrote it
    torch.testing.assert_close(i2i.load(run).sample(4, seed=1, labels=[0, 1, 2, 1]), expected, rtol=0, atol=0)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "written by an older i2i" in err and "start a new run" in err


def test_slerp_keeps_the_ends_and_the_norm():
    a, b = torch.randn(3, 64), torch.randn(3, 64)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 64)
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)
    same = slerp(a, a, torch.linspace(0, 1, 3))  # parallel ends fall back to lerp
    assert torch.allclose(same, a[:, None].expand(-1, 3, -1), atol=1e-5)


# --- training -------------------------------------------------------------------------------------------------
def test_gan_trains_and_writes_a_sample_grid(tmp_path, tiny, single_data):
    run = train(tmp_path, tiny, "gan", single_data)
    assert_finite_logs(run, 3)
    grid = Image.open(run / "samples" / "step_00000003.png")
    assert grid.size == (8 * 34 + 2, 8 * 34 + 2)  # 8 x 8 fixed-noise samples of 32 px
    cfg = i2i.load(run).cfg
    assert (cfg.gan_loss, cfg.ema_decay, cfg.load_size, cfg.num_classes) == ("bce", 0.999, 32, None)


@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge", "wgan"])
def test_every_gan_loss_runs(tmp_path, tiny, single_data, loss):
    run = train(tmp_path, tiny, "gan", single_data, steps=2, gan_loss=loss)
    assert_finite_logs(run, 2)
    assert i2i.load(run).cfg.gp_weight == (10.0 if loss == "wgan" else 0.0)  # wgan gets its gradient penalty


def test_cgan_reads_classes_from_folders_and_trains_with_options(tmp_path, tiny, class_data):
    run = train(tmp_path, tiny, "cgan", class_data, spectral_norm=True, minibatch_std=True, gan_loss="hinge")
    assert_finite_logs(run, 3)
    sampler = i2i.load(run)
    assert sampler.cfg.num_classes == 3 and sampler.class_names == list(CLASSES)
    d = sampler.mode.nets["D"]
    assert any(isinstance(m, MinibatchStdDev) for m in d.modules())
    assert torch.nn.utils.parametrize.is_parametrized(d.head) and torch.nn.utils.parametrize.is_parametrized(d.embed)
    grid = Image.open(run / "samples" / "step_00000003.png")
    assert grid.size == (8 * 34 + 2, 3 * 34 + 2)  # one row per class, 8 fixed noise vectors


def test_cgan_without_classes_is_a_clear_error(tmp_path, tiny):
    (tmp_path / "empty").mkdir()
    with pytest.raises(I2IError, match="no class sub-folders"):
        train(tmp_path, tiny, "cgan", tmp_path / "empty")
    with pytest.raises(I2IError, match="class names given"):
        create_mode(make_config(dict(mode="cgan", size=32, ngf=4, ndf=4, num_classes=2, class_names="a,b,c")))


@pytest.mark.parametrize("mode", ["gan", "cgan"])
def test_gp_and_r1_give_finite_gradients_under_bf16_autocast(mode):
    torch.manual_seed(0)
    cfg = make_config(dict(mode=mode, size=32, ngf=8, ndf=8, num_classes=3 if mode == "cgan" else None,
                           gp_weight=10.0, r1_gamma=1.0, minibatch_std=True))
    m = create_mode(cfg)
    batch = {"B": torch.rand(4, 3, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 0])}
    with autocast(torch.device("cpu"), "bf16"):
        g = m.generator_step(batch)
        d = m.discriminator_step(batch, g.outputs)
    d.loss.backward()
    grads = [p.grad for p in m.nets["D"].parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    assert torch.isfinite(g.loss) and torch.isfinite(d.loss)


def test_bf16_training_run_with_penalties(tmp_path, tiny, class_data):
    run = train(tmp_path, tiny, "cgan", class_data, steps=2, precision="bf16", gp_weight=10.0, r1_gamma=1.0)
    assert_finite_logs(run, 2)


# --- sampling -------------------------------------------------------------------------------------------------
def ema_generator(run: Path) -> tuple[DCGANGenerator, DCGANGenerator]:
    """The run's generator rebuilt by hand twice: with the raw tensors and with the EMA tensors."""
    checkpoint = find_checkpoint(run)
    flat = load_file(str(checkpoint / "weights.safetensors"))
    cfg = i2i.load(run).cfg
    nets = []
    for group in ("nets", "ema"):
        g = DCGANGenerator(cfg.latent_dim, cfg.size, cfg.ngf, cfg.num_classes, cfg.norm)
        g.load_state_dict({k[len(group) + 3:]: v for k, v in flat.items() if k.startswith(f"{group}.G.")})
        nets.append(g.eval())
    return nets[0], nets[1]


def test_sampler_uses_the_ema_generator(tmp_path, tiny, single_data):
    run = train(tmp_path, tiny, "gan", single_data, steps=4, lr=1e-3)
    raw, ema = ema_generator(run)
    raw_w, ema_w = raw.state_dict(), ema.state_dict()
    assert any(not torch.equal(raw_w[k], ema_w[k]) for k in raw_w if raw_w[k].is_floating_point())
    sampler = i2i.load(run)
    images = sampler.sample(6, seed=3)
    z = torch.randn(6, sampler.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(images, ema(z).clamp(-1, 1), atol=1e-6)
        assert not torch.allclose(images, raw(z).clamp(-1, 1), atol=1e-4)
    assert torch.equal(sampler.sample(6, seed=3), images)  # a seed is reproducible
    assert not torch.equal(sampler.sample(6), sampler.sample(6))
    with pytest.raises(I2IError, match="unconditional"):
        sampler.sample(2, labels=0)


def test_cgan_samples_by_class_without_the_data_folder(tmp_path, tiny, class_data):
    run = train(tmp_path, tiny, "cgan", class_data, steps=3, lr=1e-2, ema_decay=0.5)  # classes visibly apart
    moved = class_data.rename(class_data.with_name(class_data.name + "_moved"))  # checkpoints carry the classes
    try:
        sampler = i2i.load(run)
        assert sampler.class_names == list(CLASSES)
        assert torch.equal(sampler.labels("square", 4), torch.ones(4, dtype=torch.long))
        assert torch.equal(sampler.labels(None, 4), torch.tensor([0, 1, 2, 0]))
        images = sampler.sample(4, seed=1, labels="square")
        assert images.shape == (4, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
        _, ema = ema_generator(run)
        z = torch.randn(4, sampler.latent_dim, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.allclose(images, ema(z, torch.ones(4, dtype=torch.long)).clamp(-1, 1), atol=1e-6)
            assert not torch.allclose(images, ema(z, torch.zeros(4, dtype=torch.long)).clamp(-1, 1), atol=1e-6)
        grid = sampler.class_grid(2, seed=0)
        assert grid.shape == (6, 3, 32, 32) and torch.allclose(grid[2:4], sampler.sample(2, 0, "square"))
        assert sampler.interpolate(5, seed=0, rows=3, labels=[0, 1, 2]).shape == (15, 3, 32, 32)
        with pytest.raises(I2IError, match="valid classes: circle, square, triangle"):
            sampler.sample(2, labels="hexagon")
    finally:
        moved.rename(class_data)


# --- CLI ------------------------------------------------------------------------------------------------------
def test_sample_cli(tmp_path, tiny, single_data, capsys):
    run = train(tmp_path, tiny, "gan", single_data, steps=1)
    assert main(["sample", "--checkpoint", str(run), "--n", "5", "--out", str(tmp_path / "files"), "--seed", "0"]) == 0
    files = sorted((tmp_path / "files").glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (32, 32)
    assert main(["sample", "--checkpoint", str(run), "--n", "6", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (3 * 34 + 2, 2 * 34 + 2)
    assert main(["sample", "--checkpoint", str(run), "--n", "2", "--interpolate", "4",
                 "--out", str(tmp_path / "walk.png")]) == 0
    assert Image.open(tmp_path / "walk.png").size == (4 * 34 + 2, 2 * 34 + 2)
    assert main(["sample", "--checkpoint", str(run), "--class", "all", "--out", str(tmp_path / "x.png")]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_sample_cli_per_class(tmp_path, tiny, class_data, capsys):
    run = train(tmp_path, tiny, "cgan", class_data, steps=1)
    assert main(["sample", "--checkpoint", str(run), "--class", "all", "--n", "4",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert Image.open(tmp_path / "c.png").size == (4 * 34 + 2, 3 * 34 + 2)  # one row per class
    assert main(["sample", "--checkpoint", str(run), "--class", "all", "--n", "2", "--out", str(tmp_path / "c")]) == 0
    assert {p.name: len(list(p.glob("*.png"))) for p in (tmp_path / "c").iterdir()} == dict.fromkeys(CLASSES, 2)
    assert main(["sample", "--checkpoint", str(run), "--class", "triangle", "--n", "3",
                 "--out", str(tmp_path / "t")]) == 0
    assert len(list((tmp_path / "t").glob("*.png"))) == 3
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--class", "hexagon", "--out", str(tmp_path / "h")]) == 2
    out, err = capsys.readouterr()
    assert "unknown class 'hexagon'" in err and "circle, square, triangle" in err
    assert out == "" and not (tmp_path / "h").exists()  # refused before the seed line or any file


def test_sample_cli_refuses_a_translation_checkpoint(tmp_path, tiny, example_data, capsys):
    run = i2i.train(**{**tiny, "mode": "pix2pix", "data": str(example_data / "paired"), "out": str(tmp_path / "p"),
                       "steps": 1, "unet_depth": 3})
    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s")]) == 2
    assert "translates images" in capsys.readouterr().err
