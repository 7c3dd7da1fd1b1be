"""Every fast path computes what the plain eager fp32 path computes: channels-last, bf16 autocast, batched generator
calls, gradient checkpointing, the var_mean instance norm and torch.compile (CPU, when it compiles in time).

Weights are compared on conv/linear ``weight`` tensors: a conv bias right before instance norm has a true gradient
of 0, and Adam turns the float noise there into steps of up to ~lr that no output depends on (see test_ddp.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import i2i.modes.cyclegan as cyclegan_module
from i2i.config import make_config
from i2i.errors import I2IError
from i2i.modes.parts import run_batched
from i2i.nets.generators import ResnetGenerator
from i2i.nets.layers import ResidualBlock, set_grad_checkpoint
from i2i.nets.layers import InstanceNorm2d
from i2i.train.trainer import Trainer


def train_steps(example_data, tiny, tmp_path, steps: int = 2, **fields) -> tuple[list[dict], Trainer]:
    """A fresh CycleGAN trainer (pool off) run for ``steps`` steps on one fixed batch; returns the logged losses."""
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "pool_size": 0,
                       "steps": 100, "out": str(tmp_path / "run"), **fields})
    trainer = Trainer(cfg)
    batch = next(iter(trainer.loader))
    logs = [{k: float(v) for k, v in trainer.train_step(batch).items()} for _ in range(steps)]
    return logs, trainer


def assert_same_weights(a: Trainer, b: Trainer, atol: float) -> None:
    weights_b = b.nets.state_dict()
    for key, value in a.nets.state_dict().items():
        if key.endswith("weight"):
            torch.testing.assert_close(value, weights_b[key], rtol=0, atol=atol, msg=key)


def assert_same_losses(a: list[dict], b: list[dict], rel: float) -> None:
    for step_a, step_b in zip(a, b):
        for key in step_a:
            assert step_a[key] == pytest.approx(step_b[key], rel=rel, abs=1e-6), key


def test_instance_norm_matches_functional():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 9, 7) * 3 + 1
    ref = F.instance_norm(x, eps=1e-5)
    torch.testing.assert_close(InstanceNorm2d(8)(x), ref, rtol=1e-5, atol=1e-5)
    y = InstanceNorm2d(8)(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)  # keeps the layout, unlike the stock kernel
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    norm = InstanceNorm2d(8, affine=True)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x.requires_grad_(True)
    ours, theirs = norm(x), F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad_ours, = torch.autograd.grad(ours.square().sum(), x)
    grad_theirs, = torch.autograd.grad(theirs.square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-4, atol=1e-4)
    low = InstanceNorm2d(8)(x.detach().bfloat16())  # statistics in fp32, output in the input's dtype
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=2e-2, atol=2e-2)


def test_channels_last_matches_contiguous(example_data, tiny, tmp_path):
    plain_logs, plain = train_steps(example_data, tiny, tmp_path / "a", channels_last=False)
    fast_logs, fast = train_steps(example_data, tiny, tmp_path / "b", channels_last=True)
    assert fast.nets["G_AB"].model[0][1].weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_losses(fast_logs, plain_logs, rel=1e-5)
    assert_same_weights(fast, plain, atol=1e-5)


def test_bf16_autocast_close_to_fp32(example_data, tiny, tmp_path):
    _, initial = train_steps(example_data, tiny, tmp_path / "init", steps=0)
    fp32_logs, fp32 = train_steps(example_data, tiny, tmp_path / "a", steps=1, precision="fp32")
    bf16_logs, bf16 = train_steps(example_data, tiny, tmp_path / "b", steps=1, precision="bf16")
    # the first forward: bf16 keeps 8 bits (0.4%) per op, which adds up to 1-2% over the tiny nets' ~20 layers
    assert_same_losses(bf16_logs, fp32_logs, rel=3e-2)
    # the first update: Adam's first step is about lr * sign(gradient) per weight, so compare its direction (measured
    # over 3 seeds: cosine 0.89-0.91, signs agree on 94-96% of the weights; unrelated updates would give 0 and 50%)
    start, weights = initial.nets.state_dict(), (fp32.nets.state_dict(), bf16.nets.state_dict())
    deltas = [torch.cat([(w[k] - start[k]).flatten() for k in start if k.endswith("weight")]) for w in weights]
    assert torch.all(torch.isfinite(deltas[1])) and deltas[1].abs().max() <= 2 * fp32.cfg.lr
    assert F.cosine_similarity(*deltas, dim=0) > 0.8
    assert (deltas[0].sign() == deltas[1].sign()).float().mean() > 0.85


def test_batched_generator_calls_equal_separate_calls(example_data, tiny, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=8, n_blocks=2)
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    separate = run_batched(net, [a, b], batchable=False)
    batched = run_batched(net, [a, b], batchable=True)
    for s, t in zip(separate, batched):
        torch.testing.assert_close(t, s, rtol=1e-5, atol=1e-6)
    batched_logs, batched_trainer = train_steps(example_data, tiny, tmp_path / "a")
    monkeypatch.setattr(cyclegan_module, "per_sample_norm", lambda norm: False)  # force one call per input
    separate_logs, separate_trainer = train_steps(example_data, tiny, tmp_path / "b")
    assert_same_losses(batched_logs, separate_logs, rel=1e-5)
    assert_same_weights(batched_trainer, separate_trainer, atol=1e-5)


def test_grad_checkpoint_gives_the_same_gradients(example_data, tiny, tmp_path):
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=8, n_blocks=3, dropout=0.5)  # dropout: the recomputation must replay the same masks
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enabled in (False, True):
        assert set_grad_checkpoint(net, enabled) == 3  # one per residual block
        torch.manual_seed(1)
        net.zero_grad()
        net(x).square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)
    # through the trainer: the option reaches both generators and the steps are unchanged
    plain_logs, plain = train_steps(example_data, tiny, tmp_path / "a")
    ckpt_logs, ckpt = train_steps(example_data, tiny, tmp_path / "b", grad_checkpoint=True)
    blocks = [m for name in ("G_AB", "G_BA") for m in ckpt.nets[name].modules() if isinstance(m, ResidualBlock)]
    assert blocks and all(b.grad_checkpoint for b in blocks)
    assert not any(m.grad_checkpoint for m in plain.nets["G_AB"].modules() if isinstance(m, ResidualBlock))
    assert_same_losses(ckpt_logs, plain_logs, rel=1e-6)
    assert_same_weights(ckpt, plain, atol=1e-6)
    with pytest.raises(I2IError, match="no network of mode 'pix2pix' has residual blocks"):  # U-Net: not silently ignored
        Trainer(make_config({**tiny, "mode": "pix2pix", "data": str(example_data / "paired"), "grad_checkpoint": True,
                             "out": str(tmp_path / "c")}))


COMPILE_SCRIPT = textwrap.dedent("""
    import torch
    from i2i.nets.generators import ResnetGenerator
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=4, n_blocks=1, n_down=1)
    x = torch.randn(2, 3, 16, 16)
    eager = net(x)
    eager.square().mean().backward()
    eager_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net)(x)
    compiled.square().mean().backward()
    print((compiled - eager).abs().max().item())
    print(max((p.grad - g).abs().max().item() for p, g in zip(net.parameters(), eager_grads)))
