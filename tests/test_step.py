"""The training step: no host synchronisation in any mode, equal to a plain eager step when finite, and a skipped
(non-finite) step that leaves every weight, buffer, EMA weight, pool entry and optimiser moment as it was."""
from __future__ import annotations

import contextlib
import copy
import shutil
from pathlib import Path

import pytest
import torch

from i2i.config import make_config
from i2i.modes.base import StepOutput
from i2i.train.trainer import Trainer
from test_perceptual import vgg_features_state

MODES = ["cyclegan", "pix2pix", "unit", "encoder", "gan", "cgan"]


@pytest.fixture(scope="module")
def data(example_data, tmp_path_factory) -> dict[str, Path]:
    """A data folder per mode's layout, and random VGG11 weights for the encoder mode."""
    root = tmp_path_factory.mktemp("step_data")
    for name, source in (("a", "trainA"), ("b", "trainB")):
        shutil.copytree(example_data / "unpaired" / source, root / "classes" / name)
    torch.save(vgg_features_state("vgg11", 15), root / "vgg11.pth")
    return {"unpaired": example_data / "unpaired", "paired": example_data / "paired", "classes": root / "classes",
            "single": example_data / "unpaired" / "trainA", "vgg11": root / "vgg11.pth"}


def make_trainer(mode: str, data: dict[str, Path], tiny: dict, out: Path, **fields) -> Trainer:
    layout = {"cyclegan": "unpaired", "unit": "unpaired", "encoder": "unpaired", "pix2pix": "paired",
              "gan": "single", "cgan": "classes"}[mode]
    extra = {"encoder": "vgg11", "encoder_weights": str(data["vgg11"]), "encoder_layers": "relu1_1"} \
        if mode == "encoder" else {}
    if mode == "unit":
        extra["d_layers"] = 2
    return Trainer(make_config({**tiny, "mode": mode, "data": str(data[layout]), "out": str(out), "steps": 100,
                                "ema_decay": 0.9, **extra, **fields}))


def batches(trainer: Trainer, n: int) -> list[dict[str, torch.Tensor]]:
    iterator = iter(trainer.loader)
    return [next(iterator) for _ in range(n)]


@contextlib.contextmanager
def no_host_sync(monkeypatch):
    """Every way a tensor's value reaches Python (or the host) raises while the block runs."""
    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name}")
        return method
    with monkeypatch.context() as patch:
        for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy"):
            patch.setattr(torch.Tensor, name, refuse(name))
        yield


@pytest.mark.parametrize("mode", MODES)
def test_steps_never_synchronise_with_the_host(mode, data, tiny, tmp_path, monkeypatch):
    extra = {"pool_size": 3} if mode == "cyclegan" else {"instance_noise": 0.1} if mode == "gan" else {}
    trainer = make_trainer(mode, data, tiny, tmp_path / "run", **extra)
    first, *more = batches(trainer, 3)
    trainer.train_step(first)  # the first step allocates optimiser state and pools
    with no_host_sync(monkeypatch):
        with pytest.raises(AssertionError, match="host synchronisation"):
            bool(torch.ones(()))  # the guard itself works
        for batch in more:
            logs = trainer.train_step(batch)
    assert trainer.step == 3 and all(torch.isfinite(v) for v in logs.values())
    assert trainer.skips.read() == (0, 0)


def plain_eager_step(trainer: Trainer, batch: dict[str, torch.Tensor], optimizers) -> None:
    """The step as written before it was made sync-free: requires_grad toggled per phase, full backward, a plain
    (non-fused) Adam step, D skipped after G."""
    mode, nets = trainer.mode, trainer.nets
    mode.nets, mode.fakes_accepted = nets, None
    batch = trainer._to_device(batch)
    outputs = {}
    for phase, compute in (("G", lambda: mode.generator_step(batch)),
                           ("D", lambda: mode.discriminator_step(batch, outputs))):
        for other, params in trainer.phase_params.items():
            for p in params:
                p.requires_grad_(other == phase)
        out = compute()
        out.loss.backward()
        optimizers[phase].step()
        optimizers[phase].zero_grad(set_to_none=True)
        outputs.update(out.outputs)
    for params in trainer.phase_params.values():
        for p in params:
            p.requires_grad_(True)


@pytest.mark.parametrize("mode", MODES)
def test_a_finite_step_equals_the_plain_eager_step(mode, data, tiny, tmp_path):
    """One step from identical states (fp32, same random draws): fused Adam and the restricted backward differ
    from the plain step only by float rounding (tolerance 1e-6)."""
    trainer = make_trainer(mode, data, tiny, tmp_path / "a")
    reference = make_trainer(mode, data, tiny, tmp_path / "b")
    (batch,) = batches(trainer, 1)
    optimizers = {phase: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), foreach=False)
                  for phase, params in reference.phase_params.items()}
    torch.manual_seed(5)
    trainer.train_step(batch)
    torch.manual_seed(5)
    plain_eager_step(reference, batch, optimizers)
    for (name, got), expected in zip(trainer.nets.state_dict().items(), reference.nets.state_dict().values()):
        assert torch.allclose(got.float(), expected.float(), atol=1e-6, rtol=0), name


def everything(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor a skipped step must leave alone."""
    state = {f"net.{k}": v for k, v in trainer.nets.state_dict().items()}
    if trainer.ema is not None:
        state.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
    for phase, optimizer in trainer.optimizers.items():
        for i, s in enumerate(optimizer.state.values()):
            state.update({f"opt.{phase}.{i}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)})
    for name, pool in getattr(trainer.mode, "pools", {}).items():
        state[f"pool.{name}"], state[f"pool.{name}.count"] = pool.images[:pool.size], pool.count  # + a scratch row
    return {k: v.detach().clone() for k, v in state.items()}


@pytest.mark.parametrize("mode,precision", [("pix2pix", "fp32"), ("pix2pix", "fp16"), ("cyclegan", "fp32"),
                                            ("cyclegan", "fp16"), ("gan", "fp32")])
def test_a_skipped_step_changes_nothing_but_counts(mode, precision, data, tiny, tmp_path):
    """pix2pix has batch norm in G and D (whose running statistics a NaN input would poison), cyclegan instance
    norm and image pools, gan an EMA generator."""
    trainer = make_trainer(mode, data, tiny, tmp_path / "run", precision=precision, pool_size=4)
    if precision == "fp16":  # start where fp16 gradients fit, so that only the poisoned step is skipped
        trainer.scalers = {k: torch.amp.GradScaler("cpu", init_scale=256.0) for k in trainer.scalers}
    good, bad = batches(trainer, 2)
    trainer.train_step(good)
    before = everything(trainer)
    scale = trainer.scalers["G"].get_scale() if precision == "fp16" else None
    poisoned = {k: (v.float() / 127.5 - 1) * float("nan") if v.dtype == torch.uint8 else v for k, v in bad.items()}
    generator_phase = trainer.phase_functions["G"]  # gan's G does not read the data: make its loss NaN too

    def nan_generator_phase(batch):
        out = generator_phase(batch)
        return StepOutput(out.loss * float("nan"), out.logs, out.outputs)

    trainer.phase_functions["G"] = nan_generator_phase
    trainer.train_step(poisoned)
    trainer.phase_functions["G"] = generator_phase
    after = everything(trainer)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], changed
    assert trainer.step == 2 and trainer.schedulers["G"].last_epoch == 2  # the step counts; the schedule advances
    assert trainer.skips.read() == (1, 1)
    if scale is not None:
        assert trainer.scalers["G"].get_scale() == scale / 2  # GradScaler's backoff
    trainer.train_step(good)
    assert trainer.skips.read() == (1, 0)
    assert all(torch.isfinite(v).all() for v in everything(trainer).values() if v.is_floating_point())


def test_logs_average_the_finite_steps_of_a_window(data, tiny, tmp_path):
    trainer = make_trainer("pix2pix", data, tiny, tmp_path / "run")
    good, bad = batches(trainer, 2)
    values = [float(trainer.train_step(good)["G"])]
    trainer.train_step({k: v.float() * float("nan") if v.dtype == torch.uint8 else v for k, v in bad.items()})
    values.append(float(trainer.train_step(good)["G"]))
    means = trainer.log_sums.mean()
    assert means["G"] == pytest.approx(sum(values) / 2, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_phases_compile_whole_without_graph_breaks_or_recompiles(mode, data, tiny, tmp_path, monkeypatch):
    """Each mode's G and D phase traces as one graph (fullgraph) and is not recompiled after a warm-up of two steps
    (an image pool allocates its buffer on its first query). The eager backend keeps it fast: tracing, graph breaks
    and guards are what is checked, not inductor's code."""
    import torch._dynamo
    torch._dynamo.reset()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda f, **kw: compile_(f, backend="eager", fullgraph=True, **kw))
    trainer = make_trainer(mode, data, tiny, tmp_path / "run", compile=True)
    warm_up, after = batches(trainer, 4)[:2], batches(trainer, 4)[2:]
    for batch in warm_up:
        trainer.train_step(batch)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in after:
            logs = trainer.train_step(batch)
    assert all(torch.isfinite(v) for v in logs.values())
    torch._dynamo.reset()


def test_penalties_stay_outside_the_compiled_phase(data, tiny, tmp_path, monkeypatch):
    """With GP and R1 the D phase compiles around the eager double backward (one graph break each)."""
    import torch._dynamo
    torch._dynamo.reset()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda f, **kw: compile_(f, backend="eager", **kw))
    trainer = make_trainer("cyclegan", data, tiny, tmp_path / "run", compile=True, gp_weight=10.0, r1_gamma=1.0)
    before = copy.deepcopy(trainer.nets["D_A"].state_dict())
    warm_up, after = batches(trainer, 4)[:2], batches(trainer, 4)[2:]
    for batch in warm_up:
        trainer.train_step(batch)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in after:
            trainer.train_step(batch)
    assert any(not torch.equal(v, trainer.nets["D_A"].state_dict()[k]) for k, v in before.items())
    assert trainer.skips.read() == (0, 0)
    torch._dynamo.reset()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_graph_is_refused_on_the_cpu_in_one_line(example_data, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "i2i", "train", "--mode", "cyclegan", "--data",
                             str(example_data / "unpaired"), "--out", str(out), "--size", "32", "--ngf", "8",
                             "--ndf", "8", "--n-blocks", "2", "--steps", "1", "--workers", "0", "--device", "cpu",
                             "--cuda-graph"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "i2i: error: --cuda-graph captures the training step on a CUDA GPU; this run is on cpu" in result.stderr
    assert not out.exists()