""")


def test_torch_compile_matches_eager_on_cpu():
    """Inductor on CPU needs a C++ compiler and tens of seconds (less with a warm cache): skipped if it can't."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True,
                                timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile did not finish within 60 s on this CPU")
    if result.returncode != 0:
        pytest.skip(f"torch.compile does not work here: {result.stderr.strip().splitlines()[-1]}")
    output_diff, grad_diff = (float(v) for v in result.stdout.split())
    assert output_diff < 1e-5 and grad_diff < 1e-5


@pytest.mark.parametrize("mode,d_scales", [("cyclegan", 1), ("unit", 2)])
def test_batched_real_and_fake_discriminator_call_is_exact(monkeypatch, mode, d_scales):
    """One D call on [real; fake] gives the loss and gradients of two calls (instance-norm D, single and multi-scale)."""
    from i2i.modes import base
    torch.manual_seed(0)
    model = base.create_mode(make_config(dict(mode=mode, size=48, ngf=8, ndf=8, n_blocks=2, d_layers=2,
                                              d_scales=d_scales)))
    real, fake = torch.randn(2, 3, 48, 48), torch.randn(2, 3, 48, 48)

    def loss_and_grads():
        model.nets.zero_grad(set_to_none=True)
        loss = model.adversarial_d("D_A", real, fake)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.nets["D_A"].parameters()]

    batched = loss_and_grads()
    monkeypatch.setattr(base, "per_sample_norm", lambda norm: False)
    separate = loss_and_grads()
    assert torch.allclose(batched[0], separate[0], rtol=1e-6, atol=1e-7)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(batched[1], separate[1]))


def test_grad_checkpoint_reaches_unit_blocks(example_data, tiny, tmp_path):
    """UNIT's encoders and decoders (shared blocks included) are checkpointed too, with unchanged steps."""
    unit = dict(mode="unit", d_scales=1)
    plain_logs, plain = train_steps(example_data, tiny, tmp_path / "a", **unit)
    ckpt_logs, ckpt = train_steps(example_data, tiny, tmp_path / "b", grad_checkpoint=True, **unit)
    assert all(m.grad_checkpoint for m in ckpt.nets.modules() if isinstance(m, ResidualBlock))
    assert_same_losses(ckpt_logs, plain_logs, rel=1e-6)
    assert_same_weights(ckpt, plain, atol=1e-6)
